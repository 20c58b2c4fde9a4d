"""The streaming run's walkers and their segments: who walks in a stage (start x condition x
repeat, as in the synchronous exploration), where a stage's walkers start, where a segment
starts, and the job that runs it.

A segment is ``loop.segment_steps`` MD steps of one walker with the ensemble of one generation.
It starts from the last frame of the walker's previous segment at or below trust_hi, as read
back from that segment's trajectory file (so a resumed run starts it from the very same numbers
as an uninterrupted one); when that segment completed its steps and its last frame is good, from
the very end of it, velocities included (the MD goes on: an NVE stage stays NVE across
segments; thermostat and barostat states other than the velocities and the cell start afresh),
else with fresh Maxwell-Boltzmann velocities from its own seed. The first segment of a stage
starts from the stage's starts (:func:`stage_starts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from eelt import keys
from eelt.config import RunConfig


@dataclass(frozen=True)
class Walker:
    """One walker: its name, start structure and thermodynamic condition."""

    index: int
    name: str
    start: Atoms
    temperature_K: float
    pressure_bar: float | None


def walkers(config: RunConfig, starts: list[Atoms], stage_index: int = 0) -> list[Walker]:
    """Every start x condition x walkers_per_condition of stage ``stage_index``, named as the
    synchronous exploration names them."""
    stage = config.explore.stages[stage_index]
    conditions = stage.conditions()
    per_start = len(conditions) * stage.walkers_per_condition
    out = []
    for w in range(len(starts) * per_start):
        s, rest = divmod(w, per_start)
        temperature, pressure = conditions[rest // stage.walkers_per_condition]
        name = f"w{w:03d}-s{s}-T{temperature:g}" + (
            f"-P{pressure:g}" if pressure is not None else ""
        )
        out.append(Walker(w, name, starts[s], float(temperature), pressure))
    return out


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
            going_on = _bare(end_state)
            going_on.set_momenta(end_state.get_momenta())
            return going_on
    for frame in reversed(previous):
        devi = frame.info.get(key, np.nan)
        if trust_hi is None or devi <= trust_hi:
            break
    else:
        frame = start
    return _bare(frame)


def stage_starts(
    config: RunConfig,
    stage_index: int,
    system: list[Atoms],
    files: list[Atoms],
    previous: list[list[Atoms]],
    previous_trust_lo: float | None,
) -> tuple[list[Atoms], str]:
    """Where stage ``stage_index``'s walkers start, and a line saying from what: its own
    ``files``, the ``system`` structures, or (``last``, ``uncertain``) the frames of the
    previous stage's last round (``previous``: one trajectory per segment): each segment's last
    frame, or the most uncertain frames below ``previous_trust_lo``; at most ``max_starts``.
    The system's structures when the previous round left no frame."""
    stage = config.explore.stages[stage_index]
    key = deviation_key(config)
    trajectories = [t for t in previous if t]
    if isinstance(stage.starts, list):
        frames, source = files, "stage files"
    elif stage.starts == "system" or not trajectories:
        frames, source = system, "system"
        if stage.starts != "system":
            source += " (the previous stage's last round left no frame)"
    else:
        frames, source = [t[-1] for t in trajectories], "last frames of the previous stage"
        if stage.starts == "uncertain":
            accurate = [
                f
                for t in trajectories
                for f in t
                if previous_trust_lo is not None and f.info.get(key, np.inf) < previous_trust_lo
            ]
            if accurate:
                accurate.sort(key=lambda f: -f.info[key])
                frames = accurate[: stage.max_starts or len(trajectories)]
                source = "most uncertain accurate frames of the previous stage"
    if stage.max_starts is not None:
        frames = frames[: stage.max_starts]
    return [_bare(f) for f in frames], source


def _bare(frame: Atoms) -> Atoms:
    return Atoms(
        numbers=frame.numbers.copy(),
        positions=frame.positions.copy(),
        cell=frame.cell.array.copy(),
        pbc=frame.pbc.copy(),
    )


def segment_job_kwargs(
    config: RunConfig,
    walker: Walker,
    round_: int,
    levels: dict[str, Any],
    stage_index: int = 0,
) -> dict[str, Any]:
    """Keyword arguments of :func:`eelt.explore.job.walker_job` for one segment of a walker of
    stage ``stage_index`` (all but the ensemble, the start and the output path)."""
    explore = config.explore
    stage = explore.stages[stage_index]
    return {
        "walker": walker.name,
        "forces_from": explore.forces_from,
        "md": {
            "ensemble": stage.ensemble,
            "thermostat": stage.thermostat,
            "barostat": stage.barostat,
            "cell_fluctuation": stage.cell_fluctuation,
            "temperature_end_K": stage.temperature_ramp_to_K,
            "pressure_bar": walker.pressure_bar,
            "thermostat_time_fs": stage.thermostat_time_fs,
            "barostat_time_fs": stage.barostat_time_fs,
        },
        "biases": [b.model_dump(mode="json") for b in stage.biases],
        "temperature_K": walker.temperature_K,
        "timestep_fs": stage.timestep_fs,
        "n_steps": config.loop.segment_steps,
        "dump_interval": stage.dump_interval,
        "friction_per_fs": stage.friction_per_fs,
        "seed": segment_seed(explore.seed, walker.index, round_),
        "trust_hi_eV_per_A": levels["trust_hi_eV_per_A"],
        "trust_hi_relative": levels.get("trust_hi_relative"),
        "relative_eps_eV_per_A": config.examine.relative_eps_eV_per_A,
        "stop_after_failed_dumps": explore.stop_after_failed_dumps,
        "min_distance_fraction": explore.min_distance_fraction,
        "max_bond_fraction": explore.max_bond_fraction,
        "max_volume_ratio": explore.max_volume_ratio,
        "max_restarts": explore.max_restarts,
        "restart_timestep_factor": explore.restart_timestep_factor,
        "plot": False,  # a plot per segment costs more than the segment; the trajectory has it all
        "keep_momenta": True,  # a start with momenta is the previous segment's end: go on
    }


def deviation_key(config: RunConfig) -> str:
    """The per-frame deviation the trust levels apply to."""
    return keys.MAX_DEVI_F_REL if config.examine.deviation == "relative" else keys.MAX_DEVI_F


def trust_hi(levels: dict[str, Any], config: RunConfig) -> float | None:
    unit = "_relative" if config.examine.deviation == "relative" else "_eV_per_A"
    return levels["trust_hi" + unit]


def read_segment(path: Path) -> list[Atoms]:
    """A finished segment's frames (none for a missing or empty trajectory)."""
    from eelt.explore import read_trajectory

    return read_trajectory(path) if Path(path).is_file() else []
