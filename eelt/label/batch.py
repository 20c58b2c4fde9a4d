"""Labeling one examination's choice: its candidates (training data) and test frames (held
out) in one batch of jobs, the outcome record both schedules keep, and the failed-label stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ase.io
from ase import Atoms

from eelt.errors import EeltError
from eelt.label.dispatch import LABEL_HASH, label_frames


@dataclass(frozen=True)
class LabeledBatch:
    """A batch's outcome: its ``record`` (counts, failures, DFT cost) and the labeled
    ``candidates`` and ``tests`` (frames whose label failed left out)."""

    record: dict[str, Any]
    candidates: list[Atoms]
    tests: list[Atoms]


def label_batch(
    candidates: list[Atoms],
    tests: list[Atoms],
    labeler,
    executor: Executor,
    labels_dir: Path,
    on_progress: Callable[[int, int], None] | None = None,
) -> LabeledBatch:
    """Label ``candidates`` and ``tests`` in one call of :func:`label_frames` (each label
    stored under its hash as it returns). The record counts candidates and test frames apart:
    requested, labeled, failed (each failure with ``test_frame``), labels computed and reused,
    DFT core-hours (held and computed), the jobs' busy seconds, failures by kind, wall s."""
    t0 = time.perf_counter()
    jobs = list(candidates) + list(tests)
    report = label_frames(jobs, labeler, executor, labels_dir, on_progress) if jobs else None
    failed = report.failed if report else []
    n = len(candidates)
    failed_index = {f["index"] for f in failed}
    done = [i for i in range(len(jobs)) if i not in failed_index]
    labeled = report.labeled if report else []
    train = [a for i, a in zip(done, labeled, strict=True) if i < n]
    test = [a for i, a in zip(done, labeled, strict=True) if i >= n]
    for failure in failed:
        failure["test_frame"] = failure["index"] >= n
    n_test_failed = sum(f["test_frame"] for f in failed)
    by_kind: dict[str, int] = {}
    for failure in failed:
        kind = failure.get("kind", "error")
        by_kind[kind] = by_kind.get(kind, 0) + 1
    record = {
        "n_requested": n,
        "n_labeled": len(train),
        "n_failed": len(failed) - n_test_failed,
        "n_test_requested": len(tests),
        "n_test_labeled": len(test),
        "n_test_failed": n_test_failed,
        "n_cached": report.n_cached if report else 0,
        "n_computed": report.n_computed if report else 0,
        "dft_core_hours": report.core_hours if report else 0.0,
        "dft_core_hours_computed": report.core_hours_computed if report else 0.0,
        "busy_s": report.busy_s_computed if report else 0.0,
        "failed": failed,
        "failed_by_kind": by_kind,
        "wall_s": time.perf_counter() - t0,
    }
    return LabeledBatch(record, train, test)


def check_failed_fraction(
    n_failed: int,
    n_jobs: int,
    limit: float | None,
    where: str,
    failed: list[dict[str, Any]] = (),
    see: str = "",
) -> None:
    """Stop with one line (an EeltError) when more than ``limit`` (label.max_failed_fraction)
    of ``n_jobs`` labels failed in ``where``: the finished labels stay in the label store, so a
    run started again after the cause is fixed labels only what failed."""
    if limit is None or not n_jobs or n_failed / n_jobs <= limit:
        return
    by_kind: dict[str, int] = {}
    for f in failed:
        by_kind[f.get("kind", "error")] = by_kind.get(f.get("kind", "error"), 0) + 1
    kinds = "".join(f"; {k} {n}" for k, n in sorted(by_kind.items()))
    first = f"; first: {failed[0]['reason']}" if failed else ""
    raise EeltError(
        f"label: {n_failed} of {n_jobs} labels failed in {where} ({n_failed / n_jobs:.0%} > "
        f"label.max_failed_fraction {limit:g}{kinds}){first}{see}"
    )


def training_hashes(files: Iterable[Path]) -> set[str]:
    """Label hashes of every frame in the training-data ``files``."""
    return {a.info[LABEL_HASH] for f in files for a in ase.io.read(f, ":") if LABEL_HASH in a.info}
