"""One training generation of a streaming run: its data from the label store, the ensemble
warm-started from the previous generation (:func:`eelt.train.generation.train_generation`, as
a synchronous iteration trains), the calibration of the generations that explored its rounds,
and its report with the test errors on every test frame labeled up to its data's cutoff.

Runs in a driver thread of the scheduler; the training itself is a job on the executor (on a
GPU worker where the cluster has them). A generation whose report is missing is trained again
from the start: its folder is cleared first, so a killed attempt leaves nothing half-used.
"""

from __future__ import annotations

import logging
import shutil
import time
from concurrent.futures import Executor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ase.io
from ase import Atoms

from eelt import atomic
from eelt.errors import EeltError
from eelt.orchestration.streaming.layout import (
    CALIBRATION_FILE,
    CALIBRATION_PLOT,
    CANDIDATES,
    REPORT,
    TEST_FRAMES,
    StreamDir,
)

log = logging.getLogger(__name__)


def labeled_frames(
    dirs: list[Path], failed: set[str], name: str, labeler, executor: Executor, labels_dir: Path
) -> list[Atoms]:
    """The frames of file ``name`` in the selection ``dirs`` (in order) with their labels from
    the store; those whose label failed are left out. Every label is in the store already, so
    no job runs."""
    from eelt.label import LABEL_HASH, frame_hash, label_frames

    settings = labeler.settings()
    frames = [f for d in dirs for f in _frames(d / name)]
    frames = [f for f in frames if frame_hash(f, settings) not in failed]
    if not frames:
        return []
    report = label_frames(frames, labeler, executor, labels_dir)
    if report.n_computed:
        log.warning("generation data: %d labels were missing from the store", report.n_computed)
    return [a for a in report.labeled if LABEL_HASH in a.info]


def _frames(path: Path) -> list[Atoms]:
    return ase.io.read(path, ":") if path.is_file() and path.stat().st_size else []


def train_generation(
    ctx,
    stream: StreamDir,
    generation: int,
    selection_dirs: list[Path],
    failed: set[str],
) -> dict[str, Any]:
    """Train generation ``generation`` (>= 1) on the initial data and the labeled candidates of
    every generation up to it (those of ``selection_dirs`` are its new ones), warm-started from
    generation - 1, after calibrating the generations that explored its rounds on their labels
    (:func:`eelt.examine.calibration.calibrate_explorers`); write its report (last) and return
    it. ``ctx`` is the run's :class:`eelt.orchestration.context.RunContext`."""
    from eelt.examine.calibration import ExploredLabels, calibrate_explorers
    from eelt.train.generation import train_generation as train_ensemble_generation

    run = ctx.run
    out = stream.generation_dir(generation)
    if out.is_dir() and not (out / REPORT).is_file():
        shutil.rmtree(out)  # a killed attempt: train again from the start
    out.mkdir(parents=True, exist_ok=True)
    started, t0 = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.perf_counter()
    iteration = generation - 1  # its data files are named as the synchronous loop's iteration
    groups = []
    for d in selection_dirs:
        report = atomic.read_json(d / REPORT)
        cands, tests = (
            labeled_frames([d], failed, name, ctx.labeler, ctx.label_executor, run.labels_dir)
            for name in (CANDIDATES, TEST_FRAMES)
        )
        g = int(report["generation"])
        models = generation_models(run.root, stream, g)
        row = {"round": report["round"], "walker": report["walker"], "explored_by": g}
        groups.append(ExploredLabels(report, cands, tests, models, row))
    train = [f for group in groups for f in group.candidates]
    tests = [f for group in groups for f in group.tests]
    explorers = sorted({group.row["explored_by"] for group in groups})
    calibration = calibrate_explorers(
        groups,
        ctx.config.examine.target_force_error_eV_per_A,
        out / CALIBRATION_PLOT,
        f"generation {generation}: frames explored by generation(s) "
        + (", ".join(str(g) for g in explorers) or "none"),
    )
    atomic.write_json(
        out / CALIBRATION_FILE,
        {
            "generation": generation,
            "explored_by": explorers,
            "models_dirs": {
                str(group.row["explored_by"]): str(group.models.relative_to(run.root))
                for group in groups
            },
            **calibration,
        },
    )
    data_file = run.data_dir / f"iter-{iteration:03d}.extxyz"
    if train:
        atomic.write_frames(data_file, train)
    if tests:
        atomic.write_frames(run.test_data_file(iteration), tests)
    files = [f for f in run.data_files() if not f.name.startswith("iter-")] + [
        run.data_dir / f"iter-{i:03d}.extxyz"
        for i in range(generation)
        if (run.data_dir / f"iter-{i:03d}.extxyz").is_file()
    ]
    trained = train_ensemble_generation(
        files, len(train), out, generation_models(run.root, stream, generation - 1),
        ctx.config.train, ctx.type_map, ctx.train_executor,
        run.test_data_files(before=iteration + 1), run.root, f"generation {generation}",
        run.yardstick_files(),
    )  # fmt: skip
    report = {
        "generation": generation,
        "started": started,
        "n_new": len(train),
        "n_test_new": len(tests),
        "data_file": str(data_file.relative_to(run.root)) if train else None,
        **trained,
        "wall_s": time.perf_counter() - t0,
    }
    atomic.write_json(out / REPORT, report)  # last: the generation is finished
    return report


def generation_models(root: Path, stream: StreamDir, generation: int) -> Path:
    """The models of a finished generation (0: the initial ensemble; a skipped generation's are
    its predecessor's)."""
    if generation == 0:
        return Path(root) / "init" / "train"
    report = stream.generation(generation)
    if report is None:
        raise EeltError(f"generation {generation} has not finished")
    return Path(root) / report["models_dir"]
