"""The ensemble as an ASE calculator, and energy conservation in NVE molecular dynamics."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_stress
from ase.md.verlet import VelocityVerlet

from eelt.keys import AVG_DEVI_F, AVG_DEVI_V, DEVI_E, FORCES_STD, MAX_DEVI_F, MAX_DEVI_V
from eelt.model import DeepPot, Ensemble, EnsembleCalculator, build_graph, collate, force_deviation


@pytest.fixture
def cell_ensemble(cu_au_cell, small, rattled):
    members = [DeepPot(["Cu", "Au"], seed=seed, **small) for seed in range(3)]
    frames = rattled(cu_au_cell, 3, 0.1, seed=1)
    for member in members:
        member.set_statistics(frames)
    return Ensemble(members)


def test_periodic_results(cell_ensemble, cu_au_cell):
    atoms = cu_au_cell.copy()
    atoms.calc = EnsembleCalculator(cell_ensemble)
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    stress = atoms.get_stress()
    results = atoms.calc.results
    assert forces.shape == (3, 3) and stress.shape == (6,)
    assert results["member_energies"].shape == (3,) and results["member_forces"].shape == (3, 3, 3)
    assert energy == pytest.approx(results["member_energies"].mean(), abs=1e-12)
    assert results["free_energy"] == energy
    np.testing.assert_allclose(forces, results["member_forces"].mean(0), atol=1e-12)
    assert results["energy_std"] == pytest.approx(results["member_energies"].std(), abs=1e-12)
    assert results[DEVI_E] == pytest.approx(results["energy_std"] / 3, abs=1e-12)
    np.testing.assert_allclose(results[FORCES_STD], force_deviation(results["member_forces"]))
    assert results[MAX_DEVI_F] == pytest.approx(results[FORCES_STD].max(), abs=1e-14)
    assert results[AVG_DEVI_F] == pytest.approx(results[FORCES_STD].mean(), abs=1e-14)
    assert results[MAX_DEVI_F] > 1e-3  # members differ
    # virial deviation: std over members of each virial component per atom (DeePMD's devi_v)
    batch = collate([build_graph(atoms, cell_ensemble.type_map, cell_ensemble.rcut_A)])
    virials = cell_ensemble(batch, virial=True)["virial"][:, 0].numpy()
    devi_v = (virials / len(atoms)).std(axis=0)
    assert results[MAX_DEVI_V] == pytest.approx(devi_v.max(), rel=1e-10)
    assert results[AVG_DEVI_V] == pytest.approx(devi_v.mean(), rel=1e-10)
    assert results[MAX_DEVI_V] > 1e-4
    numeric = calculate_numerical_stress(atoms, 1e-5)
    assert np.abs(stress).max() > 1e-3
    np.testing.assert_allclose(stress, numeric, atol=1e-7 * np.abs(numeric).max() + 1e-10)


def test_molecule_has_no_stress(methanol, small):
    ensemble = Ensemble([DeepPot(["C", "H", "O"], seed=s, **small) for s in range(2)])
    methanol.calc = EnsembleCalculator(ensemble)
    assert methanol.get_forces().shape == (6, 3)
    np.testing.assert_allclose(methanol.get_forces().sum(0), 0.0, atol=1e-12)
    with pytest.raises(PropertyNotImplementedError):
        methanol.get_stress()


def test_forces_from_first_runs_member_0_and_the_ensemble_on_request(cell_ensemble, cu_au_cell):
    first = cu_au_cell.copy()
    first.calc = EnsembleCalculator(cell_ensemble, forces_from="first")
    mean = cu_au_cell.copy()
    mean.calc = EnsembleCalculator(cell_ensemble)
    full = mean.calc.results if mean.get_forces() is not None else None
    # a plain call: member 0 only, no deviation
    forces = first.get_forces()
    results = dict(first.calc.results)
    assert MAX_DEVI_F not in results and "member_forces" not in results
    np.testing.assert_allclose(forces, full["member_forces"][0], atol=1e-12)
    assert results["energy"] == pytest.approx(full["member_energies"][0], abs=1e-12)
    assert np.abs(forces - full["forces"]).max() > 1e-4  # member 0 is not the mean
    numeric = calculate_numerical_stress(first, 1e-5)
    np.testing.assert_allclose(first.get_stress(), numeric, atol=1e-7 * np.abs(numeric).max())
    # after a request: every member runs once, member 0 still drives
    first.calc.request_deviation()
    first.positions[0] += 0.01
    mean.positions[0] += 0.01
    forces = first.get_forces()
    results, full = first.calc.results, mean.calc.results if mean.get_forces() is not None else None
    np.testing.assert_allclose(forces, full["member_forces"][0], atol=1e-12)
    for key in (MAX_DEVI_F, AVG_DEVI_F, DEVI_E, MAX_DEVI_V, AVG_DEVI_V):
        assert results[key] == pytest.approx(full[key], rel=1e-10), key
    first.positions[0] += 0.01  # the request was used up
    first.get_forces()
    assert MAX_DEVI_F not in first.calc.results
    with pytest.raises(ValueError, match="forces_from"):
        EnsembleCalculator(cell_ensemble, forces_from="median")


def test_unknown_element(methanol, small):
    methanol.calc = EnsembleCalculator(Ensemble([DeepPot(["C", "H"], **small)]))
    with pytest.raises(ValueError, match="element O"):
        methanol.get_potential_energy()


def total_energy_per_atom(atoms, calc, steps, timestep_fs):
    atoms.calc = calc
    kinetic_eV = units.kB * 600.0  # Maxwell-Boltzmann momenta at 600 K
    noise = np.random.default_rng(2).normal(size=(len(atoms), 3))
    atoms.set_momenta(noise * np.sqrt(atoms.get_masses() * kinetic_eV)[:, None])
    dynamics = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    total, potential = [], []

    def record():
        total.append(atoms.get_total_energy() / len(atoms))
        potential.append(atoms.get_potential_energy() / len(atoms))

    dynamics.attach(record, interval=1)
    dynamics.run(steps)
    return np.array(total), np.array(potential)


class ScaledForces(EnsembleCalculator):
    """Forces 3% too large: what a subtly wrong gradient looks like to the integrator."""

    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        self.results["forces"] = 1.03 * self.results["forces"]


def test_nve_conserves_energy(small, rattled):
    start = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((1, 1, 2))
    model = DeepPot(["Cu"], seed=0, **small)
    model.set_statistics(rattled(start, 4, 0.1, seed=0))
    ensemble = Ensemble([model])
    start.positions += np.random.default_rng(1).normal(0.0, 0.05, start.positions.shape)

    total, potential = total_energy_per_atom(start.copy(), EnsembleCalculator(ensemble), 200, 0.5)
    assert potential.max() - potential.min() > 0.015  # the atoms really move on the surface
    assert np.abs(total - total[0]).max() < 1e-5  # eV/atom over 100 fs

    total, _ = total_energy_per_atom(start.copy(), ScaledForces(ensemble), 200, 0.5)
    assert np.abs(total - total[0]).max() > 1e-4  # the same check catches 3% wrong forces
