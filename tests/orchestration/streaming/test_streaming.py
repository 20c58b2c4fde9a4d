"""A tiny streaming run (EMT labels, two walkers, a thread pool of 2): what it persists, how it
ends, that its jobs overlap, that no label is computed twice, and that a resume redoes nothing."""

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from eelt.errors import EeltError
from eelt.label import EMTLabeler, LabelError
from eelt.orchestration.context import RunContext
from eelt.orchestration.initial import init_label
from eelt.orchestration.runs import prepare_run, run_loop
from eelt.orchestration.status_columns import (
    ACCURACY_COLUMNS,
    EXPLORE_COLUMNS,
    fmt,
    labels_line,
    stream_line,
    time_line,
)
from tests.orchestration.streaming.end_state import end_state
from tests.orchestration.streaming.stream_config import (
    MAX_LABELS,
    N_INIT,
    CountingRun,
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
            state = run_loop(CountingRun(run, pool))
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
        stage = json.loads((stream / "rounds" / f"r{r:04d}.json").read_text())["stage"]
        for w in range(2 if stage == 0 else 1):  # stage 1: one walker
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


def test_stages_follow_each_other_as_in_the_synchronous_loop(streamed):
    """Stage 0 ends as its second generation starts (its max_iterations); stage 1 begins two
    rounds after that close, with one walker (max_starts 1) from the last frame of walker 0's
    segment in the round before, and explores until the label budget ends the run."""
    import ase.io

    run, state, _ = streamed
    stream = run.root / "stream"
    rounds = [json.loads(p.read_text()) for p in sorted((stream / "rounds").glob("*.json"))]
    ended = [rec for rec in rounds if rec["stage_end"]]
    assert len(ended) == 1 and ended[0]["stage"] == 0 and ended[0]["next_stage"] == 1
    assert ended[0]["stage_end"]["status"] == "max_iterations"
    assert ended[0]["trigger"] == 2  # the stage's second generation
    c = ended[0]["round"]
    assert [rec["stage"] for rec in rounds] == [0] * (c + 2) + [1] * (len(rounds) - c - 2)
    assert state["stream"]["stages_ended"] == [{"stage": 0, "round": c, **ended[0]["stage_end"]}]
    start = ase.io.read(stream / "stages" / "stage-001.extxyz", ":")
    assert len(start) == 1
    before = ase.io.read(stream / "segments" / f"r{c + 1:04d}-w000.extxyz", ":")
    first = ase.io.read(stream / "segments" / f"r{c + 2:04d}-w000.extxyz", ":")
    assert abs(start[0].positions - before[-1].positions).max() < 1e-9
    assert abs(first[0].positions - start[0].positions).max() < 1e-9
    assert not (stream / "segments" / f"r{c + 2:04d}-w001.extxyz").exists()
    for rec in rounds[c + 2 :]:
        report = json.loads(
            (stream / "selections" / f"r{rec['round']:04d}-w000" / "report.json").read_text()
        )
        assert report["stage"] == 1 and report["walker_name"].endswith("T600")
    assert {row["stage"] for row in state["iterations"]} == {0, 1}
    assert state["status"] == "budget_exhausted"


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

    run, state, _ = streamed
    text = history_markdown(state)
    assert "| 0 |" in text and "loop wall / DFT wall" in text
    from flows.artifacts import generation_plots_markdown

    for row in state["iterations"]:
        plots = generation_plots_markdown(run.root, row)
        assert plots.count("](data:image/png;base64,") == (2 if row["n_labeled"] else 1)
    t = state["time"]
    assert t["wall_over_dft_wall"] == pytest.approx(t["run_wall_s"] / t["dft_wall_s"])
    assert t["dft_wall_s"] == pytest.approx(t["busy_s"]["dft"] / 2)  # 2 worker slots
    # a stacked generation's time counts once per stack (one stack on a thread pool)
    for row in state["iterations"]:
        g = row["generation"]
        report = json.loads(
            (run.root / "stream" / "generations" / f"gen-{g:03d}" / "report.json").read_text()
        )
        if report.get("members"):
            assert report["busy_s"] == pytest.approx(max(m["wall_s"] for m in report["members"]))


def test_status_columns_show_generations(streamed):
    _, state, _ = streamed
    for columns in (EXPLORE_COLUMNS, ACCURACY_COLUMNS):
        for row in state["iterations"]:
            for _, key, spec in columns:
                fmt(row.get(key), spec)
    assert "latest models: stream/generations/gen-" in labels_line(state)
    assert time_line(state).startswith("time: run")
    assert "stage 1; stage 0 ended at round" in stream_line(state)


def test_resume_of_a_finished_run_redoes_nothing(streamed, tmp_path):
    run, _, _ = streamed
    copy = tmp_path / "run"
    shutil.copytree(run.root, copy)
    (tmp_path / CountingRun.log_name).write_text("")
    before = end_state(copy)
    mtimes = {p: p.stat().st_mtime_ns for p in copy.rglob("*") if p.is_file()}
    from eelt.orchestration.rundir import RunDir

    with ThreadPoolExecutor(2) as pool:
        state = run_loop(CountingRun(RunDir(copy), pool))
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
        run_loop(RunContext(run, ThreadPoolExecutor(1)))
    (run.root / "iter-000").rmdir()
    (run.root / "stream").mkdir()
    synchronous = cfg.model_copy(
        update={"loop": cfg.loop.model_copy(update={"mode": "synchronous"})}
    )
    sync = prepare_run(synchronous, tmp_path, tmp_path / "run")
    with pytest.raises(EeltError, match="streaming run"):
        run_loop(RunContext(sync, ThreadPoolExecutor(1)))


@dataclass(frozen=True)
class BrokenAfterInit(EMTLabeler):
    """EMT whose labels fail with an SCF-like error once the file ``flag`` exists."""

    flag: str = ""

    def __call__(self, atoms):
        if Path(self.flag).exists():
            raise LabelError("SCF not converged (test)", kind="scf_not_converged")
        return super().__call__(atoms)


def test_failed_labels_above_the_limit_stop_the_run_and_a_higher_limit_goes_on(
    tmp_path, monkeypatch
):
    flag = tmp_path / "broken"
    monkeypatch.setattr(
        "eelt.orchestration.context.job_labeler", lambda config: BrokenAfterInit(flag=str(flag))
    )
    cfg = streaming_config(tmp_path, stages=1)
    data = cfg.model_dump(mode="json")
    data["label"]["max_failed_fraction"] = 0.5
    from eelt.config import parse_config

    run = prepare_run(parse_config(data), tmp_path, tmp_path / "run")
    with ThreadPoolExecutor(2) as pool:
        loop = RunContext(run, pool)
        init_label(loop)
        flag.touch()
        with pytest.raises(
            EeltError, match=r"label: \d+ of \d+ labels failed in generation 1 "
        ) as e:
            run_loop(loop)
    assert "> label.max_failed_fraction 0.5" in str(e.value) and "\n" not in str(e.value)
    assert not (run.root / "stream/generations/gen-001/report.json").exists()
    # a resume that accepts failures goes on from where it stopped: no segment runs again
    segments = {p: p.stat().st_mtime_ns for p in (run.root / "stream/segments").glob("*.extxyz")}
    data["label"]["max_failed_fraction"] = 1.0
    run = prepare_run(parse_config(data), tmp_path, tmp_path / "run")
    with ThreadPoolExecutor(2) as pool:
        state = run_loop(RunContext(run, pool))
    assert state["status"] in ("budget_exhausted", "stalled")
    assert state["iterations"][0]["n_label_failed"] > 0
    assert all(p.stat().st_mtime_ns == t for p, t in segments.items())


def test_each_generation_calibrates_the_ensembles_that_explored_its_rounds(streamed):
    """calibration.json holds every labeled frame of the generation's rounds with the error of
    the generation that explored it (checked against a fresh prediction) and its deviation."""
    import ase.io
    import numpy as np

    from eelt.model import Ensemble
    from eelt.train import predict_frames
    from tests.examine.test_calibration import assert_calibration_figure, assert_calibration_record

    run, state, _ = streamed
    stream = run.root / "stream"
    checked = 0
    for row in state["iterations"]:
        g = row["generation"]
        folder = stream / "generations" / f"gen-{g:03d}"
        cal = json.loads((folder / "calibration.json").read_text())
        assert_calibration_record(cal)  # Spearman and fit recomputed from its frames
        kinds = {f["kind"] for f in cal["frames"]}
        colours = {"candidate": "tab:orange", "test": "tab:blue"}
        assert_calibration_figure(
            folder / "calibration.png",
            shown=[c for k, c in colours.items() if k in kinds],
            not_shown=[c for k, c in colours.items() if k not in kinds],
        )
        assert len(cal["frames"]) == row["n_labeled"] + row["n_test_labeled"]
        assert sorted({f["explored_by"] for f in cal["frames"]}) == cal["explored_by"]
        assert cal["explored_by"] == row["explored_by"] or not cal["frames"]
        assert cal["explorer_test"]["n_frames"] == row["n_test_labeled"]
        assert (
            row["explorer_test_force_rmse_meV_per_A"]
            == cal["explorer_test"]["force_rmse_meV_per_A"]
        )
        # one test frame again, by hand: the explorer's error and the deviation it recorded
        tests = [f for f in cal["frames"] if f["kind"] == "test"]
        if not tests:
            continue
        first = tests[0]
        name = f"r{first['round']:04d}-w{first['walker']:03d}"
        labeled = ase.io.read(run.root / f"data/test/iter-{g - 1:03d}.extxyz", ":")
        picked = ase.io.read(stream / "selections" / name / "test_frames.extxyz", ":")
        frame = next(a for a in labeled if np.allclose(a.positions, picked[0].positions, atol=1e-8))
        explorer = run.root / cal["models_dirs"][str(first["explored_by"])]
        error = predict_frames(Ensemble.load(explorer), [frame]).max_force_error_eV_per_A[0]
        assert first["max_force_error_eV_per_A"] == pytest.approx(error, rel=1e-5)
        assert first["max_devi_f"] == pytest.approx(picked[0].info["max_devi_f"])
        checked += 1
    assert checked >= 2


def test_calibrated_trust_levels_come_from_the_newest_calibration_a_round_may_see(tmp_path):
    from eelt.config import parse_config
    from eelt.examine import calibrated_trust_levels

    data = streaming_config(tmp_path, stages=1).model_dump(mode="json")
    data["examine"].update({"trust_levels": "calibrated", "target_force_error_eV_per_A": 0.05})
    cfg = parse_config(data)
    run = prepare_run(cfg, tmp_path, tmp_path / "run")
    with ThreadPoolExecutor(2) as pool:
        state = run_loop(RunContext(run, pool))
    stream = run.root / "stream"
    crossings = {}
    for folder in sorted((stream / "generations").glob("gen-*")):
        cal = json.loads((folder / "calibration.json").read_text())
        crossings[cal["generation"]] = cal["calibration"]["crossing_eV_per_A"]
    calibrated = 0
    for path in sorted((stream / "selections").glob("*/report.json")):
        report = json.loads(path.read_text())
        seen = [g for g in range(report["generation"], 0, -1) if crossings.get(g) is not None]
        if not seen:
            assert report["trust_source"] == "config"
            continue
        lo, hi = calibrated_trust_levels(
            crossings[seen[0]], tuple(cfg.examine.trust_lo_bounds_eV_per_A), 4.0
        )
        assert report["trust_source"] == f"calibrated in generation {seen[0]}"
        assert (report["trust_lo_eV_per_A"], report["trust_hi_eV_per_A"]) == pytest.approx((lo, hi))
        calibrated += 1
    assert calibrated >= 2, crossings
    assert state["status"] in ("budget_exhausted", "converged", "stalled")


def test_a_walker_goes_on_from_the_end_of_its_previous_segment_velocities_included(streamed):
    import ase.io
    from ase.constraints import FixCom

    from eelt import keys

    run, _, _ = streamed
    segments = run.root / "stream" / "segments"
    carried = 0
    for end_path in sorted(segments.glob("*.end.extxyz")):
        r, w = int(end_path.name[1:5]), int(end_path.name[7:10])
        following = segments / f"r{r + 1:04d}-w{w:03d}.extxyz"
        records = [run.root / "stream" / "rounds" / f"r{k:04d}.json" for k in (r, r + 1)]
        if not all(p.is_file() for p in records):
            continue  # a segment past the run's end
        stages = [json.loads(p.read_text())["stage"] for p in records]
        if stages[0] != stages[1]:  # a new stage starts from its own starts
            continue
        before = ase.io.read(segments / f"r{r:04d}-w{w:03d}.extxyz", ":")
        if not following.is_file() or before[-1].info["max_devi_f"] > 5.0:  # trust_hi
            continue
        end = ase.io.read(end_path)
        first = ase.io.read(following, 0)
        assert abs(first.positions - end.positions).max() < 1e-6
        assert abs(end.positions - before[-1].positions).max() < 1e-6  # its last dump
        # the first frame's kinetic temperature is the end state's: the velocities went on
        end.set_constraint(FixCom())  # as in the MD: 3N - 3 degrees of freedom
        assert first.info[keys.KINETIC_TEMPERATURE_K] == pytest.approx(
            end.get_temperature(), rel=1e-5
        )
        carried += 1
    assert carried >= 4
