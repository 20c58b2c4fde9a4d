"""Statistics a DeepPot-SE is normalised with: environment-matrix spread, energy shift."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError

from eelt.model.neighbors import FrameGraph, element_types

MIN_STD = 1e-2  # floor on standard deviations, as DeePMD's "protection"


def environment_statistics(
    graphs: list[FrameGraph], n_types: int, rcut_smth_A: float, rcut_A: float
) -> dict[str, np.ndarray]:
    """Per center element: mean, std and RMS of s (1/Angstrom), RMS of s x/r, mean neighbor count.

    Elements without pairs in ``graphs`` get mean 0, std 1 and one neighbor.
    """
    s_sum, s_sq, a_sq = np.zeros(n_types), np.zeros(n_types), np.zeros(n_types)
    n_pairs, n_centers = np.zeros(n_types), np.zeros(n_types)
    for g in graphs:
        r = g.positions[g.pair_j] - g.positions[g.pair_i] + g.shift @ g.cell
        dist = np.linalg.norm(r, axis=1)
        u = np.clip((dist - rcut_smth_A) / (rcut_A - rcut_smth_A), 0.0, 1.0)
        s = (u**3 * (u * (15.0 - 6.0 * u) - 10.0) + 1.0) / dist
        center = g.types[g.pair_i]
        s_sum += np.bincount(center, weights=s, minlength=n_types)
        s_sq += np.bincount(center, weights=s**2, minlength=n_types)
        a_sq += np.bincount(center, weights=s**2 / 3.0, minlength=n_types)  # mean over x, y, z
        n_pairs += np.bincount(center, minlength=n_types)
        n_centers += np.bincount(g.types, minlength=n_types)
    seen = n_pairs > 0
    count = np.where(seen, n_pairs, 1.0)
    s_mean = np.where(seen, s_sum / count, 0.0)
    s_std = np.sqrt(np.maximum(s_sq / count - s_mean**2, 0.0))
    a_std = np.sqrt(a_sq / count)
    return {
        "s_mean": s_mean,
        "s_std": np.where(seen, np.maximum(s_std, MIN_STD), 1.0),
        "s_rms": np.where(seen, np.maximum(np.sqrt(s_sq / count), MIN_STD), 1.0),
        "a_std": np.where(seen, np.maximum(a_std, MIN_STD), 1.0),
        "n_norm": np.where(seen, n_pairs / np.maximum(n_centers, 1.0), 1.0),
    }


def energy_shift(frames: list[Atoms], type_map: list[str]) -> np.ndarray | None:
    """Per-element energy (eV) from least squares of frame energies on element counts.

    Minimum-norm solution when the counts do not determine every element (e.g. one
    composition); None when no frame has a calculator (nothing to fit).
    """
    if all(atoms.calc is None for atoms in frames):
        return None
    counts = np.zeros((len(frames), len(type_map)))
    energies = np.zeros(len(frames))
    for f, atoms in enumerate(frames):
        counts[f] = np.bincount(element_types(atoms.numbers, type_map), minlength=len(type_map))
        try:
            energies[f] = atoms.get_potential_energy()
        except (RuntimeError, PropertyNotImplementedError) as err:
            raise ValueError(
                f"frame {f} ({atoms.get_chemical_formula()}) has no energy ({err}); "
                "give every frame an energy or none"
            ) from None
    shift, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return shift
