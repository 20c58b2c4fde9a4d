"""The exploration stage of an iteration, as the loop runs it: which structures the walkers start
from, one walker per start x condition x repeat through the executor, and the stage report.

A mixin of :class:`eelt.orchestration.synchronous.Loop`: it reads and writes the run directory through ``self.run``
and uses ``self.config``, ``self.executor``, ``self.models_dir`` and ``self.trust_levels``.
"""

from __future__ import annotations

import logging
from concurrent.futures import as_completed
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from eelt import atomic, keys
from eelt.errors import EeltError
from eelt.orchestration import tracking
from eelt.orchestration.progress import Slot

log = logging.getLogger(__name__)

STARTS_FILE = "starts.xyz"  # in explore/ (extxyz): the structures its walkers start from


def _start_copy(frame: Atoms) -> Atoms:
    """A bare copy (positions, numbers, cell) with where it came from."""
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


class Exploration:
    """Explore one iteration (see the module docstring)."""

    def explore_starts(self, slot: Slot) -> tuple[list[Atoms], str]:
        """The iteration's start structures and where they come from."""
        from eelt.explore import read_trajectory

        stage = self.config.explore.stages[slot.stage]
        if isinstance(stage.starts, list):
            frames, source = self.run.stage_starts(slot.stage), "stage files"
        elif stage.starts == "system" or slot.iteration == 0:
            frames, source = self.run.starts(), "system"
        else:
            previous = slot.iteration - 1
            trajectories = [read_trajectory(p) for p in self.run.explored_files(previous)]
            trajectories = [t for t in trajectories if t]
            if not trajectories:
                raise EeltError(f"explore: iteration {previous} left no frame to start from")
            frames = [t[-1] for t in trajectories]
            source = f"last frames of iteration {previous}"
            if stage.starts == "uncertain":
                exam = self.run.read_report(self.run.stage_dir(previous, "examine")) or {}
                relative = exam.get("deviation") == "relative"
                key = keys.MAX_DEVI_F_REL if relative else keys.MAX_DEVI_F
                lo = exam.get("trust_lo_relative" if relative else "trust_lo_eV_per_A")
                accurate = [
                    f for t in trajectories for f in t if lo is not None and f.info[key] < lo
                ]
                if accurate:
                    accurate.sort(key=lambda f: -f.info[key])
                    frames = accurate[: stage.max_starts or len(trajectories)]
                    source = f"most uncertain accurate frames of iteration {previous}"
                else:
                    source += " (no accurate frame to start from)"
        if stage.max_starts is not None:
            frames = frames[: stage.max_starts]
        return [_start_copy(f) for f in frames], source

    def explore(self, slot: Slot) -> dict[str, Any]:
        """Run every walker of the stage (start x temperature x pressure x repeat)."""
        out = self.run.stage_dir(slot.iteration, "explore")
        if (done := self._done(out)) is not None:
            return done
        from eelt.explore.job import finished_walker, walker_job

        explore = self.config.explore
        stage = explore.stages[slot.stage]
        models = str(self.models_dir(slot.iteration))
        levels = self.trust_levels(slot)
        starts, source = self.explore_starts(slot)
        atomic.write_frames(out / STARTS_FILE, starts)
        conditions = stage.conditions()
        per_start = len(conditions) * stage.walkers_per_condition
        n_walkers = len(starts) * per_start
        seeds = np.random.SeedSequence([explore.seed, slot.iteration]).generate_state(n_walkers)
        biases = [b.model_dump(mode="json") for b in stage.biases]
        jobs, earlier = {}, []
        for w, seed in enumerate(seeds):
            s, rest = divmod(w, per_start)
            temperature, pressure = conditions[rest // stage.walkers_per_condition]
            name = f"w{w:03d}-s{s}-T{temperature:g}" + (
                f"-P{pressure:g}" if pressure is not None else ""
            )
            path = out / f"{name}.extxyz"
            if (summary := finished_walker(path)) is not None:
                earlier.append(summary)  # finished before a crash: not run again
                continue
            md = {
                "ensemble": stage.ensemble,
                "thermostat": stage.thermostat,
                "barostat": stage.barostat,
                "cell_fluctuation": stage.cell_fluctuation,
                "temperature_end_K": stage.temperature_ramp_to_K,
                "pressure_bar": pressure,
                "thermostat_time_fs": stage.thermostat_time_fs,
                "barostat_time_fs": stage.barostat_time_fs,
            }
            future = self.executor.submit(
                walker_job,
                models,
                starts[s],
                str(path),
                name,
                forces_from=explore.forces_from,
                md=md,
                biases=biases,
                temperature_K=temperature,
                timestep_fs=stage.timestep_fs,
                n_steps=stage.n_steps,
                dump_interval=stage.dump_interval,
                friction_per_fs=stage.friction_per_fs,
                seed=int(seed),
                trust_hi_eV_per_A=levels["trust_hi_eV_per_A"],
                trust_hi_relative=levels.get("trust_hi_relative"),
                relative_eps_eV_per_A=self.config.examine.relative_eps_eV_per_A,
                stop_after_failed_dumps=explore.stop_after_failed_dumps,
                min_distance_fraction=explore.min_distance_fraction,
                max_bond_fraction=explore.max_bond_fraction,
                max_volume_ratio=explore.max_volume_ratio,
                max_restarts=explore.max_restarts,
                restart_timestep_factor=explore.restart_timestep_factor,
                plot=explore.plot_walkers,
            )
            jobs[future] = name
        if earlier:
            log.info("explore: %d walkers finished earlier, not run again", len(earlier))
        walkers, failed = [], []
        n_walkers = len(earlier) + len(jobs)
        with tracking.task(
            f"iter-{slot.iteration:03d}-explore",
            f"iter-{slot.iteration:03d}: explore, {n_walkers} walkers",
            n_walkers,
        ) as progress:
            summaries = list(earlier)
            progress.update(len(summaries))
            for future in as_completed(jobs):
                try:
                    summaries.append(future.result())
                except Exception as err:  # a dead worker or a crashed walker: record, go on
                    failed.append(
                        {"walker": jobs[future], "reason": f"{type(err).__name__}: {err}"}
                    )
                    log.warning("walker %s failed: %s", jobs[future], failed[-1]["reason"])
                progress.advance()
        for summary in summaries:
            record = summary.to_dict()
            for k in ("trajectory", "plot"):
                if record[k]:
                    record[k] = str(Path(record[k]).relative_to(self.run.root))
            record["extra_files"] = [
                str(Path(p).relative_to(self.run.root)) for p in record["extra_files"]
            ]
            if not np.isfinite(record["max_devi_f_max"]):
                record["max_devi_f_max"] = None
            walkers.append(record)
        if not walkers:
            raise EeltError(
                f"explore: every walker of iteration {slot.iteration} failed: {failed[0]['reason']}"
            )
        walkers.sort(key=lambda w: w["walker"])
        report = {
            "stage": slot.stage,
            "stage_iteration": slot.stage_iteration,
            "models_dir": str(Path(models).relative_to(self.run.root)),
            "starts": source,
            "n_starts": len(starts),
            "walkers": walkers,
            "failed": failed,
            "n_frames": sum(w["n_frames"] for w in walkers),
            "n_restarts": sum(w["restarts"] for w in walkers),
            "n_stops": sum(len(w["stops"]) for w in walkers),
        }
        self.run.write_report(out, report)
        return report
