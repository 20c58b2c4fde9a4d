"""Where a streaming run keeps its records (``runs/NAME/stream/``), and reading them back.

Every record is written atomically (:mod:`eelt.atomic`) and, where a record has several files,
its ``report.json`` (or summary) last, so a record that exists is complete:

```
stream/
  settings.json                 the streaming knobs the stream started with (resume checks)
  state.json                    a small summary of where the scheduler stands (for people)
  segments/r0003-w001.extxyz    walker 1's segment in round 3 (+ .end.extxyz, its last step
                                with momenta; + .summary.json, written last)
  selections/r0003-w001/        its examination: candidates.extxyz, test_frames.extxyz,
                                report.json (last); labels.json once its labels are done
  rounds/r0003.json             the end of round 3: the generation it started, the end state,
                                the stage it ended
  stages/stage-001.extxyz       where stage 1's walkers start (written as the stage begins)
  generations/gen-002/          generation 2: model-*.pt, metrics.json, report.json (last)
```
Generation 0 is the initial ensemble (``init/train``). Training data and test frames of
generation g >= 1 go where the synchronous loop puts iteration g - 1's (``data/iter-NNN.extxyz``,
``data/test/iter-NNN.extxyz``), so export, evaluation and ``eelt status`` read them as usual.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eelt import atomic

REPORT = "report.json"
LABELS = "labels.json"
CANDIDATES = "candidates.extxyz"
TEST_FRAMES = "test_frames.extxyz"
CALIBRATION_FILE = "calibration.json"  # in a generation's folder, before its report
CALIBRATION_PLOT = "calibration.png"


class StreamDir:
    """Paths and records of the streaming scheduler under ``root`` (the run's ``stream/``)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def settings_path(self) -> Path:
        return self.root / "settings.json"

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    # --- segments ----------------------------------------------------------------------
    def segment_path(self, walker: int, round_: int) -> Path:
        """A segment's trajectory (its summary lies beside it, see eelt.explore.job)."""
        return self.root / "segments" / f"r{round_:04d}-w{walker:03d}.extxyz"

    def segment_end_path(self, walker: int, round_: int) -> Path:
        """A completed segment's last step (positions, cell, momenta): where the next goes on."""
        return self.root / "segments" / f"r{round_:04d}-w{walker:03d}.end.extxyz"

    def segment_failure_path(self, walker: int, round_: int) -> Path:
        """A segment whose job raised: its reason (the segment counts as one without frames)."""
        return self.root / "segments" / f"r{round_:04d}-w{walker:03d}.failed.json"

    # --- selections ----------------------------------------------------------------------
    def selection_dir(self, walker: int, round_: int) -> Path:
        return self.root / "selections" / f"r{round_:04d}-w{walker:03d}"

    def selection(self, walker: int, round_: int) -> dict[str, Any] | None:
        return _read(self.selection_dir(walker, round_) / REPORT)

    def labels(self, walker: int, round_: int) -> dict[str, Any] | None:
        """What labeling a selection gave (written once every one of its jobs returned)."""
        return _read(self.selection_dir(walker, round_) / LABELS)

    def stage_starts_path(self, stage: int) -> Path:
        return self.root / "stages" / f"stage-{stage:03d}.extxyz"

    # --- rounds and generations --------------------------------------------------------------
    def round_path(self, round_: int) -> Path:
        return self.root / "rounds" / f"r{round_:04d}.json"

    def round_record(self, round_: int) -> dict[str, Any] | None:
        return _read(self.round_path(round_))

    def generation_dir(self, generation: int) -> Path:
        return self.root / "generations" / f"gen-{generation:03d}"

    def generation(self, generation: int) -> dict[str, Any] | None:
        return _read(self.generation_dir(generation) / REPORT)

    def calibration(self, generation: int) -> dict[str, Any] | None:
        """The calibration of the generations that explored generation ``generation``'s rounds."""
        return _read(self.generation_dir(generation) / CALIBRATION_FILE)


def _read(path: Path) -> dict[str, Any] | None:
    return atomic.read_json(path) if path.is_file() else None
