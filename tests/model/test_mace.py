"""MACE members and ensembles (mace-torch) as physics: forces and virials as derivatives of the
energy, invariance under rotations and permutations, the ensemble's deviation, checkpoints
read with weights_only, and export to mace-torch's own calculator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from scipy.spatial.transform import Rotation

from eelt.config import MaceModelConfig
from eelt.model.family import FamilyEnsemble, FamilyMember
from eelt.model.mace import MaceEnsemble, MaceMember, data_statistics
from eelt.model.mace.architecture import architecture_of, build_module

TINY = MaceModelConfig(
    kind="mace",
    channels=8,
    max_L=1,
    max_ell=2,
    correlation=2,
    r_max_A=4.0,
    num_interactions=2,
    radial_MLP=[16, 16],
    precision="float64",
)


def tiny_member(frames: list[Atoms], type_map: list[str], seed: int) -> MaceMember:
    """A tiny float64 member with the statistics of EMT-labeled ``frames``."""
    stats = data_statistics(
        frames,
        [a.get_potential_energy() for a in frames],
        [a.get_forces() for a in frames],
        type_map,
        TINY.r_max_A,
        "average",
    )
    return MaceMember.from_config(TINY, type_map, seed=seed, statistics=stats)


@pytest.fixture(scope="module")
def molecule_members() -> list[MaceMember]:
    """Two tiny members (seeds 1, 2) for C, H, O with methanol statistics."""
    from tests.model.conftest import labeled_copies

    methanol = Atoms(
        "COHHHH",
        positions=[
            [-0.047, 0.664, 0.02],
            [-0.05, -0.75, -0.03],
            [-1.08, 1.01, 0.05],
            [0.46, 1.05, 0.92],
            [0.50, 1.0, -0.85],
            [0.85, -1.05, 0.11],
        ],
    )
    frames = labeled_copies(methanol, 4, 0.1, seed=0)
    return [tiny_member(frames, ["C", "H", "O"], seed) for seed in (1, 2)]


@pytest.fixture(scope="module")
def cell_member() -> MaceMember:
    from tests.model.conftest import labeled_copies

    cell = [[2.9, 0.0, 0.0], [1.1, 2.7, 0.0], [0.6, 0.8, 2.8]]
    scaled = [[0.0, 0.0, 0.0], [0.52, 0.47, 0.05], [0.1, 0.55, 0.48]]
    atoms = Atoms("Cu2Au", scaled_positions=scaled, cell=cell, pbc=True)
    return tiny_member(labeled_copies(atoms, 4, 0.1, seed=0), ["Cu", "Au"], 3)


def energy(member: MaceMember, atoms: Atoms) -> float:
    return float(member.predict([atoms])["energy"][0])


def test_member_and_ensemble_meet_the_family_contract(molecule_members):
    member = molecule_members[0]
    assert isinstance(member, FamilyMember)
    ensemble = MaceEnsemble(molecule_members)
    assert isinstance(ensemble, FamilyEnsemble)
    assert member.type_map == ["C", "H", "O"] and member.rcut_A == 4.0
    assert ensemble.n_members == 2 and ensemble.dtype == torch.float64
    assert ensemble.type_map == ["C", "H", "O"] and ensemble.rcut_A == 4.0


def test_forces_are_minus_the_energy_gradient(molecule_members, methanol):
    member = molecule_members[0]
    forces = member.predict([methanol])["forces"].numpy()
    assert np.abs(forces).max() > 0.05  # a test of something
    h = 1e-4
    numeric = np.zeros_like(forces)
    for i in range(len(methanol)):
        for c in range(3):
            plus, minus = methanol.copy(), methanol.copy()
            plus.positions[i, c] += h
            minus.positions[i, c] -= h
            numeric[i, c] = -(energy(member, plus) - energy(member, minus)) / (2 * h)
    np.testing.assert_allclose(forces, numeric, atol=1e-6, rtol=1e-5)


def test_forces_and_virial_of_a_periodic_cell_are_derivatives(cell_member, cu_au_cell):
    out = cell_member.predict([cu_au_cell], virial=True)
    forces, virial = out["forces"].numpy(), out["virial"][0].numpy()
    h = 1e-4
    for i, c in [(0, 0), (1, 2), (2, 1)]:
        plus, minus = cu_au_cell.copy(), cu_au_cell.copy()
        plus.positions[i, c] += h
        minus.positions[i, c] -= h
        numeric = -(energy(cell_member, plus) - energy(cell_member, minus)) / (2 * h)
        assert forces[i, c] == pytest.approx(numeric, abs=1e-6, rel=1e-5)
    # virial = -stress x volume = -dE/d(strain), strain applied to cell and positions
    assert np.abs(virial).max() > 1e-3
    for a, b in [(0, 0), (1, 1), (0, 1), (1, 2)]:
        energies = []
        for sign in (1, -1):
            strain = np.eye(3)
            strain[a, b] += sign * h / (1 if a == b else 2)
            strain[b, a] += 0 if a == b else sign * h / 2
            strained = cu_au_cell.copy()
            strained.set_cell(cu_au_cell.cell.array @ strain, scale_atoms=True)
            energies.append(energy(cell_member, strained))
        numeric = -(energies[0] - energies[1]) / (2 * h)
        assert virial[a, b] == pytest.approx(numeric, abs=1e-6, rel=1e-5)
    np.testing.assert_allclose(virial, virial.T, atol=1e-10)


def test_energy_invariant_and_forces_covariant_under_rotation_and_permutation(
    molecule_members, methanol
):
    member = molecule_members[0]
    ref = member.predict([methanol])
    rotation = Rotation.from_euler("xyz", [0.3, -1.1, 2.0]).as_matrix()
    rotated = methanol.copy()
    rotated.positions = methanol.positions @ rotation.T + [0.7, -0.2, 1.5]
    out = member.predict([rotated])
    assert float(out["energy"][0]) == pytest.approx(float(ref["energy"][0]), abs=1e-10)
    np.testing.assert_allclose(out["forces"].numpy(), ref["forces"].numpy() @ rotation.T, atol=1e-9)

    perm = [3, 0, 5, 1, 4, 2]
    permuted = methanol[perm]
    out = member.predict([permuted])
    assert float(out["energy"][0]) == pytest.approx(float(ref["energy"][0]), abs=1e-10)
    np.testing.assert_allclose(out["forces"].numpy(), ref["forces"].numpy()[perm], atol=1e-10)


def test_deviation_is_zero_for_identical_members_and_not_for_different_seeds(
    molecule_members, methanol, tmp_path
):
    member = molecule_members[0]
    member.save(tmp_path / "m.pt")
    twin = MaceMember.load(tmp_path / "m.pt")
    (same,) = MaceEnsemble([member, twin]).deviation([methanol], eps_eV_per_A=0.1)
    assert same.max_devi_f_eV_per_A == 0.0 and same.devi_e_eV_per_atom == 0.0
    (spread,) = MaceEnsemble(molecule_members).deviation([methanol], eps_eV_per_A=0.1)
    assert spread.max_devi_f_eV_per_A > 1e-3 and spread.devi_e_eV_per_atom > 0
    forces = MaceEnsemble(molecule_members).predict([methanol])["forces"].numpy()
    std = np.sqrt(((forces - forces.mean(0)) ** 2).sum(-1).mean(0))
    assert spread.max_devi_f_eV_per_A == pytest.approx(std.max(), rel=1e-12)


def test_save_load_with_weights_only_gives_identical_predictions(
    molecule_members, methanol, tmp_path
):
    for k, member in enumerate(molecule_members):
        member.save(tmp_path / f"model-{k}.pt")
    checkpoint = torch.load(tmp_path / "model-0.pt", weights_only=True)
    assert checkpoint["format"] == "eelt-mace-1"
    ensemble = MaceEnsemble.load(tmp_path)
    frames = [methanol, methanol.copy()]
    frames[1].positions[0] += 0.1
    out = ensemble.predict(frames, virial=True)
    assert out["energy"].shape == (2, 2) and out["forces"].shape == (2, 12, 3)
    assert out["virial"].shape == (2, 2, 3, 3)
    for k, member in enumerate(molecule_members):
        direct = member.predict(frames)
        assert torch.equal(out["energy"][k], direct["energy"])
        assert torch.equal(out["forces"][k], direct["forces"])
    only_one = ensemble.predict(frames, members=[1])
    assert only_one["energy"].shape == (1, 2)
    assert torch.equal(only_one["forces"][0], out["forces"][1])
    assert ensemble.members[0].E0s_eV == molecule_members[0].E0s_eV
    with pytest.raises(ValueError, match="member 2"):
        ensemble.predict(frames, members=[2])


def test_architecture_round_trips_through_plain_data(molecule_members):
    arch = molecule_members[0].architecture
    assert architecture_of(build_module(arch)) == arch


def test_float32_copy_agrees_with_float64(molecule_members, methanol):
    member = molecule_members[0]
    single = member.with_precision("float32")
    assert single.dtype == torch.float32 and member.dtype == torch.float64
    a, b = member.predict([methanol]), single.predict([methanol])
    assert float(b["energy"][0]) == pytest.approx(float(a["energy"][0]), abs=1e-4)
    np.testing.assert_allclose(b["forces"].double().numpy(), a["forces"].numpy(), atol=1e-4)


def test_export_loads_in_mace_calculator_with_equal_results(
    molecule_members, cell_member, methanol, cu_au_cell, tmp_path
):
    from mace.calculators import MACECalculator

    for members, atoms in ((molecule_members, methanol), ([cell_member], cu_au_cell)):
        ensemble = MaceEnsemble(members)
        paths = ensemble.export(tmp_path / str(len(members)))
        assert [p.name for p in paths][-1] == "ensemble.json"
        ours = ensemble.predict([atoms], virial=atoms.pbc.all())
        for k, path in enumerate(paths[:-1]):
            calc = MACECalculator(model_paths=str(path), device="cpu", default_dtype="float64")
            copy = atoms.copy()
            copy.calc = calc
            assert copy.get_potential_energy() == pytest.approx(
                float(ours["energy"][k, 0]), abs=1e-9
            )
            np.testing.assert_allclose(copy.get_forces(), ours["forces"][k].numpy(), atol=1e-9)
            if atoms.pbc.all():  # ASE stress = -virial / volume
                stress = copy.get_stress(voigt=False)
                virial = ours["virial"][k, 0].numpy()
                np.testing.assert_allclose(-stress * atoms.get_volume(), virial, atol=1e-8)


def test_base_model_file_fine_tunes_from_the_same_weights(molecule_members, methanol, tmp_path):
    (path, _) = MaceEnsemble(molecule_members[:1]).export(tmp_path)
    base = MaceMember.from_base_model(path, ["C", "H"], "float64")
    assert base.architecture == molecule_members[0].architecture
    a, b = molecule_members[0].predict([methanol]), base.predict([methanol])
    assert torch.equal(a["forces"], b["forces"]) and torch.equal(a["energy"], b["energy"])
    with pytest.raises(ValueError, match="no element N"):
        MaceMember.from_base_model(path, ["C", "N"], "float64")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "linear.model")
    with pytest.raises(ValueError, match="cannot rebuild"):
        MaceMember.from_base_model(tmp_path / "linear.model", ["C"], "float64")


def test_warm_start_refuses_missing_files_and_elements(molecule_members, tmp_path):
    with pytest.raises(FileNotFoundError):
        MaceMember.warm_start(tmp_path / "nope.pt", ["C", "H", "O"], "float32")
    molecule_members[0].save(tmp_path / "m.pt")
    with pytest.raises(ValueError, match="no element Cu"):
        MaceMember.warm_start(tmp_path / "m.pt", ["C", "Cu"], "float32")
    warm = MaceMember.warm_start(tmp_path / "m.pt", ["H", "C"], "float32")
    assert warm.dtype == torch.float32
    for name, value in molecule_members[0].module.state_dict().items():
        assert torch.equal(
            warm.module.state_dict()[name], value.to(warm.module.state_dict()[name].dtype)
        )


def test_unknown_element_is_refused_with_its_name(molecule_members):
    with pytest.raises(ValueError, match="element N is not among"):
        molecule_members[0].predict([Atoms("CN", positions=[[0, 0, 0], [1.2, 0, 0]])])
