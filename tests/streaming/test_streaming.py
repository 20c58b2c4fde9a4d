"""A tiny streaming run (EMT labels, two walkers, a thread pool of 2): what it persists, how it
ends, that its jobs overlap, that no label is computed twice, and that a resume redoes nothing."""

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from eelt.errors import EeltError
from eelt.loop import Loop, prepare_run, run_loop
from eelt.status_columns import ACCURACY_COLUMNS, EXPLORE_COLUMNS, fmt, labels_line, time_line
from tests.streaming.end_state import end_state
from tests.streaming.stream_config import (
    MAX_LABELS,
    N_INIT,
    CountingLoop,
    RecordingExecutor,
    label_calls,
    streaming_config,
)


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = prepare_run(streaming_config(tmp), tmp, tmp / "run")
        with RecordingExecutor(2) as pool:
            state = run_loop(CountingLoop(run, pool))
    finally:
        torch.set_num_threads(threads)
    return run, state, pool.jobs


def test_ends_on_the_label_budget_exactly(streamed):
    run, state, _ = streamed
    assert state["status"] == "budget_exhausted"
    assert state["n_labels"] == MAX_LABELS
    assert json.loads((run.root / "state.json").read_text()) == state
    assert len(list(run.labels_dir.glob("*.extxyz"))) == MAX_LABELS
    assert state["n_init_labeled"] == N_INIT
    assert state["n_train_labels"] + state["n_test_labels"] == MAX_LABELS
    generations = state["stream"]["generations_finished"]
    assert generations == state["stream"]["generations_started"] >= 2
    # the last generation only measured the last test frames (no candidates were left to train)
    assert state["models_dir"] == state["iterations"][-1]["models_dir"]
    assert state["models_dir"].startswith("stream/generations/gen-")


def test_segments_selections_labels_and_generations_are_persisted(streamed):
    run, state, _ = streamed
    stream = run.root / "stream"
    n_rounds = state["stream"]["rounds_closed"]
    for r in range(n_rounds):
        for w in range(2):
            name = f"r{r:04d}-w{w:03d}"
            assert (stream / "segments" / f"{name}.extxyz").is_file()
            assert (stream / "segments" / f"{name}.summary.json").is_file()
            for f in ("candidates.extxyz", "test_frames.extxyz", "report.json", "labels.json"):
                assert (stream / "selections" / name / f).is_file(), f"{name}/{f}"
        assert (stream / "rounds" / f"r{r:04d}.json").is_file()
    rows = state["iterations"]
    assert [row["generation"] for row in rows] == list(range(1, len(rows) + 1))
    n_tests = 0
    for row in rows:
        g = row["generation"]
        report = json.loads((stream / "generations" / f"gen-{g:03d}" / "report.json").read_text())
        n_tests += row["n_test_labeled"]
        # every generation is measured on every test frame labeled up to its data's cutoff
        assert report["test"]["n_frames"] == n_tests > 0
        assert report["test"]["force_rmse_meV_per_A"] > 0
        assert (run.root / f"data/test/iter-{g - 1:03d}.extxyz").is_file()
        if row["n_labeled"]:
            assert (stream / "generations" / f"gen-{g:03d}" / "model-0.pt").is_file()
            assert (run.root / f"data/iter-{g - 1:03d}.extxyz").is_file()
    assert sum(row["n_labeled"] for row in rows) + N_INIT == state["n_train_labels"]
    assert sum(row["n_test_labeled"] for row in rows) == state["n_test_labels"]


def test_walkers_take_newer_generations_one_round_late(streamed):
    run, state, _ = streamed
    stream = run.root / "stream"
    triggers = [
        json.loads(p.read_text())["round"]
        for p in sorted((stream / "rounds").glob("*.json"))
        if json.loads(p.read_text())["trigger"] is not None
    ]
    used = set()
    for p in sorted((stream / "selections").glob("*/report.json")):
        report = json.loads(p.read_text())
        assert report["generation"] == sum(t <= report["round"] - 2 for t in triggers)
        used.add(report["generation"])
    assert len(used) >= 2  # exploration moved on to a trained generation


def test_no_label_is_computed_twice(streamed):
    run, _, _ = streamed
    calls = label_calls(run.root)
    hashes = [h for h, _ in calls]
    assert not any(stored for _, stored in calls)
    assert len(hashes) == len(set(hashes)) == MAX_LABELS
    assert set(hashes) == {p.stem for p in run.labels_dir.glob("*.extxyz")}


def test_labels_and_training_overlap_walker_segments(streamed):
    _, _, jobs = streamed
    walkers = [(t0, t1) for name, t0, t1 in jobs if name == "walker_job"]
    others = [(name, t0, t1) for name, t0, t1 in jobs if name != "walker_job"]
    assert {name for name, _, _ in others} >= {"_run_labeler"}
    overlapping = {name for name, t0, t1 in others for w0, w1 in walkers if t0 < w1 and w0 < t1}
    assert overlapping, "no DFT or training job ran while a walker segment ran"


def test_prefect_history_artifact_renders_generations(streamed):
    from flows.artifacts import history_markdown

    _, state, _ = streamed
    text = history_markdown(state)
    assert "| 0 |" in text and "loop wall / labeling wall" in text


def test_status_columns_show_generations(streamed):
    _, state, _ = streamed
    for columns in (EXPLORE_COLUMNS, ACCURACY_COLUMNS):
        for row in state["iterations"]:
            for _, key, spec in columns:
                fmt(row.get(key), spec)
    assert "latest models: stream/generations/gen-" in labels_line(state)
    assert time_line(state).startswith("time: run")


def test_resume_of_a_finished_run_redoes_nothing(streamed, tmp_path):
    run, _, _ = streamed
    copy = tmp_path / "run"
    shutil.copytree(run.root, copy)
    (tmp_path / CountingLoop.log_name).write_text("")
    before = end_state(copy)
    mtimes = {p: p.stat().st_mtime_ns for p in copy.rglob("*") if p.is_file()}
    from eelt.rundir import RunDir

    with ThreadPoolExecutor(2) as pool:
        state = run_loop(CountingLoop(RunDir(copy), pool))
    changed = {
        p.relative_to(copy).as_posix()
        for p in copy.rglob("*")
        if p.is_file() and mtimes.get(p) != p.stat().st_mtime_ns
    }
    assert changed <= {"state.json", "timing.json", "stream/state.json"}, changed
    assert label_calls(copy) == []
    assert end_state(copy) == before
    assert state["status"] == "budget_exhausted"


def test_modes_refuse_each_others_runs(tmp_path):
    cfg = streaming_config(tmp_path)
    run = prepare_run(cfg, tmp_path, tmp_path / "run")
    (run.root / "iter-000").mkdir()
    with pytest.raises(EeltError, match="synchronous run"):
        run_loop(Loop(run, ThreadPoolExecutor(1)))
    (run.root / "iter-000").rmdir()
    (run.root / "stream").mkdir()
    synchronous = cfg.model_copy(
        update={"loop": cfg.loop.model_copy(update={"mode": "synchronous"})}
    )
    sync = prepare_run(synchronous, tmp_path, tmp_path / "run")
    with pytest.raises(EeltError, match="streaming run"):
        run_loop(Loop(sync, ThreadPoolExecutor(1)))
