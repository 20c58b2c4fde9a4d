"""Label frames over an Executor, storing each finished label under its content hash at once.

``labels_dir/<hash>.extxyz`` is written the moment a job returns, so a crash loses no finished
label and a rerun (resume) computes only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from eelt import keys
from eelt.atomic import write_frames
from eelt.label.base import Labeler, LabelError, one_line

log = logging.getLogger(__name__)

LABEL_HASH = "label_hash"  # Atoms.info key of a labeled frame
LABEL_WALL_S = "label_wall_s"  # s, the job's own wall time on its worker (in the label file)
LABEL_THREADS = "label_threads"  # threads the job ran with (in the label file)
SCF_ATTEMPTS = keys.SCF_ATTEMPTS
_RESULT_KEYS = (keys.ENERGY, keys.FORCES, keys.STRESS)


def frame_hash(atoms: Atoms, settings: dict) -> str:
    """SHA-256 hex of numbers, positions (float64), cell, pbc and settings (canonical JSON)."""
    h = hashlib.sha256()
    parts = (
        ("numbers", np.ascontiguousarray(atoms.numbers, dtype="<i8").tobytes()),
        ("positions_A", np.ascontiguousarray(atoms.positions, dtype="<f8").tobytes()),
        ("cell_A", np.ascontiguousarray(atoms.cell.array, dtype="<f8").tobytes()),
        ("pbc", np.ascontiguousarray(atoms.pbc, dtype="u1").tobytes()),
        ("settings", json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()),
    )
    for tag, data in parts:
        h.update(f"{tag}:{len(data)}:".encode())
        h.update(data)
    return h.hexdigest()


@dataclass
class LabelReport:
    """Outcome of one ``label_frames`` call.

    ``labeled``: copies of the frames that succeeded, in input order, each with its label
    (SinglePointCalculator) and ``info["label_hash"]``. ``failed``: one
    ``{"index", "hash", "reason", "kind"[, "attempts"]}`` per input frame that failed. ``n_cached`` / ``n_computed``
    count distinct labels read from ``labels_dir`` / computed in this call. ``core_hours``:
    DFT core-hours of the distinct labels held (cached ones included: each label file keeps
    its job's wall time x threads), ``core_hours_computed`` those of the jobs run in this call.
    """

    labeled: list[Atoms] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    n_cached: int = 0
    n_computed: int = 0
    core_hours: float = 0.0
    core_hours_computed: float = 0.0
    busy_s_computed: float = 0.0  # s, the wall times of the jobs run in this call, summed


def _threads(labeler: Labeler) -> int:
    """Threads a job of ``labeler`` runs with in this process (its ``n_threads()``, else 1)."""
    n_threads = getattr(labeler, "n_threads", None)
    return int(n_threads()) if callable(n_threads) else 1


def _run_labeler(labeler: Labeler, atoms: Atoms) -> Atoms:
    """The job sent to a worker (module level, so Dask can pickle it); times itself."""
    start = time.perf_counter()
    out = labeler(atoms)
    if isinstance(out, Atoms):
        out.info[LABEL_WALL_S] = time.perf_counter() - start
        out.info.setdefault(LABEL_THREADS, _threads(labeler))  # the labeler's own count first
    return out


def core_hours(cost: dict) -> float:
    """Core-hours of a label from its recorded wall time (s) and threads (0 if unrecorded)."""
    return float(cost.get(LABEL_WALL_S, 0.0)) * int(cost.get(LABEL_THREADS, 1)) / 3600.0


def _geometry(frame: Atoms) -> Atoms:
    """What a job needs: numbers, positions, cell, pbc and info (no calculator, no extra arrays)."""
    return Atoms(
        frame.numbers, positions=frame.positions, cell=frame.cell, pbc=frame.pbc, info=frame.info
    )


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {one_line(err)}"


# exceptions that name their own kind of failure (Dask's KilledWorker: the worker died, and the
# scheduler already tried the job on allowed-failures other workers)
_KINDS_BY_TYPE = {"KilledWorker": "worker_lost", "MemoryError": "out_of_memory"}


def _failure(err: BaseException) -> dict:
    """A failed job's record: reason (one line), kind and the attempts it made."""
    kind = getattr(err, "kind", None) or _KINDS_BY_TYPE.get(type(err).__name__, "error")
    record = {"reason": _describe(err), "kind": kind}
    if getattr(err, "attempts", None):
        record["attempts"] = list(err.attempts)
    return record


def _more_memory(labeler: Labeler) -> Labeler:
    """The labeler with twice its memory cap (``max_memory_MB``), or itself if it has none."""
    import dataclasses

    cap = getattr(labeler, "max_memory_MB", None)
    if cap is None or not dataclasses.is_dataclass(labeler):
        return labeler
    return dataclasses.replace(labeler, max_memory_MB=2 * cap)


def _label_path(labels_dir: Path, label_hash: str) -> Path:
    return labels_dir / f"{label_hash}.extxyz"


def _label_file_frame(frame: Atoms, result: Atoms, label_hash: str) -> Atoms:
    """What a label file holds: the frame's geometry, its label and hash (no other info)."""
    n = len(frame)
    if not isinstance(result, Atoms):
        raise LabelError(f"labeler returned {type(result).__name__}, not ase.Atoms")
    if len(result) != n or not np.array_equal(result.numbers, frame.numbers):
        raise LabelError("labeler returned different atoms than it was given")
    results = getattr(result.calc, "results", None) or {}
    if keys.ENERGY not in results or keys.FORCES not in results:
        raise LabelError("labeler returned no energy or no forces")
    values = {k: np.asarray(results[k], dtype=np.float64) for k in _RESULT_KEYS if k in results}
    if values[keys.FORCES].shape != (n, 3):
        raise LabelError(
            f"labeler returned forces of shape {values[keys.FORCES].shape}, not ({n}, 3)"
        )
    if not all(np.all(np.isfinite(v)) for v in values.values()):
        raise LabelError("labeler returned a non-finite energy, forces or stress")
    values[keys.ENERGY] = float(values[keys.ENERGY])
    stored = Atoms(frame.numbers, positions=frame.positions, cell=frame.cell, pbc=frame.pbc)
    stored.info[LABEL_HASH] = label_hash
    for key in (LABEL_WALL_S, LABEL_THREADS, SCF_ATTEMPTS):
        if key in result.info:
            stored.info[key] = result.info[key]
    stored.calc = SinglePointCalculator(stored, **values)
    return stored


def _read_label(path: Path, frame: Atoms) -> tuple[dict, dict] | None:
    """(label results, job cost) stored at ``path`` for ``frame``; None if the file is missing
    or unusable."""
    if not path.is_file():
        return None
    try:
        stored = ase.io.read(path, index=0, format="extxyz")
        results = dict(stored.calc.results)
        ok = (
            np.array_equal(stored.numbers, frame.numbers)
            and keys.ENERGY in results
            and np.shape(results.get(keys.FORCES)) == (len(frame), 3)
        )
    except Exception as err:
        log.warning("label file %s is unreadable (%s); computing it again", path, _describe(err))
        return None
    if not ok:
        log.warning("label file %s does not match its frame; computing it again", path)
        return None
    cost = {k: stored.info[k] for k in (LABEL_WALL_S, LABEL_THREADS) if k in stored.info}
    return {k: results[k] for k in _RESULT_KEYS if k in results}, cost


def _with_label(frame: Atoms, results: dict, label_hash: str) -> Atoms:
    out = frame.copy()
    out.info[LABEL_HASH] = label_hash
    out.calc = SinglePointCalculator(out, **results)
    return out


def label_frames(
    frames: Sequence[Atoms],
    labeler: Labeler,
    executor: Executor,
    labels_dir: Path,
    on_progress: Callable[[int, int], None] | None = None,
) -> LabelReport:
    """Label ``frames`` on ``executor``, reusing and writing ``labels_dir/<hash>.extxyz``.

    Duplicate frames are computed once. A failed job (any exception, a lost worker included) is
    reported with a one-line reason and does not stop the others. ``on_progress(done, total)``
    counts distinct labels (cached ones included); it is called once after the cache look-up and
    after every finished job. Returned energies eV, forces eV/Angstrom, stress eV/Angstrom^3.
    """
    labels_dir = Path(labels_dir)
    labels_dir.mkdir(parents=True, exist_ok=True)
    settings = labeler.settings()

    hashes: list[str] = []
    first_index: dict[str, int] = {}
    for i, frame in enumerate(frames):
        if not isinstance(frame, Atoms):
            raise TypeError(f"frames[{i}] is {type(frame).__name__}, not ase.Atoms")
        h = frame_hash(frame, settings)
        hashes.append(h)
        first_index.setdefault(h, i)

    labels: dict[str, dict] = {}
    costs: dict[str, dict] = {}
    reasons: dict[str, dict] = {}
    report = LabelReport()
    to_compute = []
    for h, i in first_index.items():
        cached = _read_label(_label_path(labels_dir, h), frames[i])
        if cached is None:
            to_compute.append(h)
        else:
            labels[h], costs[h] = cached
    report.n_cached = len(labels)
    total = len(first_index)
    if on_progress is not None:
        on_progress(report.n_cached, total)

    futures: dict[Future, str] = {}
    try:
        for h in to_compute:
            try:
                job = _geometry(frames[first_index[h]])
                futures[executor.submit(_run_labeler, labeler, job)] = h
            except Exception as err:
                reasons[h] = _failure(err)
        done = report.n_cached + len(reasons)
        for future in as_completed(futures):
            h = futures[future]
            frame = frames[first_index[h]]
            try:
                stored = _label_file_frame(frame, future.result(), h)
            except Exception as err:
                reasons[h] = _failure(err)
                log.info("label %s failed: %s", h[:12], reasons[h]["reason"])
            else:
                path = _label_path(labels_dir, h)
                write_frames(path, [stored])
                # read back, so a fresh label and a cached one carry the very same numbers
                fresh = _read_label(path, frame)
                if fresh is None:
                    raise OSError(f"label file {path} cannot be read back after writing it")
                labels[h], costs[h] = fresh
                report.n_computed += 1
                report.core_hours_computed += core_hours(costs[h])
                report.busy_s_computed += float(costs[h].get(LABEL_WALL_S, 0.0))
            done += 1
            if on_progress is not None:
                on_progress(done, total)
        # out of memory: once more, with twice the memory cap where the labeler has one
        retry = [h for h, r in reasons.items() if r["kind"] == "out_of_memory" and h in to_compute]
        if retry:
            bigger = _more_memory(labeler)
            again = {
                executor.submit(_run_labeler, bigger, _geometry(frames[first_index[h]])): h
                for h in retry
            }
            futures |= again
            for future in as_completed(again):
                h = again[future]
                try:
                    stored = _label_file_frame(frames[first_index[h]], future.result(), h)
                except Exception as err:
                    reasons[h] = _failure(err) | {"retried": True}
                    continue
                path = _label_path(labels_dir, h)
                write_frames(path, [stored])
                labels[h], costs[h] = _read_label(path, frames[first_index[h]])
                del reasons[h]
                report.n_computed += 1
                report.core_hours_computed += core_hours(costs[h])
                report.busy_s_computed += float(costs[h].get(LABEL_WALL_S, 0.0))
    finally:
        for future in futures:
            future.cancel()

    report.core_hours = sum(core_hours(c) for c in costs.values())
    for i, (frame, h) in enumerate(zip(frames, hashes, strict=True)):
        if h in labels:
            report.labeled.append(_with_label(frame, labels[h], h))
        else:
            report.failed.append({"index": i, "hash": h, **reasons[h]})
    return report
