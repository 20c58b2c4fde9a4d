"""The examination of a set of explored frames, the same for a synchronous iteration's frames
and a streaming segment's: trust classes, held-out test frames drawn uniformly from the fresh
frames, and at most a cap of diverse candidates among the fresh candidate frames, filled up
with edge frames (where walkers left the trusted region) when the candidates are too few.

A frame is *fresh* when its label hash is not ``committed`` (in the training data, or chosen
for labeling before) and it is the first frame with that hash. What the caller allows (the
candidate cap, the label budget, the number of test frames, earlier candidates to stay diverse
from) comes in as numbers, so the examination is a function of its inputs: run again on
resume, it makes the same choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from eelt import atomic, keys
from eelt.config import ExamineConfig
from eelt.examine.heldout import draw_test_frames
from eelt.examine.select import edge_frames, select_candidates, trajectory_keys
from eelt.examine.trust import CANDIDATE, TRUST_CLASSES, TrustCounts

CANDIDATES_FILE = "candidates.extxyz"
TEST_FRAMES_FILE = "test_frames.extxyz"


@dataclass(frozen=True)
class Classified:
    """Frames' deviations, the trust levels applied (trust_lo made adaptive if so configured),
    each frame's trust class and the unit suffix of the level keys (``classify_frames``)."""

    devi: np.ndarray
    levels: dict[str, Any]
    classes: np.ndarray
    unit: str

    @property
    def counts(self) -> TrustCounts:
        return TrustCounts.from_labels(self.classes)


@dataclass(frozen=True)
class Allowance:
    """What an examination may choose: ``candidates`` (the cap), ``budget`` (labels left, test
    frames included; None: no budget), ``tests`` (test frames to draw), ``earlier`` (candidates
    chosen before in the same window, to stay diverse from)."""

    candidates: int
    budget: int | None
    tests: int
    earlier: list[Atoms] = field(default_factory=list)


def examine_frames(
    frames: list[Atoms],
    hashes: list[str],
    committed: set[str],
    classified: Classified,
    cfg: ExamineConfig,
    allowance: Allowance,
    seed: tuple[int, ...],
    out_dir: Path,
) -> dict[str, Any]:
    """Draw the test frames and choose the candidates among ``frames`` (with their label
    ``hashes`` and trust classes ``classified``); mark every frame's trust class; write
    ``out_dir``/candidates.extxyz and test_frames.extxyz; return the report's numbers. ``seed``
    (an iteration, or a round and walker) seeds the draws with ``cfg.seed``."""
    classes = classified.classes
    fresh = np.array(
        [i for i, h in enumerate(hashes) if h not in committed and hashes.index(h) == i],
        dtype=int,
    )
    budget = allowance.budget
    n_test = allowance.tests if budget is None else min(allowance.tests, budget)
    drawn = draw_test_frames(len(fresh), n_test, np.random.default_rng([cfg.seed, *seed, 1]))
    test_idx = fresh[drawn]
    held_out = set(test_idx.tolist())
    pool = np.array([i for i in fresh if classes[i] == CANDIDATE and i not in held_out], dtype=int)
    cap = allowance.candidates
    if budget is not None:
        cap = min(cap, budget - len(test_idx))
    cap = max(int(cap), 0)
    rng = np.random.default_rng([cfg.seed, *seed])
    chosen = select_candidates(frames, pool, cap, cfg.selection, rng, earlier=allowance.earlier)
    edges = np.zeros(0, dtype=int)
    if cfg.edge_frames and len(chosen) < cap:
        # too few candidates (most frames failed, say): add where walkers left the trusted
        # region, as diverse from what was chosen as the selection makes them
        usable = np.zeros(len(frames), dtype=bool)
        usable[fresh] = True
        usable[list(held_out)] = False
        edge_pool = np.setdiff1d(edge_frames(classes, trajectory_keys(frames), usable), chosen)
        known = [*allowance.earlier, *(frames[i] for i in chosen)]
        edges = select_candidates(
            frames, edge_pool, cap - len(chosen), cfg.selection, rng, earlier=known
        )
        chosen = np.concatenate([chosen, edges]).astype(int)
    for frame, c in zip(frames, classes, strict=True):
        frame.info[keys.TRUST_CLASS] = TRUST_CLASSES[int(c)]
    atomic.write_frames(out_dir / CANDIDATES_FILE, [frames[i] for i in chosen])
    atomic.write_frames(out_dir / TEST_FRAMES_FILE, [frames[i] for i in test_idx])
    devi = classified.devi
    return {
        **classified.levels,
        **classified.counts.to_dict(),
        "candidate_cap": cap,
        "n_selected": len(chosen),
        "n_edge_frames": len(edges),
        "n_test_frames": len(test_idx),
        "test_frame_index": [int(i) for i in test_idx],
        "candidate_hashes": [hashes[i] for i in chosen],
        "test_hashes": [hashes[i] for i in test_idx],
        "max_devi_f_max": float(np.nanmax(devi)) if np.isfinite(devi).any() else None,
    }
