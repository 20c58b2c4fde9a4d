"""The run directory's lock: one owner, a refusal that names it and writes nothing, a heartbeat,
and the take-over of a lock whose holder is gone (dead pid here, silent heartbeat elsewhere)."""

import json
import logging
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from eelt.errors import EeltError
from eelt.orchestration import lock
from eelt.orchestration.lock import LOCK_FILE, RunDirInUse, acquire, gone_reason, read_holder

HOLD = """
import sys, time
from eelt.orchestration.lock import acquire
held = acquire(sys.argv[1], "eelt run")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
held.release()
"""


@pytest.fixture
def holder(tmp_path):
    """A second process that holds tmp_path/run (for 60 s, or until killed)."""
    root = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root), "60"], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "held"
    yield root, proc
    proc.kill()
    proc.wait()


def _stamp(seconds_ago: float) -> str:
    t = datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)
    return t.isoformat(timespec="seconds")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_acquire_writes_the_holder_and_release_removes_it(tmp_path):
    root = tmp_path / "runs" / "new"
    held = acquire(root, "eelt run")
    record = read_holder(root)
    assert record["command"] == "eelt run"
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    assert record["token"] == held.token and record["started"] == record["heartbeat"]
    assert gone_reason(record) is None
    held.release()
    assert not (root / LOCK_FILE).exists()
    assert not root.exists()  # made for the lock, and nothing else was written there


def test_release_keeps_a_directory_with_work_in_it(tmp_path):
    root = tmp_path / "run"
    with acquire(root, "eelt run"):
        (root / "state.json").write_text("{}")
    assert sorted(p.name for p in root.iterdir()) == ["state.json"]


def test_acquiring_again_in_the_same_process_nests(tmp_path):
    outer = acquire(tmp_path, "eelt run")
    inner = acquire(tmp_path, "eelt serve (flow run)")
    assert inner is outer
    inner.release()
    assert read_holder(tmp_path)["command"] == "eelt run"  # still held by the outer
    outer.release()
    assert read_holder(tmp_path) is None


def test_a_second_process_is_refused_with_one_line_and_nothing_written(holder):
    root, proc = holder
    before = sorted(p.name for p in root.iterdir())
    lock_text = (root / LOCK_FILE).read_text()
    with pytest.raises(RunDirInUse) as info:
        acquire(root, "eelt run")
    message = str(info.value)
    assert "\n" not in message
    assert f"{root} is in use by eelt run (pid {proc.pid} on host {socket.gethostname()}" in message
    assert sorted(p.name for p in root.iterdir()) == before == [LOCK_FILE]
    assert (root / LOCK_FILE).read_text() == lock_text


def test_the_holder_is_released_when_it_ends(holder):
    root, proc = holder
    proc.kill()  # as a node failure would: no release
    proc.wait()
    assert gone_reason(read_holder(root)) == f"process {proc.pid} no longer runs"


def test_a_lock_of_a_dead_process_here_is_taken_over_with_a_warning(tmp_path, caplog):
    dead = _dead_pid()
    (tmp_path / LOCK_FILE).write_text(json.dumps({
        "command": "eelt run", "host": socket.gethostname(), "pid": dead, "started": _stamp(5),
        "heartbeat": _stamp(1), "token": "old"}))  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="eelt"):
        held = acquire(tmp_path, "eelt run")
    try:
        assert read_holder(tmp_path)["token"] == held.token
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert f"taking over the lock of eelt run (pid {dead}" in warnings[0]
        assert f"process {dead} no longer runs" in warnings[0]
    finally:
        held.release()


def test_a_reused_pid_counts_as_gone(tmp_path):
    record = {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat": _stamp(0),
              "pid_started": time.time() - 3600 * 24 * 365}  # fmt: skip
    assert gone_reason(record) == f"pid {os.getpid()} now belongs to another process"


def test_a_holder_on_another_host_is_gone_when_its_heartbeat_is_old(tmp_path, monkeypatch):
    record = {"command": "eelt run", "host": "node-that-is-not-this-one", "pid": 1,
              "started": _stamp(600), "token": "elsewhere"}  # fmt: skip
    assert gone_reason({**record, "heartbeat": _stamp(5)}, stale_s=60) is None
    # (stamps in whole seconds: 90 s ago reads as 90 or 91)
    assert gone_reason({**record, "heartbeat": _stamp(90)}, stale_s=60) in (
        "no heartbeat for 90 s",
        "no heartbeat for 91 s",
    )
    (tmp_path / LOCK_FILE).write_text(json.dumps({**record, "heartbeat": _stamp(5)}))
    with pytest.raises(RunDirInUse, match="pid 1 on host node-that-is-not-this-one"):
        acquire(tmp_path, "eelt run")
    monkeypatch.setenv(lock.STALE_ENV, "3")  # the set age, from the environment
    (tmp_path / LOCK_FILE).write_text(json.dumps({**record, "heartbeat": _stamp(5)}))
    with acquire(tmp_path, "eelt run") as held:
        assert read_holder(tmp_path)["token"] == held.token


def test_the_stale_age_setting_is_checked(monkeypatch):
    monkeypatch.setenv(lock.STALE_ENV, "soon")
    with pytest.raises(EeltError, match="EELT_LOCK_STALE_S='soon': not a number of seconds"):
        lock.stale_after_s()
    monkeypatch.setenv(lock.STALE_ENV, "90")
    assert lock.stale_after_s() == 90.0


def test_the_heartbeat_is_rewritten(tmp_path):
    with acquire(tmp_path, "eelt run", heartbeat_s=0.1):
        first = read_holder(tmp_path)["heartbeat"]
        deadline = time.monotonic() + 5
        while read_holder(tmp_path)["heartbeat"] == first:
            assert time.monotonic() < deadline, "no new heartbeat in 5 s"
            time.sleep(0.05)
        assert not list(tmp_path.glob(".*.tmp"))  # the rewrite leaves no temp file


def test_a_holder_whose_lock_was_taken_over_stops_and_leaves_the_new_lock(tmp_path):
    lost = []
    held = acquire(tmp_path, "eelt run", heartbeat_s=0.05, on_lost=lambda: lost.append(1))
    other = {"command": "eelt run", "host": "node-b", "pid": 7, "started": _stamp(0),
             "heartbeat": _stamp(0), "token": "theirs"}  # fmt: skip
    (tmp_path / LOCK_FILE).write_text(json.dumps(other))
    deadline = time.monotonic() + 5
    while not lost:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert held.lost["token"] == "theirs"
    held.release()
    assert read_holder(tmp_path)["token"] == "theirs"  # not removed, not rewritten


TAKE = """
import os, sys, time
from eelt.orchestration.lock import RunDirInUse, acquire
print("ready", flush=True)
while not os.path.exists(sys.argv[2]):  # all start at once
    time.sleep(0.005)
try:
    held = acquire(sys.argv[1], "eelt run")
except RunDirInUse:
    print("refused", flush=True)
else:
    print("took", held.token, flush=True)
    time.sleep(2)  # held while the others try
    held.release()
"""


def test_of_processes_taking_over_one_stale_lock_at_once_one_wins(tmp_path):
    root, go = tmp_path / "run", tmp_path / "go"
    root.mkdir()
    (root / LOCK_FILE).write_text(json.dumps({
        "command": "eelt run", "host": socket.gethostname(), "pid": _dead_pid(),
        "started": _stamp(5), "heartbeat": _stamp(1), "token": "old"}))  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TAKE, str(root), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        for _ in range(4)
    ]
    assert [p.stdout.readline().strip() for p in procs] == ["ready"] * 4
    go.touch()
    outs = sorted(p.communicate(timeout=60)[0].split()[0] for p in procs)
    assert outs == ["refused", "refused", "refused", "took"]
    assert not (root / LOCK_FILE).exists()  # released by the winner
