"""Physics of one DeepPot-SE: gradients, symmetries, smoothness, extensivity, checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms

from eelt.model import DeepPot, build_graph, collate


def numerical_forces(model, atoms, evaluate, h=1e-4):
    forces = np.zeros((len(atoms), 3))
    for a in range(len(atoms)):
        for c in range(3):
            energies = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[a, c] += sign * h
                energies.append(evaluate(model, moved)["energy"])
            forces[a, c] = -(energies[0] - energies[1]) / (2 * h)
    return forces


def random_rotation(seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@pytest.mark.parametrize("system", ["molecule", "cell"])
def test_forces_are_minus_energy_gradient(
    system, methanol, cu_au_cell, molecule_model, cell_model, evaluate
):
    atoms, model = (methanol, molecule_model) if system == "molecule" else (cu_au_cell, cell_model)
    forces = evaluate(model, atoms)["forces"]
    reference = numerical_forces(model, atoms, evaluate)
    assert np.abs(forces).max() > 1e-2  # a non-trivial potential
    assert np.abs(forces - reference).max() <= 1e-6 * np.abs(reference).max()


def test_virial_is_minus_strain_derivative(cu_au_cell, cell_model, evaluate):
    virial = evaluate(cell_model, cu_au_cell, virial=True)["virial"]
    h = 1e-5
    reference = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            energies = []
            for sign in (1, -1):
                strain = np.eye(3)
                strain[a, b] += sign * h
                atoms = cu_au_cell.copy()
                atoms.set_cell(cu_au_cell.cell.array @ strain, scale_atoms=False)
                atoms.positions = cu_au_cell.positions @ strain
                energies.append(evaluate(cell_model, atoms)["energy"])
            reference[a, b] = -(energies[0] - energies[1]) / (2 * h)
    assert np.abs(virial).max() > 1e-2
    assert np.abs(virial - reference).max() <= 1e-6 * np.abs(reference).max()
    assert np.abs(virial - virial.T).max() <= 1e-10 * np.abs(virial).max()


@pytest.mark.parametrize("system", ["molecule", "cell"])
def test_invariance_and_covariance(
    system, methanol, cu_au_cell, molecule_model, cell_model, evaluate
):
    atoms, model = (methanol, molecule_model) if system == "molecule" else (cu_au_cell, cell_model)
    ref = evaluate(model, atoms, virial=True)

    moved = atoms.copy()
    moved.positions += [1.3, -7.1, 22.4]
    out = evaluate(model, moved)
    assert abs(out["energy"] - ref["energy"]) <= 1e-10
    np.testing.assert_allclose(out["forces"], ref["forces"], atol=1e-10)

    rotation = random_rotation(7)
    turned = atoms.copy()
    turned.positions = atoms.positions @ rotation
    if atoms.pbc.any():
        turned.set_cell(atoms.cell.array @ rotation, scale_atoms=False)
    out = evaluate(model, turned, virial=True)
    assert abs(out["energy"] - ref["energy"]) <= 1e-10
    np.testing.assert_allclose(out["forces"], ref["forces"] @ rotation, atol=1e-10)
    np.testing.assert_allclose(out["virial"], rotation.T @ ref["virial"] @ rotation, atol=1e-10)

    common = np.bincount(atoms.numbers).argmax()
    same = [i for i in range(len(atoms)) if atoms.numbers[i] == common]
    order = np.arange(len(atoms))
    order[same] = same[::-1]
    assert (order != np.arange(len(atoms))).any()
    out = evaluate(model, atoms[order])
    assert abs(out["energy"] - ref["energy"]) <= 1e-10
    np.testing.assert_allclose(out["forces"], ref["forces"][order], atol=1e-10)


def test_smooth_as_a_neighbor_crosses_the_cutoff(molecule_model, methanol, evaluate):
    rcut = molecule_model.rcut_A
    far = methanol.positions[:, 0].max() + 20.0

    def place(x):
        atoms = methanol + Atoms("O", positions=[[0.0, 0.0, 0.0]])
        atoms.positions[-1] = [x, methanol.positions[5, 1], methanol.positions[5, 2]]
        return evaluate(molecule_model, atoms)

    x_edge = methanol.positions[:, 0].max() + rcut  # the O leaves the last atom's cutoff here
    reference = place(far)
    beyond = place(x_edge + 1e-6)
    assert abs(beyond["energy"] - reference["energy"]) <= 1e-12
    scan = [place(x_edge - dx) for dx in (1e-2, 1e-3, 1e-4)]
    gaps = [abs(s["energy"] - reference["energy"]) for s in scan]
    force_gaps = [np.abs(s["forces"] - reference["forces"]).max() for s in scan]
    assert gaps[0] > 0  # the neighbor does interact inside the cutoff
    # C2 switch: energy gap ~ dx^3, force gap ~ dx^2 (a jump would not shrink)
    assert gaps[2] <= 1e-9 and gaps[2] < 1e-4 * gaps[0]
    assert force_gaps[2] <= 1e-6 and force_gaps[2] < 1e-2 * force_gaps[0]
    steps = np.linspace(x_edge - 0.05, x_edge + 0.05, 41)
    energies = np.array([place(x)["energy"] for x in steps])
    assert np.abs(np.diff(energies)).max() <= 1e-3


def test_extensive_for_far_apart_copies(molecule_model, methanol, evaluate):
    single = evaluate(molecule_model, methanol)
    other = methanol.copy()
    other.positions += [molecule_model.rcut_A + 6.0, 0.0, 0.0]
    double = evaluate(molecule_model, methanol + other)
    assert abs(double["energy"] - 2 * single["energy"]) <= 1e-10
    np.testing.assert_allclose(double["forces"][: len(methanol)], single["forces"], atol=1e-12)


def test_isolated_atoms_and_foreign_types(cell_model, cu_au_cell, evaluate, small):
    lone = Atoms("Au", positions=[[0.0, 0.0, 0.0]])
    out = evaluate(cell_model, lone)
    assert np.isfinite(out["energy"]) and not out["forces"].any()
    far = Atoms("CuAu", positions=[[0, 0, 0], [0, 0, cell_model.rcut_A + 0.1]])
    assert evaluate(cell_model, far)["energy"] == pytest.approx(
        evaluate(cell_model, Atoms("Cu"))["energy"] + out["energy"], abs=1e-12
    )
    wide = ["Cu", "Au", "Ag"]
    batch = collate([build_graph(Atoms("Ag"), wide, 4.0)])
    with pytest.raises(ValueError, match="type_map"):
        cell_model(batch)


def test_batch_of_frames_equals_frames_one_by_one(molecule_model, methanol, evaluate, small):
    model = DeepPot(["C", "H", "O", "Cu", "Au"], seed=3, **small)
    cell = Atoms(
        "Cu2Au",
        scaled_positions=[[0, 0, 0], [0.5, 0.5, 0], [0.2, 0.6, 0.5]],
        cell=[[3.0, 0, 0], [0.9, 2.8, 0], [0.4, 0.7, 2.9]],
        pbc=True,
    )
    frames = [methanol, cell, methanol[[5, 0, 2, 1]]]
    batch = collate([build_graph(a, model.type_map, model.rcut_A) for a in frames], torch.float64)
    out = model(batch, virial=True)
    start = 0
    for f, atoms in enumerate(frames):
        single = evaluate(model, atoms, virial=True)
        assert abs(out["energy"][f].item() - single["energy"]) <= 1e-10
        stop = start + len(atoms)
        np.testing.assert_allclose(
            out["forces"][start:stop].detach().numpy(), single["forces"], atol=1e-10
        )
        np.testing.assert_allclose(out["virial"][f].numpy(), single["virial"], atol=1e-10)
        start = stop


def test_statistics_and_energy_shift(methanol, small):
    frames = []
    per_element = {"C": -3.0, "H": -0.5, "O": -4.25}
    for n in (1, 2, 3):
        atoms = methanol.copy()
        for _ in range(n - 1):
            shifted = methanol.copy()
            shifted.positions += [10.0 * len(atoms), 0, 0]
            atoms += shifted
        atoms += Atoms("H" * n, positions=[[0, 30.0 + 5 * k, 0] for k in range(n)])
        from ase.calculators.singlepoint import SinglePointCalculator

        energy = sum(per_element[s] for s in atoms.get_chemical_symbols())
        atoms.calc = SinglePointCalculator(atoms, energy=energy)
        frames.append(atoms)
    model = DeepPot(["C", "H", "O", "N"], **small)
    model.set_statistics(frames)
    stats = model.statistics()
    assert stats["energy_shift"][3] == 0.0  # N: absent, minimum-norm fit gives 0
    # C H O counts (n, 4n+n, n) are collinear: min-norm solution still reproduces each energy
    counts = np.array([[n, 5 * n, n, 0] for n in (1, 2, 3)])
    energies = [f.get_potential_energy() for f in frames]
    np.testing.assert_allclose(counts @ np.array(stats["energy_shift"]), energies, atol=1e-10)
    assert stats["n_norm"][3] == 1.0 and stats["s_std"][3] == 1.0
    assert 1.0 < stats["n_norm"][0] < 6.0 and stats["s_std"][0] != 1.0
    assert model.s_mean.dtype == torch.float64 and "s_std" in model.state_dict()


def test_statistics_need_all_or_no_energies(methanol, small):
    from ase.calculators.emt import EMT

    labeled = methanol.copy()
    labeled.calc = EMT()
    with pytest.raises(ValueError, match="frame 1"):
        DeepPot(["C", "H", "O"], **small).set_statistics([labeled, methanol.copy()])
    model = DeepPot(["C", "H", "O"], **small)
    model.set_statistics([methanol])
    assert model.statistics()["energy_shift"] == [0.0, 0.0, 0.0]


def test_save_load_round_trip(tmp_path, cell_model, cu_au_cell, evaluate):
    path = tmp_path / "model-0.pt"
    cell_model.save(path)
    raw = torch.load(path, weights_only=True)
    assert json.loads(raw["hparams_json"]) == cell_model.hparams
    loaded = DeepPot.load(path)
    assert loaded.hparams == cell_model.hparams
    before = evaluate(cell_model, cu_au_cell, virial=True)
    after = evaluate(loaded, cu_au_cell, virial=True)
    for key in ("energy", "forces", "virial"):
        np.testing.assert_array_equal(after[key], before[key])
    assert DeepPot(**cell_model.hparams).hparams == cell_model.hparams


def test_float32(cu_au_cell, evaluate, small):
    double = DeepPot(["Cu", "Au"], seed=4, **small)
    single = DeepPot(["Cu", "Au"], seed=4, precision="float32", **small)
    assert single.dtype == torch.float32
    out32 = evaluate(single, cu_au_cell, virial=True)
    out64 = evaluate(double, cu_au_cell, virial=True)
    assert out32["forces"].dtype == np.float32
    assert abs(out32["energy"] - out64["energy"]) <= 1e-5 * max(1.0, abs(out64["energy"]))
    np.testing.assert_allclose(out32["forces"], out64["forces"], atol=1e-4)
    np.testing.assert_allclose(out32["virial"], out64["virial"], atol=1e-4)


def test_training_graph(cu_au_cell, cell_model):
    batch = collate([build_graph(cu_au_cell, cell_model.type_map, cell_model.rcut_A)])
    out = cell_model(batch, create_graph=True)
    loss = (out["forces"] ** 2).sum() + out["energy"].sum()
    loss.backward()
    grads = [p.grad for p in cell_model.fitting[0].parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    with torch.no_grad():
        out = cell_model(batch)
    assert not out["energy"].requires_grad and out["forces"].abs().max() > 0


def test_bad_hyper_parameters_and_elements(methanol, small):
    with pytest.raises(ValueError, match="rcut_smth_A"):
        DeepPot(["H"], rcut_A=3.0, rcut_smth_A=3.0)
    with pytest.raises(ValueError, match="axis_neuron"):
        DeepPot(["H"], embedding_widths=(4, 8), axis_neuron=16)
    with pytest.raises(ValueError, match="precision"):
        DeepPot(["H"], precision="float16")
    with pytest.raises(ValueError, match="Xx|unknown"):
        DeepPot(["H", "Xx"])
    model = DeepPot(["C", "H"], **small)
    with pytest.raises(ValueError, match=r"element O is not in type_map \['C', 'H'\]"):
        build_graph(methanol, model.type_map, model.rcut_A)
