"""The independent yardstick: frames no model chose, measured by every ensemble of both
schedules, never trained on, shown in the state and the status table."""

from concurrent.futures import ThreadPoolExecutor

import ase.io
import numpy as np
import pytest

from eelt.errors import EeltError
from eelt.examine.convergence import checked_metrics
from eelt.model.families import load_ensemble
from eelt.orchestration.context import RunContext
from eelt.orchestration.runs import prepare_run, run_loop
from eelt.orchestration.status_columns import labels_line
from eelt.train.metrics import ErrorSums, predict_frames
from tests.loop_config import cu_start, labeled_cu, tiny_config
from tests.orchestration.streaming.stream_config import streaming_config


def hot_cu(n: int, seed: int = 0) -> list:
    """Cu cells rattled more than any perturbed copy of the run: frames its walkers never saw."""
    return labeled_cu(n, seed, rattle_A=0.15)


def test_checked_metrics_is_the_worse_of_test_frames_and_yardstick():
    test = {"n_frames": 4, "force_rmse_meV_per_A": 80.0}
    yard = {"n_frames": 6, "force_rmse_meV_per_A": 120.0}
    assert checked_metrics({"test": test, "yardstick": yard})["source"] == "yardstick"
    assert (
        checked_metrics({"test": {**test, "force_rmse_meV_per_A": 130.0}, "yardstick": yard})[
            "source"
        ]
        == "test"
    )
    assert checked_metrics({"test": test})["force_rmse_meV_per_A"] == 80.0
    empty = {"n_frames": 0, "force_rmse_meV_per_A": None}
    assert checked_metrics({"test": empty, "yardstick": yard})["source"] == "yardstick"
    assert checked_metrics({"test": empty}) is None


def test_every_ensemble_is_measured_on_the_yardstick_and_never_trains_on_it(tmp_path):
    ase.io.write(tmp_path / "reference.extxyz", hot_cu(5))
    cfg = tiny_config(
        cu_start(tmp_path),
        examine={"yardstick_data": ["reference.extxyz"]},
        loop={"max_iterations": 2},
    )
    run = prepare_run(cfg, tmp_path, tmp_path / "run")
    with ThreadPoolExecutor(2) as pool:
        state = run_loop(RunContext(run, pool))
    assert len(run.yardstick()) == 5
    assert run.yardstick_file not in run.data_files()
    trained = sum(len(ase.io.read(f, ":")) for f in run.data_files())
    assert run.read_report(run.stage_dir(1, "train"))["n_frames"] == trained
    # the figure is the ensemble's error on those frames, recomputed here
    models = run.root / state["models_dir"]
    expected = ErrorSums.of(predict_frames(load_ensemble(models), run.yardstick())).metrics()
    last = state["iterations"][-1]
    assert last["yardstick_force_rmse_meV_per_A"] == pytest.approx(
        expected["force_rmse_meV_per_A"], rel=1e-6
    )
    assert np.isfinite(last["yardstick_energy_rmse_meV_per_atom"])
    assert state["n_yardstick_frames"] == 5
    assert state["init_yardstick_force_rmse_meV_per_A"] > 0
    assert "yardstick: 5 frames no model chose" in labels_line(state)


def test_the_sampler_draws_a_yardstick_that_counts_as_labels(tmp_path):
    sampler = {"kind": "emt", "n_frames": 3, "n_steps": 40, "dump_fs": 4.0, "n_yardstick": 4}
    cfg = tiny_config(
        cu_start(tmp_path), init={"n_perturbed": 2, "sampler": sampler}, loop={"max_iterations": 1}
    )
    run = prepare_run(cfg, tmp_path, tmp_path / "run")
    with ThreadPoolExecutor(2) as pool:
        state = run_loop(RunContext(run, pool))
    yard = ase.io.read(run.sampler_yardstick_file, ":")
    chosen = ase.io.read(run.root / "init" / "sample" / "chosen.extxyz", ":")
    assert len(yard) == 4 and all(np.isfinite(f.get_forces()).all() for f in yard)
    assert not {f.positions.tobytes() for f in yard} & {f.positions.tobytes() for f in chosen}
    assert run.yardstick_files() == [run.sampler_yardstick_file]
    assert run.sampler_yardstick_file not in run.data_files()
    assert state["n_yardstick_frames"] == 4
    assert state["n_init_labeled"] == 1 + 2 + 3  # training frames only
    row = state["iterations"][0]
    assert row["labels_total"] == 6 + 4 + row["n_labeled"] + row["n_test_labeled"]
    assert state["n_labels"] == row["labels_total"]
    assert np.isfinite(row["yardstick_force_rmse_meV_per_A"])
    assert ", 4 yardstick frames)" in labels_line(state)


def test_a_streaming_run_measures_the_yardstick_too(tmp_path):
    ase.io.write(tmp_path / "reference.extxyz", hot_cu(3, seed=7))
    data = streaming_config(tmp_path, stages=1).model_dump(mode="json")
    data["examine"]["yardstick_data"] = ["reference.extxyz"]
    data["loop"]["max_labels"] = 16
    data["init"]["sampler"] = {"kind": "emt", "n_frames": 2, "n_steps": 20, "n_yardstick": 2}
    from eelt.config import parse_config

    run = prepare_run(parse_config(data), tmp_path, tmp_path / "run")
    with ThreadPoolExecutor(2) as pool:
        state = run_loop(RunContext(run, pool))
    assert state["n_yardstick_frames"] == 3 + 2  # the user's and the sampler's
    assert state["iterations"], "no generation trained"
    # the sampler's yardstick labels count: in the totals and against loop.max_labels
    assert state["n_labels"] == state["n_train_labels"] + state["n_test_labels"] + 2
    assert state["iterations"][-1]["labels_total"] <= state["n_labels"] <= 16
    assert all(h["yardstick_force_rmse_meV_per_A"] > 0 for h in state["iterations"])


def test_a_bad_yardstick_file_is_named_in_one_line(tmp_path):
    frames = hot_cu(2)
    frames[1].calc = None
    ase.io.write(tmp_path / "reference.extxyz", frames)
    cfg = tiny_config(cu_start(tmp_path), examine={"yardstick_data": ["reference.extxyz"]})
    with pytest.raises(
        EeltError, match="examine.yardstick_data: reference.extxyz frame 1: no energy and forces"
    ):
        prepare_run(cfg, tmp_path, tmp_path / "run")


def test_resuming_with_other_yardstick_frames_is_refused(tmp_path):
    ase.io.write(tmp_path / "reference.extxyz", hot_cu(2))
    cfg = tiny_config(cu_start(tmp_path), examine={"yardstick_data": ["reference.extxyz"]})
    prepare_run(cfg, tmp_path, tmp_path / "run")
    ase.io.write(tmp_path / "reference.extxyz", hot_cu(2, seed=5))
    with pytest.raises(EeltError, match=r"examine.yardstick_data \(the frames themselves\)"):
        prepare_run(cfg, tmp_path, tmp_path / "run")
