"""One exploration walker: Langevin NVT molecular dynamics driven by an ensemble calculator.

Every ``dump_interval`` steps (step 0 included) the walker records a frame with the ensemble's
force deviation. Frames carry no energy/forces labels: the model's prediction is kept only as
``info["model_energy"]`` (eV), so an explored frame is never mistaken for a DFT-labeled one.
Guards stop a walker early (non-finite forces, atoms too close, deviation above ``trust_hi``
for too long); the frames recorded so far are kept.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.constraints import FixCom
from ase.data import covalent_radii
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation
from vesin import ase_neighbor_list

from eelt import keys
from eelt.atomic import write_frames
from eelt.model.deviation import relative_max_devi_f

MODEL_ENERGY = keys.MODEL_ENERGY
KINETIC_TEMPERATURE_K = keys.KINETIC_TEMPERATURE_K
COMPLETED = "completed"
_DEVIATION_KEYS = (keys.MAX_DEVI_F, keys.AVG_DEVI_F, keys.DEVI_E)


@dataclass
class WalkerSummary:
    """What a walker did; ``max_devi_f_max`` (eV/Angstrom) is over the kept frames, NaN if none."""

    walker: str
    n_steps_run: int
    n_frames: int
    stop_reason: str
    max_devi_f_max: float
    wall_s: float
    trajectory: str

    @property
    def completed(self) -> bool:
        return self.stop_reason == COMPLETED

    def to_dict(self) -> dict:
        return asdict(self)


class _WalkerStop(Exception):
    """Raised by the dump observer to end the dynamics; the message is the stop reason."""


def closest_contact(atoms: Atoms, min_distance_fraction: float) -> tuple[int, int, float] | None:
    """The worst pair (i, j, distance in Angstrom) closer than ``min_distance_fraction`` x the
    sum of covalent radii (periodic images included), or None if no pair is that close."""
    if min_distance_fraction <= 0 or len(atoms) == 0:
        return None
    radii = covalent_radii[atoms.numbers]
    cutoff = min_distance_fraction * 2.0 * float(radii.max())
    i, j, d = ase_neighbor_list("ijd", atoms, cutoff)
    ratio = d / (min_distance_fraction * (radii[i] + radii[j]))
    if len(ratio) == 0 or ratio.min() >= 1.0:
        return None
    worst = int(np.argmin(ratio))
    a, b = sorted((int(i[worst]), int(j[worst])))
    return a, b, float(d[worst])


def isolated_atoms(atoms: Atoms, max_bond_fraction: float) -> list[tuple[int, float]]:
    """Atoms with no other atom within ``max_bond_fraction`` x the sum of covalent radii
    (periodic images included): [(index, distance to the nearest atom in Angstrom or inf)]."""
    if max_bond_fraction <= 0 or len(atoms) < 2:
        return []
    radii = covalent_radii[atoms.numbers]
    cutoff = max_bond_fraction * 2.0 * float(radii.max())
    i, j, d = ase_neighbor_list("ijd", atoms, cutoff)
    bonded = np.zeros(len(atoms), dtype=bool)
    bonded[i[d < max_bond_fraction * (radii[i] + radii[j])]] = True
    nearest = np.full(len(atoms), np.inf)
    np.minimum.at(nearest, i, d)
    return [(int(k), float(nearest[k])) for k in np.flatnonzero(~bonded)]


def _check_md_args(
    atoms: Atoms,
    temperature_K: float,
    timestep_fs: float,
    n_steps: int,
    dump_interval: int,
    friction_per_fs: float,
    stop_after_failed_dumps: int,
    min_distance_fraction: float,
    max_bond_fraction: float,
    trust_hi_relative: float | None = None,
    relative_eps_eV_per_A: float | None = None,
) -> None:
    if len(atoms) == 0:
        raise ValueError("run_walker: the start structure has no atoms")
    if not temperature_K > 0:
        raise ValueError(f"temperature_K must be > 0, got {temperature_K!r}")
    if not timestep_fs > 0:
        raise ValueError(f"timestep_fs must be > 0, got {timestep_fs!r}")
    if int(n_steps) != n_steps or n_steps < 0:
        raise ValueError(f"n_steps must be a non-negative integer, got {n_steps!r}")
    if int(dump_interval) != dump_interval or dump_interval < 1:
        raise ValueError(f"dump_interval must be a positive integer, got {dump_interval!r}")
    if not friction_per_fs > 0:
        raise ValueError(f"friction_per_fs must be > 0, got {friction_per_fs!r}")
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


def run_walker(
    atoms: Atoms,
    calculator: Calculator,
    *,
    temperature_K: float,
    timestep_fs: float,
    n_steps: int,
    dump_interval: int,
    friction_per_fs: float,
    seed: int,
    out_path: str | Path,
    walker: str,
    trust_hi_eV_per_A: float | None = None,
    trust_hi_relative: float | None = None,
    relative_eps_eV_per_A: float | None = None,
    stop_after_failed_dumps: int = 20,
    min_distance_fraction: float = 0.5,
    max_bond_fraction: float = 2.0,
) -> WalkerSummary:
    """Langevin NVT from Maxwell-Boltzmann velocities at ``temperature_K``; dump a frame with the
    deviation every ``dump_interval`` steps; write the frames to ``out_path`` (extxyz, atomically).

    ``calculator`` is any ASE calculator whose results hold ``max_devi_f``, ``avg_devi_f`` and
    ``devi_e`` next to energy and forces at dump steps; one with a ``request_deviation()``
    method (EnsembleCalculator) is told before each dump step's force call. The input
    ``atoms`` is not modified. With ``relative_eps_eV_per_A`` each frame also records DeePMD's
    relative deviation ``max_devi_f_rel`` (needs ``forces_std`` in the results); the walker
    stops after ``stop_after_failed_dumps`` dumps in a row above ``trust_hi_eV_per_A`` (absolute)
    or ``trust_hi_relative`` (relative), whichever are given.
    """
    _check_md_args(
        atoms,
        temperature_K,
        timestep_fs,
        n_steps,
        dump_interval,
        friction_per_fs,
        stop_after_failed_dumps,
        min_distance_fraction,
        max_bond_fraction,
        trust_hi_relative,
        relative_eps_eV_per_A,
    )
    # an atom that leaves all others (a fragment flying off) sees no neighbor within rcut: every
    # member predicts the same nothing there, so the deviation cannot flag it. Atoms already
    # alone in the start structure are not watched.
    alone_at_start = {k for k, _ in isolated_atoms(atoms, max_bond_fraction)}
    start_time = time.perf_counter()
    rng = np.random.default_rng(seed)
    work = atoms.copy()
    work.info = {}
    work.calc = calculator
    request_deviation = getattr(calculator, "request_deviation", None)
    if request_deviation is not None:
        request_deviation()  # the first force call is at step 0's positions, a dump
    if len(work) > 1 and not work.constraints:
        work.set_constraint(FixCom())
    # Maxwell-Boltzmann momenta (per component std sqrt(m kB T))
    sigma_p = np.sqrt(work.get_masses() * units.kB * temperature_K)[:, None]
    work.set_momenta(sigma_p * rng.standard_normal((len(work), 3)))
    if len(work) > 1:
        Stationary(work)
        if not work.pbc.any():
            ZeroRotation(work)
    dyn = Langevin(
        work,
        timestep=timestep_fs * units.fs,
        temperature_K=temperature_K,
        friction=friction_per_fs / units.fs,
        fixcm=False,
        rng=rng,
    )

    frames: list[Atoms] = []
    failed_in_row = 0

    def check_forces() -> None:
        # every step, so non-finite forces never move the atoms (or reach the calculator again)
        if not np.isfinite(work.get_forces(apply_constraint=False)).all():
            raise _WalkerStop(f"NaN in forces at step {dyn.nsteps}")

    def dump() -> None:
        nonlocal failed_in_row
        energy = float(work.get_potential_energy())
        if not np.isfinite(energy):
            raise _WalkerStop("NaN in energy")
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
                keys.STEP: int(dyn.nsteps),
                keys.TEMPERATURE_K: float(temperature_K),
                KINETIC_TEMPERATURE_K: float(work.get_temperature()),
                MODEL_ENERGY: energy,
            }
        )
        if relative_eps_eV_per_A is not None:
            member_forces = results.get("member_forces")
            mean_forces = (
                np.mean(member_forces, axis=0) if member_forces is not None else results["forces"]
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
        if trust_hi_eV_per_A is not None or trust_hi_relative is not None:
            failed_in_row = failed_in_row + 1 if over else 0
            if failed_in_row >= stop_after_failed_dumps:
                raise _WalkerStop(
                    f"deviation above trust_hi for {stop_after_failed_dumps} dumps "
                    f"({'; '.join(over)})"
                )

    def before_dump() -> None:
        # forces for the positions of step n + 1 are computed during the next step
        if (dyn.nsteps + 1) % dump_interval == 0:
            request_deviation()

    dyn.attach(check_forces, interval=1)
    if request_deviation is not None:
        dyn.attach(before_dump, interval=1)
    dyn.attach(dump, interval=int(dump_interval))
    stop_reason = COMPLETED
    try:
        dyn.run(int(n_steps))
    except _WalkerStop as stop:
        stop_reason = str(stop)
    write_frames(out_path, frames)
    devi = [f.info[keys.MAX_DEVI_F] for f in frames]
    return WalkerSummary(
        walker=walker,
        n_steps_run=int(dyn.nsteps),
        n_frames=len(frames),
        stop_reason=stop_reason,
        max_devi_f_max=float(np.nanmax(devi))
        if devi and not np.isnan(devi).all()
        else float("nan"),
        wall_s=time.perf_counter() - start_time,
        trajectory=str(out_path),
    )


def read_trajectory(path: str | Path) -> list[Atoms]:
    """The frames a walker wrote (an empty list for a walker stopped before its first dump)."""
    path = Path(path)
    if path.stat().st_size == 0:
        return []
    return ase.io.read(path, index=":", format="extxyz")


def walker_job(
    ensemble_dir: str,
    start: Atoms,
    out_path: str,
    walker: str,
    *,
    device: str = "cpu",
    forces_from: str = "first",
    **md_kwargs,
) -> WalkerSummary:
    """Entry point a Dask worker runs: load the ensemble from ``ensemble_dir`` (model-*.pt) onto
    ``device`` and run one walker driven by ``forces_from`` ("first": member 0, the ensemble at
    dumps; "mean") (``md_kwargs`` as for :func:`run_walker`)."""
    from eelt.model import Ensemble, EnsembleCalculator

    ensemble = Ensemble.load(ensemble_dir, map_location=device)
    calc = EnsembleCalculator(ensemble, forces_from=forces_from)
    return run_walker(start, calc, out_path=Path(out_path), walker=walker, **md_kwargs)
