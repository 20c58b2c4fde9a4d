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
