"""The thermal sampler in init: its chosen frames are labeled beside the perturbed copies, and a
resume redoes neither the MD nor the labels."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ase.io
import pytest

from eelt.config import ConfigError
from eelt.orchestration.context import RunContext
from eelt.orchestration.initial import init_label
from eelt.orchestration.runs import prepare_run
from tests.loop_config import cu_start, tiny_config

SAMPLER = {"kind": "emt", "n_frames": 5, "n_steps": 40, "dump_fs": 4.0, "equilibrate_fs": 8.0}


def test_init_labels_the_sampler_frames_and_resumes_without_redoing(tmp_path):
    cfg = tiny_config(cu_start(tmp_path), init={"n_perturbed": 2, "sampler": SAMPLER})
    run = prepare_run(cfg, tmp_path, tmp_path / "run")
    with ThreadPoolExecutor(2) as pool:
        report = init_label(RunContext(run, pool))
    sample = run.root / "init" / "sample"
    trajectory = ase.io.read(sample / "trajectory.extxyz", ":")
    # 1 start x the explore temperatures (300, 900 K) x 40 steps of 1 fs, one frame every 4
    assert len(trajectory) == 2 * 10
    assert sorted({f.info["temperature_K"] for f in trajectory}) == [300.0, 900.0]
    chosen = ase.io.read(sample / "chosen.extxyz", ":")
    assert len(chosen) == 5
    assert report["n_labeled"] == 1 + 2 + 5  # the start, its perturbed copies, the sampler's
    # and by default 10 of the other 15 frames, at random, labeled as the yardstick
    assert report["n_test_labeled"] == 10
    assert len(ase.io.read(run.sampler_yardstick_file, ":")) == 10
    labeled = ase.io.read(run.data_dir / "init.extxyz", ":")
    assert len(labeled) == 8
    assert all(abs(f.get_potential_energy()) < 100 for f in labeled)

    # a resume after the label report is lost: the sampler is skipped, the labels are reused
    stamp = (sample / "trajectory.extxyz").stat().st_mtime_ns
    (run.root / "init" / "label" / run.report_path(run.root).name).unlink()
    n_label_files = len(list(run.labels_dir.glob("*.extxyz")))
    with ThreadPoolExecutor(2) as pool:
        again = init_label(RunContext(run, pool))
    assert (sample / "trajectory.extxyz").stat().st_mtime_ns == stamp
    assert len(list(run.labels_dir.glob("*.extxyz"))) == n_label_files
    assert again["n_labeled"] == 8


def test_bad_sampler_kind_is_one_line():
    with pytest.raises(ConfigError) as info:
        tiny_config(Path("cu.extxyz"), init={"sampler": {"kind": "dft"}})
    assert "init.sampler.kind" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("mode", ["synchronous", "streaming"])
def test_walkers_start_from_the_sampler_frames_in_turn(tmp_path, mode):
    import numpy as np

    from eelt.config import parse_config
    from eelt.orchestration.runs import run_loop
    from tests.orchestration.streaming.stream_config import streaming_config

    data = streaming_config(tmp_path).model_dump(mode="json")
    data["init"].update(n_perturbed=2, sampler=SAMPLER)
    for stage in data["explore"]["stages"]:
        stage.update(starts="sampler", max_starts=1)
    data["loop"]["max_labels"] += 15  # the sampler's 5 frames and 10 yardstick frames
    if mode == "synchronous":
        data["explore"]["stages"][0]["max_iterations"] = 2
        data["loop"] = {"max_iterations": 2}
    run = prepare_run(parse_config(data), tmp_path, tmp_path / "run")
    with ThreadPoolExecutor(2) as pool:
        run_loop(RunContext(run, pool))
    chosen = run.sampler_frames()
    if mode == "synchronous":  # one block per iteration: frames 0, 1 for iterations 0, 1
        used = [ase.io.read(run.stage_dir(it, "explore") / "starts.xyz", 0) for it in (0, 1)]
    else:  # one block per stage: stage 0's first segment starts at frame 0, stage 1 at 1
        stream = run.root / "stream"
        used = [ase.io.read(stream / "segments" / "r0000-w000.extxyz", 0)]
        used.append(ase.io.read(stream / "stages" / "stage-001.extxyz", 0))
    for k, atoms in enumerate(used):
        assert np.allclose(atoms.positions, chosen[k].positions, atol=1e-6), k
