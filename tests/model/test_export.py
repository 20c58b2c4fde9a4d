"""TorchScript export: the reloaded module reproduces DeepPot from plain tensors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms

from eelt.model import DeepPot, Ensemble, build_graph
from eelt.model.export import HPARAMS_FILE, export_torchscript


def plain_inputs(atoms, model, rcut_A=None, dtype=torch.float64):
    """positions, types, cell, pair_i, pair_j, shift of ``atoms`` as the export expects."""
    g = build_graph(atoms, model.type_map, model.rcut_A if rcut_A is None else rcut_A)
    return (
        torch.tensor(g.positions, dtype=dtype),
        torch.tensor(g.types),
        torch.tensor(g.cell, dtype=dtype),
        torch.tensor(g.pair_i),
        torch.tensor(g.pair_j),
        torch.tensor(g.shift),
    )


@pytest.fixture
def systems(methanol, cu_au_cell, molecule_model, cell_model):
    return {"molecule": (methanol, molecule_model), "cell": (cu_au_cell, cell_model)}


@pytest.mark.parametrize("system", ["molecule", "cell"])
def test_reloaded_module_matches_deeppot(system, systems, evaluate, tmp_path):
    atoms, model = systems[system]
    path = export_torchscript(model, tmp_path / "model.pt")
    scripted = torch.jit.load(str(path))
    energy, forces, virial = scripted(*plain_inputs(atoms, model))
    reference = evaluate(model, atoms, virial=True)
    assert np.abs(reference["forces"]).max() > 1e-2  # a non-trivial potential
    assert energy.shape == () and forces.shape == (len(atoms), 3) and virial.shape == (3, 3)
    assert abs(energy.item() - reference["energy"]) <= 1e-10
    np.testing.assert_allclose(forces.numpy(), reference["forces"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(virial.numpy(), reference["virial"], rtol=0, atol=1e-10)


def test_pairs_beyond_cutoff_change_nothing(cu_au_cell, cell_model, tmp_path):
    scripted = torch.jit.load(str(export_torchscript(cell_model, tmp_path / "m.pt")))
    exact = scripted(*plain_inputs(cu_au_cell, cell_model))
    skin = plain_inputs(cu_au_cell, cell_model, rcut_A=cell_model.rcut_A + 1.5)
    assert skin[3].shape[0] > plain_inputs(cu_au_cell, cell_model)[3].shape[0]
    for a, b in zip(exact, scripted(*skin), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-12)


def test_float32_model(methanol, small, rattled, evaluate, tmp_path):
    model = DeepPot(["C", "H", "O"], precision="float32", seed=4, **small)
    model.set_statistics(rattled(methanol, 3, 0.1, seed=1))
    scripted = torch.jit.load(str(export_torchscript(model, tmp_path / "m.pt")))
    energy, forces, _ = scripted(*plain_inputs(methanol, model, dtype=torch.float32))
    reference = evaluate(model, methanol)
    assert forces.dtype == torch.float32
    assert abs(energy.item() - reference["energy"]) <= 1e-5 * max(1.0, abs(reference["energy"]))
    np.testing.assert_allclose(forces.numpy(), reference["forces"], rtol=0, atol=1e-5)


def test_archive_carries_hyperparameters(molecule_model, tmp_path):
    path = export_torchscript(molecule_model, tmp_path / "m.pt")
    extra = {HPARAMS_FILE: ""}
    scripted = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra[HPARAMS_FILE]) == molecule_model.hparams
    assert scripted.get_type_map() == ["C", "H", "O"]
    assert scripted.get_rcut() == molecule_model.rcut_A


def test_bad_inputs_are_named(methanol, molecule_model, tmp_path):
    scripted = torch.jit.load(str(export_torchscript(molecule_model, tmp_path / "m.pt")))
    positions, types, cell, pair_i, pair_j, shift = plain_inputs(methanol, molecule_model)
    with pytest.raises(torch.jit.Error, match="positions"):
        scripted(positions.float(), types, cell, pair_i, pair_j, shift)
    with pytest.raises(torch.jit.Error, match="types must index"):
        scripted(positions, types + 3, cell, pair_i, pair_j, shift)
    with pytest.raises(torch.jit.Error, match="must index the atoms"):
        scripted(positions, types, cell, pair_i, pair_j + len(methanol), shift)
    with pytest.raises(torch.jit.Error, match="shift"):
        scripted(positions, types, cell, pair_i, pair_j, shift[:-1])
    with torch.no_grad(), pytest.raises(torch.jit.Error, match="autograd"):
        scripted(positions, types, cell, pair_i, pair_j, shift)
    with pytest.raises(TypeError, match="DeepPot"):
        export_torchscript(Ensemble([molecule_model]), tmp_path / "e.pt")


def test_absent_element_and_isolated_atoms(cell_model, evaluate, tmp_path):
    scripted = torch.jit.load(str(export_torchscript(cell_model, tmp_path / "m.pt")))
    # no Au at all, one Cu far from the others (no neighbors), then no pairs anywhere
    pair = Atoms("Cu3", positions=[[0, 0, 0], [2.3, 0.4, 0.1], [20.0, 0, 0]])
    lone = Atoms("Cu", positions=[[0, 0, 0]])
    for atoms in (pair, lone):
        energy, forces, _ = scripted(*plain_inputs(atoms, cell_model))
        reference = evaluate(cell_model, atoms)
        assert abs(energy.item() - reference["energy"]) <= 1e-10
        np.testing.assert_allclose(forces.numpy(), reference["forces"], rtol=0, atol=1e-10)
    assert np.abs(evaluate(cell_model, pair)["forces"][:2]).max() > 1e-3
