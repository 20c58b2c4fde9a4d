"""A real committee calculator for exploration tests: EMT plus K different small LJ perturbations.

Combines members the way eelt's EnsembleCalculator does: mean energy/forces, per-atom
force deviation sqrt(mean_k |F_k - <F>|^2), its max/mean, and the energy-per-atom std.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones

from eelt import keys


def _energy_forces(calc: Calculator, atoms: Atoms) -> tuple[float, np.ndarray]:
    work = atoms.copy()
    work.calc = calc
    return float(work.get_potential_energy()), work.get_forces(apply_constraint=False)


def _stress(calc: Calculator, atoms: Atoms) -> np.ndarray:
    work = atoms.copy()
    work.calc = calc
    return work.get_stress(voigt=True)


class CommitteeCalculator(Calculator):
    """Member k = base + perturbations[k] (None: the base alone); stress (the members' mean) for
    periodic cells."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, base: Calculator, perturbations: list[Calculator | None], **kwargs):
        super().__init__(**kwargs)
        self.base = base
        self.perturbations = perturbations

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        e0, f0 = _energy_forces(self.base, self.atoms)
        energies, forces = [], []
        for pert in self.perturbations:
            e, f = (0.0, np.zeros_like(f0)) if pert is None else _energy_forces(pert, self.atoms)
            energies.append(e0 + e)
            forces.append(f0 + f)
        energies, forces = np.array(energies), np.array(forces)
        mean_f = forces.mean(axis=0)
        forces_std = np.sqrt(((forces - mean_f) ** 2).sum(axis=-1).mean(axis=0))
        n = len(self.atoms)
        self.results = {
            "energy": energies.mean(),
            "free_energy": energies.mean(),
            "forces": mean_f,
            "energy_std": energies.std(),
            keys.FORCES_STD: forces_std,
            keys.MAX_DEVI_F: forces_std.max(),
            keys.AVG_DEVI_F: forces_std.mean(),
            keys.DEVI_E: (energies / n).std(),
            "member_energies": energies,
            "member_forces": forces,
        }
        if self.atoms.pbc.all():
            s0 = _stress(self.base, self.atoms)
            self.results["stress"] = s0 + np.mean(
                [np.zeros(6) if p is None else _stress(p, self.atoms) for p in self.perturbations],
                axis=0,
            )


def make_committee(epsilon_eV: float = 0.005) -> CommitteeCalculator:
    """Three members: EMT, EMT + LJ(+eps), EMT + LJ(-eps) (sigma 2.3 A, smooth cutoff 4-5 A)."""

    def lj(eps: float) -> LennardJones:
        return LennardJones(sigma=2.3, epsilon=eps, rc=5.0, ro=4.0, smooth=True)

    return CommitteeCalculator(EMT(), [None, lj(epsilon_eV), lj(-epsilon_eV)])


class WrappingCalculator(Calculator):
    """Runs an inner calculator; subclasses change its results in ``adjust``."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, inner: Calculator, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        work = self.atoms.copy()
        work.calc = self.inner
        work.get_forces()
        self.results = dict(self.inner.results)
        self.results["forces"] = self.results["forces"].copy()
        self.adjust()

    def adjust(self) -> None:
        """Change ``self.results`` in place."""


class NaNAfterCalculator(WrappingCalculator):
    """Wraps a calculator and returns NaN forces from its ``n_good``-th evaluation on."""

    def __init__(self, inner: Calculator, n_good: int, **kwargs):
        super().__init__(inner, **kwargs)
        self.n_good = n_good
        self.n_calls = 0

    def adjust(self) -> None:
        if self.n_calls >= self.n_good:
            self.results["forces"] = np.full_like(self.results["forces"], np.nan)
        self.n_calls += 1


@pytest.fixture
def committee() -> CommitteeCalculator:
    return make_committee()


@pytest.fixture
def committee_factory():
    """``committee_factory(epsilon_eV=0.005)`` builds a fresh committee (see make_committee)."""
    return make_committee


@pytest.fixture
def nan_after():
    """``nan_after(inner, n_good)`` wraps a calculator to return NaN forces from call n_good on."""
    return NaNAfterCalculator


@pytest.fixture
def cu_small() -> Atoms:
    """Cu fcc, 4 atoms (conventional cubic cell), slightly rattled."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.rattle(0.05, seed=1)
    return atoms


@pytest.fixture
def cu32() -> Atoms:
    """Cu fcc, 32 atoms (2x2x2 conventional cells)."""
    return bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
