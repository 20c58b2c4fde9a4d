"""Tiny systems and small random-weight models with non-trivial statistics (float64)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.emt import EMT

from eelt.model import DeepPot

SMALL = {
    "rcut_A": 4.0,
    "rcut_smth_A": 1.0,
    "embedding_widths": (6, 12, 24),
    "axis_neuron": 4,
    "fitting_widths": (16, 16),
}


def labeled_copies(atoms: Atoms, n: int, sigma_A: float, seed: int) -> list[Atoms]:
    """``n`` rattled copies of ``atoms`` with EMT energies (for statistics and energy shifts)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        copy = atoms.copy()
        copy.positions += rng.normal(0.0, sigma_A, copy.positions.shape)
        copy.calc = EMT()
        copy.get_potential_energy()
        frames.append(copy)
    return frames


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every model test on one torch thread (see tests/conftest.py)."""


@pytest.fixture
def small() -> dict:
    """Hyper-parameters of a small, fast model."""
    return dict(SMALL)


@pytest.fixture
def methanol() -> Atoms:
    """A distorted CH3OH molecule (no cell)."""
    positions = [
        [-0.047, 0.664, 0.02],
        [-0.05, -0.75, -0.03],
        [-1.08, 1.01, 0.05],
        [0.46, 1.05, 0.92],
        [0.50, 1.0, -0.85],
        [0.85, -1.05, 0.11],
    ]
    return Atoms("COHHHH", positions=positions)


@pytest.fixture
def cu_au_cell() -> Atoms:
    """Three atoms (Cu2Au) in a skewed triclinic cell much smaller than 2 * rcut."""
    cell = [[2.9, 0.0, 0.0], [1.1, 2.7, 0.0], [0.6, 0.8, 2.8]]
    scaled = [[0.0, 0.0, 0.0], [0.52, 0.47, 0.05], [0.1, 0.55, 0.48]]
    atoms = Atoms("Cu2Au", scaled_positions=scaled, cell=cell, pbc=True)
    return atoms


@pytest.fixture
def molecule_model(methanol) -> DeepPot:
    model = DeepPot(["C", "H", "O"], seed=1, **SMALL)
    model.set_statistics(labeled_copies(methanol, 4, 0.1, seed=0))
    return model


@pytest.fixture
def cell_model(cu_au_cell) -> DeepPot:
    model = DeepPot(["Cu", "Au"], seed=2, **SMALL)
    model.set_statistics(labeled_copies(cu_au_cell, 4, 0.1, seed=0))
    return model


def run_model(model: DeepPot, atoms: Atoms, virial: bool = False) -> dict[str, np.ndarray]:
    """Energy (eV), forces (eV/A) and optionally virial (eV) of one frame as numpy."""
    from eelt.model import build_graph, collate

    batch = collate([build_graph(atoms, model.type_map, model.rcut_A)], model.dtype)
    out = model(batch, virial=virial)
    return {
        k: v.detach().numpy()[0] if k in ("energy", "virial") else v.detach().numpy()
        for k, v in out.items()
    }


@pytest.fixture
def rattled():
    """``rattled(atoms, n, sigma_A, seed)`` -> n EMT-labeled rattled copies."""
    return labeled_copies


@pytest.fixture
def evaluate():
    """``evaluate(model, atoms, virial=False)`` -> dict of numpy energy, forces, virial."""
    return run_model
