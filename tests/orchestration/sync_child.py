"""The synchronous run as a child process of the kill test (started through a forkserver that
has the heavy imports done, so each of the many starts is quick)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from eelt.orchestration.rundir import RunDir
from eelt.orchestration.runs import run_loop
from tests.orchestration.streaming.stream_config import CountingRun


def run_sync(root: str) -> None:
    """Run (or resume) the synchronous run in ``root`` with a thread pool of 2 workers."""
    torch.set_num_threads(1)
    with ThreadPoolExecutor(2) as pool:
        run_loop(CountingRun(RunDir(Path(root)), pool))
