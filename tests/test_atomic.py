import stat

import pytest

from eelt import atomic


def test_atomic_write_replaces_whole_file_and_is_readable(tmp_path):
    path = atomic.write_json(tmp_path / "a" / "r.json", {"x": 1})
    assert atomic.read_json(path) == {"x": 1}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    with pytest.raises(RuntimeError):
        atomic.atomic_write(
            path, lambda p: (p.write_text("half"), (_ for _ in ()).throw(RuntimeError("boom")))
        )
    assert atomic.read_json(path) == {"x": 1}  # the old file survives a failed write
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temp file left behind
