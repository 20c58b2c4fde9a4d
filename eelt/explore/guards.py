"""Guards that stop a walker: atoms too close, an atom that left the others, a collapsing cell.

Each returns None (or an empty list) when the structure is fine; distances in Angstrom, periodic
images included.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.data import covalent_radii
from vesin import ase_neighbor_list


def closest_contact(atoms: Atoms, min_distance_fraction: float) -> tuple[int, int, float] | None:
    """The worst pair (i, j, distance in Angstrom) closer than ``min_distance_fraction`` x the
    sum of covalent radii (periodic images included), or None if no pair is that close."""
    if min_distance_fraction <= 0 or len(atoms) == 0:
        return None
    radii = covalent_radii[atoms.numbers]
    cutoff = min_distance_fraction * 2.0 * float(radii.max())
    i, j, d = ase_neighbor_list("ijd", atoms, cutoff)
    ratio = d / (min_distance_fraction * (radii[i] + radii[j]))
    if len(ratio) == 0 or ratio.min() >= 1.0:
        return None
    worst = int(np.argmin(ratio))
    a, b = sorted((int(i[worst]), int(j[worst])))
    return a, b, float(d[worst])


def isolated_atoms(atoms: Atoms, max_bond_fraction: float) -> list[tuple[int, float]]:
    """Atoms with no other atom within ``max_bond_fraction`` x the sum of covalent radii
    (periodic images included): [(index, distance to the nearest atom in Angstrom or inf)]."""
    if max_bond_fraction <= 0 or len(atoms) < 2:
        return []
    radii = covalent_radii[atoms.numbers]
    cutoff = max_bond_fraction * 2.0 * float(radii.max())
    i, j, d = ase_neighbor_list("ijd", atoms, cutoff)
    bonded = np.zeros(len(atoms), dtype=bool)
    bonded[i[d < max_bond_fraction * (radii[i] + radii[j])]] = True
    nearest = np.full(len(atoms), np.inf)
    np.minimum.at(nearest, i, d)
    return [(int(k), float(nearest[k])) for k in np.flatnonzero(~bonded)]


def cell_volume_change(atoms: Atoms, start_volume_A3: float, max_volume_ratio: float) -> str | None:
    """Why the cell has collapsed or blown up (volume beyond ``max_volume_ratio`` of the start's
    either way), or None; only for periodic cells, ``max_volume_ratio`` 0 is off."""
    if max_volume_ratio <= 0 or not atoms.pbc.all() or start_volume_A3 <= 0:
        return None
    ratio = abs(atoms.cell.volume) / start_volume_A3
    if ratio > max_volume_ratio or ratio < 1.0 / max_volume_ratio:
        return f"cell volume {ratio:.2f} x the start's, beyond {max_volume_ratio:g}"
    return None
