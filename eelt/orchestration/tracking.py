"""Progress of the work a stage hands to its workers (walkers, DFT jobs, training members).

A stage reports what it started and how much of it is done to a ``Tracker``; who shows it is
not its business: a progress bar on a terminal, plain lines in a log, a progress artifact in
the Prefect UI. ``tracking(tracker)`` installs trackers for the code it wraps (a context
variable, so the stages need no extra argument and a library caller gets none by default).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Tracker(Protocol):
    """Receives progress: ``start`` once, ``update`` as jobs finish, ``finish`` at the end."""

    def start(self, key: str, description: str, total: int) -> None: ...

    def update(self, key: str, done: int) -> None: ...

    def finish(self, key: str) -> None: ...


_TRACKERS: contextvars.ContextVar[tuple[Tracker, ...]] = contextvars.ContextVar(
    "eelt_trackers", default=()
)


@contextmanager
def tracking(*trackers: Tracker) -> Iterator[None]:
    """Send progress to ``trackers`` (besides those already installed) inside the block."""
    token = _TRACKERS.set(_TRACKERS.get() + trackers)
    try:
        yield
    finally:
        _TRACKERS.reset(token)


class Task:
    """One unit of tracked work (e.g. "iteration 2: label 24 frames"); a context manager."""

    def __init__(self, key: str, description: str, total: int):
        self.key, self.description, self.total = key, description, int(total)
        self.trackers = _TRACKERS.get()
        self.done = 0

    def __enter__(self) -> Task:
        for tracker in self.trackers:
            tracker.start(self.key, self.description, self.total)
        return self

    def update(self, done: int) -> None:
        """``done`` of ``total`` finished (absolute, not an increment)."""
        self.done = int(done)
        for tracker in self.trackers:
            tracker.update(self.key, self.done)

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def __exit__(self, *exc) -> None:
        for tracker in self.trackers:
            tracker.finish(self.key)


def task(key: str, description: str, total: int) -> Task:
    """A tracked unit of work: ``with task("label", "label 24 frames", 24) as t: t.advance()``."""
    return Task(key, description, total)
