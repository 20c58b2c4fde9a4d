"""Where a run's time goes: the wall time of each stage as it ran, the time the workers spent on
each kind of job (MD, DFT, training) and the time they sat idle, and the loop's wall time over
the wall time of its labeling (how much a run costs beyond its DFT).

Each stage that runs is recorded in its iteration's ``timing.json`` (``iter-NNN/``, ``init/``:
started, wall seconds, worker slots, per stage); a stage skipped on resume keeps the record of
the attempt that finished it. Busy time
comes from the jobs' own wall times in the reports: walkers' ``wall_s``, each computed label's
wall time (``busy_s``), each trained member's ``wall_s``. A worker slot is one job at a time
(``execution.n_workers x threads_per_worker``); worker time = slots x stage wall, idle = worker
time - busy. The DFT's own wall time is its jobs' seconds over the worker slots; the run's wall over
it is the loop's cost beyond its labels in one figure (1.0: nothing but DFT, all workers busy).
A run's wall time is the sum of its sessions (``timing.json`` in the run
directory: each ``run_loop`` call from start to end), so an interrupted and resumed run counts
the time it actually ran; time lost in a killed attempt of a stage is not in any stage's wall.
A session stopped by a signal is recorded as interrupted (with the signal's name); one killed
outright (SIGKILL, a node lost) leaves no record. While a session runs, :func:`where` names the
stage it is in (for the line a stopped run prints).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from eelt import atomic
from eelt.orchestration.interrupt import check as check_stop
from eelt.orchestration.interrupt import signal_of

T = TypeVar("T")
TIMING_FILE = "timing.json"
KINDS = {"explore": "md", "label": "dft", "train": "training"}  # stage -> kind of job


_places: list[str | Callable[[], str]] = []  # where the run is: stages entered, innermost last


_interrupted_at: list[str] = []  # the innermost place a signal's exception left, if any


def _text(place: str | Callable[[], str]) -> str:
    return place() if callable(place) else place


@contextmanager
def entered(place: str | Callable[[], str]) -> Iterator[None]:
    """Mark the run as in ``place`` (a text, or a function giving it when asked) for the
    duration of the block; a ``KeyboardInterrupt`` (or another signal's ``BaseException``)
    leaving it is remembered there (:func:`interrupted_at`)."""
    _places.append(place)
    try:
        yield
    except BaseException as e:
        if not isinstance(e, Exception) and not _interrupted_at:
            _interrupted_at.append(_text(place))
        raise
    finally:
        _places.remove(place)


def where() -> str | None:
    """The innermost place the run is in ("iter-002 label"), or None outside every stage."""
    return _text(_places[-1]) if _places else None


def interrupted_at() -> str | None:
    """Where an interrupt left the run ("iter-002 label"), or None if none did."""
    return _interrupted_at[0] if _interrupted_at else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read(directory: Path) -> dict[str, Any]:
    """{stage: {started, wall_s, worker_slots}} of an iteration (or init) directory."""
    path = Path(directory) / TIMING_FILE
    return atomic.read_json(path) if path.is_file() else {}


def timed(directory: Path, stage: str, output: Path, slots: int, body: Callable[[], T]) -> T:
    """Run a stage's ``body``; unless its ``output`` (its report) already existed (a finished
    stage, skipped on resume), record its wall time and worker slots under ``stage`` in
    ``directory/timing.json``."""
    finished_before = Path(output).is_file()
    started, t0 = _now(), time.perf_counter()
    with entered(f"{Path(directory).name} {stage}"):
        check_stop()  # a stop that some code swallowed: here, before a stage
        result = body()
    if not finished_before:
        record = read(directory)
        record[stage] = {"started": started, "wall_s": time.perf_counter() - t0,
                         "worker_slots": int(slots)}  # fmt: skip
        Path(directory).mkdir(parents=True, exist_ok=True)
        atomic.write_json(Path(directory) / TIMING_FILE, record)
    return result


_open_sessions: list[Session] = []  # the sessions under way in this process


class Session:
    """One ``run_loop`` call: appended to the run directory's ``timing.json`` when it ends (or
    is interrupted), so a run's wall time is the sum of its sessions."""

    def __init__(self, root: Path):
        self.path = Path(root) / TIMING_FILE
        self.started, self.t0 = _now(), time.perf_counter()
        self._closing = threading.Lock()
        self._closed = False

    def __enter__(self) -> Session:
        _interrupted_at.clear()
        record = atomic.read_json(self.path) if self.path.is_file() else {"sessions": []}
        # the session under way, for `eelt status` (a killed session leaves it behind)
        record["running"] = {"started": self.started, "host": socket.gethostname(),
                             "pid": os.getpid()}  # fmt: skip
        atomic.write_json(self.path, record)
        _open_sessions.append(self)
        return self

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.t0

    def __exit__(self, *exc) -> None:
        signum = signal_of(exc[1]) if exc[1] is not None else None
        self.close("interrupted" if exc[0] is not None else "finished", signum)

    def close(self, ended: str, signum: int | None = None) -> None:
        """Record the session as ``ended`` ("finished" or "interrupted", by ``signum`` if a
        signal stopped it); only the first call writes."""
        with self._closing:
            if self._closed:
                return
            self._closed = True
            record = atomic.read_json(self.path) if self.path.is_file() else {"sessions": []}
            session = {"started": self.started, "wall_s": self.elapsed_s(), "ended": ended}
            if signum is not None:
                session["signal"] = signal.Signals(signum).name
            if ended != "finished" and (at := interrupted_at() or where()):
                session["at"] = at
            record["sessions"].append(session)
            record.pop("running", None)
            atomic.write_json(self.path, record)
        if self in _open_sessions:
            _open_sessions.remove(self)


def close_open_sessions(signum: int) -> None:
    """Record every session under way in this process as interrupted by ``signum`` (a process
    that ends at once, without unwinding)."""
    for session in list(_open_sessions):
        session.close("interrupted", signum)


def busy_s(stage: str, report: dict[str, Any] | None) -> float:
    """Seconds the workers spent on a stage's jobs, from its report."""
    if not report:
        return 0.0
    if stage == "explore":
        return float(sum(w.get("wall_s") or 0.0 for w in report.get("walkers", [])))
    if stage == "label":
        return float(report.get("busy_s", 0.0))
    if stage == "train":
        if "busy_s" in report:  # one job trained every member (stacked)
            return float(report["busy_s"])
        return float(sum(m.get("wall_s") or 0.0 for m in report.get("members", [])))
    return 0.0


def iteration_times(directory: Path, reports: dict[str, dict | None]) -> dict:
    """Wall per stage, busy per kind of job, worker and idle time of one iteration (or of the
    initial stages, ``directory`` init/): seconds."""
    wall: dict[str, float] = {}
    busy = {kind: 0.0 for kind in KINDS.values()}
    worker_s = 0.0
    for stage, record in read(directory).items():
        wall[stage] = record["wall_s"]
        worker_s += record["wall_s"] * record.get("worker_slots", 1)
        if stage in KINDS:
            busy[KINDS[stage]] += busy_s(stage, reports.get(stage))
    total_busy = sum(busy.values())
    return {
        "stage_wall_s": wall,
        "wall_s": sum(wall.values()),
        "busy_s": busy,
        "worker_s": worker_s,
        "idle_s": max(worker_s - total_busy, 0.0),
        "busy_share": total_busy / worker_s if worker_s else None,
    }


def dft_figures(run_wall_s: float, dft_busy_s: float, slots: int) -> dict[str, Any]:
    """The DFT's own wall time (its jobs' seconds over the worker slots: how long the labels
    would take with every worker on them and nothing else) and the run's wall over it, the
    figure that says what a run costs beyond its DFT, in either loop mode."""
    dft_wall = dft_busy_s / max(int(slots), 1)
    return {
        "dft_wall_s": dft_wall,
        "wall_over_dft_wall": run_wall_s / dft_wall if dft_wall > 0 else None,
    }


def run_times(
    root: Path, parts: list[dict[str, Any]], running_s: float = 0.0, slots: int = 1
) -> dict[str, Any]:
    """The run's time: its sessions' wall (plus ``running_s`` of the session under way), the
    stages' sums, the loop's wall over the wall time of its labeling stages, and over the
    DFT's own wall time on ``slots`` worker slots (:func:`dft_figures`)."""
    record = read(root) or {"sessions": []}  # the run directory's: sessions
    run_wall = sum(s["wall_s"] for s in record["sessions"]) + running_s
    n_sessions = len(record["sessions"]) + (running_s > 0)  # the one under way counts
    label_wall = sum(p["stage_wall_s"].get("label", 0.0) for p in parts)
    busy = {kind: sum(p["busy_s"][kind] for p in parts) for kind in KINDS.values()}
    worker_s = sum(p["worker_s"] for p in parts)
    total_busy = sum(busy.values())
    stage_wall: dict[str, float] = {}
    for p in parts:
        for stage, wall in p["stage_wall_s"].items():
            stage_wall[stage] = stage_wall.get(stage, 0.0) + wall
    return {
        "run_wall_s": run_wall,
        "n_sessions": n_sessions,
        "stage_wall_s": stage_wall,
        "busy_s": busy,
        "worker_s": worker_s,
        "idle_s": max(worker_s - total_busy, 0.0),
        "busy_share": total_busy / worker_s if worker_s else None,
        "label_wall_s": label_wall,
        "wall_over_label_wall": run_wall / label_wall if label_wall else None,
        **dft_figures(run_wall, busy["dft"], slots),
    }


def running_session(root: Path) -> dict[str, Any] | None:
    """The session under way in run directory ``root`` as its start recorded it (started, host,
    pid), or None; a killed session's record stays until the next session ends."""
    return read(root).get("running")


def with_running_session(root: Path, times: dict[str, Any], started: str) -> dict[str, Any]:
    """A run's ``times`` (state.json's, written at the end of its last iteration) as they stand
    now, with the session under way since ``started`` (UTC ISO time) counted: run wall, number of
    sessions, and the run wall over the DFT and labeling walls."""
    record = read(root) or {"sessions": []}
    try:
        running_s = (datetime.now(timezone.utc) - datetime.fromisoformat(started)).total_seconds()
    except ValueError:
        return times
    run_wall = sum(s["wall_s"] for s in record["sessions"]) + max(running_s, 0.0)
    times = {**times, "run_wall_s": run_wall, "n_sessions": len(record["sessions"]) + 1}
    for ratio, wall in (
        ("wall_over_label_wall", "label_wall_s"),
        ("wall_over_dft_wall", "dft_wall_s"),
    ):
        if times.get(wall):
            times[ratio] = run_wall / times[wall]
    return times
