"""Ensemble spread of forces and energies (DeePMD's model_devi definitions)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def force_deviation(forces: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Member forces (K, N, 3) eV/A -> per-atom deviation sqrt(mean_k |F_k - <F>|^2) (N,) eV/A."""
    if forces.ndim != 3 or forces.shape[-1] != 3:
        raise ValueError(f"forces must have shape (K, N, 3), got {tuple(forces.shape)}")
    if isinstance(forces, torch.Tensor):
        spread = forces - forces.mean(0, keepdim=True)
        return torch.sqrt((spread**2).sum(-1).mean(0))
    forces = np.asarray(forces)
    spread = forces - forces.mean(0, keepdims=True)
    return np.sqrt((spread**2).sum(-1).mean(0))


def relative_max_devi_f(forces_std: np.ndarray, forces: np.ndarray, eps_eV_per_A: float) -> float:
    """DeePMD's relative model deviation (dimensionless): max over atoms of
    forces_std_i / (|F_i| + eps), with forces_std (N,) eV/A from :func:`force_deviation` and
    forces (N, 3) eV/A the ensemble's mean forces; ``eps_eV_per_A`` > 0 keeps near-zero forces
    from dominating. 0.0 for no atoms."""
    eps = float(eps_eV_per_A)
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps_eV_per_A must be finite and > 0, got {eps_eV_per_A!r}")
    std = np.asarray(forces_std, dtype=float)
    f = np.asarray(forces, dtype=float)
    if std.ndim != 1 or f.shape != (std.size, 3):
        raise ValueError(
            f"forces_std must be (N,) and forces (N, 3), got {std.shape} and {f.shape}"
        )
    if std.size == 0:
        return 0.0
    return float(np.max(std / (np.linalg.norm(f, axis=-1) + eps)))


@dataclass(frozen=True)
class Deviation:
    """The members' spread on one frame (DeePMD's model_devi definitions)."""

    forces_std_eV_per_A: np.ndarray  # (N,) per atom, force_deviation
    max_devi_f_eV_per_A: float  # max over atoms
    avg_devi_f_eV_per_A: float  # mean over atoms
    max_devi_f_rel: float  # relative_max_devi_f: max over atoms of std / (|<F>| + eps)
    devi_e_eV_per_atom: float  # std over members of the energy per atom


def frame_deviation(energies_eV: np.ndarray, forces: np.ndarray, eps_eV_per_A: float) -> Deviation:
    """The Deviation of one frame from the members' energies (K,) eV and forces (K, N, 3)
    eV/A; ``eps_eV_per_A`` as in relative_max_devi_f. Zero deviations for no atoms."""
    energies = np.asarray(energies_eV, dtype=float)
    forces = np.asarray(forces, dtype=float)
    std = force_deviation(forces)
    n_atoms = forces.shape[1]
    return Deviation(
        forces_std_eV_per_A=std,
        max_devi_f_eV_per_A=float(std.max()) if n_atoms else 0.0,
        avg_devi_f_eV_per_A=float(std.mean()) if n_atoms else 0.0,
        max_devi_f_rel=relative_max_devi_f(std, forces.mean(0), eps_eV_per_A),
        devi_e_eV_per_atom=float((energies / max(n_atoms, 1)).std()),
    )
