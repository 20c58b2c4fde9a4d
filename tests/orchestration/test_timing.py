"""Time accounting adds up: stage walls within the run's wall, busy + idle = worker time, a
resumed run adds a session and keeps the records of the stages that had finished."""

import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from eelt.orchestration import timing
from eelt.orchestration.context import RunContext
from eelt.orchestration.runs import prepare_run, run_loop
from tests.loop_config import cu_start, tiny_config

STAGES = {"explore", "examine", "label", "calibrate", "train"}


@pytest.fixture(scope="module")
def timed_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("timing")
    cfg = tiny_config(cu_start(tmp))
    run = prepare_run(cfg, tmp, tmp / "run")
    with ThreadPoolExecutor(2) as pool:
        state = run_loop(RunContext(run, pool))
    return run, state


def test_stage_walls_fit_in_the_run_wall(timed_run):
    run, state = timed_run
    t = state["time"]
    assert t["n_sessions"] == 1
    stages = sum(t["stage_wall_s"].values())
    assert 0 < stages <= t["run_wall_s"]
    assert t["run_wall_s"] - stages < 0.5 * t["run_wall_s"]  # the stages are most of the run
    assert set(t["stage_wall_s"]) == STAGES
    for h in state["iterations"]:
        assert set(h["time"]["stage_wall_s"]) == STAGES
        assert h["wall_s"] == pytest.approx(sum(h["time"]["stage_wall_s"].values()))
    init = state["init_time"]["stage_wall_s"]
    assert set(init) == {"label", "train"}
    total = sum(init.values()) + sum(h["wall_s"] for h in state["iterations"])
    assert sum(t["stage_wall_s"].values()) == pytest.approx(total)
    assert t["wall_over_label_wall"] == pytest.approx(t["run_wall_s"] / t["label_wall_s"])
    # the DFT's own wall: its jobs' seconds over the worker slots, within the labeling stages
    slots = RunContext(run, None).worker_slots
    assert t["dft_wall_s"] == pytest.approx(t["busy_s"]["dft"] / slots)
    assert 0 < t["dft_wall_s"] <= t["label_wall_s"] * 1.05
    assert t["wall_over_dft_wall"] == pytest.approx(t["run_wall_s"] / t["dft_wall_s"])


def test_busy_plus_idle_is_worker_time(timed_run):
    _, state = timed_run
    for part in [state["init_time"], *(h["time"] for h in state["iterations"]), state["time"]]:
        busy = sum(part["busy_s"].values())
        assert busy > 0
        assert busy <= part["worker_s"] * 1.05  # jobs run inside the stages' wall
        assert busy + part["idle_s"] == pytest.approx(max(part["worker_s"], busy))
        assert part["busy_share"] == pytest.approx(busy / part["worker_s"])
    # every kind of job was timed: walkers, DFT (EMT here), training
    assert all(v > 0 for v in state["time"]["busy_s"].values())
    # a stacked training job counts once, not once per member: within its stage's wall
    for part in [state["init_time"], *(h["time"] for h in state["iterations"])]:
        assert part["busy_s"]["training"] <= part["stage_wall_s"]["train"] * 1.01
    # 2 slots of the thread pool
    first = state["iterations"][0]["time"]
    assert first["worker_s"] == pytest.approx(2 * first["wall_s"])


def test_resume_adds_a_session_and_keeps_stage_records(timed_run):
    run, before = timed_run
    records = (run.root / "iter-000" / timing.TIMING_FILE).read_text()
    with ThreadPoolExecutor(2) as pool:
        state = run_loop(RunContext(run, pool))
    assert (run.root / "iter-000" / timing.TIMING_FILE).read_text() == records
    sessions = json.loads((run.root / timing.TIMING_FILE).read_text())["sessions"]
    assert len(sessions) == 2 and state["time"]["n_sessions"] == 2
    assert state["time"]["run_wall_s"] == pytest.approx(sum(s["wall_s"] for s in sessions))
    assert state["time"]["stage_wall_s"] == before["time"]["stage_wall_s"]


def test_an_interrupted_session_is_recorded(tmp_path):
    with pytest.raises(KeyboardInterrupt), timing.Session(tmp_path):
        raise KeyboardInterrupt
    (session,) = json.loads((tmp_path / timing.TIMING_FILE).read_text())["sessions"]
    assert session["ended"] == "interrupted" and session["wall_s"] >= 0
    assert session["signal"] == "SIGINT"  # what a KeyboardInterrupt stands for


def test_a_session_records_where_a_signal_stopped_it_and_counts_while_it_runs(tmp_path):
    from eelt.orchestration.interrupt import Stopped

    with pytest.raises(Stopped), timing.Session(tmp_path) as session:
        running = timing.running_session(tmp_path)
        assert running["pid"] == os.getpid() and running["started"] == session.started
        assert timing.run_times(tmp_path, [], running_s=2.0)["n_sessions"] == 1  # under way
        assert timing.where() is None

        def body():
            assert timing.where() == "iter-003 label"
            raise Stopped(signal.SIGTERM)

        timing.timed(tmp_path / "iter-003", "label", tmp_path / "report.json", 1, body)
    record = json.loads((tmp_path / timing.TIMING_FILE).read_text())
    assert "running" not in record
    (done,) = record["sessions"]
    assert (done["ended"], done["signal"], done["at"]) == (
        "interrupted",
        "SIGTERM",
        "iter-003 label",
    )
    assert timing.run_times(tmp_path, [])["n_sessions"] == 1
    assert timing.interrupted_at() == "iter-003 label" and timing.where() is None


def test_a_session_closed_at_once_is_recorded_once(tmp_path):
    with timing.Session(tmp_path):
        timing.close_open_sessions(signal.SIGTERM)  # a hard stop, from another thread
    (session,) = json.loads((tmp_path / timing.TIMING_FILE).read_text())["sessions"]
    assert session["signal"] == "SIGTERM" and session["ended"] == "interrupted"
