"""One generation of the ensemble, as both schedules train it: warm-started from the previous
generation when the new data is not larger than the old (``train.warm_start: auto``), members
whose warm start diverged trained again from scratch, and its report with the validation errors
and the errors on every held-out test frame so far.
"""

from __future__ import annotations

import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import ase.io
import numpy as np

from eelt.config import TrainConfig


def heldout_errors(
    models_dir: Path, test_files: list[Path], yardstick_files: list[Path] = ()
) -> dict[str, Any]:
    """Errors of the ensemble in ``models_dir`` on the frames of ``test_files`` (named
    iter-NNN.extxyz): summed per file, so any union of them combines exactly, and over all;
    with ``yardstick_files`` (frames no model chose), its errors on them too (``yardstick``)."""
    from eelt.model.families import load_ensemble
    from eelt.train.metrics import ErrorSums, predict_frames

    out: dict[str, Any] = {"test": ErrorSums().metrics(), "test_sums_by_iteration": {}}
    if not test_files and not yardstick_files:
        return out
    ensemble = load_ensemble(models_dir)

    def sums(path: Path) -> ErrorSums:
        return ErrorSums.of(predict_frames(ensemble, ase.io.read(path, ":")))

    by_file = {Path(f).stem.removeprefix("iter-"): sums(f) for f in test_files}
    if by_file:
        out["test"] = ErrorSums.total(by_file.values()).metrics()
        out["test_sums_by_iteration"] = {k: v.to_dict() for k, v in by_file.items()}
    if yardstick_files:
        out["yardstick"] = ErrorSums.total([sums(f) for f in yardstick_files]).metrics()
    return out


def train_generation(
    data_files: list[Path],
    n_new: int,
    out_dir: Path,
    previous: Path | None,
    cfg: TrainConfig,
    type_map: list[str],
    executor: Executor,
    test_files: list[Path],
    root: Path,
    what: str,
    yardstick_files: list[Path] = (),
) -> dict[str, Any]:
    """Train an ensemble into ``out_dir`` on ``data_files`` (``n_new`` of their frames new),
    warm from the models in ``previous`` (None: the first ensemble); with no new frame and a
    previous ensemble, train nothing: the report names the previous models (``skipped``).
    The report holds its errors on the held-out ``test_files`` and ``yardstick_files``.
    Paths in the report are relative to ``root``; ``what`` names the generation in messages."""
    from eelt.train.trainer import train_warm_or_fresh, training_busy_s

    t0 = time.perf_counter()
    if previous is not None and n_new == 0:
        return {
            "models_dir": str(previous.relative_to(root)),
            "skipped": "no new labels",
            **heldout_errors(previous, test_files, yardstick_files),
            "wall_s": time.perf_counter() - t0,
        }
    n_frames = sum(len(ase.io.read(f, ":")) for f in data_files)
    n_old = n_frames - n_new
    warm = previous is not None and (
        cfg.warm_start == "always" or (cfg.warm_start == "auto" and n_new <= n_old)
    )
    files = [str(f) for f in data_files]
    results = train_warm_or_fresh(files, out_dir, cfg, type_map, executor, previous, warm, what)
    members = [r.to_dict() for r in results]
    return {
        "models_dir": str(out_dir.relative_to(root)),
        "warm_start": warm,
        "n_frames": n_frames,
        "members": members,
        "busy_s": training_busy_s(members, cfg, executor),  # a stack's time once
        "val_energy_rmse_meV_per_atom": float(
            np.mean([m["val_energy_rmse_meV_per_atom"] for m in members])
        ),
        "val_force_rmse_meV_per_A": float(
            np.mean([m["val_force_rmse_meV_per_A"] for m in members])
        ),
        **heldout_errors(out_dir, test_files, yardstick_files),
        "wall_s": time.perf_counter() - t0,
    }
