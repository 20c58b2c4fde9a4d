import numpy as np
import pytest

from eelt.model import DeepPot, Ensemble, EnsembleCalculator
from eelt.train import evaluate_rmse
from eelt.train.data import read_frames

from .conftest import TYPE_MAP, tiny_train


@pytest.fixture(scope="module")
def members(cu_data):
    frames = read_frames([cu_data])[:6]
    out = []
    for seed in (0, 1):
        m = DeepPot.from_config(tiny_train().model, TYPE_MAP, seed)
        m.set_statistics(frames)
        out.append(m)
    return out, frames


def test_evaluate_rmse_of_a_model_by_hand(members):
    (model, _), frames = members
    ens = Ensemble([model])
    e2, f2 = [], []
    for atoms in frames:
        ref_e, ref_f = atoms.get_potential_energy(), atoms.get_forces()
        calc_atoms = atoms.copy()
        calc_atoms.calc = EnsembleCalculator(ens)
        e2.append(((calc_atoms.get_potential_energy() - ref_e) / len(atoms)) ** 2)
        f2.append(((calc_atoms.get_forces() - ref_f) ** 2).ravel())
    got = evaluate_rmse(model, frames)
    assert got["n_frames"] == 6
    assert got["energy_rmse_meV_per_atom"] == pytest.approx(1e3 * np.sqrt(np.mean(e2)), rel=1e-9)
    assert got["force_rmse_meV_per_A"] == pytest.approx(
        1e3 * np.sqrt(np.mean(np.concatenate(f2))), rel=1e-9
    )


def test_evaluate_rmse_of_an_ensemble_uses_the_member_mean(members):
    models, frames = members
    ens = Ensemble(models)
    e2, f2 = [], []
    for atoms in frames:
        a = atoms.copy()
        a.calc = EnsembleCalculator(ens)
        e_mean = a.get_potential_energy()
        f_mean = a.get_forces()
        assert e_mean == pytest.approx(np.mean(a.calc.results["member_energies"]))
        e2.append(((e_mean - atoms.get_potential_energy()) / len(atoms)) ** 2)
        f2.append(((f_mean - atoms.get_forces()) ** 2).ravel())
    got = evaluate_rmse(ens, frames)
    assert got["energy_rmse_meV_per_atom"] == pytest.approx(1e3 * np.sqrt(np.mean(e2)), rel=1e-9)
    assert got["force_rmse_meV_per_A"] == pytest.approx(
        1e3 * np.sqrt(np.mean(np.concatenate(f2))), rel=1e-9
    )
    single = evaluate_rmse(models[0], frames)["force_rmse_meV_per_A"]
    assert got["force_rmse_meV_per_A"] != pytest.approx(single, rel=1e-6)


def test_predict_frames_matches_the_calculator_frame_by_frame(members):
    from eelt.train import error_metrics, predict_frames

    models, frames = members
    ens = Ensemble(models)
    pred = predict_frames(ens, frames)
    assert len(pred) == len(frames)
    for k, atoms in enumerate(frames):
        a = atoms.copy()
        a.calc = EnsembleCalculator(ens)
        np.testing.assert_allclose(pred.forces_eV_per_A[k], a.get_forces(), atol=1e-10)
        assert pred.energy_eV[k] == pytest.approx(a.get_potential_energy(), abs=1e-10)
        assert pred.max_devi_f[k] == pytest.approx(a.calc.results["max_devi_f"], abs=1e-10)
        worst = np.linalg.norm(a.get_forces() - atoms.get_forces(), axis=1).max()
        assert pred.max_force_error_eV_per_A[k] == pytest.approx(worst, rel=1e-9)
    got = error_metrics(ens, frames)
    rmse = evaluate_rmse(ens, frames)
    assert got["force_rmse_meV_per_A"] == pytest.approx(rmse["force_rmse_meV_per_A"], rel=1e-9)
    assert got["energy_rmse_meV_per_atom"] == pytest.approx(
        rmse["energy_rmse_meV_per_atom"], rel=1e-9
    )
    diff = np.concatenate(
        [(f - a.get_forces()).ravel() for f, a in zip(pred.forces_eV_per_A, frames, strict=True)]
    )
    assert got["force_mae_meV_per_A"] == pytest.approx(1e3 * np.abs(diff).mean(), rel=1e-9)
    assert got["force_mae_meV_per_A"] < got["force_rmse_meV_per_A"]
    sub = pred.subset([1, 3])
    assert sub.metrics()["n_frames"] == 2
    assert error_metrics(ens, [])["force_rmse_meV_per_A"] is None
