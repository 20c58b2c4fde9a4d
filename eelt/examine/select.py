"""Pick a few candidate frames for labeling: uniformly at random, structurally diverse, or
representative of where the candidates lie."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Literal

import numpy as np
from ase import Atoms
from vesin import ase_neighbor_list

from eelt import keys
from eelt.examine.trust import FAILED

FINGERPRINT_RCUT_A = 5.0
FINGERPRINT_BINS = 50
FINGERPRINT_WIDTH_A = 0.1


def structure_fingerprint(
    atoms: Atoms,
    elements: list[int],
    rcut_A: float = FINGERPRINT_RCUT_A,
    n_bins: int = FINGERPRINT_BINS,
    width_A: float = FINGERPRINT_WIDTH_A,
) -> np.ndarray:
    """Per-atom radial distribution per element pair, Gaussian-smeared (``width_A``) on ``n_bins``
    centers in [0, rcut_A] with a cosine cutoff; periodic images included. Fixed length
    (pairs of ``elements`` x n_bins), so frames of any size compare."""
    index = {z: k for k, z in enumerate(elements)}
    unknown = sorted(set(atoms.numbers.tolist()) - set(index))
    if unknown:
        raise ValueError(f"structure_fingerprint: atomic numbers {unknown} not in {elements}")
    n_el = len(elements)
    n_pairs = n_el * (n_el + 1) // 2
    out = np.zeros((n_pairs, n_bins))
    if len(atoms) == 0:
        return out.ravel()
    i, j, d = ase_neighbor_list("ijd", atoms, rcut_A)
    if len(d):
        ei = np.array([index[z] for z in atoms.numbers])[i]
        ej = np.array([index[z] for z in atoms.numbers])[j]
        lo, hi = np.minimum(ei, ej), np.maximum(ei, ej)
        pair = lo * n_el - lo * (lo - 1) // 2 + (hi - lo)  # upper-triangle index
        centers = np.linspace(0.0, rcut_A, n_bins)
        cutoff = 0.5 * (np.cos(np.pi * d / rcut_A) + 1.0)
        smeared = np.exp(-0.5 * ((centers[None, :] - d[:, None]) / width_A) ** 2)
        np.add.at(out, pair, cutoff[:, None] * smeared)
    return (out / len(atoms)).ravel()


def _max_devi(frame: Atoms) -> float:
    value = frame.info.get(keys.MAX_DEVI_F, np.nan)
    return float(value) if np.isfinite(value) else -np.inf


def farthest_point_order(points: np.ndarray, start: int, n: int) -> np.ndarray:
    """Greedy farthest-point sampling: ``n`` distinct row indices of ``points``, beginning with
    ``start`` (ties go to the lowest index)."""
    if n <= 0 or len(points) == 0:
        return np.zeros(0, dtype=int)
    chosen = [start]
    min_dist = np.linalg.norm(points - points[start], axis=1)
    min_dist[start] = -np.inf
    for _ in range(min(n, len(points)) - 1):
        nxt = int(np.argmax(min_dist))
        chosen.append(nxt)
        min_dist = np.minimum(min_dist, np.linalg.norm(points - points[nxt], axis=1))
        min_dist[chosen] = -np.inf
    return np.array(chosen, dtype=int)


def _farthest_from(points: np.ndarray, known: np.ndarray, n: int) -> np.ndarray:
    """``n`` rows of ``points``, each the farthest from ``known`` and the rows picked before."""
    min_dist = np.min(np.linalg.norm(points[:, None, :] - known[None, :, :], axis=2), axis=1)
    chosen: list[int] = []
    for _ in range(int(n)):
        k = int(np.argmax(min_dist))
        chosen.append(k)
        min_dist = np.minimum(min_dist, np.linalg.norm(points - points[k], axis=1))
        min_dist[chosen] = -np.inf
    return np.array(chosen, dtype=int)


def _representatives(points: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct rows of ``points``: k-means (k-means++ start) into ``n`` clusters, then
    per cluster the row nearest its centre; a cluster left empty, or whose nearest row another
    took, is filled by farthest-point from the rows picked."""
    import warnings

    from scipy.cluster.vq import kmeans2

    with warnings.catch_warnings():  # empty clusters (repeated frames) are filled below
        warnings.simplefilter("ignore")
        centres, _ = kmeans2(points, n, minit="++", seed=rng)
    dist = np.linalg.norm(points[:, None, :] - centres[None, :, :], axis=2)
    chosen = list(dict.fromkeys(int(np.argmin(dist[:, c])) for c in range(n)))
    if len(chosen) < n:
        rest = np.setdiff1d(np.arange(len(points)), chosen)
        more = _farthest_from(points[rest], points[chosen], n - len(chosen))
        chosen += rest[more].tolist()
    return np.array(chosen, dtype=int)


def edge_frames(
    classes: np.ndarray, trajectories: Sequence[Hashable], usable: np.ndarray | None = None
) -> np.ndarray:
    """Where walkers left the trusted region: per trajectory (frames with the same
    ``trajectories`` key, in order), the last ``usable`` frame below trust_hi before its first
    failed frame (trust class ``FAILED``), or, with none (a trajectory that starts failed, or
    whose frames before are all labeled already), that first failed frame if usable.
    Trajectories that never fail give none. ``usable``: a mask (None: every frame). Indices
    into ``classes``, in order."""
    classes = np.asarray(classes)
    if len(trajectories) != len(classes):
        raise ValueError(f"{len(trajectories)} trajectory keys for {len(classes)} frames")
    usable = np.ones(len(classes), dtype=bool) if usable is None else np.asarray(usable, bool)
    below: dict[Hashable, int] = {}  # the last usable frame below trust_hi of each trajectory
    done: set[Hashable] = set()
    edges = []
    for i, (c, key) in enumerate(zip(classes, trajectories, strict=True)):
        if key in done:
            continue
        if c == FAILED:
            done.add(key)
            if key in below or usable[i]:
                edges.append(below.get(key, i))
        elif usable[i]:
            below[key] = i
    return np.array(sorted(edges), dtype=int)


def trajectory_keys(frames: list[Atoms]) -> list[tuple]:
    """Each frame's trajectory: its walker and segment (a restart begins a new one)."""
    return [(f.info.get(keys.WALKER), f.info.get(keys.SEGMENT, 0)) for f in frames]


def select_candidates(
    frames: list[Atoms],
    candidate_idx: np.ndarray,
    max_n: int,
    method: Literal["random", "diverse", "representative"],
    rng: np.random.Generator | int | None,
    earlier: list[Atoms] = (),
) -> np.ndarray:
    """Indices into ``frames`` (a subset of ``candidate_idx``, at most ``max_n``, all if fewer).

    "random": uniform without replacement (DP-GEN). "diverse": farthest-point sampling on
    :func:`structure_fingerprint`, starting from the candidate with the highest max_devi_f;
    with ``earlier`` frames (candidates chosen before, in a streaming window) each pick is the
    candidate farthest from every frame chosen so far, earlier ones included (ties: the lowest
    index). "representative": k-means on the fingerprints into ``max_n`` clusters, the
    candidate nearest each centre: dense regions get labels too, not only the extremes
    farthest-point reaches (``earlier`` is not used).
    """
    if method not in ("random", "diverse", "representative"):
        raise ValueError(
            f"selection method must be 'random', 'diverse' or 'representative', got {method!r}"
        )
    if int(max_n) != max_n or max_n < 0:
        raise ValueError(f"max_n must be a non-negative integer, got {max_n!r}")
    idx = np.asarray(candidate_idx, dtype=int).ravel()
    if idx.size and (idx.min() < 0 or idx.max() >= len(frames)):
        raise ValueError(f"candidate_idx out of range for {len(frames)} frames")
    if np.unique(idx).size != idx.size:
        raise ValueError("candidate_idx has repeated indices")
    rng = np.random.default_rng(rng)
    max_n = int(max_n)
    if idx.size <= max_n:
        return idx.copy()
    if max_n == 0:
        return np.zeros(0, dtype=int)
    if method == "random":
        return rng.choice(idx, size=max_n, replace=False)
    candidates = [frames[k] for k in idx]
    elements = sorted({int(z) for f in [*earlier, *candidates] for z in f.numbers})
    points = np.stack([structure_fingerprint(f, elements) for f in candidates])
    if method == "representative":
        return idx[_representatives(points, max_n, rng)]
    if len(earlier):
        known = np.stack([structure_fingerprint(f, elements) for f in earlier])
        return idx[_farthest_from(points, known, max_n)]
    devi = np.array([_max_devi(f) for f in candidates])
    start = int(np.argmax(devi)) if np.isfinite(devi).any() else int(rng.integers(idx.size))
    return idx[farthest_point_order(points, start, max_n)]
