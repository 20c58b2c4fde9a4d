"""The eelt loop as a Prefect flow: one flow run per ``eelt run``, a subflow per iteration,
the stages as tasks.

Stages persist their own results in the run directory and skip finished work, so a
Prefect retry or a resumed flow never recomputes a finished stage; Prefect's own result
persistence and caching are therefore off. Dask workers run plain eelt functions (DFT
jobs, walkers, training members) submitted by the stage tasks, never Prefect tasks.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from eelt.config import load_config
from eelt.errors import EeltError
from eelt.orchestration import timing
from eelt.orchestration.context import RunContext
from eelt.orchestration.execution import open_executor
from eelt.orchestration.lock import acquire
from eelt.orchestration.runs import prepare_run, run_loop
from eelt.orchestration.tracking import tracking
from flows.artifacts import (
    artifact_key,
    generation_plots_markdown,
    history_markdown,
    iteration_plots_markdown,
    iteration_rows,
)
from flows.progress import ProgressArtifacts

T = TypeVar("T")
log = logging.getLogger("eelt.flows")

# Every stage resumes from the run directory, so one retry is always safe; a user error
# (EeltError: a bad input, too many failed labels) would only fail again, so it is not retried.
STAGE_RETRIES = 1


def _call(body: Callable[[], T]) -> T:
    return body()


def _retry_unless_user_error(task, task_run, state) -> bool:
    try:
        state.result()
    except EeltError:
        return False
    except Exception:
        return True
    return True


class PrefectRunner:
    """Runs each stage as a Prefect task and each iteration as a subflow, with UI artifacts:
    per iteration a table, its plots and progress bars; per run the history and learning curve
    after every iteration."""

    def __init__(self, run_name: str, root: Path):
        self.run_name = run_name
        self.root = Path(root)
        self.published: set[int] = set()  # streaming generations whose plots are published

    def stage(self, name: str, body: Callable[[], T]) -> T:
        stage_task = task(
            _call,
            name=name,
            cache_policy=NO_CACHE,
            retries=STAGE_RETRIES,
            retry_delay_seconds=2,
            retry_condition_fn=_retry_unless_user_error,
            persist_result=False,
        )
        return stage_task(body)

    def iteration(self, index: int, body: Callable[[], T]) -> T:
        iteration_flow = flow(
            _call,
            name="eelt-iteration",
            flow_run_name=f"{self.run_name}-iteration-{index:03d}",
            persist_result=False,
            validate_parameters=False,
        )
        return iteration_flow(lambda: self._with_artifacts(index, body))

    def _with_artifacts(self, index: int, body: Callable[[], T]) -> T:
        record = body()
        key = artifact_key(self.run_name, f"iteration-{index:03d}")
        create_table_artifact(
            iteration_rows(record, timing.read(self.root / f"iter-{index:03d}")),
            key=key,
            description=f"{self.run_name}, iteration {index}: examination, labels and training",
        )
        create_markdown_artifact(
            iteration_plots_markdown(self.root, index, record),
            key=f"{key}-plots",
            description=f"{self.run_name}, iteration {index}: deviation histogram, calibration, "
            "learning curves",
        )
        return record

    def state_written(self, state: dict[str, Any]) -> None:
        publish_history(state)
        if state.get("mode") == "streaming":  # each generation's plots as it lands
            for row in state["iterations"]:
                g = row["generation"]
                if g in self.published:
                    continue
                create_markdown_artifact(
                    generation_plots_markdown(self.root, row),
                    key=artifact_key(self.run_name, f"generation-{g:03d}-plots"),
                    description=f"{self.run_name}, generation {g}: calibration, learning curves",
                )
                self.published.add(g)


def publish_history(state: dict[str, Any]) -> None:
    """The run-level artifact: status, labels, the table by iteration and the learning curve
    (test force RMSE against labels); a new version after every iteration."""
    from eelt.tools.report import learning_curve_png

    with tempfile.TemporaryDirectory() as tmp:
        plot = None
        if state.get("iterations"):
            plot = learning_curve_png(state, Path(tmp) / "learning_curve.png")
        create_markdown_artifact(
            history_markdown(state, plot),
            key=artifact_key(state["name"], "history"),
            description=f"eelt run {state['name']}: accuracy against labels, by iteration",
        )


def _flow_run_name() -> str:
    """A flow run started from a deployment is named after its run directory."""
    from prefect.runtime import flow_run

    parameters = flow_run.parameters
    return Path(parameters.get("run_dir") or parameters.get("config_path") or "eelt").stem


@flow(name="eelt", persist_result=False, flow_run_name=_flow_run_name)
def eelt_run(config_path: str, run_dir: str | None = None) -> dict[str, Any]:
    """Run or resume the EELT loop of ``config_path`` in ``run_dir`` (default runs/NAME)."""
    eelt_log = logging.getLogger("eelt")
    if eelt_log.level == logging.NOTSET:  # a flow run of a deployment: eelt's lines to the UI
        eelt_log.setLevel(logging.INFO)
    config, base_dir = load_config(config_path)
    root = Path(run_dir) if run_dir else Path("runs") / config.name
    # `eelt run` holds the lock already (taken again here, it nests); a flow run of `eelt serve`
    # takes it here, so two flow runs never write one run directory
    with acquire(root, "eelt serve (flow run)"):
        run = prepare_run(config, base_dir, root)
        with (
            open_executor(config.execution, root / "logs") as executor,
            tracking(ProgressArtifacts(config.name)),
        ):
            return run_loop(RunContext(run, executor), PrefectRunner(config.name, root))


if __name__ == "__main__":
    import sys

    eelt_run(sys.argv[1])
