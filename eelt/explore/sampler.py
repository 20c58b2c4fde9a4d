"""A cheap thermal sampler for the initial data: conformer starts (rotations about rotatable
bonds), short Langevin MD on a cheap potential (GFN-xTB or EMT) at the run's temperatures, and a
diverse choice of the frames to label. Pure functions; the orchestration runs them."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np
from ase import Atoms, units
from ase.neighborlist import natural_cutoffs, neighbor_list

from eelt.examine.select import farthest_point_order, structure_fingerprint

FRICTION_PER_FS = 0.01
CLASH_FACTOR = 0.7  # a start clashes when two non-bonded atoms are closer than 0.7 x (r_i + r_j)


def default_timestep_fs(atoms: Atoms) -> float:
    """0.5 fs with hydrogen, else 1 fs."""
    return 0.5 if 1 in atoms.numbers else 1.0


def _bond_graph(atoms: Atoms) -> list[set[int]]:
    i, j = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=1.1))
    graph: list[set[int]] = [set() for _ in range(len(atoms))]
    for a, b in zip(i.tolist(), j.tolist(), strict=True):
        graph[a].add(b)
    return graph


def _side(graph: list[set[int]], start: int, cut: int) -> set[int]:
    """Atoms reached from ``start`` without crossing the bond to ``cut``."""
    seen, todo = {start}, [start]
    while todo:
        for n in graph[todo.pop()]:
            if n not in seen and n != cut:
                seen.add(n)
                todo.append(n)
    return seen


def rotatable_bonds(atoms: Atoms) -> list[tuple[int, int, set[int]]]:
    """Rotatable bonds of a molecule: a single bond between two heavy atoms that both have
    other neighbours, not in a ring. Each as (i, j, atoms on the smaller side, rotated about
    i-j). Bond order is judged by length: shorter than 0.93 x the covalent-radius sum is
    taken as multiple. Symmetric rotors (methyl, CF3) are left out: a turn by 120 degrees only
    permutes their atoms. Periodic cells have none."""
    if atoms.pbc.any():
        return []
    graph = _bond_graph(atoms)
    cutoffs = natural_cutoffs(atoms)
    out = []
    for i in range(len(atoms)):
        for j in sorted(graph[i]):
            if j <= i or atoms.numbers[i] == 1 or atoms.numbers[j] == 1:
                continue
            if len(graph[i]) < 2 or len(graph[j]) < 2:
                continue
            if atoms.get_distance(i, j) < 0.93 * (cutoffs[i] + cutoffs[j]):
                continue  # double or triple bond
            side_j = _side(graph, j, i)
            if i in side_j:
                continue  # in a ring
            side_i = _side(graph, i, j)
            if len(side_j) <= len(side_i):
                axis, moving = (i, j), side_j
            else:
                axis, moving = (j, i), side_i
            if not _symmetric_rotor(atoms, graph, axis[1], axis[0], moving):
                out.append((*axis, moving))
    return out


def _symmetric_rotor(atoms: Atoms, graph: list[set[int]], center: int, anchor: int, side) -> bool:
    """Whether ``side`` is ``center`` with three identical terminal atoms (methyl, CF3): a turn by
    120 degrees only permutes them."""
    ends = graph[center] - {anchor}
    return (
        len(side) == 4
        and len(ends) == 3
        and len({int(atoms.numbers[e]) for e in ends}) == 1
        and all(graph[e] == {center} for e in ends)
    )


def rotate_about_bond(atoms: Atoms, i: int, j: int, moving: set[int], angle_deg: float) -> Atoms:
    """A copy with the atoms ``moving`` (j's side) rotated by ``angle_deg`` about the i-j axis."""
    new = Atoms(atoms.numbers, atoms.positions.copy(), cell=atoms.cell, pbc=atoms.pbc)
    axis = atoms.positions[j] - atoms.positions[i]
    axis /= np.linalg.norm(axis)
    theta = np.radians(angle_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(theta) * k + (1 - np.cos(theta)) * k @ k  # Rodrigues
    idx = sorted(moving)
    new.positions[idx] = (atoms.positions[idx] - atoms.positions[j]) @ rot.T + atoms.positions[j]
    return new


def clashes(atoms: Atoms, reference: Atoms) -> bool:
    """Whether two atoms not bonded in ``reference`` come closer than CLASH_FACTOR x the sum of
    their covalent radii."""
    graph = _bond_graph(reference)
    radii = np.array(natural_cutoffs(atoms))
    d = atoms.get_all_distances()
    n = len(atoms)
    for a in range(n):
        for b in range(a + 1, n):
            if b not in graph[a] and d[a, b] < CLASH_FACTOR * (radii[a] + radii[b]):
                return True
    return False


def conformer_starts(atoms: Atoms) -> list[Atoms]:
    """Extra starts: each rotatable bond's smaller side rotated by 120 and 240 degrees, one bond
    at a time; starts whose atoms clash are dropped. The structure itself is not included."""
    out = []
    for i, j, moving in rotatable_bonds(atoms):
        for angle in (120.0, 240.0):
            new = rotate_about_bond(atoms, i, j, moving, angle)
            if not clashes(new, atoms):
                out.append(new)
    return out


def langevin_frames(
    start: Atoms,
    calculator,
    temperature_K: float,
    n_steps: int,
    timestep_fs: float,
    dump_every: int,
    n_equilibrate: int,
    seed: int,
) -> list[Atoms]:
    """Langevin MD (friction FRICTION_PER_FS) from ``start`` with Maxwell-Boltzmann momenta at
    ``temperature_K``: ``n_equilibrate`` steps, then ``n_steps`` with a frame every
    ``dump_every``. Frames carry no calculator; ``temperature_K`` (target) and
    ``kinetic_temperature_K`` in their info."""
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta

    if n_steps < 1 or dump_every < 1 or n_equilibrate < 0 or not timestep_fs > 0:
        raise ValueError("langevin_frames: n_steps, dump_every >= 1, n_equilibrate >= 0, dt > 0")
    atoms = Atoms(start.numbers, start.positions.copy(), cell=start.cell, pbc=start.pbc)
    atoms.calc = calculator
    atoms.set_constraint(FixCom())
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)
    md = Langevin(
        atoms,
        timestep_fs * units.fs,
        temperature_K=temperature_K,
        friction=FRICTION_PER_FS / units.fs,
        fixcm=False,
        rng=rng,
    )
    if n_equilibrate:
        md.run(n_equilibrate)
    frames = []
    for _ in range(n_steps // dump_every):
        md.run(dump_every)
        frame = Atoms(atoms.numbers, atoms.positions.copy(), cell=atoms.cell, pbc=atoms.pbc)
        frame.info["temperature_K"] = float(temperature_K)
        frame.info["kinetic_temperature_K"] = float(atoms.get_temperature())
        frames.append(frame)
    return frames


def diverse_choice(frames: list[Atoms], n: int) -> list[int]:
    """Indices of ``n`` frames (all if fewer) chosen by farthest-point sampling on
    :func:`structure_fingerprint`, starting from the first frame."""
    if n <= 0 or not frames:
        return []
    elements = sorted({int(z) for f in frames for z in f.numbers})
    points = np.array([structure_fingerprint(f, elements) for f in frames])
    return [int(k) for k in farthest_point_order(points, 0, min(n, len(frames)))]


def sample_frames(
    starts: list[Atoms],
    make_calculator: Callable[[Atoms], object],
    temperatures_K: list[float],
    n_steps: int,
    timestep_fs: float | None,
    dump_every: int,
    n_equilibrate: int,
    conformers: bool,
    seed: int,
    executor: Executor | None = None,
    on_failure: Callable[[str], None] | None = None,
) -> list[Atoms]:
    """Every start (with its conformer starts when ``conformers``) x temperature run by
    :func:`langevin_frames`, one job each on ``executor`` (in this process without one; the
    frames are the same either way); frames also carry ``start_index`` and ``conformer`` in
    info, in job order. A job whose MD fails gives no frames and its reason to
    ``on_failure`` (without one, RuntimeError)."""
    jobs = []
    for s, start in enumerate(starts):
        variants = [start] + (conformer_starts(start) if conformers else [])
        for c, variant in enumerate(variants):
            dt = timestep_fs or default_timestep_fs(variant)
            for t in temperatures_K:
                args = (variant, make_calculator, t, n_steps, dt, dump_every, n_equilibrate)
                jobs.append(((s, c), (*args, seed + len(jobs))))
    if executor is None:
        runs = [_sampler_run(*args) for _, args in jobs]
    else:
        runs = [f.result() for f in [executor.submit(_sampler_run, *args) for _, args in jobs]]
    frames = []
    for ((s, c), args), (run, failure) in zip(jobs, runs, strict=True):
        if failure is not None:
            if on_failure is None:
                raise RuntimeError(failure)
            on_failure(f"start {s}, conformer {c}, {args[2]:g} K: {failure}")
        for f in run:
            f.info["start_index"], f.info["conformer"] = s, c
        frames += run
    return frames


def _sampler_run(variant: Atoms, make_calculator, *args) -> tuple[list[Atoms], str | None]:
    """One sampler job (picklable for a Dask worker; the calculator is made where it runs):
    its frames, or none and why the MD failed (an SCC that did not converge, say)."""
    try:
        return langevin_frames(variant, make_calculator(variant), *args), None
    except Exception as err:  # any calculator's failure: the run goes on without this job
        return [], f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def yardstick_choice(n_frames: int, chosen: list[int], n: int, seed: int) -> list[int]:
    """Indices of ``n`` frames (fewer if the trajectory is short) drawn uniformly at random
    from the ``n_frames`` frames of a trajectory, none of them in ``chosen``, sorted: thermal
    frames no model picked, for an independent yardstick."""
    left = np.setdiff1d(np.arange(n_frames), np.asarray(chosen, dtype=int))
    if n <= 0 or left.size == 0:
        return []
    rng = np.random.default_rng(seed + 7919)  # apart from the MD's own streams
    return sorted(int(k) for k in rng.choice(left, size=min(n, left.size), replace=False))


def calculator_factory(kind: str, charge: int = 0, spin: int = 0):
    """A function start -> ASE calculator of the sampler's cheap potential: EMT, or GFN2-xTB
    (molecules) / GFN1-xTB (cells) with the given charge and spin, through tblite."""
    if kind == "emt":
        from ase.calculators.emt import EMT

        return lambda atoms: EMT()
    from eelt.label.xtb import XTBLabeler

    return lambda atoms: XTBLabeler(
        method="GFN1-xTB" if atoms.pbc.any() else "GFN2-xTB", charge=charge, spin=spin
    ).calculator()
