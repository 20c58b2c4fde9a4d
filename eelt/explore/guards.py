"""Guards that stop a walker: atoms too close, an atom that left the others, a collapsing cell,
a walker far hotter than its thermostat's target.

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


# the kinetic temperature is judged as a running mean over this many MD steps
KINETIC_WINDOW_STEPS = 100
# ... and only with at least this many degrees of freedom: below, a thermalized walker's own
# spread (relative std sqrt(2 / dof) per step) carries its 100-step mean past 2x the target
# (measured: water, 6 dof, GFN2-xTB Langevin at 300 K: up to 3.8x; Cu32 EMT, 93 dof: 1.3x)
MIN_KINETIC_DOF = 30


def overheated(
    kinetic_temperatures_K: list[float], target_K: float, max_factor: float | None, dof: int
) -> str | None:
    """Why a walker runs too hot (the mean of ``kinetic_temperatures_K``, one per MD step over
    the last :data:`KINETIC_WINDOW_STEPS`, above ``max_factor`` x its target ``target_K``),
    or None: fine, not yet a full window, fewer than :data:`MIN_KINETIC_DOF` degrees of
    freedom ``dof``, or ``max_factor`` None (off). A model whose forces pump energy into the
    MD (or a timestep too long for the bonds it makes) heats its walker this way."""
    if max_factor is None or dof < MIN_KINETIC_DOF or target_K <= 0:
        return None
    if len(kinetic_temperatures_K) < KINETIC_WINDOW_STEPS:
        return None
    mean = float(np.mean(kinetic_temperatures_K[-KINETIC_WINDOW_STEPS:]))
    if mean > max_factor * target_K:
        return (
            f"kinetic temperature {mean:.0f} K (mean over {KINETIC_WINDOW_STEPS} steps) above "
            f"{max_factor:g} x the target {target_K:g} K"
        )
    return None
