"""The synchronous run SIGKILLed at random points, each time resumed: no label is computed while
its label file exists, nothing finished is lost, and the run ends in the very state of an
uninterrupted one (same selections, labels, training data, models' errors and status).

The kill points are random milestones of the uninterrupted run (a file it wrote: a label, a
walker's summary, a stage's report, a calibration, a model; the names are the same in every run
of the config), each followed by a random delay, so the kills land in the initial labels and
training, in walkers, examinations, labels, calibrations and training. The default suite kills
at 8 points; the slow one at 20.
"""

import json
import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from eelt.orchestration.runs import prepare_run, run_loop
from tests.loop_config import cu_start, tiny_config
from tests.orchestration.streaming.stream_config import CountingRun, label_calls
from tests.orchestration.sync_child import run_sync

MILESTONES = (
    "init/*/report.json",
    "labels/*.extxyz",
    "iter-*/explore/*.summary.json",
    "iter-*/*/report.json",
    "iter-*/examine/calibration.json",
    "*/train/model-*.pt",
)
# what depends on the clock, or on which attempt computed a label, not on the run's decisions
# (and every key in seconds: "..._s")
CLOCK = {"time", "init_time", "started", "busy_share", "dft_core_hours", "dft_core_hours_computed",
         "dft_core_hours_total", "n_cached", "n_computed", "wall_over_label_wall",
         "wall_over_dft_wall"}  # fmt: skip


def sync_config(directory: Path):
    """Init (7 labels) and one iteration of two walkers, 3 candidates and 4 test frames; short
    training."""
    return tiny_config(
        cu_start(directory),
        train={"steps": 12, "warm_steps": 8},
        loop={"max_iterations": 1},
        explore={"stages": [{"temperatures_K": [300, 900], "n_steps": 30, "timestep_fs": 2.0,
                             "dump_interval": 5, "max_iterations": 1}], "plot_walkers": False},
    )  # fmt: skip


# a member whose model was saved before a kill, but not its stage's metrics.json, is recorded
# on resume from its learning curve, which lacks these (eelt.train.trainer._previous_result):
# its model and errors are the same
MEMBER_RESUMED = {"init_from", "n_train_frames", "n_val_frames"}


def _strip(obj, root: str):
    if isinstance(obj, dict):
        drop = CLOCK | (MEMBER_RESUMED if {"member", "checkpoint"} <= set(obj) else set())
        return {
            k: _strip(v, root) for k, v in obj.items() if k not in drop and not k.endswith("_s")
        }
    if isinstance(obj, list):
        return [_strip(v, root) for v in obj]
    if isinstance(obj, str):
        return obj.replace(root, "<run>")
    return obj


def end_state(root: Path) -> dict:
    """Every report, calibration and state.json (without the clock), the label store's hashes
    and the frame counts of the training and test data."""
    records = {
        str(p.relative_to(root)): _strip(json.loads(p.read_text()), str(root))
        for pattern in (
            "state.json",
            "init/*/report.json",
            "iter-*/*/report.json",
            "iter-*/examine/calibration.json",
        )  # fmt: skip
        for p in sorted(root.glob(pattern))
    }
    return {
        "records": records,
        "labels": sorted(p.stem for p in (root / "labels").glob("*.extxyz")),
        "data": {
            p.name: len(p.read_text().splitlines()) for p in sorted(root.glob("data/**/*.extxyz"))
        },
    }


def milestones(root: Path) -> list[Path]:
    files = {p for pattern in MILESTONES for p in root.glob(pattern)}
    return [p.relative_to(root) for p in sorted(files, key=lambda p: p.stat().st_mtime_ns)]


@pytest.fixture
def forkserver():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.orchestration.sync_child"])
    return ctx


def kill_and_resume(tmp_path: Path, forkserver, trials: int, seed: int) -> None:
    (tmp_path / "ref").mkdir()
    (tmp_path / "kill").mkdir()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = prepare_run(sync_config(tmp_path / "ref"), tmp_path / "ref", tmp_path / "ref/run")
        with ThreadPoolExecutor(2) as pool:
            run_loop(CountingRun(ref, pool))
    finally:
        torch.set_num_threads(threads)
    killed = prepare_run(sync_config(tmp_path / "kill"), tmp_path / "kill", tmp_path / "kill/run")

    rng = random.Random(seed)
    events = milestones(ref.root)
    points = sorted(rng.sample(range(len(events)), trials))
    outcomes = []
    for k in points:
        child = forkserver.Process(target=run_sync, args=(str(killed.root),))
        child.start()
        deadline = time.monotonic() + 120
        while not (killed.root / events[k]).exists() and child.is_alive():
            assert time.monotonic() < deadline, f"{events[k]} never appeared"
            time.sleep(0.02)
        child.join(timeout=rng.uniform(0.0, 0.3))
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
            child.join()
            outcomes.append((str(events[k]), "killed"))
        else:
            assert child.exitcode == 0, f"the run failed on its own (exit {child.exitcode})"
            outcomes.append((str(events[k]), "ended"))
    child = forkserver.Process(target=run_sync, args=(str(killed.root),))
    child.start()
    child.join(timeout=300)
    assert child.exitcode == 0
    n_killed = sum(outcome == "killed" for _, outcome in outcomes)
    assert n_killed >= trials - 2, outcomes
    where = {point.split("/")[0] for point, outcome in outcomes if outcome == "killed"}
    assert len(where) >= 2, outcomes  # kills landed in more than one part of the run

    # never computed when its label file existed; again only when a kill hit it in flight
    calls = label_calls(killed.root)
    assert not [h for h, stored in calls if stored]
    again = sum(n - 1 for n in Counter(h for h, _ in calls).values())
    assert again <= 2 * n_killed  # at most the two in flight on the pool's workers per kill
    ref_calls = [h for h, _ in label_calls(ref.root)]
    assert len(ref_calls) == len(set(ref_calls))

    want, got = end_state(ref.root), end_state(killed.root)
    assert got["labels"] == want["labels"] == sorted(set(ref_calls))
    assert {h for h, _ in calls} == set(want["labels"])
    assert got["data"] == want["data"]
    assert set(got["records"]) == set(want["records"])
    for name in want["records"]:
        a, b = got["records"][name], want["records"][name]
        assert a == b, (name, {k: (a.get(k), b.get(k)) for k in a if a.get(k) != b.get(k)})
    assert got["records"]["state.json"]["status"] == "max_iterations"
    # a killed session leaves no record (one killed after its end may have written its own)
    sessions = json.loads((killed.root / "timing.json").read_text())["sessions"]
    n_ended = sum(outcome == "ended" for _, outcome in outcomes)
    assert 1 + n_ended <= len(sessions) <= 2 + n_ended
    assert {s["ended"] for s in sessions} == {"finished"}
    print(f"{n_killed} kills, {again} labels computed again:", outcomes)


def test_killed_at_random_points_resumes_to_the_uninterrupted_end_state(tmp_path, forkserver):
    kill_and_resume(tmp_path, forkserver, trials=8, seed=11)


@pytest.mark.slow
def test_killed_at_20_random_points_resumes_to_the_uninterrupted_end_state(tmp_path, forkserver):
    kill_and_resume(tmp_path, forkserver, trials=20, seed=7)
