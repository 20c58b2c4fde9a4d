"""What every stage of a run is given: the run directory, its frozen config, the executor and
the labeler, and how the schedules run a stage (directly, or as a Prefect task in ``flows/``).

Both schedules (:mod:`eelt.orchestration.synchronous`, :mod:`eelt.orchestration.streaming`)
take a :class:`RunContext` and hand its parts to the stage functions; no stage reads it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from eelt.config import RunConfig
from eelt.orchestration import timing
from eelt.orchestration.rundir import RunDir

T = TypeVar("T")


class StageRunner(Protocol):
    """How stages and iterations are run: directly, or as Prefect tasks and subflows."""

    def iteration(self, index: int, body: Callable[[], T]) -> T: ...

    def stage(self, name: str, body: Callable[[], T]) -> T: ...

    def state_written(self, state: dict[str, Any]) -> None:
        """The run's state after an iteration (or at the start and end), as in state.json."""


class DirectRunner:
    def iteration(self, index: int, body: Callable[[], T]) -> T:
        return body()

    def stage(self, name: str, body: Callable[[], T]) -> T:
        return body()

    def state_written(self, state: dict[str, Any]) -> None:
        pass


def job_labeler(config: RunConfig):
    """The run's labeler, with each DFT job's threads and memory cap from ``execution``."""
    from dask.utils import parse_bytes

    from eelt.label import PySCFLabeler, make_labeler

    labeler = make_labeler(config.label)
    if isinstance(labeler, PySCFLabeler):
        ex = config.execution
        per_job_MB = parse_bytes(ex.memory_per_worker) / ex.threads_per_worker / 2**20
        labeler = dataclasses.replace(
            labeler, threads=ex.threads_per_job, max_memory_MB=0.8 * per_job_MB
        )
    return labeler


class RunContext:
    """One run: its directory, config (frozen at start), executor and labeler (by default the
    config's, :func:`job_labeler`); ``session`` is the ``eelt run`` session under way."""

    def __init__(self, run: RunDir, executor: Executor | None, labeler=None):
        self.run = run
        self.config = run.load_config()
        self.executor = executor
        self.labeler = labeler if labeler is not None else job_labeler(self.config)
        self.type_map: list[str] = list(self.config.system.type_map or [])
        self.session: timing.Session | None = None

    @property
    def root(self) -> Path:
        return self.run.root

    @property
    def worker_slots(self) -> int:
        """Jobs the executor runs at once (for the idle-time accounting)."""
        ex = self.config.execution
        workers = (
            ex.max_jobs if ex.kind not in ("local", "threads") and ex.max_jobs else ex.n_workers
        )
        return int(workers * ex.threads_per_worker)

    @property
    def train_executor(self) -> Executor:
        """Training on the GPU workers when there are some: one device per stack."""
        from eelt.orchestration.execution import gpu_executor

        return (
            gpu_executor(self.executor) if self.config.execution.gpus_per_worker else self.executor
        )

    @property
    def label_executor(self) -> Executor:
        """DFT on the GPU workers only, when the labeler runs on a GPU."""
        from eelt.orchestration.execution import gpu_executor

        on_gpu = getattr(self.labeler, "device", "cpu") != "cpu"
        if self.config.execution.gpus_per_worker and on_gpu:
            return gpu_executor(self.executor)
        return self.executor

    def timed_stage(self, runner: StageRunner, where: Path, stage: str, output: Path, body):
        """``runner.stage`` with the stage's wall time recorded (eelt.orchestration.timing)."""
        return runner.stage(
            stage if where.name.startswith("iter-") else f"init-{stage}",
            lambda: timing.timed(where, stage, output, self.worker_slots, body),
        )
