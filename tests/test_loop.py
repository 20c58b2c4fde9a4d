"""The whole loop with real stages (EMT labels, a tiny DeepPot ensemble, thread pool)."""

import json

import ase.io
import numpy as np
import pytest

from eelt.config import StageConfig
from eelt.errors import EeltError
from eelt.loop import Loop, prepare_run, run_loop, schedule
from eelt.model import Ensemble, EnsembleCalculator
from tests.loop_config import cu_start, tiny_config


def stages(*max_iterations):
    return [StageConfig(temperatures_K=[300], max_iterations=m) for m in max_iterations]


def test_schedule_advances_on_convergence_or_max_iterations():
    s = stages(2, 3)
    assert schedule(s, []) == (0, 0)
    assert schedule(s, [(0, False)]) == (0, 1)
    assert schedule(s, [(0, False), (0, False)]) == (1, 0)  # max_iterations of stage 0
    assert schedule(s, [(0, True)]) == (1, 0)  # converged
    assert schedule(s, [(0, True), (1, False), (1, True)]) == (2, 0)  # all done


def run_tiny(tmp_path, **overrides):
    cfg = tiny_config(cu_start(tmp_path), **overrides)
    from concurrent.futures import ThreadPoolExecutor

    run = prepare_run(cfg, tmp_path, tmp_path / "run")
    with ThreadPoolExecutor(2) as pool:
        state = run_loop(Loop(run, pool))
    return run, state


def mtimes(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    return run_tiny(tmp_path_factory.mktemp("loop"))


def test_two_iterations_leave_every_artifact(finished_run):
    run, state = finished_run
    root = run.root
    assert state["status"] == "max_iterations"
    assert [h["iteration"] for h in state["iterations"]] == [0, 1]
    for rel in [
        "eelt.yaml",
        "state.json",
        "starts.extxyz",
        "data/init.extxyz",
        "init/label/report.json",
        "init/train/report.json",
        "init/train/model-0.pt",
        "init/train/model-1.pt",
    ]:
        assert (root / rel).is_file(), rel
    for it in (0, 1):
        d = root / f"iter-{it:03d}"
        assert len(list((d / "explore").glob("*.extxyz"))) == 2  # two temperatures
        for rel in [
            "explore/report.json",
            "examine/report.json",
            "examine/candidates.extxyz",
            "examine/deviation.png",
            "examine/test_frames.extxyz",
            "examine/calibration.json",
            "examine/calibration.png",
            "label/report.json",
            "train/report.json",
            "train/model-0.pt",
            "train/model-1.pt",
        ]:
            assert (d / rel).is_file(), f"iter-{it:03d}/{rel}"
    assert json.loads((root / "state.json").read_text()) == state
    # 7 init frames (start + 6 perturbed) each labeled once, under its content hash
    assert len(list((root / "labels").glob("*.extxyz"))) == 7 + sum(
        h["n_labeled"] + h["n_test_labeled"] for h in state["iterations"]
    )
    assert state["n_labels"] == 7 + sum(
        h["n_labeled"] + h["n_test_labeled"] for h in state["iterations"]
    )


def test_data_grows_and_models_change(finished_run):
    run, state = finished_run
    n = [len(ase.io.read(f, ":")) for f in run.data_files()]
    assert n[0] == 7
    assert len(n) == 3 and all(k > 0 for k in n[1:])  # trust_lo is tiny: every iteration labels
    for h in state["iterations"]:
        assert 0 < h["n_labeled"] <= 3  # capped by max_candidates
    frames = ase.io.read(run.root / "iter-000/examine/candidates.extxyz", ":")
    assert len(frames) == state["iterations"][0]["n_selected"]
    before = EnsembleCalculator(Ensemble.load(run.root / "init/train"))
    after = EnsembleCalculator(Ensemble.load(run.root / "iter-001/train"))
    forces_before = np.array([before.get_forces(a) for a in frames])
    forces_after = np.array([after.get_forces(a) for a in frames])
    assert np.abs(forces_before - forces_after).max() > 1e-4  # training moved the models


def test_resume_redoes_only_the_deleted_stage(finished_run):
    run, _ = finished_run
    import shutil

    shutil.rmtree(run.root / "iter-001" / "train")
    before = mtimes(run.root)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        state = run_loop(Loop(run, pool))
    after = mtimes(run.root)
    changed = {p.relative_to(run.root).as_posix() for p in after if before.get(p) != after[p]}
    assert changed and all(c.startswith("iter-001/train/") or c == "state.json" for c in changed), (
        changed
    )
    assert state["status"] == "max_iterations"
    label_report = json.loads((run.root / "iter-001/label/report.json").read_text())
    assert label_report["n_computed"] > 0  # the original run computed them; resume did not touch it


def test_resume_refuses_changed_science(finished_run, tmp_path):
    run, _ = finished_run
    changed = tiny_config(cu_start(tmp_path), examine={"trust_hi_eV_per_A": 4.0})
    with pytest.raises(EeltError, match="examine.trust_hi_eV_per_A"):
        prepare_run(changed, tmp_path, run.root)
    more = tiny_config(cu_start(tmp_path), loop={"max_iterations": 5})
    prepare_run(more, tmp_path, run.root)  # loop and execution may change


def test_converged_run_labels_only_its_test_frames(tmp_path):
    run, state = run_tiny(tmp_path, examine={"trust_lo_eV_per_A": 50.0, "trust_hi_eV_per_A": 100.0})
    assert state["status"] == "converged"
    assert len(state["iterations"]) == 1
    last = state["iterations"][0]
    assert last["accurate_ratio"] == 1.0
    assert last["n_labeled"] == 0 and last["n_test_labeled"] == 4  # the final error, measured
    assert last["test_force_rmse_meV_per_A"] > 0
    assert not (run.root / "data" / "iter-000.extxyz").exists()
    assert state["models_dir"] == "init/train"


def test_missing_structure_is_a_user_error(tmp_path):
    cfg = tiny_config(tmp_path / "nothing.xyz")
    with pytest.raises(EeltError, match=r"system.structures: .*nothing.xyz: no such file"):
        prepare_run(cfg, tmp_path, tmp_path / "run")
