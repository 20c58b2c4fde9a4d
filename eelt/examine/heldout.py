"""Held-out test frames: drawn uniformly from an iteration's explored frames, whatever their
trust class, then labeled and never trained on (their errors: eelt.train.metrics.ErrorSums)."""

from __future__ import annotations

import numpy as np


def draw_test_frames(n_frames: int, n_test: int, rng: np.random.Generator) -> np.ndarray:
    """``min(n_test, n_frames)`` distinct frame indices drawn uniformly at random, sorted."""
    if n_test < 0 or n_frames < 0:
        raise ValueError(f"n_frames and n_test must be >= 0, got {n_frames}, {n_test}")
    n = min(int(n_test), int(n_frames))
    return np.sort(rng.choice(n_frames, size=n, replace=False)) if n else np.zeros(0, dtype=int)
