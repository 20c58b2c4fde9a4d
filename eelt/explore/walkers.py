"""Who walks in an explore stage and with what: the walkers (start x condition x repeat, and
their names), where a stage's walkers start, and the keyword arguments of the job that runs one
walker (:func:`eelt.explore.job.walker_job`). Both schedules (a synchronous iteration, a
streaming segment) take these from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms

from eelt import keys
from eelt.config import ExploreConfig, StageConfig


@dataclass(frozen=True)
class Walker:
    """One walker of a stage: its index, name, start structure and thermodynamic condition."""

    index: int
    name: str
    start: Atoms
    temperature_K: float
    pressure_bar: float | None


def stage_walkers(stage: StageConfig, starts: list[Atoms]) -> list[Walker]:
    """Every start x condition x ``walkers_per_condition`` of ``stage``, in that order, named
    ``wNNN-sS-T<K>[-P<bar>]``."""
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


def start_copy(frame: Atoms) -> Atoms:
    """A bare copy (numbers, positions, cell, pbc) that remembers where it came from (the
    walker, step and deviation of the frame it copies, as ``from_*`` info keys)."""
    atoms = Atoms(
        numbers=frame.numbers.copy(),
        positions=frame.positions.copy(),
        cell=frame.cell.array.copy(),
        pbc=frame.pbc.copy(),
    )
    for key in (keys.WALKER, keys.STEP, keys.MAX_DEVI_F):
        if key in frame.info:
            atoms.info[f"from_{key}"] = frame.info[key]
    return atoms


def choose_starts(
    stage: StageConfig,
    system: list[Atoms],
    files: list[Atoms],
    previous: list[list[Atoms]] | None,
    trust_lo: float | None,
    deviation_key: str,
    previous_name: str = "the previous stage",
    sampler: list[Atoms] = (),
    rotation: int = 0,
) -> tuple[list[Atoms], str]:
    """Where ``stage``'s walkers start, and a line saying from what.

    "sampler": ``max_starts`` (default: as many as ``system``) of the thermal sampler's frames
    ``sampler``, the ``rotation``-th block of them in their order, wrapping around (the system
    structures when there is none).

    ``starts`` as a list of files: their structures (``files``); "system", or no ``previous``
    trajectories (None: the run's first exploration): the ``system`` structures; "last": the
    last frame of each of the ``previous`` trajectories (``previous_name`` says whose);
    "uncertain": the most uncertain accurate frames of ``previous`` (deviation
    ``deviation_key`` below ``trust_lo``), at most one per trajectory unless ``max_starts``
    says more. At most ``max_starts`` in every case."""
    trajectories = [t for t in previous or [] if t]
    if stage.starts == "sampler" and sampler:
        n = min(stage.max_starts or len(system), len(sampler))
        picked = [(rotation * n + k) % len(sampler) for k in range(n)]
        frames = [sampler[i] for i in picked]
        source = f"thermal sampler frames {', '.join(map(str, picked))}"
    elif stage.starts == "sampler":
        frames, source = system, "system (no thermal sampler frame)"
    elif isinstance(stage.starts, list):
        frames, source = files, "stage files"
    elif stage.starts == "system" or previous is None:
        frames, source = system, "system"
    elif not trajectories:
        frames, source = system, f"system ({previous_name} left no frame)"
    else:
        frames, source = [t[-1] for t in trajectories], f"last frames of {previous_name}"
        if stage.starts == "uncertain":
            accurate = [
                f
                for t in trajectories
                for f in t
                if trust_lo is not None and f.info.get(deviation_key, np.inf) < trust_lo
            ]
            if accurate:
                accurate.sort(key=lambda f: -f.info[deviation_key])
                frames = accurate[: stage.max_starts or len(trajectories)]
                source = f"most uncertain accurate frames of {previous_name}"
            else:
                source += " (no accurate frame to start from)"
    if stage.max_starts is not None:
        frames = frames[: stage.max_starts]
    return [start_copy(f) for f in frames], source


def walker_job_kwargs(
    explore: ExploreConfig,
    stage: StageConfig,
    walker: Walker,
    *,
    n_steps: int,
    seed: int,
    levels: dict[str, Any],
    relative_eps_eV_per_A: float,
    plot: bool,
) -> dict[str, Any]:
    """Keyword arguments of :func:`eelt.explore.job.walker_job` for ``walker`` of ``stage``:
    every argument but the ensemble, the start structure and the output path. ``levels``
    holds the trust levels (``trust_hi_eV_per_A``, ``trust_hi_relative``) that stop a walker."""
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
        "n_steps": n_steps,
        "dump_interval": stage.dump_interval,
        "friction_per_fs": stage.friction_per_fs,
        "seed": int(seed),
        "trust_hi_eV_per_A": levels["trust_hi_eV_per_A"],
        "trust_hi_relative": levels.get("trust_hi_relative"),
        "relative_eps_eV_per_A": relative_eps_eV_per_A,
        "stop_after_failed_dumps": explore.stop_after_failed_dumps,
        "min_distance_fraction": explore.min_distance_fraction,
        "max_bond_fraction": explore.max_bond_fraction,
        "max_volume_ratio": explore.max_volume_ratio,
        "max_temperature_factor": explore.max_temperature_factor,
        "max_restarts": explore.max_restarts,
        "restart_timestep_factor": explore.restart_timestep_factor,
        "plot": plot,
    }
