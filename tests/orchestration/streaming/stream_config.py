"""A tiny streaming run (EMT labels, a small ensemble, two walkers) and the instruments its tests
read: a labeler that logs every label it computes, and an executor that logs when each job ran."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from eelt.config import RunConfig
from eelt.label import EMTLabeler, frame_hash
from eelt.orchestration.context import RunContext
from tests.loop_config import cu_start, tiny_config

N_INIT = 7  # the start structure and 6 perturbed copies
MAX_LABELS = N_INIT + 16


def streaming_config(directory: Path, stages: int = 2, **loop) -> RunConfig:
    """Two walkers (300 K, 900 K) in 20-step segments until a second generation starts, then
    (``stages=2``) one walker at 600 K from the last frame of the first stage's last round;
    a generation every 3 new labels; two test frames per round; the run ends on its label
    budget (23 labels)."""
    stage = {
        "temperatures_K": [300, 900],
        "n_steps": 30,
        "timestep_fs": 2.0,
        "dump_interval": 5,
        "max_iterations": 2 if stages == 2 else 5,
    }
    second = {**stage, "temperatures_K": [600], "starts": "last", "max_starts": 1}
    second["max_iterations"] = 10
    return tiny_config(
        cu_start(directory),
        explore={"stages": [stage, second][:stages], "plot_walkers": False},
        examine={"test_frames": 2},
        loop={
            "mode": "streaming",
            "max_iterations": 10,
            "max_labels": MAX_LABELS,
            "segment_steps": 20,
            "generation_labels": 3,
            "window_segments": 2,
            **loop,
        },
    )


@dataclass(frozen=True)
class CountingEMT(EMTLabeler):
    """EMT that appends "<hash> <1 if its label file already existed else 0>" to ``log_path``
    before computing (one short O_APPEND write: whole lines, even across killed processes)."""

    log_path: str = ""
    labels_dir: str = ""

    def __call__(self, atoms):
        h = frame_hash(atoms, self.settings())
        stored = (Path(self.labels_dir) / f"{h}.extxyz").is_file()
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{h} {int(stored)}\n".encode())
        finally:
            os.close(fd)
        return super().__call__(atoms)


class CountingRun(RunContext):
    """The run with :class:`CountingEMT` as its labeler (same settings, same hashes)."""

    log_name = "label_calls.log"

    def __init__(self, run, executor):
        log = run.root.parent / self.log_name
        labeler = CountingEMT(log_path=str(log), labels_dir=str(run.labels_dir))
        super().__init__(run, executor, labeler)


def label_calls(run_root: Path) -> list[tuple[str, bool]]:
    log = run_root.parent / CountingRun.log_name
    lines = log.read_text().split() if log.is_file() else []
    return [(h, s == "1") for h, s in zip(lines[::2], lines[1::2], strict=True)]


class RecordingExecutor(ThreadPoolExecutor):
    """A thread pool that records (job name, start, end) of every job, perf_counter seconds."""

    def __init__(self, max_workers: int):
        super().__init__(max_workers)
        self.jobs: list[tuple[str, float, float]] = []
        self._lock = threading.Lock()

    def submit(self, fn, /, *args, **kwargs):
        def timed():
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self.jobs.append((fn.__name__, t0, time.perf_counter()))

        return super().submit(timed)
