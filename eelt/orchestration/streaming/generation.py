"""One training generation of a streaming run: its data from the label store, the ensemble
warm-started from the previous generation (eelt.train.train_ensemble), and its report with the
test errors on every test frame labeled up to its data's cutoff.

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
import numpy as np
from ase import Atoms

from eelt import atomic
from eelt.errors import EeltError
from eelt.orchestration.streaming.layout import CANDIDATES, REPORT, TEST_FRAMES, StreamDir

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
    loop,
    stream: StreamDir,
    generation: int,
    selection_dirs: list[Path],
    failed: set[str],
    labeler,
    executor: Executor,
) -> dict[str, Any]:
    """Train generation ``generation`` (>= 1) on the initial data and the labeled candidates of
    every generation up to it (those of ``selection_dirs`` are its new ones), warm-started from
    generation - 1, after calibrating the generations that explored its rounds on their labels
    (:mod:`eelt.orchestration.streaming.calibration`); write its report (last) and return it. ``loop`` is the
    run's :class:`eelt.orchestration.synchronous.Loop` (its run directory, config, type map and test errors)."""
    from eelt.orchestration.streaming.calibration import calibrate_generation
    from eelt.train import train_warm_or_fresh
    from eelt.train.trainer import training_busy_s

    run, cfg = loop.run, loop.config.train
    out = stream.generation_dir(generation)
    if out.is_dir() and not (out / REPORT).is_file():
        shutil.rmtree(out)  # a killed attempt: train again from the start
    out.mkdir(parents=True, exist_ok=True)
    started, t0 = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.perf_counter()
    iteration = generation - 1  # its data files are named as the synchronous loop's iteration
    groups = []
    for d in selection_dirs:
        labeled = [
            labeled_frames([d], failed, name, labeler, executor, run.labels_dir)
            for name in (CANDIDATES, TEST_FRAMES)
        ]
        groups.append((atomic.read_json(d / REPORT), *labeled))
    train = [f for _, cands, _ in groups for f in cands]
    tests = [f for _, _, t in groups for f in t]
    explorers = {int(report["generation"]) for report, _, _ in groups}
    calibrate_generation(
        run.root,
        generation,
        groups,
        {g: generation_models(run.root, stream, g) for g in explorers},
        loop.config.examine.target_force_error_eV_per_A,
        out,
    )
    data_file = run.data_dir / f"iter-{iteration:03d}.extxyz"
    if train:
        atomic.write_frames(data_file, train)
    if tests:
        atomic.write_frames(run.test_data_file(iteration), tests)
    previous = generation_models(run.root, stream, generation - 1)
    base = {
        "generation": generation,
        "started": started,
        "n_new": len(train),
        "n_test_new": len(tests),
        "data_file": str(data_file.relative_to(run.root)) if train else None,
    }
    if not train:
        report = {
            **base,
            "models_dir": str(previous.relative_to(run.root)),
            "skipped": "no new labels",
            **loop._test_errors(previous, iteration),
            "wall_s": time.perf_counter() - t0,
        }
        atomic.write_json(out / REPORT, report)
        return report
    files = [f for f in run.data_files() if not f.name.startswith("iter-")] + [
        run.data_dir / f"iter-{i:03d}.extxyz"
        for i in range(generation)
        if (run.data_dir / f"iter-{i:03d}.extxyz").is_file()
    ]
    n_frames = sum(len(ase.io.read(f, ":")) for f in files)
    n_old = n_frames - len(train)
    warm = cfg.warm_start == "always" or (cfg.warm_start == "auto" and len(train) <= n_old)
    names = [str(f) for f in files]
    results = train_warm_or_fresh(
        names, out, cfg, loop.type_map, executor, previous, warm, f"generation {generation}"
    )
    members = [r.to_dict() for r in results]
    report = {
        "busy_s": training_busy_s(members, cfg, executor),  # a stack's time once
        **base,
        "models_dir": str(out.relative_to(run.root)),
        "warm_start": warm,
        "n_frames": n_frames,
        "members": members,
        "val_energy_rmse_meV_per_atom": float(
            np.mean([m["val_energy_rmse_meV_per_atom"] for m in members])
        ),
        "val_force_rmse_meV_per_A": float(
            np.mean([m["val_force_rmse_meV_per_A"] for m in members])
        ),
        **loop._test_errors(out, iteration),
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
