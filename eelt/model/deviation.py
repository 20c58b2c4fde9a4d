"""Ensemble spread of forces (DeePMD's model_devi definitions)."""

from __future__ import annotations

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
