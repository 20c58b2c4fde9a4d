"""Starting a run: create or check its directory (every preflight check first), then run it
with the schedule its config names (``loop.mode``: synchronous or streaming)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from eelt.config import RunConfig
from eelt.orchestration.context import DirectRunner, RunContext, StageRunner
from eelt.orchestration.rundir import RunDir

log = logging.getLogger(__name__)


def prepare_run(config: RunConfig, base_dir: Path, root: Path) -> RunDir:
    """Create the run directory, or check that ``config`` may resume the one there (every
    check of :func:`eelt.orchestration.preflight.preflight` first: nothing is written when one
    fails)."""
    from eelt.orchestration.preflight import preflight

    run = RunDir(root)
    inputs = preflight(config, base_dir, root)
    config, starts = inputs.config, inputs.starts
    user_data, stage_starts = inputs.user_data, inputs.stage_starts
    if run.exists():
        run.update_resumable(config)
        log.info("resuming run in %s", root)
    else:
        run.create(config, starts, user_data, stage_starts, inputs.yardstick)
        log.info("new run in %s", root)
    return run


def run_loop(ctx: RunContext, runner: StageRunner | None = None) -> dict[str, Any]:
    """Run (or resume) the run to its end with its config's schedule; return the final state."""
    runner = runner or DirectRunner()
    if ctx.config.loop.mode == "streaming":
        from eelt.orchestration.streaming import run_streaming

        state = run_streaming(ctx, runner)
    else:
        from eelt.orchestration.synchronous import run_synchronous

        state = run_synchronous(ctx, runner)
    from eelt.examine.convergence import STALLED

    if state["status"] == STALLED:  # the one line that says the run did not learn
        log.warning("run %s stalled: %s", state["name"], state["status_detail"])
    log.info(
        "run %s: %s (%s); models in %s",
        state["name"], state["status"], state["status_detail"], state["models_dir"],
    )  # fmt: skip
    return state
