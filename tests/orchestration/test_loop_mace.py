"""The whole loop with a MACE ensemble (mace-torch): EMT-labeled copper, a tiny MACE, two
iterations; MD, the examination, calibration, training and a resume all go through the MACE
family, and the run's test error is the ensemble's error measured afresh."""

from concurrent.futures import ThreadPoolExecutor

import ase.io
import numpy as np
import pytest

from eelt.model.families import family_of, load_ensemble
from eelt.orchestration.context import RunContext
from eelt.orchestration.runs import prepare_run, run_loop
from eelt.train import evaluate_rmse
from tests.loop_config import cu_start, tiny_config

pytest.importorskip("mace")

TINY_MACE = {
    "kind": "mace",
    "channels": 8,
    "max_L": 0,
    "correlation": 2,
    "r_max_A": 3.5,
    "num_interactions": 1,
    "radial_MLP": [8],
    "precision": "float64",
    "batch_size": 2,
    "steps": 30,
    "warm_steps": 20,
}


def test_loop_runs_with_a_mace_ensemble_and_resumes(tmp_path):
    cfg = tiny_config(cu_start(tmp_path), train={"model": TINY_MACE})
    run = prepare_run(cfg, tmp_path, tmp_path / "run")
    with ThreadPoolExecutor(2) as pool:
        state = run_loop(RunContext(run, pool))
    assert state["status"] == "max_iterations"
    assert [h["iteration"] for h in state["iterations"]] == [0, 1]
    models = run.root / state["models_dir"]
    assert family_of(models) == "mace" and family_of(run.init_dir("train")) == "mace"
    ensemble = load_ensemble(models)
    assert type(ensemble).__name__ == "MaceEnsemble" and ensemble.n_members == 2
    # the walkers' deviations came from the MACE members
    frames = ase.io.read(next((run.root / "iter-000" / "explore").glob("w*.extxyz")), ":")
    devi = np.array([f.info["max_devi_f"] for f in frames])
    assert np.isfinite(devi).all() and devi.max() > 0
    # the reported test error is the final ensemble's on every held-out frame
    tests = [a for f in run.test_data_files() for a in ase.io.read(f, ":")]
    assert len(tests) == state["n_test_labels"] > 0
    again = evaluate_rmse(ensemble, tests)["force_rmse_meV_per_A"]
    last = state["iterations"][-1]["test_force_rmse_meV_per_A"]
    assert again == pytest.approx(last, rel=1e-6)
    # a finished run resumes to the same end without training anything again
    stamps = {p: p.stat().st_mtime_ns for p in run.root.glob("*/train/model-*.pt")}
    with ThreadPoolExecutor(2) as pool:
        resumed = run_loop(RunContext(run, pool))
    assert resumed["iterations"][-1]["test_force_rmse_meV_per_A"] == last
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
