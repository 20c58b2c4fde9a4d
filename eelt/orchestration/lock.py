"""One owner per run directory: ``RUN_DIR/eelt.lock`` says which process writes the run.

`eelt run`, each flow run of `eelt serve` and `eelt baseline` hold the lock while they work; a
second process refuses with one line naming the holder and writes nothing. Read-only commands
(status, report, export, evaluate) take none.

The lock file is created with ``O_CREAT | O_EXCL`` (atomic on local filesystems and on NFSv3 and
later; ``flock`` does not hold across the nodes of a shared filesystem everywhere) and holds the
holder's command, host, pid, the start time of that process, when it took the lock, a heartbeat
and a token. A daemon thread rewrites it every :data:`HEARTBEAT_S` seconds (temp file + rename,
so a reader sees a whole record), which lets a process on another node tell a live holder from a
dead one.

A lock whose holder is gone is taken over with a one-line warning: on the same host, when its
pid no longer runs (or runs a process started after the lock was taken: a pid reused); on
another host, when its heartbeat is older than ``EELT_LOCK_STALE_S`` seconds (default
:data:`STALE_S`). A requeued batch job therefore resumes its run by running the same command.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from eelt.errors import EeltError

log = logging.getLogger(__name__)

LOCK_FILE = "eelt.lock"
HEARTBEAT_S = 5.0  # seconds between two rewrites of the heartbeat
STALE_S = 60.0  # a heartbeat older than this (seconds) marks a holder on another host gone
STALE_ENV = "EELT_LOCK_STALE_S"

_held: dict[Path, RunLock] = {}  # the locks this process holds, by resolved lock path
_held_guard = threading.Lock()


class RunDirInUse(EeltError):
    """Another live process holds the run directory."""

    def __init__(self, root: Path, holder: dict[str, Any] | None):
        self.holder = holder
        if holder is None:
            who = (
                f"another process (its lock file {root / LOCK_FILE} is being written or unreadable)"
            )
        else:
            who = describe(holder)
        super().__init__(
            f"{root} is in use by {who}; wait for it to end or stop it, then run the same "
            "command again"
        )


def stale_after_s() -> float:
    """Seconds without a heartbeat after which a holder on another host counts as gone."""
    raw = os.environ.get(STALE_ENV)
    if not raw:
        return STALE_S
    try:
        value = float(raw)
    except ValueError:
        raise EeltError(f"{STALE_ENV}={raw!r}: not a number of seconds") from None
    if value <= 0:
        raise EeltError(f"{STALE_ENV}={raw!r}: must be above 0 seconds")
    return value


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


def _age_s(stamp: str | None, now: datetime | None = None) -> float | None:
    if not stamp:
        return None
    try:
        then = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return ((now or _now()) - then).total_seconds()


def describe(holder: dict[str, Any]) -> str:
    """ "eelt run (pid 123 on host h, since 2026-01-02 10:11:12 UTC)"."""
    since = holder.get("started", "?").replace("T", " ").replace("+00:00", " UTC")
    return (
        f"{holder.get('command', 'eelt')} (pid {holder.get('pid', '?')} on host "
        f"{holder.get('host', '?')}, since {since})"
    )


def _process_started(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None if it does not run."""
    import psutil  # a dependency of Dask's distributed

    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None
    except psutil.Error:  # another user's process: it runs, its start time is unknown
        return float("nan")


def read_holder(root: Path) -> dict[str, Any] | None:
    """The lock record of run directory ``root``, or None if there is none (or it is being
    written: an empty or partial file)."""
    try:
        record = json.loads((Path(root) / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def gone_reason(holder: dict[str, Any], stale_s: float | None = None) -> str | None:
    """Why the lock's holder is gone ("process 123 no longer runs", "no heartbeat for 75 s"),
    or None while it lives."""
    stale_s = stale_after_s() if stale_s is None else stale_s
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        started = _process_started(holder["pid"])
        if started is None:
            return f"process {holder['pid']} no longer runs"
        then = holder.get("pid_started")
        if isinstance(then, (int, float)) and started == started and started > then + 1.0:
            return f"pid {holder['pid']} now belongs to another process"
        return None  # the holder runs here: its heartbeat is beside the point (e.g. suspended)
    age = _age_s(holder.get("heartbeat"))
    if age is None or age > stale_s:
        return "no heartbeat" if age is None else f"no heartbeat for {age:.0f} s"
    return None


class RunLock:
    """The lock of one run directory, held by this process (see the module's docstring).

    Take it with :func:`acquire` (or ``with acquire(...)``); :meth:`release` gives it back.
    Acquiring a lock this process already holds nests (released with its last holder).
    """

    def __init__(
        self,
        root: Path,
        record: dict[str, Any],
        created_dir: bool,
        on_lost: Callable[[], None] | None = None,
    ):
        self.root = Path(root)
        self.on_lost = on_lost
        self.path = self.root / LOCK_FILE
        self.record = record
        self.created_dir = created_dir
        self.depth = 1
        self.lost: dict[str, Any] | None = None  # the record found when another took it over
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def token(self) -> str:
        return self.record["token"]

    def start_heartbeat(self, interval_s: float = HEARTBEAT_S) -> None:
        self._thread = threading.Thread(
            target=self._beat, args=(interval_s,), name="eelt-lock-heartbeat", daemon=True
        )
        self._thread.start()

    def _beat(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.refresh()
            except OSError as err:  # a shared filesystem away for a while: try again
                log.debug("lock heartbeat of %s not written: %s", self.root, err)
            if self.lost is not None:
                return

    def refresh(self) -> None:
        """Rewrite the heartbeat, unless another process has taken the lock over (then
        :attr:`lost` holds its record, a warning says so, and the file is left alone)."""
        current = read_holder(self.root)
        if current is None or current.get("token") != self.token:
            if current is None and self.path.exists():
                return  # being rewritten by a taker: look again next time
            self.lost = current or {}
            log.error(
                "%s: the run directory's lock was taken over%s (no heartbeat of this process "
                "reached it in time); stopping",
                self.root,
                f" by {describe(current)}" if current else "",
            )
            if self.on_lost is not None:
                self.on_lost()
            return
        self.record["heartbeat"] = _iso(_now())
        tmp = self.root / f".{LOCK_FILE}.{self.token}.tmp"
        tmp.write_text(json.dumps(self.record, indent=2) + "\n")
        os.replace(tmp, self.path)

    def release(self) -> None:
        """Give the lock back (the last nested holder removes the file, and the run directory
        if taking the lock created it and nothing else was written there)."""
        with _held_guard:
            self.depth -= 1
            if self.depth != 0:  # held further out, or released already
                return
            if _held.get(self.path.resolve()) is self:
                del _held[self.path.resolve()]
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * HEARTBEAT_S)
        current = read_holder(self.root)
        if current is not None and current.get("token") == self.token:
            self.path.unlink(missing_ok=True)
        if self.created_dir:
            try:
                self.root.rmdir()  # only when empty
            except OSError:
                pass

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def release_all() -> None:
    """Give back every lock this process holds (a run stopped by a signal)."""
    with _held_guard:
        locks = list(_held.values())
    for lock in locks:
        with _held_guard:
            lock.depth = min(lock.depth, 1)
        lock.release()


def stop_this_process() -> None:
    """What a holder does when its lock was taken over: stop as on ``kill`` (SIGTERM), since
    two processes must not write one run directory."""
    os.kill(os.getpid(), signal.SIGTERM)


def _create(path: Path, record: dict[str, Any]) -> bool:
    """Create the lock file holding ``record``; False if one exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(record, indent=2) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return True


def _evict(path: Path, stale: dict[str, Any]) -> bool:
    """Move the stale lock ``stale`` out of the way; False if the file there is no longer that
    lock (another process took it over first: its fresh lock is put back)."""
    aside = path.with_name(f".{LOCK_FILE}.stale.{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return True  # released or moved meanwhile: try to create it
    try:
        moved = json.loads(aside.read_text())
    except (OSError, ValueError):
        moved = None
    if isinstance(moved, dict) and moved.get("token") == stale.get("token"):
        aside.unlink(missing_ok=True)
        return True
    try:  # a live lock was moved: back where it was, unless one exists there again
        os.link(aside, path)
    except OSError:
        pass
    aside.unlink(missing_ok=True)
    return False


def acquire(
    root: str | Path,
    command: str,
    stale_s: float | None = None,
    heartbeat_s: float = HEARTBEAT_S,
    on_lost: Callable[[], None] | None = stop_this_process,
) -> RunLock:
    """Take the lock of run directory ``root`` for ``command`` (e.g. "eelt run"), creating
    ``root`` if need be (removed again on release if nothing else was written there).

    Raises :class:`RunDirInUse` when a live process holds it; takes over a lock whose holder is
    gone (:func:`gone_reason`) with a warning. Starts the heartbeat thread; should another
    process take the lock over all the same (this one's heartbeat did not reach the file for
    ``stale_s``), ``on_lost`` is called (by default: stop this process)."""
    root = Path(root)
    stale_s = stale_after_s() if stale_s is None else stale_s
    path = root / LOCK_FILE
    with _held_guard:
        if (held := _held.get(path.resolve())) is not None:
            held.depth += 1
            return held
    created_dir = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    now = _now()
    record = {
        "command": command,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_started": _process_started(os.getpid()),
        "started": _iso(now),
        "heartbeat": _iso(now),
        "token": uuid.uuid4().hex,
    }
    holder = None
    try:
        for _ in range(20):
            if _create(path, record):
                lock = RunLock(root, record, created_dir, on_lost)
                with _held_guard:
                    _held[path.resolve()] = lock
                lock.start_heartbeat(heartbeat_s)
                return lock
            holder = read_holder(root)
            if holder is None:
                if not path.exists():
                    continue  # released meanwhile
                age = time.time() - path.stat().st_mtime
                if age <= stale_s:
                    time.sleep(0.1)  # being written: read it again
                    continue
                holder = {"token": None}  # unreadable for longer than a heartbeat's age
            reason = gone_reason(holder, stale_s)
            if reason is None:
                break
            if _evict(path, holder):
                what = describe(holder) if holder.get("pid") else "an unreadable lock"
                log.warning("%s: taking over the lock of %s: %s", root, what, reason)
        raise RunDirInUse(root, holder)
    except BaseException:
        if created_dir:
            try:
                root.rmdir()
            except OSError:
                pass
        raise
