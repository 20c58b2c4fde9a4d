"""Active learning against random selection on a finished tiny EMT run."""

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from typer.testing import CliRunner

from eelt.atomic import write_frames
from eelt.cli import app
from eelt.errors import EeltError
from eelt.label import EMTLabeler, LabelError, label_frames
from eelt.model import DeepPot, Ensemble
from eelt.orchestration.context import RunContext
from eelt.orchestration.runs import prepare_run, run_loop
from eelt.tools.baseline import (
    FrameIndex,
    RandomDraw,
    draw_random_frames,
    explored_frames,
    read_all,
    run_baseline,
)
from eelt.train.metrics import evaluate_rmse
from tests.loop_config import cu_start, tiny_config

NS = (8, 10)


def reference_frames(n=3, seed=5):
    """Rattled Cu cells labeled with EMT: a user's dataset, independent of the run."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        frames.append(EMTLabeler()(atoms))
    return frames


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A two-iteration tiny run; test frames drawn from iteration 0 if the loop made none."""
    tmp = tmp_path_factory.mktemp("baseline")
    run = prepare_run(tiny_config(cu_start(tmp)), tmp, tmp / "run")
    with ThreadPoolExecutor(2) as pool:
        run_loop(RunContext(run, pool))
        if not run.test_data_files():
            explored = read_all(run.explored_files(0))
            picks = [explored[i] for i in (1, 3, 8, 10)]  # not step 0: the start itself
            report = label_frames(picks, EMTLabeler(), pool, run.labels_dir)
            write_frames(run.test_data_file(0), report.labeled)
    ref = tmp / "reference.extxyz"
    write_frames(ref, reference_frames())
    return run, ref


@pytest.fixture(scope="module")
def report(finished):
    run, ref = finished
    return run_baseline(run.root, list(NS), data=ref)


def positions(frames):
    return [a.positions.copy() for a in frames]


def test_both_sets_train_alike_on_equal_numbers_of_frames(finished, report):
    run, _ = finished
    out = run.root / "baseline"
    for n in NS:
        sets = {s: ase.io.read(out / f"{s}-N{n}.extxyz", ":") for s in ("selected", "random")}
        assert {s: len(f) for s, f in sets.items()} == {"selected": n, "random": n}
        manifests = {s: json.loads((out / f"N{n}/{s}/set.json").read_text()) for s in sets}
        assert manifests["selected"]["train"] == manifests["random"]["train"] == report["train"]
        metrics = {s: json.loads((out / f"N{n}/{s}/metrics.json").read_text()) for s in sets}
        for m in range(2):
            hparams = [DeepPot.load(out / f"N{n}/{s}/model-{m}.pt").hparams for s in sets]
            assert hparams[0] == hparams[1]
            members = [metrics[s]["members"][m] for s in sets]
            for key in ("steps", "seed", "n_train_frames", "n_val_frames", "init_from"):
                assert members[0][key] == members[1][key], key
            assert members[0]["init_from"] is None and members[0]["steps"] == 30
    # the selected set is the run's own training data, in order
    training = read_all(run.data_files())
    selected = ase.io.read(out / "selected-N10.extxyz", ":")
    assert all(
        np.allclose(a, b)
        for a, b in zip(positions(selected), positions(training[:10]), strict=True)
    )


def test_random_set_is_init_plus_fresh_explored_frames(finished, report):
    run, _ = finished
    init = read_all([run.data_dir / "init.extxyz"])
    test = read_all(run.test_data_files())
    training = read_all(run.data_files())
    assert report["n_init"] == len(init) == 7 and report["n_test_frames"] == len(test) > 0
    random = ase.io.read(run.root / "baseline/random-N10.extxyz", ":")
    assert all(np.allclose(a, b) for a, b in zip(positions(random), positions(init), strict=False))
    drawn = random[len(init) :]
    explored, test_index, train_index = (
        FrameIndex(explored_frames(run)),
        FrameIndex(test),
        FrameIndex(training),
    )
    seen = FrameIndex()
    for atoms in drawn:
        assert atoms in explored and atoms not in test_index and atoms not in train_index
        assert atoms not in seen
        seen.add(atoms)
    ref = EMTLabeler()(drawn[0])  # labeled by the run's labeler
    assert np.allclose(drawn[0].get_forces(), ref.get_forces())


def test_smaller_random_set_is_a_prefix_of_the_larger(finished, report):
    run, _ = finished
    small, large = (ase.io.read(run.root / f"baseline/random-N{n}.extxyz", ":") for n in NS)
    assert len(small) < len(large)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(positions(small), positions(large[: len(small)]), strict=True)
    )
    first, second = report["results"]
    assert first["random"]["n_labels_computed"] <= second["random"]["n_labels_computed"]
    assert second["random"]["n_labels_computed"] <= NS[1] - 7
    assert first["selected"]["n_labels_computed"] == 0


def test_report_table_and_plot_are_written(finished, report):
    run, ref = finished
    out = run.root / "baseline"
    assert json.loads((out / "report.json").read_text()) == report
    assert [e["n_labels"] for e in report["results"]] == list(NS)
    # each RMSE recomputed here: the set's ensemble on the run's test frames and on --data
    frames = {"test": read_all(run.test_data_files()), "data": ase.io.read(ref, ":")}
    for entry in report["results"]:
        for name in ("selected", "random"):
            ensemble = Ensemble.load(run.root / entry[name]["models_dir"])
            for where, n_frames in (("test", report["n_test_frames"]), ("data", 3)):
                metrics = entry[name][where]
                assert metrics["n_frames"] == n_frames == len(frames[where])
                again = evaluate_rmse(ensemble, frames[where])
                for key in ("force_rmse_meV_per_A", "energy_rmse_meV_per_atom"):
                    assert metrics[key] == pytest.approx(again[key], rel=1e-9), (where, key)
                forces = np.concatenate([a.get_forces() for a in frames[where]])
                zero_force_rmse = 1e3 * np.sqrt(np.mean(forces**2))
                # beats predicting zero force (measured: 0.74-0.90 of its error)
                assert 0 < metrics["force_rmse_meV_per_A"] < zero_force_rmse
    table = (out / "report.md").read_text()
    assert "| N | set |" in table and table.count("| random |") == len(NS)
    assert (out / "force_rmse.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_computes_no_label_and_trains_no_member(finished, report):
    run, ref = finished
    checkpoints = sorted((run.root / "baseline").glob("N*/*/model-*.pt"))
    assert len(checkpoints) == 2 * 2 * len(NS)
    before = {p: p.stat().st_mtime_ns for p in checkpoints}
    again = run_baseline(run.root, list(NS), data=ref)
    for entry in again["results"]:
        for name in ("selected", "random"):
            assert entry[name]["n_labels_computed"] == 0
            assert entry[name]["n_members_trained"] == 0
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == before
    for old, new in zip(report["results"], again["results"], strict=True):
        for name in ("selected", "random"):  # same sets, same models, same numbers
            for key in ("data_file", "models_dir", "test", "data"):
                assert new[name][key] == old[name][key], (name, key)


def test_cli_prints_json_and_refuses_a_non_run(finished, report, tmp_path):
    run, _ = finished
    runner = CliRunner()
    result = runner.invoke(app, ["baseline", str(run.root), "--labels", "8", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert [e["n_labels"] for e in printed["results"]] == [8]
    assert printed["results"][0]["random"]["n_members_trained"] == 0
    table = runner.invoke(app, ["baseline", str(run.root), "--labels", "8", "--quiet"])
    assert table.exit_code == 0 and "random" in table.stdout and "selected" in table.stdout
    bad = runner.invoke(app, ["baseline", str(tmp_path)])
    assert bad.exit_code == 2
    assert bad.stderr.strip().splitlines() == [
        f"error: {tmp_path}: not an eelt run directory (no eelt.yaml)"
    ]


def test_user_errors_before_any_work(finished, tmp_path):
    run, _ = finished
    with pytest.raises(EeltError, match=r"--labels 7: at least 8 \(the run's 7 initial"):
        run_baseline(run.root, [7])
    with pytest.raises(
        EeltError, match=r"--labels 10000: needs 9993 random frames .* only \d+ usable"
    ):
        run_baseline(run.root, [10000])
    with pytest.raises(EeltError, match=r"--set thermal: .* has no thermal sampler trajectory"):
        run_baseline(run.root, [8], sets=["thermal"])
    with pytest.raises(EeltError, match=r"--set best: not one of selected, random, thermal"):
        run_baseline(run.root, [8], sets=["best"])
    with pytest.raises(EeltError, match=r"--data .*nothing.extxyz: no such file"):
        run_baseline(run.root, [8], data=tmp_path / "nothing.extxyz")
    unlabeled = tmp_path / "unlabeled.extxyz"
    ase.io.write(unlabeled, [bulk("Cu", "fcc", a=3.6, cubic=True)] * 2)
    with pytest.raises(EeltError, match=r"--data .*unlabeled.extxyz: frame 0 has no reference"):
        run_baseline(run.root, [8], data=unlabeled)


def test_frame_index_matches_within_tolerance():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    index = FrameIndex([atoms])
    near, far, other = atoms.copy(), atoms.copy(), atoms.copy()
    near.positions[0] += 4e-7
    far.positions[0] += 1e-4
    other.numbers[1] = 79
    assert near in index and far not in index and other not in index
    frames = [atoms, near, far]
    assert len(draw_random_frames(frames, FrameIndex(), 3, np.random.default_rng(0))) == 2
    only = draw_random_frames(frames, FrameIndex([far]), 3, np.random.default_rng(0))
    assert len(only) == 1 and only[0] is not far  # near repeats atoms; far is excluded


@dataclass(frozen=True)
class FlakyEMT(EMTLabeler):
    """EMT that fails (as an unconverged SCF would) on frames marked info['fail']."""

    name: ClassVar[str] = "flaky-emt"

    def __call__(self, atoms):
        if atoms.info.get("fail"):
            raise LabelError("SCF not converged")
        return super().__call__(atoms)


def test_random_draw_skips_failed_labels_and_remembers_them(tmp_path):
    rng = np.random.default_rng(3)
    frames = []
    for i in range(6):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        atoms.info["fail"] = i in (1, 2)
        frames.append(atoms)
    failures: dict[str, str] = {}
    with ThreadPoolExecutor(2) as pool:
        draw = RandomDraw(frames, FlakyEMT(), pool, tmp_path, failures)
        got = draw.take(3)
        assert [f.info["fail"] for f in got] == [False] * 3
        assert np.allclose(got[1].positions, frames[3].positions)  # 1 and 2 skipped
        assert draw.n_computed == 3 and len(failures) == 2
        assert set(failures.values()) == {"LabelError: SCF not converged"}
        again = RandomDraw(frames, FlakyEMT(), pool, tmp_path, failures)
        assert len(again.take(4)) == 4 and again.n_computed == 1  # failed ones not retried
        with pytest.raises(EeltError, match="the explored frames ran out: 5 random frames"):
            again.take(5)


def test_thermal_set_is_random_sampler_frames_none_held_out(tmp_path):
    """With a thermal sampler, the third set is N frames of its MD drawn at random, none of
    them a yardstick, test or training frame; every set is measured on the yardstick."""
    sampler = {"kind": "emt", "n_frames": 3, "n_steps": 60, "dump_fs": 4.0, "n_yardstick": 3}
    cfg = tiny_config(cu_start(tmp_path), init={"n_perturbed": 2, "sampler": sampler})
    run = prepare_run(cfg, tmp_path, tmp_path / "run")
    with ThreadPoolExecutor(2) as pool:
        run_loop(RunContext(run, pool))
        report = run_baseline(run.root, [8], executor=pool)
    assert report["sets"] == ["selected", "random", "thermal"]
    thermal = ase.io.read(run.root / "baseline/thermal-N8.extxyz", ":")
    assert len(thermal) == 8 and report["n_yardstick_frames"] == 3
    pool_index = FrameIndex(ase.io.read(run.sampler_trajectory_file, ":"))
    held = FrameIndex(read_all([*run.yardstick_files(), *run.test_data_files(), *run.data_files()]))
    assert all(a in pool_index and a not in held for a in thermal)
    assert len(FrameIndex(thermal)) == len({a.positions.tobytes() for a in thermal})
    entry = report["results"][0]
    for name in report["sets"]:
        assert entry[name]["yardstick"]["n_frames"] == 3
        assert np.isfinite(entry[name]["yardstick"]["force_rmse_meV_per_A"])
    table = (run.root / "baseline/report.md").read_text()
    assert "| 8 | thermal |" in table and "yardstick F RMSE" in table
    only = run_baseline(run.root, [8], sets=["thermal"], executor=ThreadPoolExecutor(1))
    assert list(only["results"][0]) == ["n_labels", "selected", "selected_missing", "thermal"]
    assert only["results"][0]["thermal"]["n_members_trained"] == 0  # reused
