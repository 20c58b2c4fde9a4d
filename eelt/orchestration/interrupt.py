"""Stopping a run on SIGTERM or SIGINT: quickly, ending every process the run started.

While :class:`StopOnSignals` is active, the first SIGTERM or SIGINT raises :class:`Stopped` (a
``KeyboardInterrupt``, so code and libraries treat it as Ctrl-C) in the main thread: the run
unwinds, the Dask cluster and thread pools close without waiting for jobs in flight, the
session is recorded as interrupted. Finished work is on disk already (atomic files, labels
under their hash), so nothing of it is lost; a job in flight is lost and runs again on resume.
Code that catches every exception (a bare ``except``; torch does, while it is imported) can
swallow that exception: :func:`check`, called between stages, raises it again. Should the
unwinding take longer than ``grace_s``, or a second signal come, the hard stop runs at once
(:func:`end_descendants` and the caller's exit). The exit status is 128 + the signal's
number: 143 for SIGTERM, 130 for SIGINT, as a shell reports a process killed by it.
"""

from __future__ import annotations

import _thread
import logging
import signal
import sys
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
GRACE_S = 20.0  # seconds the unwinding may take before the hard stop


class Stopped(KeyboardInterrupt):
    """Raised in the main thread by the first SIGTERM or SIGINT."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def signal_of(exc: BaseException) -> int | None:
    """The signal that ``exc`` stands for: :class:`Stopped`'s, SIGINT for a plain
    ``KeyboardInterrupt``, the ``signal`` of a library's own termination exception (a
    ``BaseException`` that is not an ``Exception``, e.g. Prefect's); None for anything else."""
    if isinstance(exc, Stopped):
        return exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return int(signal.SIGINT)
    number = getattr(exc, "signal", None)
    if not isinstance(exc, Exception) and isinstance(number, int):
        return number
    return None


def exit_status(signum: int) -> int:
    return 128 + int(signum)


_requested: list[int] = []  # the signal that asked the run to stop, once one did


def check() -> None:
    """Raise :class:`Stopped` if a signal asked the run to stop (in the main thread only: a
    stop whose exception some code swallowed)."""
    if _requested and threading.current_thread() is threading.main_thread():
        raise Stopped(_requested[0])


class StopOnSignals:
    """SIGTERM and SIGINT handlers for the duration of a ``with`` block (main thread only).

    ``hard_stop(signum)`` must end the process (e.g. :func:`os._exit` after
    :func:`end_descendants`); it runs on a second signal, or ``grace_s`` seconds after the first
    if the process is still there. A stop raised where Python can only print and drop it (a
    weakref or garbage collector callback, a ``__del__``) is dropped silently and raised again at
    once; so is a library's own exception for the signal (Prefect's ``TerminationSignal``, raised
    by the SIGTERM handler Prefect installs while a flow runs)."""

    def __init__(self, hard_stop: Callable[[int], None], grace_s: float = GRACE_S):
        self.hard_stop = hard_stop
        self.grace_s = grace_s
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._previous_hook = None
        self._watchdog: threading.Timer | None = None
        self._again = False  # the next handler call raises again (not a second signal)

    def __enter__(self) -> StopOnSignals:
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        self._previous_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        sys.unraisablehook = self._previous_hook
        if self._watchdog is not None and exc[0] is None:  # the run ended all the same
            self._watchdog.cancel()
        _requested.clear()

    def _handle(self, signum: int, frame) -> None:
        if self._again:  # a stop that Python dropped, delivered again
            self._again = False
            raise Stopped(self.signum or signum)
        if self.signum is not None:  # a second signal: stop now
            self.hard_stop(signum)
            return
        self._note(signum)
        raise Stopped(signum)

    def _note(self, signum: int) -> None:
        """The first signal: remember it, and start the clock of the hard stop."""
        self.signum = signum
        _requested.append(signum)
        self._watchdog = threading.Timer(self.grace_s, self.hard_stop, args=(signum,))
        self._watchdog.daemon = True
        self._watchdog.start()

    def _unraisable(self, unraisable) -> None:
        signum = signal_of(unraisable.exc_value) if unraisable.exc_value is not None else None
        if signum is None:
            self._previous_hook(unraisable)
            return
        if self.signum is None:  # a library's own handler raised it (Prefect's, for SIGTERM)
            self._note(signum)
        # delivered again in a moment, once this hook has returned, to whichever handler is
        # installed then (ours raises Stopped; a library's raises its own exception again)
        self._again = True
        again = threading.Timer(0.05, _thread.interrupt_main, args=(signum,))
        again.daemon = True
        again.start()


# multiprocessing's helpers ignore SIGTERM and end by themselves when this process exits
ENDS_ITSELF = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def _ends_itself(process) -> bool:
    try:
        command = " ".join(process.cmdline())
    except Exception:  # gone, or not ours to read
        return False
    return any(name in command for name in ENDS_ITSELF)


def end_descendants(timeout_s: float = 3.0) -> list[int]:
    """Terminate every process this one started (and theirs: Dask workers and nannies, a Prefect
    server, anything a job spawned), then kill what is left after ``timeout_s`` seconds; return
    the pids that were still running."""
    import psutil  # a dependency of Dask's distributed

    try:
        children = [p for p in psutil.Process().children(recursive=True) if not _ends_itself(p)]
    except psutil.Error:
        return []
    for child in children:
        try:
            child.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(children, timeout=timeout_s)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=timeout_s)
    return [c.pid for c in children]
