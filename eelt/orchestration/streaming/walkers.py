"""The streaming run's walker segments: where a segment starts and with what seed (who walks
and the job's arguments come from :mod:`eelt.explore.walkers`, as in the synchronous
exploration).

A segment is ``loop.segment_steps`` MD steps of one walker with the ensemble of one generation.
It starts from the last frame of the walker's previous segment at or below trust_hi, as read
back from that segment's trajectory file (so a resumed run starts it from the very same numbers
as an uninterrupted one); when that segment completed its steps and its last frame is good, from
the very end of it, velocities included (the MD goes on: an NVE stage stays NVE across
segments; thermostat and barostat states other than the velocities and the cell start afresh),
else with fresh Maxwell-Boltzmann velocities from its own seed. The first segment of a stage
starts from the stage's starts (:func:`eelt.explore.walkers.choose_starts`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from eelt.config import RunConfig
from eelt.explore.walkers import start_copy


def segment_seed(explore_seed: int, walker: int, round_: int) -> int:
    """The seed of one segment's velocities and thermostat noise."""
    return int(np.random.SeedSequence([explore_seed, walker, round_]).generate_state(1)[0])


def segment_start(
    previous: list[Atoms],
    start: Atoms,
    trust_hi: float | None,
    key: str,
    end_state: Atoms | None = None,
) -> Atoms:
    """Where a segment starts: the walker's previous segment's ``end_state`` (positions, cell
    and momenta of its last step: the MD goes on) when that segment completed and its last
    frame ``previous[-1]`` has its deviation ``key`` at or below ``trust_hi``; else the last
    frame of ``previous`` that has (positions only: new velocities); else the walker's
    ``start``."""
    if end_state is not None and previous:
        devi = previous[-1].info.get(key, np.nan)
        if trust_hi is None or devi <= trust_hi:
            going_on = start_copy(end_state)
            going_on.set_momenta(end_state.get_momenta())
            return going_on
    for frame in reversed(previous):
        devi = frame.info.get(key, np.nan)
        if trust_hi is None or devi <= trust_hi:
            break
    else:
        frame = start
    return start_copy(frame)


def trust_hi(levels: dict[str, Any], config: RunConfig) -> float | None:
    """The level above which a frame is not a segment's start (absolute or relative)."""
    unit = "_relative" if config.examine.deviation == "relative" else "_eV_per_A"
    return levels["trust_hi" + unit]


def read_segment(path: Path) -> list[Atoms]:
    """A finished segment's frames (none for a missing or empty trajectory)."""
    from eelt.explore import read_trajectory

    return read_trajectory(path) if Path(path).is_file() else []
