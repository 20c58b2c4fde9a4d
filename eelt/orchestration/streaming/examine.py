"""The examination of one walker segment, as soon as it ends: trust classes, held-out test
frames, and candidates capped and diverse over the window of recent segments.

It reuses eelt.examine's pieces (classify, adaptive trust_lo, draw_test_frames, the diverse
selection) on one segment's frames. What the window and the budget allow comes in as numbers,
so the examination is a function of its inputs: run again on resume it gives the same choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from eelt import atomic, keys
from eelt.config import ExamineConfig
from eelt.orchestration.streaming.layout import CANDIDATES, REPORT, TEST_FRAMES
from eelt.orchestration.streaming.select import select_in_window


@dataclass(frozen=True)
class Allowance:
    """What one segment may select: the cap left in the window, the label budget left (None:
    none), its share of the round's test frames, and the window's earlier candidates."""

    candidates: int
    budget: int | None
    tests: int
    earlier: list[Atoms]


def walker_test_frames(n_test_per_round: int, n_walkers: int, walker: int) -> int:
    """Walker ``walker``'s share of the ``n_test_per_round`` test frames of a round."""
    return n_test_per_round // n_walkers + (walker < n_test_per_round % n_walkers)


def examine_segment(
    frames: list[Atoms],
    hashes: list[str],
    committed: set[str],
    levels: dict[str, Any],
    cfg: ExamineConfig,
    allowance: Allowance,
    seed: tuple[int, int],
    out_dir: Path,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Classify ``frames`` (with their label ``hashes``), draw test frames and pick candidates
    among the frames whose hash is not ``committed`` (labeled or chosen before); write
    candidates.extxyz, test_frames.extxyz and report.json (last, with ``context``) to
    ``out_dir``. ``seed`` is (round, walker)."""
    from eelt.examine import (
        CANDIDATE,
        TRUST_CLASSES,
        TrustCounts,
        classify_frames,
        draw_test_frames,
    )

    devi, levels, classes, unit = classify_frames(frames, levels, cfg)
    counts = TrustCounts.from_labels(classes)
    fresh = np.array(
        [i for i, h in enumerate(hashes) if h not in committed and hashes.index(h) == i],
        dtype=int,
    )
    budget = allowance.budget
    n_test = allowance.tests if budget is None else min(allowance.tests, budget)
    drawn = draw_test_frames(len(fresh), n_test, np.random.default_rng([cfg.seed, *seed, 1]))
    test_idx = fresh[drawn]
    pool = np.array(
        [i for i in fresh if classes[i] == CANDIDATE and i not in set(test_idx.tolist())],
        dtype=int,
    )
    cap = allowance.candidates
    if budget is not None:
        cap = min(cap, budget - len(test_idx))
    cap = max(int(cap), 0)
    rng = np.random.default_rng([cfg.seed, *seed])
    chosen = select_in_window(frames, pool, cap, cfg.selection, allowance.earlier, rng)
    for frame, c in zip(frames, classes, strict=True):
        frame.info[keys.TRUST_CLASS] = TRUST_CLASSES[int(c)]
    atomic.write_frames(out_dir / CANDIDATES, [frames[i] for i in chosen])
    atomic.write_frames(out_dir / TEST_FRAMES, [frames[i] for i in test_idx])
    report = {
        **(context or {}),
        **levels,
        **counts.to_dict(),
        "candidate_cap": cap,
        "n_selected": len(chosen),
        "n_test_frames": len(test_idx),
        "candidate_hashes": [hashes[i] for i in chosen],
        "test_hashes": [hashes[i] for i in test_idx],
        "max_devi_f_max": float(np.nanmax(devi)) if np.isfinite(devi).any() else None,
    }
    atomic.write_json(out_dir / REPORT, report)
    return report
