"""What the console shows while eelt works: eelt's own log lines, progress bars on a terminal
or plain progress lines in a log file, and nothing of Dask's chatter unless asked (Prefect's:
flows/console.py).
"""

from __future__ import annotations

import logging
import os
import time

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

log = logging.getLogger("eelt")

# Dask logs these when a worker's event loop was busy for a while (a DFT job holding the
# GIL): true, expected and of no use to the user.
NOISY_LOGGERS = {"distributed": logging.WARNING, "dask": logging.WARNING,
                 "distributed.nanny": logging.ERROR, "distributed.core": logging.ERROR}  # fmt: skip


def setup_logging(console: Console, quiet: bool = False, verbose: bool = False) -> None:
    """eelt's records to ``console`` (INFO, or WARNING when ``quiet``); Dask's chatter off
    unless ``verbose``."""
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
    else:  # a log file or a pipe: plain lines, no padding to the console's width
        handler = logging.StreamHandler(console.file)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
        )
    logger = logging.getLogger("eelt")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
    if not verbose:
        # worker processes inherit this; Dask reads it when it is imported
        os.environ.setdefault("DASK_DISTRIBUTED__ADMIN__TICK__LIMIT", "1h")
        for name, level in NOISY_LOGGERS.items():
            logging.getLogger(name).setLevel(level)


class BarTracker:
    """Progress bars on a terminal (rich), one per running unit of work."""

    def __init__(self, console: Console):
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.tasks: dict[str, TaskID] = {}

    def start(self, key: str, description: str, total: int) -> None:
        if not self.tasks:
            self.progress.start()
        self.tasks[key] = self.progress.add_task(description, total=total)

    def update(self, key: str, done: int) -> None:
        if key in self.tasks:
            self.progress.update(self.tasks[key], completed=done)

    def finish(self, key: str) -> None:
        task_id = self.tasks.pop(key, None)
        if task_id is None:
            return
        task = self.progress.tasks[task_id] if task_id < len(self.progress.tasks) else None
        self.progress.remove_task(task_id)
        if task is not None:
            log.info("%s: %d/%d done (%.0f s)", task.description, task.completed, task.total,
                     task.elapsed or 0.0)  # fmt: skip
        if not self.tasks:
            self.progress.stop()


class LineTracker:
    """Plain progress lines for logs and pipes: at the start, at each quarter, at the end."""

    def __init__(self) -> None:
        self.tasks: dict[str, list] = {}  # key -> [description, total, last quarter, t0, done]

    def start(self, key: str, description: str, total: int) -> None:
        self.tasks[key] = [description, total, 0, time.perf_counter(), 0]
        log.info("%s: started", description)

    def update(self, key: str, done: int) -> None:
        task = self.tasks.get(key)
        if task is None:
            return
        description, total, last, t0, _ = task
        task[4] = done
        quarter = 4 * done // total if total else 4
        if last < quarter < 4:
            task[2] = quarter
            log.info("%s: %d/%d (%.0f s)", description, done, total, time.perf_counter() - t0)

    def finish(self, key: str) -> None:
        task = self.tasks.pop(key, None)
        if task is not None:
            description, total, _, t0, done = task
            log.info("%s: %d/%d done (%.0f s)", description, done, total,
                     time.perf_counter() - t0)  # fmt: skip


def console_tracker(console: Console) -> BarTracker | LineTracker:
    """Bars on a terminal, plain lines otherwise."""
    return BarTracker(console) if console.is_terminal else LineTracker()
