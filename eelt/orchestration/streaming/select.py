"""Candidates of one segment, diverse against those already chosen in the window of recent
segments: farthest-point sampling on :func:`eelt.examine.select.structure_fingerprint` that
starts from the window's earlier choices instead of from nothing."""

from __future__ import annotations

from typing import Literal

import numpy as np
from ase import Atoms

from eelt.examine import select_candidates, structure_fingerprint


def select_in_window(
    frames: list[Atoms],
    pool: np.ndarray,
    max_n: int,
    method: Literal["random", "diverse"],
    earlier: list[Atoms],
    rng: np.random.Generator,
) -> np.ndarray:
    """At most ``max_n`` indices of ``pool`` (into ``frames``). "diverse" with ``earlier``
    frames (the window's earlier candidates): each pick is the pool frame farthest from every
    frame chosen so far, earlier ones included (ties: the lowest index); without earlier
    frames, or "random": :func:`eelt.examine.select_candidates`."""
    pool = np.asarray(pool, dtype=int)
    if method == "random" or not earlier or pool.size <= max_n or max_n <= 0:
        return select_candidates(frames, pool, max_n, method, rng)
    elements = sorted({int(z) for f in [*earlier, *(frames[i] for i in pool)] for z in f.numbers})
    points = np.stack([structure_fingerprint(frames[i], elements) for i in pool])
    known = np.stack([structure_fingerprint(f, elements) for f in earlier])
    min_dist = np.min(np.linalg.norm(points[:, None, :] - known[None, :, :], axis=2), axis=1)
    chosen: list[int] = []
    for _ in range(int(max_n)):
        k = int(np.argmax(min_dist))
        chosen.append(k)
        min_dist = np.minimum(min_dist, np.linalg.norm(points - points[k], axis=1))
        min_dist[chosen] = -np.inf
    return pool[np.array(chosen, dtype=int)]
