"""Randomly perturbed copies of a structure, as DP-GEN's init step makes them."""

from __future__ import annotations

import numpy as np
from ase import Atoms


def perturbed_copies(
    atoms: Atoms,
    n: int,
    position_sigma_A: float,
    cell_strain: float,
    rng: np.random.Generator,
) -> list[Atoms]:
    """``n`` copies with Gaussian displacements (std ``position_sigma_A`` per Cartesian component)
    and, for fully periodic cells, a random symmetric strain with every component in
    ``[-cell_strain, cell_strain]`` (positions scaled with the cell). No calculator, no info copied.
    """
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if not position_sigma_A >= 0:
        raise ValueError(f"position_sigma_A must be >= 0 Angstrom, got {position_sigma_A!r}")
    if not 0 <= cell_strain < 1:
        raise ValueError(f"cell_strain must be in [0, 1), got {cell_strain!r}")
    if len(atoms) == 0:
        raise ValueError("perturbed_copies: the structure has no atoms")
    strain_cell = bool(atoms.pbc.all()) and cell_strain > 0
    copies = []
    for _ in range(int(n)):
        new = Atoms(
            numbers=atoms.numbers.copy(),
            positions=atoms.positions.copy(),
            cell=atoms.cell.array.copy(),
            pbc=atoms.pbc.copy(),
            masses=atoms.get_masses() if atoms.has("masses") else None,
        )
        if strain_cell:
            a = rng.uniform(-cell_strain, cell_strain, size=(3, 3))
            strain = 0.5 * (a + a.T)
            new.set_cell(new.cell.array @ (np.eye(3) + strain), scale_atoms=True)
        if position_sigma_A > 0:
            new.positions += rng.normal(0.0, position_sigma_A, size=(len(new), 3))
        copies.append(new)
    return copies
