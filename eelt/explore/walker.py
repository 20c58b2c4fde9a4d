"""One exploration walker: molecular dynamics driven by an ensemble calculator.

The integrator is any of :mod:`eelt.explore.dynamics` (NVE, NVT, NPT; a temperature ramp).
Every ``dump_interval`` steps (step 0 included) the walker records a frame with the ensemble's
force deviation (and, under a bias, the bias energy and the collective variables). Frames
carry no energy/forces labels: the model's prediction is kept only as ``info["model_energy"]``
(eV), so an explored frame is never mistaken for a DFT-labeled one.

Guards stop a segment of the walker (non-finite forces, atoms too close, an atom gone, a
collapsing cell, a kinetic temperature far above the target, deviation above ``trust_hi`` for
too long). With ``max_restarts`` the walker
then starts again from its last good frame (the last dump that passed every guard and was at or
below trust_hi) with new Maxwell-Boltzmann velocities from a new seed and, optionally, a smaller
timestep, and runs on to ``n_steps``; every stop and restart is recorded in the summary.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.constraints import FixCom
from ase.md.velocitydistribution import Stationary, ZeroRotation

from eelt import keys
from eelt.atomic import write_frames
from eelt.explore.dynamics import MDSettings, make_dynamics, set_target_temperature
from eelt.explore.guards import (
    KINETIC_WINDOW_STEPS,
    cell_volume_change,
    closest_contact,
    isolated_atoms,
    overheated,
)
from eelt.model.deviation import relative_max_devi_f

MODEL_ENERGY = keys.MODEL_ENERGY
KINETIC_TEMPERATURE_K = keys.KINETIC_TEMPERATURE_K
COMPLETED = "completed"
_DEVIATION_KEYS = (keys.MAX_DEVI_F, keys.AVG_DEVI_F, keys.DEVI_E)


@dataclass
class WalkerSummary:
    """What a walker did; ``max_devi_f_max`` (eV/Angstrom) is over the kept frames, NaN if none.

    ``stop_reason`` is how the walker ended (``completed``, or the last guard that stopped it
    with no restart left); ``stops`` lists every guard stop (step, reason), ``restarts`` those
    after which it went on."""

    walker: str
    n_steps_run: int
    n_frames: int
    stop_reason: str
    max_devi_f_max: float
    wall_s: float
    trajectory: str
    restarts: int = 0
    stops: list[dict] = field(default_factory=list)
    last_step: int = 0
    plot: str | None = None
    extra_files: list[str] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        return self.stop_reason == COMPLETED

    def to_dict(self) -> dict:
        return asdict(self)


class _WalkerStop(Exception):
    """Raised by an observer to end the dynamics; the message is the stop reason."""


@dataclass
class _Snapshot:
    """A good frame to restart from."""

    step: int
    positions: np.ndarray
    cell: np.ndarray


def _check_md_args(
    atoms: Atoms,
    n_steps: int,
    dump_interval: int,
    stop_after_failed_dumps: int,
    min_distance_fraction: float,
    max_bond_fraction: float,
    max_restarts: int,
    restart_timestep_factor: float,
    trust_hi_relative: float | None = None,
    relative_eps_eV_per_A: float | None = None,
) -> None:
    if len(atoms) == 0:
        raise ValueError("run_walker: the start structure has no atoms")
    if int(n_steps) != n_steps or n_steps < 0:
        raise ValueError(f"n_steps must be a non-negative integer, got {n_steps!r}")
    if int(dump_interval) != dump_interval or dump_interval < 1:
        raise ValueError(f"dump_interval must be a positive integer, got {dump_interval!r}")
    if int(stop_after_failed_dumps) != stop_after_failed_dumps or stop_after_failed_dumps < 1:
        raise ValueError(
            f"stop_after_failed_dumps must be a positive integer, got {stop_after_failed_dumps!r}"
        )
    if not 0 <= min_distance_fraction < 1:
        raise ValueError(f"min_distance_fraction must be in [0, 1), got {min_distance_fraction!r}")
    if trust_hi_relative is not None and relative_eps_eV_per_A is None:
        raise ValueError("trust_hi_relative needs relative_eps_eV_per_A")
    if not (max_bond_fraction == 0 or max_bond_fraction >= 1):
        raise ValueError(f"max_bond_fraction must be 0 (off) or >= 1, got {max_bond_fraction!r}")
    if int(max_restarts) != max_restarts or max_restarts < 0:
        raise ValueError(f"max_restarts must be a non-negative integer, got {max_restarts!r}")
    if not 0 < restart_timestep_factor <= 1:
        raise ValueError(
            f"restart_timestep_factor must be in (0, 1], got {restart_timestep_factor!r}"
        )


def _draw_momenta(work: Atoms, temperature_K: float, rng: np.random.Generator) -> None:
    """Maxwell-Boltzmann momenta (per component std sqrt(m kB T)), no net momentum or rotation."""
    sigma_p = np.sqrt(work.get_masses() * units.kB * temperature_K)[:, None]
    work.set_momenta(sigma_p * rng.standard_normal((len(work), 3)))
    if len(work) > 1:
        Stationary(work)
        if not work.pbc.any():
            ZeroRotation(work)


def run_walker(
    atoms: Atoms,
    calculator: Calculator,
    *,
    temperature_K: float,
    timestep_fs: float,
    n_steps: int,
    dump_interval: int,
    seed: int,
    out_path: str | Path,
    walker: str,
    friction_per_fs: float = 0.01,
    md: MDSettings | None = None,
    trust_hi_eV_per_A: float | None = None,
    trust_hi_relative: float | None = None,
    relative_eps_eV_per_A: float | None = None,
    stop_after_failed_dumps: int = 20,
    min_distance_fraction: float = 0.5,
    max_bond_fraction: float = 2.0,
    max_volume_ratio: float = 2.0,
    max_temperature_factor: float | None = 2.0,
    max_restarts: int = 0,
    restart_timestep_factor: float = 1.0,
    plot: bool = False,
    keep_momenta: bool = False,
    end_state_path: str | Path | None = None,
) -> WalkerSummary:
    """MD from Maxwell-Boltzmann velocities at ``temperature_K``; dump a frame with the deviation
    every ``dump_interval`` steps; write the frames to ``out_path`` (extxyz, atomically).

    ``md`` chooses the integrator (default: Langevin NVT at ``friction_per_fs``); its
    temperature and timestep are those given here. ``calculator`` is any ASE calculator whose
    results hold ``max_devi_f``, ``avg_devi_f`` and ``devi_e`` next to energy and forces at dump
    steps; one with a ``request_deviation()`` method (EnsembleCalculator) is told before each
    dump step's force call, one with ``after_step(time_fs)`` (a bias) is called after every
    step, and one with ``cv_names`` has its ``cv_values`` and ``bias_energy`` recorded per
    frame. The input ``atoms`` is not modified; with ``keep_momenta`` its momenta (when it has
    any) start the MD instead of new Maxwell-Boltzmann ones, and ``end_state_path`` receives the
    last step's positions, cell and momenta when the walker completes its steps (so a next
    segment can go on from there). With ``relative_eps_eV_per_A`` each frame also
    records DeePMD's relative deviation ``max_devi_f_rel``; a segment stops after
    ``stop_after_failed_dumps`` dumps in a row above ``trust_hi_eV_per_A`` (absolute) or
    ``trust_hi_relative`` (relative), whichever are given. A segment also stops when its
    kinetic temperature, a running mean over the last steps, exceeds ``max_temperature_factor``
    x the target (None: off; see :func:`eelt.explore.guards.overheated`).
    """
    md = replace(
        md or MDSettings(), temperature_K=temperature_K, timestep_fs=timestep_fs,
        friction_per_fs=friction_per_fs,
    )  # fmt: skip
    md.check(atoms)
    _check_md_args(
        atoms,
        n_steps,
        dump_interval,
        stop_after_failed_dumps,
        min_distance_fraction,
        max_bond_fraction,
        max_restarts,
        restart_timestep_factor,
        trust_hi_relative,
        relative_eps_eV_per_A,
    )
    # an atom that leaves all others (a fragment flying off) sees no neighbor within rcut: every
    # member predicts the same nothing there, so the deviation cannot flag it. Atoms already
    # alone in the start structure are not watched.
    alone_at_start = {k for k, _ in isolated_atoms(atoms, max_bond_fraction)}
    start_volume = abs(atoms.cell.volume) if atoms.pbc.all() else 0.0
    start_time = time.perf_counter()
    rng = np.random.default_rng(seed)
    work = atoms.copy()
    work.info = {}
    work.calc = calculator
    request_deviation = getattr(calculator, "request_deviation", None)
    after_step = getattr(calculator, "after_step", None)
    cv_names = list(getattr(calculator, "cv_names", []) or [])
    if len(work) > 1 and not work.constraints and md.ensemble != "npt":
        work.set_constraint(FixCom())
    if not (keep_momenta and atoms.has("momenta")):
        _draw_momenta(work, md.temperature_at(0.0), rng)

    if max_temperature_factor is not None and not max_temperature_factor > 1:
        raise ValueError(
            f"max_temperature_factor must be > 1 or None, got {max_temperature_factor!r}"
        )
    dof = 3 * len(work) - sum(c.get_removed_dof(work) for c in work.constraints)
    kinetic_K: list[float] = []  # per step of the current segment
    frames: list[Atoms] = []
    stops: list[dict] = []
    state = {"offset": 0, "failed_in_row": 0, "steps_run": 0, "segment": 0}
    good: _Snapshot | None = None
    dyn = None

    def step() -> int:
        return state["offset"] + int(dyn.nsteps)

    def check_forces() -> None:
        # every step, so non-finite forces never move the atoms (or reach the calculator again)
        if not np.isfinite(work.get_forces(apply_constraint=False)).all():
            raise _WalkerStop(f"NaN in forces at step {step()}")

    def every_step() -> None:
        if dyn.nsteps == 0:
            return
        if after_step is not None:
            after_step(step() * md.timestep_fs)
        if md.temperature_end_K is not None:
            set_target_temperature(dyn, md.temperature_at(step() / max(n_steps, 1)))
        if max_temperature_factor is not None and dof > 0:
            kinetic_K.append(2.0 * work.get_kinetic_energy() / (dof * units.kB))
            del kinetic_K[:-KINETIC_WINDOW_STEPS]
            target = md.temperature_at(step() / max(n_steps, 1))
            if (why := overheated(kinetic_K, target, max_temperature_factor, dof)) is not None:
                raise _WalkerStop(f"{why} at step {step()}")

    def dump() -> None:
        nonlocal good
        if state["segment"] > 0 and dyn.nsteps == 0:
            return  # the restart frame is the good frame already recorded
        energy = float(work.get_potential_energy())
        if not np.isfinite(energy):
            raise _WalkerStop(f"NaN in energy at step {step()}")
        results = work.calc.results
        missing = [k for k in _DEVIATION_KEYS if k not in results]
        if missing:
            raise ValueError(
                f"calculator {type(work.calc).__name__} does not report {', '.join(missing)} "
                "in its results; exploration needs an ensemble calculator"
            )
        contact = closest_contact(work, min_distance_fraction)
        if contact is not None:
            i, j, d = contact
            raise _WalkerStop(f"atoms too close: {i}-{j} {d:.3f} A")
        for k, nearest in isolated_atoms(work, max_bond_fraction):
            if k not in alone_at_start:
                raise _WalkerStop(
                    f"atom {k} ({work.get_chemical_symbols()[k]}) left the others: nearest "
                    f"{nearest:.2f} A, beyond {max_bond_fraction:g} x covalent radii"
                )
        if (why := cell_volume_change(work, start_volume, max_volume_ratio)) is not None:
            raise _WalkerStop(why)
        frame = Atoms(
            numbers=work.numbers.copy(),
            positions=work.positions.copy(),
            cell=work.cell.array.copy(),
            pbc=work.pbc.copy(),
        )
        max_devi_f = float(results[keys.MAX_DEVI_F])
        frame.info.update(
            {
                keys.MAX_DEVI_F: max_devi_f,
                keys.AVG_DEVI_F: float(results[keys.AVG_DEVI_F]),
                keys.DEVI_E: float(results[keys.DEVI_E]),
                keys.WALKER: walker,
                keys.STEP: step(),
                keys.SEGMENT: state["segment"],
                keys.TEMPERATURE_K: md.temperature_at(step() / max(n_steps, 1)),
                KINETIC_TEMPERATURE_K: float(work.get_temperature()),
                MODEL_ENERGY: float(results.get("unbiased_energy", energy)),
            }
        )
        if md.ensemble == "npt":
            frame.info[keys.PRESSURE_BAR] = float(md.pressure_bar)
        if cv_names:
            frame.info[keys.BIAS_ENERGY] = float(results.get(keys.BIAS_ENERGY, 0.0))
            for name, value in zip(cv_names, results.get("cv_values", ()), strict=False):
                frame.info[f"cv_{name}"] = float(value)
        if relative_eps_eV_per_A is not None:
            member_forces = results.get("member_forces")
            mean_forces = (
                np.mean(member_forces, axis=0)
                if member_forces is not None
                else results.get("unbiased_forces", results["forces"])
            )
            frame.info[keys.MAX_DEVI_F_REL] = relative_max_devi_f(
                results[keys.FORCES_STD], mean_forces, relative_eps_eV_per_A
            )
        frames.append(frame)
        over = []
        # a NaN deviation fails the `<=` test, so it counts as failed
        if trust_hi_eV_per_A is not None and not max_devi_f <= trust_hi_eV_per_A:
            over.append(f"max_devi_f {max_devi_f:.3g} > {trust_hi_eV_per_A:g} eV/A")
        if trust_hi_relative is not None:
            rel = frame.info[keys.MAX_DEVI_F_REL]
            if not rel <= trust_hi_relative:
                over.append(f"max_devi_f_rel {rel:.3g} > {trust_hi_relative:g}")
        if not over:
            good = _Snapshot(step(), work.positions.copy(), work.cell.array.copy())
        if trust_hi_eV_per_A is not None or trust_hi_relative is not None:
            state["failed_in_row"] = state["failed_in_row"] + 1 if over else 0
            if state["failed_in_row"] >= stop_after_failed_dumps:
                raise _WalkerStop(
                    f"deviation above trust_hi for {stop_after_failed_dumps} dumps "
                    f"({'; '.join(over)})"
                )

    def before_dump() -> None:
        # forces for the positions of step n + 1 are computed during the next step
        if (dyn.nsteps + 1) % dump_interval == 0:
            request_deviation()

    stop_reason = COMPLETED
    timestep = md.timestep_fs
    while True:
        if request_deviation is not None:
            request_deviation()  # the first force call is at the segment's start, a dump
        dyn = make_dynamics(
            work,
            replace(md, timestep_fs=timestep),
            rng,
            temperature_K=md.temperature_at(state["offset"] / max(n_steps, 1)),
        )
        dyn.attach(check_forces, interval=1)
        dyn.attach(every_step, interval=1)
        if request_deviation is not None:
            dyn.attach(before_dump, interval=1)
        dyn.attach(dump, interval=int(dump_interval))
        stop_reason = COMPLETED
        try:
            # a restarted segment keeps the dump grid when the timestep is unchanged
            dyn.run(int(n_steps) - state["offset"])
        except _WalkerStop as stop:
            stop_reason = str(stop)
        state["steps_run"] += int(dyn.nsteps)
        if stop_reason == COMPLETED:
            break
        stops.append({"step": step(), "segment": state["segment"], "reason": stop_reason})
        if len(stops) > max_restarts or good is None or good.step >= n_steps:
            break
        # start again from the last good frame: new velocities, new seed, maybe a smaller step
        state["segment"] += 1
        state["offset"] = good.step
        state["failed_in_row"] = 0
        kinetic_K.clear()
        rng = np.random.default_rng([seed, state["segment"]])
        timestep *= restart_timestep_factor
        work.set_cell(good.cell, scale_atoms=False)
        work.set_positions(good.positions, apply_constraint=False)
        _draw_momenta(work, md.temperature_at(good.step / max(n_steps, 1)), rng)
        stops[-1]["restart_from_step"] = good.step
        stops[-1]["timestep_fs"] = timestep
    write_frames(out_path, frames)
    if end_state_path is not None and stop_reason == COMPLETED:
        end = Atoms(
            numbers=work.numbers.copy(),
            positions=work.positions.copy(),
            cell=work.cell.array.copy(),
            pbc=work.pbc.copy(),
        )
        end.set_momenta(work.get_momenta())
        end.info[keys.STEP] = step()
        write_frames(end_state_path, [end])
    devi = [f.info[keys.MAX_DEVI_F] for f in frames]
    summary = WalkerSummary(
        walker=walker,
        n_steps_run=state["steps_run"],
        n_frames=len(frames),
        stop_reason=stop_reason,
        max_devi_f_max=float(np.nanmax(devi))
        if devi and not np.isnan(devi).all()
        else float("nan"),
        wall_s=0.0,
        trajectory=str(out_path),
        restarts=sum("restart_from_step" in s for s in stops),
        stops=stops,
        last_step=step(),
    )
    write_outputs = getattr(calculator, "write_outputs", None)
    if write_outputs is not None:
        summary.extra_files = [str(p) for p in write_outputs(Path(out_path).with_suffix(""))]
    if plot and frames:
        from eelt.explore.plots import plot_walker

        summary.plot = str(plot_walker(frames, Path(out_path).with_suffix(".png"), cv_names))
    summary.wall_s = time.perf_counter() - start_time
    return summary


def read_trajectory(path: str | Path) -> list[Atoms]:
    """The frames a walker wrote (an empty list for a walker stopped before its first dump)."""
    path = Path(path)
    if path.stat().st_size == 0:
        return []
    return ase.io.read(path, index=":", format="extxyz")
