"""DeepPot-SE meets the model-family contract (eelt.model.family): each method called on a
tiny model, float64."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from eelt.config import ModelConfig
from eelt.model import DeepPot, Ensemble, EnsembleCalculator
from eelt.model.deviation import force_deviation, relative_max_devi_f
from eelt.model.family import FamilyEnsemble, FamilyMember

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")

SECTION = ModelConfig(
    rcut_A=4.0, rcut_smth_A=1.0, embedding_widths=[6, 12], axis_neuron=4, fitting_widths=[16, 16]
)
TYPE_MAP = ["Cu", "Au"]


@pytest.fixture
def members(cu_au_cell, rattled) -> list[DeepPot]:
    frames = rattled(cu_au_cell, 3, 0.1, seed=1)
    out = []
    for seed in range(3):
        model = DeepPot.from_config(SECTION, TYPE_MAP, seed)
        model.set_statistics(frames)
        out.append(model)
    return out


def test_deeppot_and_ensemble_are_family_members(members):
    assert isinstance(members[0], FamilyMember)
    assert isinstance(Ensemble(members), FamilyEnsemble)
    # a calculator is neither: the checks can fail
    assert not isinstance(EnsembleCalculator(Ensemble(members)), FamilyEnsemble)
    assert not isinstance(Ensemble(members), FamilyMember)  # no from_config / warm_start


def test_contract_names_no_family_internals():
    """A second family (MACE) must be able to meet it: no DeepPot-SE names in it."""
    for protocol in (FamilyMember, FamilyEnsemble):
        text = inspect.getsource(protocol).lower()
        for name in ("se_e2_a", "embedding", "fitting", "axis_neuron", "deeppot"):
            assert name not in text, (protocol.__name__, name)


def test_member_from_config_predict_save_load(members, cu_au_cell, methanol, tmp_path):
    model = members[0]
    assert model.hparams["embedding_widths"] == [6, 12] and model.dtype == torch.float64
    assert DeepPot.from_config(SECTION, TYPE_MAP, 0, "float32").dtype == torch.float32
    frames = [cu_au_cell, cu_au_cell[[2, 0, 1]]]
    out = model.predict(frames, virial=True)
    assert out["energy"].shape == (2,) and out["forces"].shape == (6, 3)
    assert out["virial"].shape == (2, 3, 3)
    # the same frame with its atoms reordered: same energy, forces follow the atoms
    assert float(out["energy"][0]) == pytest.approx(float(out["energy"][1]), abs=1e-10)
    torch.testing.assert_close(out["forces"][3:], out["forces"][:3][[2, 0, 1]], atol=1e-10, rtol=0)
    # forces by autograd: -dE/dx by central differences
    h, atom = 1e-5, 1
    numeric = np.zeros(3)
    for axis in range(3):
        energies = []
        for sign in (1, -1):
            moved = cu_au_cell.copy()
            moved.positions[atom, axis] += sign * h
            energies.append(float(model.predict([moved])["energy"][0]))
        numeric[axis] = -(energies[0] - energies[1]) / (2 * h)
    assert np.abs(numeric).max() > 1e-2
    np.testing.assert_allclose(out["forces"][atom].numpy(), numeric, atol=1e-7)

    path = tmp_path / "model-0.pt"
    model.save(path)
    checkpoint = torch.load(path, weights_only=True)  # plain tensors and strings
    assert set(checkpoint) == {"hparams_json", "state_dict"}
    again = DeepPot.load(path).predict(frames, virial=True)
    for key in out:
        torch.testing.assert_close(again[key], out[key], atol=0, rtol=0)


def test_member_warm_start(members, cu_au_cell, tmp_path):
    members[1].save(tmp_path / "model-1.pt")
    warm = DeepPot.warm_start(tmp_path / "model-1.pt", TYPE_MAP, "float32")
    assert warm.dtype == torch.float32 and warm.type_map == TYPE_MAP
    e32 = float(warm.predict([cu_au_cell])["energy"][0])
    assert e32 == pytest.approx(float(members[1].predict([cu_au_cell])["energy"][0]), abs=1e-4)
    with pytest.raises(ValueError, match="type_map"):
        DeepPot.warm_start(tmp_path / "model-1.pt", ["Au", "Cu"], "float64")
    with pytest.raises(FileNotFoundError, match="model-7.pt"):
        DeepPot.warm_start(tmp_path / "model-7.pt", TYPE_MAP, "float64")


def test_ensemble_load_predict_deviation_export(members, cu_au_cell, methanol, tmp_path):
    for k, member in enumerate(members):
        member.save(tmp_path / "models" / f"model-{k}.pt")
    ensemble = Ensemble.load(tmp_path / "models")
    assert ensemble.n_members == 3
    rattled = cu_au_cell.copy()
    rattled.positions[0] += 0.05
    frames = [cu_au_cell, rattled]
    out = ensemble.predict(frames, virial=True)
    assert out["energy"].shape == (3, 2) and out["forces"].shape == (3, 6, 3)
    for k, member in enumerate(members):
        alone = member.predict(frames, virial=True)
        for key in out:
            torch.testing.assert_close(out[key][k], alone[key], atol=1e-10, rtol=0)

    eps = 0.2
    deviations = ensemble.deviation(frames, eps)
    for f, dev in enumerate(deviations):
        forces = out["forces"][:, 3 * f : 3 * f + 3].numpy()
        std = force_deviation(forces)
        assert dev.max_devi_f_eV_per_A == pytest.approx(std.max(), rel=1e-12)
        assert dev.avg_devi_f_eV_per_A == pytest.approx(std.mean(), rel=1e-12)
        rel = relative_max_devi_f(std, forces.mean(0), eps)
        assert dev.max_devi_f_rel == pytest.approx(rel, rel=1e-12)
        assert dev.devi_e_eV_per_atom == pytest.approx(out["energy"][:, f].numpy().std() / 3)
        assert dev.max_devi_f_eV_per_A > 1e-3 and dev.devi_e_eV_per_atom > 1e-4  # members differ
    # the calculator reports the same spread
    atoms = cu_au_cell.copy()
    atoms.calc = EnsembleCalculator(ensemble)
    atoms.get_forces()
    assert atoms.calc.results["max_devi_f"] == pytest.approx(deviations[0].max_devi_f_eV_per_A)

    paths = ensemble.export(tmp_path / "exported")
    assert [p.name for p in paths] == ["model-0.pth", "model-1.pth", "model-2.pth", "ensemble.json"]
    scripted = torch.jit.load(str(paths[2]))
    graph_inputs = _plain_inputs(rattled, ensemble)
    energy, forces, virial = scripted(*graph_inputs)
    assert abs(float(energy) - float(out["energy"][2, 1])) <= 1e-10
    torch.testing.assert_close(forces, out["forces"][2, 3:], atol=1e-10, rtol=0)
    torch.testing.assert_close(virial, out["virial"][2, 1], atol=1e-10, rtol=0)


def _plain_inputs(atoms, model):
    from eelt.model import build_graph

    g = build_graph(atoms, model.type_map, model.rcut_A)
    return (
        torch.tensor(g.positions),
        torch.tensor(g.types),
        torch.tensor(g.cell),
        torch.tensor(g.pair_i),
        torch.tensor(g.pair_j),
        torch.tensor(g.shift),
    )
