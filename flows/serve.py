"""A run as a Prefect deployment: started, scheduled and resumed from the UI.

``serve(config)`` registers the deployment ``eelt/NAME`` (parameters: the config file and the
run directory, both absolute) on the Prefect server and runs each flow run the UI starts, in
a subprocess of this one, until interrupted. Starting the deployment again resumes the run
directory where it stopped, as ``eelt run`` does. Prefect's ephemeral server cannot take a
deployment (it ends with the process), so a server must be running: ``eelt server``.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from prefect.types.entrypoint import EntrypointType

from flows.eelt_flow import eelt_run


def serve(
    config_path: Path,
    run_dir: Path,
    name: str,
    cron: str | None = None,
    interval_s: float | None = None,
) -> None:
    """Register ``eelt/<name>`` and execute its flow runs until interrupted."""
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "eelt")  # eelt's lines in the UI
    deployment = eelt_run.to_deployment(
        name=name,
        parameters={
            "config_path": str(Path(config_path).resolve()),
            "run_dir": str(Path(run_dir).resolve()),
        },
        cron=cron,
        interval=timedelta(seconds=interval_s) if interval_s else None,
        description=f"eelt run {name}: start it to run or resume {Path(run_dir).resolve()}",
        entrypoint_type=EntrypointType.MODULE_PATH,
        tags=["eelt"],
    )
    from prefect import serve as prefect_serve

    prefect_serve(deployment)
