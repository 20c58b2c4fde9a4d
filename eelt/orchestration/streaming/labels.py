"""Labeling one selection (a segment's candidates and test frames) with the run's label store.

Runs in a driver thread of the scheduler: :func:`eelt.label.label_frames` sends the DFT jobs to
the executor and stores each label under its content hash the moment it returns, so a label
whose hash file exists is never computed again, by this selection or any other. The outcome
(``labels.json``) is written once every job returned; a selection without it is labeled again on
resume, which computes only the labels still missing.
"""

from __future__ import annotations

import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import ase.io

from eelt import atomic
from eelt.orchestration.streaming.layout import CANDIDATES, LABELS, TEST_FRAMES


def _frames(path: Path) -> list:
    return ase.io.read(path, ":") if path.is_file() and path.stat().st_size else []


def label_selection(
    selection_dir: Path, labeler, executor: Executor, labels_dir: Path
) -> dict[str, Any]:
    """Label the candidates and test frames in ``selection_dir``; write and return its
    ``labels.json``: labeled and failed counts (candidates and test frames apart), the failed
    hashes with reasons, labels computed and reused, DFT core-hours and busy seconds."""
    from eelt.label import label_frames

    t0 = time.perf_counter()
    candidates = _frames(selection_dir / CANDIDATES)
    tests = _frames(selection_dir / TEST_FRAMES)
    jobs = candidates + tests
    report = label_frames(jobs, labeler, executor, labels_dir) if jobs else None
    failed = report.failed if report else []
    n_test_failed = sum(f["index"] >= len(candidates) for f in failed)
    record = {
        "n_labeled": len(candidates) - (len(failed) - n_test_failed),
        "n_test_labeled": len(tests) - n_test_failed,
        "n_failed": len(failed) - n_test_failed,
        "n_test_failed": n_test_failed,
        "failed": [{k: f[k] for k in ("index", "hash", "reason", "kind")} for f in failed],
        "n_computed": report.n_computed if report else 0,
        "n_cached": report.n_cached if report else 0,
        "dft_core_hours": report.core_hours if report else 0.0,
        "busy_s": report.busy_s_computed if report else 0.0,
        "wall_s": time.perf_counter() - t0,
    }
    atomic.write_json(selection_dir / LABELS, record)
    return record
