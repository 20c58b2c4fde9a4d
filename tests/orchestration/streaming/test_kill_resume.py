"""The streaming run SIGKILLed at random points, 20 times in a row, each time resumed: no label
is ever computed while its label file exists, nothing finished is lost, and the run ends in the
very state of an uninterrupted one (same labels, choices, generations and test errors).

The kill points are random milestones of the uninterrupted run (a file it wrote: a label, a
segment's summary, a selection, its labels, a round's close, a generation's report; the names
are the same in every run of the config), each followed by a random delay, so the kills land all
along the run: in the initial labels and training, in walker segments, labels and generations.
"""

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
from tests.orchestration.streaming.child import run_stream
from tests.orchestration.streaming.end_state import end_state
from tests.orchestration.streaming.stream_config import CountingRun, label_calls, streaming_config

TRIALS = 20
MILESTONES = (
    "init/*/report.json",
    "labels/*.extxyz",
    "stream/segments/*.summary.json",
    "stream/selections/*/report.json",
    "stream/selections/*/labels.json",
    "stream/rounds/*.json",
    "stream/generations/*/report.json",
)


@pytest.fixture
def forkserver():
    """Children forked from a server that imported eelt, torch and ase once (~0.2 s a start)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.orchestration.streaming.child"])
    return ctx


def milestones(root: Path) -> list[Path]:
    """The files of a finished run that mark its progress, oldest first (relative paths)."""
    files = [p for pattern in MILESTONES for p in root.glob(pattern)]
    return [p.relative_to(root) for p in sorted(files, key=lambda p: p.stat().st_mtime_ns)]


def test_killed_at_random_points_resumes_to_the_uninterrupted_end_state(tmp_path, forkserver):
    (tmp_path / "ref").mkdir()
    (tmp_path / "kill").mkdir()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = prepare_run(
            streaming_config(tmp_path / "ref"), tmp_path / "ref", tmp_path / "ref/run"
        )
        with ThreadPoolExecutor(2) as pool:
            run_loop(CountingRun(ref, pool))
    finally:
        torch.set_num_threads(threads)
    killed = prepare_run(
        streaming_config(tmp_path / "kill"), tmp_path / "kill", tmp_path / "kill/run"
    )

    rng = random.Random(7)
    events = milestones(ref.root)
    points = sorted(rng.sample(range(len(events)), TRIALS))
    outcomes = []
    for k in points:
        child = forkserver.Process(target=run_stream, args=(str(killed.root),))
        child.start()
        deadline = time.monotonic() + 120
        while not (killed.root / events[k]).exists() and child.is_alive():
            assert time.monotonic() < deadline, f"{events[k]} never appeared"
            time.sleep(0.02)
        child.join(timeout=rng.uniform(0.0, 0.5))
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
            child.join()
            outcomes.append((str(events[k]), "killed"))
        else:
            assert child.exitcode == 0, f"the run failed on its own (exit {child.exitcode})"
            outcomes.append((str(events[k]), "ended"))
    child = forkserver.Process(target=run_stream, args=(str(killed.root),))
    child.start()
    child.join(timeout=300)
    assert child.exitcode == 0
    n_killed = sum(outcome == "killed" for _, outcome in outcomes)
    assert n_killed >= TRIALS - 2, outcomes
    where = {point.split("/")[0] for point, outcome in outcomes if outcome == "killed"}
    assert where >= {"labels", "stream"}, outcomes

    # never computed when its label file existed; computed again only when a kill hit it in flight
    calls = label_calls(killed.root)
    assert not [h for h, stored in calls if stored]
    again = sum(n - 1 for n in Counter(h for h, _ in calls).values())
    assert again <= 2 * n_killed  # at most the two in flight on the pool's workers per kill
    # the uninterrupted run computed each label exactly once
    ref_calls = [h for h, _ in label_calls(ref.root)]
    assert len(ref_calls) == len(set(ref_calls))

    want, got = end_state(ref.root), end_state(killed.root)
    assert got["labels"] == want["labels"] == sorted(set(ref_calls))
    assert {h for h, _ in calls} == set(want["labels"])
    for key in ("state", "rows", "selections", "generations", "rounds", "data"):
        assert got[key] == want[key], key
    assert got["state"]["status"] == "budget_exhausted"
    print(f"{n_killed} kills, {again} labels computed again:", outcomes)
