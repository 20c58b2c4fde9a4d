"""Progress artifacts in the Prefect UI: one per unit of tracked work (an iteration's walkers,
its labels, its training), created when it starts and updated as its jobs finish."""

from __future__ import annotations

import logging
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from flows.artifacts import artifact_key

log = logging.getLogger("eelt.flows")


class ProgressArtifacts:
    """A :class:`eelt.orchestration.tracking.Tracker` that keeps a Prefect progress artifact (percent done)
    per unit of work. A failed API call costs a warning, never the run."""

    def __init__(self, run_name: str):
        self.run_name = run_name
        self.artifacts: dict[str, tuple[UUID, int, float]] = {}  # key -> (id, total, percent)

    def start(self, key: str, description: str, total: int) -> None:
        try:
            artifact_id = create_progress_artifact(
                0.0 if total else 100.0,
                key=artifact_key(self.run_name, key),
                description=f"{self.run_name}, {description}",
            )
        except Exception as err:  # the UI is a view: never stop the science for it
            log.warning("progress artifact %s not created: %s", key, err)
            return
        self.artifacts[key] = (artifact_id, total, 0.0)

    def update(self, key: str, done: int) -> None:
        if key not in self.artifacts:
            return
        artifact_id, total, last = self.artifacts[key]
        percent = 100.0 * done / total if total else 100.0
        if percent - last < 1.0 and percent < 100.0:
            return  # at most ~100 updates per unit
        try:
            update_progress_artifact(artifact_id, percent)
        except Exception as err:
            log.warning("progress artifact %s not updated: %s", key, err)
            return
        self.artifacts[key] = (artifact_id, total, percent)

    def finish(self, key: str) -> None:
        self.artifacts.pop(key, None)
