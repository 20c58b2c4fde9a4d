"""TorchScript export: the reloaded module reproduces DeepPot from plain tensors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from eelt.model import DeepPot, Ensemble, build_graph
from eelt.model.export import (
    ENSEMBLE_FILE,
    HPARAMS_FILE,
    dense_neighbors_torch,
    export_ensemble,
    export_torchscript,
)
from eelt.model.neighbors import dense_neighbors

# TorchScript is deprecated in torch 2.13, still the format that carries autograd forces
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")


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


def load(path):
    return torch.jit.load(str(path))


@pytest.fixture
def cu_fcc() -> Atoms:
    """Periodic fcc Cu, 8 atoms, rattled: a cell smaller than 2 * rcut."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    atoms.positions += np.random.default_rng(3).normal(0.0, 0.1, atoms.positions.shape)
    return atoms


@pytest.fixture
def systems(methanol, cu_au_cell, cu_fcc, molecule_model, cell_model):
    return {
        "molecule": (methanol, molecule_model),
        "cell": (cu_au_cell, cell_model),
        "cu": (cu_fcc, cell_model),
    }


@pytest.mark.parametrize("system", ["molecule", "cell", "cu"])
def test_reloaded_module_matches_deeppot(system, systems, evaluate, tmp_path):
    atoms, model = systems[system]
    scripted = load(export_torchscript(model, tmp_path / "model.pth"))
    energy, forces, virial = scripted(*plain_inputs(atoms, model))
    reference = evaluate(model, atoms, virial=True)
    assert np.abs(reference["forces"]).max() > 1e-2  # a non-trivial potential
    assert energy.shape == () and forces.shape == (len(atoms), 3) and virial.shape == (3, 3)
    assert abs(energy.item() - reference["energy"]) <= 1e-10
    np.testing.assert_allclose(forces.numpy(), reference["forces"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(virial.numpy(), reference["virial"], rtol=0, atol=1e-10)


@pytest.mark.parametrize("system", ["molecule", "cu"])
def test_forces_and_virial_are_derivatives_of_exported_energy(system, systems, tmp_path):
    atoms, model = systems[system]
    scripted = load(export_torchscript(model, tmp_path / "model.pth"))
    # pairs out to rcut + 1 A: the list stays valid for every displaced geometry below
    positions, types, cell, pair_i, pair_j, shift = plain_inputs(atoms, model, model.rcut_A + 1)
    _, forces, virial = scripted(positions, types, cell, pair_i, pair_j, shift)

    def energy(moved, moved_cell=cell):
        return scripted(moved, types, moved_cell, pair_i, pair_j, shift)[0].item()

    h = 1e-5
    numeric = torch.zeros_like(forces)
    for a in range(len(atoms)):
        for c in range(3):
            step = torch.zeros_like(positions)
            step[a, c] = h
            numeric[a, c] = -(energy(positions + step) - energy(positions - step)) / (2 * h)
    assert forces.abs().max() > 1e-2
    assert (forces - numeric).abs().max() <= 1e-6 * numeric.abs().max()
    if system != "cu":
        return
    strained = torch.zeros(3, 3, dtype=torch.float64)
    for a in range(3):
        for b in range(3):
            energies = []
            for sign in (1, -1):
                strain = torch.eye(3, dtype=torch.float64)
                strain[a, b] += sign * h
                energies.append(energy(positions @ strain, cell @ strain))
            strained[a, b] = -(energies[0] - energies[1]) / (2 * h)
    assert (virial - strained).abs().max() <= 1e-6 * strained.abs().max()


def test_file_runs_in_a_process_with_only_torch(cu_au_cell, cell_model, evaluate, tmp_path):
    path = export_torchscript(cell_model, tmp_path / "model.pth")
    torch.save(plain_inputs(cu_au_cell, cell_model), tmp_path / "inputs.pt")
    script = textwrap.dedent(
        f"""
        import sys, warnings
        import torch
        warnings.simplefilter("ignore", DeprecationWarning)
        model = torch.jit.load({str(path)!r})
        inputs = torch.load({str(tmp_path / "inputs.pt")!r}, weights_only=True)
        energy, forces, virial = model(*inputs)
        assert not any(name.split(".")[0] == "eelt" for name in sys.modules)
        print(repr(energy.item()), model.get_type_map(), model.get_rcut())
        print(repr(forces.abs().max().item()))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = done.stdout.splitlines()
    reference = evaluate(cell_model, cu_au_cell)
    assert abs(float(first.split()[0]) - reference["energy"]) <= 1e-10
    assert first.split(maxsplit=1)[1] == "['Cu', 'Au'] 4.0"
    assert abs(float(second) - np.abs(reference["forces"]).max()) <= 1e-10


def test_pairs_beyond_cutoff_change_nothing(cu_au_cell, cell_model, tmp_path):
    scripted = load(export_torchscript(cell_model, tmp_path / "m.pth"))
    exact = scripted(*plain_inputs(cu_au_cell, cell_model))
    skin = plain_inputs(cu_au_cell, cell_model, rcut_A=cell_model.rcut_A + 1.5)
    assert skin[3].shape[0] > plain_inputs(cu_au_cell, cell_model)[3].shape[0]
    for a, b in zip(exact, scripted(*skin), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-12)


def test_float32_model(methanol, small, rattled, evaluate, tmp_path):
    model = DeepPot(["C", "H", "O"], precision="float32", seed=4, **small)
    model.set_statistics(rattled(methanol, 3, 0.1, seed=1))
    scripted = load(export_torchscript(model, tmp_path / "m.pth"))
    energy, forces, _ = scripted(*plain_inputs(methanol, model, dtype=torch.float32))
    reference = evaluate(model, methanol)
    assert forces.dtype == torch.float32
    assert abs(energy.item() - reference["energy"]) <= 1e-5 * max(1.0, abs(reference["energy"]))
    np.testing.assert_allclose(forces.numpy(), reference["forces"], rtol=0, atol=1e-5)


def test_archive_carries_hyperparameters(molecule_model, tmp_path):
    path = export_torchscript(molecule_model, tmp_path / "m.pth")
    extra = {HPARAMS_FILE: ""}
    scripted = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra[HPARAMS_FILE]) == molecule_model.hparams
    assert scripted.get_type_map() == ["C", "H", "O"]
    assert scripted.get_rcut() == molecule_model.rcut_A


def test_bad_inputs_are_named(methanol, molecule_model, tmp_path):
    scripted = load(export_torchscript(molecule_model, tmp_path / "m.pth"))
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
        export_torchscript(Ensemble([molecule_model]), tmp_path / "e.pth")


def test_absent_element_and_isolated_atoms(cell_model, evaluate, tmp_path):
    scripted = load(export_torchscript(cell_model, tmp_path / "m.pth"))
    # no Au at all, one Cu far from the others (no neighbors), then no pairs anywhere
    pair = Atoms("Cu3", positions=[[0, 0, 0], [2.3, 0.4, 0.1], [20.0, 0, 0]])
    lone = Atoms("Cu", positions=[[0, 0, 0]])
    for atoms in (pair, lone):
        energy, forces, _ = scripted(*plain_inputs(atoms, cell_model))
        reference = evaluate(cell_model, atoms)
        assert abs(energy.item() - reference["energy"]) <= 1e-10
        np.testing.assert_allclose(forces.numpy(), reference["forces"], rtol=0, atol=1e-10)
    assert np.abs(evaluate(cell_model, pair)["forces"][:2]).max() > 1e-3


def test_torch_layout_equals_collates(methanol, cu_au_cell):
    atoms = methanol + cu_au_cell  # unsorted types, several elements
    g = build_graph(atoms, ["H", "C", "O", "Cu", "Au"], 4.0)
    tensors = [torch.from_numpy(x) for x in (g.types, g.pair_i, g.pair_j)]
    ours = dense_neighbors_torch(*tensors, int(g.types.max()) + 1)
    for a, b in zip(ours, dense_neighbors(g.types, g.pair_i, g.pair_j), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_export_ensemble_writes_every_member(cu_au_cell, cell_model, small, evaluate, tmp_path):
    models = tmp_path / "train"
    members = [cell_model, DeepPot(["Cu", "Au"], seed=9, **small)]
    for k, member in enumerate(members):
        member.save(models / f"model-{k}.pt")
    paths = export_ensemble(models, tmp_path / "out")
    assert [p.name for p in paths] == ["model-0.pth", "model-1.pth", ENSEMBLE_FILE]
    summary = json.loads(paths[-1].read_text())
    assert summary["members"] == ["model-0.pth", "model-1.pth"]
    assert summary["type_map"] == ["Cu", "Au"] and summary["rcut_A"] == 4.0
    assert summary["precision"] == "float64" and summary["format"] == "torchscript"
    for member, path in zip(members, paths, strict=False):
        energy = load(path)(*plain_inputs(cu_au_cell, cell_model))[0]
        assert abs(energy.item() - evaluate(member, cu_au_cell)["energy"]) <= 1e-10
    with pytest.raises(FileNotFoundError, match="model-<k>.pt"):
        export_ensemble(tmp_path / "out", tmp_path / "again")


def test_cli_export_model_writes_one_file_per_member(tmp_path):
    from typer.testing import CliRunner

    from eelt.cli import app
    from eelt.model import DeepPot

    models = tmp_path / "models"
    models.mkdir()
    for k in range(2):
        DeepPot(["Cu"], rcut_A=4.0, embedding_widths=(4, 8), axis_neuron=2,
                fitting_widths=(8,), seed=k).save(models / f"model-{k}.pt")  # fmt: skip
    result = CliRunner().invoke(app, ["export-model", str(models), "--out", str(tmp_path / "ts")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "ts").iterdir()) == [
        "ensemble.json", "model-0.pth", "model-1.pth"]  # fmt: skip
    missing = CliRunner().invoke(app, ["export-model", str(tmp_path / "nope"), "--out", "x"])
    assert missing.exit_code == 2 and "no such directory" in missing.output
