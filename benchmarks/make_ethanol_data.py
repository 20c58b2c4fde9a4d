"""Ethanol at PBE/def2-SVP (the level of theory of revised MD17): sample configurations by MD
at 300, 450 and 600 K on a cheap PySCF surface, relabel them at PBE/def2-SVP with eelt's
labeler over a local Dask cluster, write all frames and a fixed train/test split.

    nice -n 19 python benchmarks/make_ethanol_data.py [--n-frames 480] [--workers 2]
        [--out-dir benchmarks/data] [--work-dir runs/ethanol-data]

Sampling: Langevin MD (ASE) driven by RHF/STO-3G forces (a PySCF gradient scanner that reuses
the previous density; ~0.15-0.3 s per step for ethanol on one core, against ~8-12 s for one
PBE/def2-SVP label), two walkers per temperature (one from the trans, one from a gauche
hydroxyl conformer), 50 fs of equilibration, then one frame every 10 fs. Hydrogen is given
4 amu: the configurational Boltzmann distribution does not depend on the masses, and the
slower C-H/O-H vibrations allow a 1 fs step, so each force call samples more.

Labels: PySCFLabeler() defaults (RKS PBE, def2-SVP, grid level 3, conv_tol 1e-9, no density
fitting), cached under ``work-dir/labels`` by content hash, so a rerun resumes where it stopped
(the MD frames are cached in ``work-dir`` too).

Labeling order: a seeded random permutation of the sampled frames, in chunks of 5 per worker;
``--n-label N`` labels only its first N and ``--budget-min`` starts no chunk after that time, so
a busy machine yields a smaller random subset (the summary json prints the command that
reproduces it).

Split: each walker's trajectory in 100 fs blocks; whole blocks, picked with a fixed
seed, go to the test set until it holds ``--test-fraction`` of the frames, so test frames are
not the time neighbours of training frames. The train pool is written in a seeded random
order: its first N frames are a training set of size N that spans every walker.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from concurrent.futures import Executor, as_completed
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms, units
from ase.build import molecule
from ase.calculators.calculator import Calculator, all_changes
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import (
    Stationary,
    ZeroRotation,
    thermalize_momenta,
)

from eelt import keys
from eelt.atomic import write_frames, write_json
from eelt.config import ExecutionConfig
from eelt.label import Labeler, PySCFLabeler, label_frames
from eelt.orchestration.execution import open_executor

NAME = "ethanol_pbe_def2svp"
TEMPERATURES_K = (300.0, 450.0, 600.0)
WALKERS_PER_TEMPERATURE = 2
SAMPLER_METHOD = "RHF/STO-3G"
TIME_FS = "time_fs"
TIMESTEP_FS = 1.0
DUMP_FS = 10.0
EQUILIBRATE_FS = 50.0


class PySCFGradientCalculator(Calculator):
    """ASE calculator on a PySCF RHF gradient scanner (energy eV, forces eV/Angstrom); the
    scanner starts each SCF from the previous density, which suits MD."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, basis: str = "sto-3g", conv_tol: float = 1e-7, **kwargs):
        super().__init__(**kwargs)
        self.basis = basis
        self.conv_tol = conv_tol
        self._scanner = None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        from pyscf import gto, scf

        super().calculate(atoms, properties, system_changes)
        geometry = [
            (s, tuple(p))
            for s, p in zip(self.atoms.get_chemical_symbols(), self.atoms.positions, strict=True)
        ]
        mol = gto.M(atom=geometry, unit="Angstrom", basis=self.basis, verbose=0, output=None)
        if self._scanner is None:
            mf = scf.RHF(mol)
            mf.conv_tol = self.conv_tol
            self._scanner = mf.nuc_grad_method().as_scanner()
        energy_Ha, grad_Ha_per_Bohr = self._scanner(mol)
        if not self._scanner.base.converged:
            raise RuntimeError(f"{SAMPLER_METHOD} SCF did not converge during sampling MD")
        self.results = {
            "energy": float(energy_Ha) * units.Hartree,
            "forces": -np.asarray(grad_Ha_per_Bohr) * units.Hartree / units.Bohr,
        }


def ethanol(conformer: str) -> Atoms:
    """Ethanol (ASE's geometry, trans hydroxyl), or with the hydroxyl H turned 120 degrees
    about the C-O bond (gauche)."""
    atoms = molecule("CH3CH2OH")  # C C O H(O) H H H H H
    if conformer == "gauche":
        c, o, h = atoms.positions[1], atoms.positions[2], atoms.positions[3]
        axis = (o - c) / np.linalg.norm(o - c)
        v = h - o
        angle = np.radians(120.0)
        rotated = (
            v * math.cos(angle)
            + np.cross(axis, v) * math.sin(angle)
            + axis * np.dot(axis, v) * (1 - math.cos(angle))
        )
        atoms.positions[3] = o + rotated
    elif conformer != "trans":
        raise ValueError(f"conformer must be 'trans' or 'gauche', got {conformer!r}")
    return atoms


def run_walker(
    conformer: str,
    temperature_K: float,
    n_frames: int,
    seed: int,
    walker: int,
    timestep_fs: float = TIMESTEP_FS,
    dump_fs: float = DUMP_FS,
    equilibrate_fs: float = EQUILIBRATE_FS,
    friction_per_fs: float = 0.02,
    h_mass_amu: float = 4.0,
) -> list[Atoms]:
    """Langevin MD of ethanol on the sampler surface; ``n_frames`` geometries (no labels), one
    every ``dump_fs`` after ``equilibrate_fs``, tagged with temperature, walker and time."""
    atoms = ethanol(conformer)
    masses = atoms.get_masses()
    masses[atoms.numbers == 1] = h_mass_amu
    atoms.set_masses(masses)
    atoms.calc = PySCFGradientCalculator()
    atoms.set_constraint(FixCom())
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    dyn = Langevin(
        atoms,
        timestep=timestep_fs * units.fs,
        temperature_K=temperature_K,
        friction=friction_per_fs / units.fs,
        fixcm=False,
        rng=rng,
    )
    dump_steps = max(1, round(dump_fs / timestep_fs))
    dyn.run(round(equilibrate_fs / timestep_fs))
    frames = []
    for k in range(n_frames):
        dyn.run(dump_steps)
        frame = Atoms(atoms.numbers, positions=atoms.positions.copy())
        frame.info.update(
            {
                keys.TEMPERATURE_K: temperature_K,
                keys.WALKER: walker,
                TIME_FS: equilibrate_fs + (k + 1) * dump_steps * timestep_fs,
            }
        )
        frames.append(frame)
    return frames


def sample(executor: Executor, n_frames: int, seed: int, work_dir: Path) -> list[Atoms]:
    """All walkers' frames (walker by walker, in time order); reused from ``work_dir`` when an
    earlier call sampled the same ``n_frames`` and ``seed``."""
    params = {
        "n_frames": n_frames,
        "seed": seed,
        "sampler": SAMPLER_METHOD,
        "equilibrate_fs": EQUILIBRATE_FS,
        "dump_fs": DUMP_FS,
    }
    cache, cache_params = work_dir / "sampled.extxyz", work_dir / "sampled.json"
    if cache.is_file() and cache_params.is_file():
        if json.loads(cache_params.read_text()) == params:
            frames = ase.io.read(cache, ":")
            print(f"sampled frames: {len(frames)} reused from {cache}")
            return frames
    walkers = [(t, conformer) for t in TEMPERATURES_K for conformer in ("trans", "gauche")][
        : WALKERS_PER_TEMPERATURE * len(TEMPERATURES_K)
    ]
    counts = [n_frames // len(walkers) + (w < n_frames % len(walkers)) for w in range(len(walkers))]
    t0 = time.perf_counter()
    futures = {
        executor.submit(run_walker, conformer, t, count, seed + w, w): w
        for w, ((t, conformer), count) in enumerate(zip(walkers, counts, strict=True))
    }
    by_walker: dict[int, list[Atoms]] = {}
    for future in as_completed(futures):
        w = futures[future]
        by_walker[w] = future.result()
        print(
            f"walker {w} ({walkers[w][0]:.0f} K, {walkers[w][1]}): {counts[w]} frames "
            f"after {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    frames = [f for w in sorted(by_walker) for f in by_walker[w]]
    steps = sum(round((EQUILIBRATE_FS + DUMP_FS * c) / TIMESTEP_FS) for c in counts)
    print(
        f"sampling: {steps} MD steps in {time.perf_counter() - t0:.0f} s wall "
        f"({len(walkers)} walkers)",
        flush=True,
    )
    write_frames(cache, frames)
    write_json(cache_params, params)
    # label what the file holds (positions rounded by extxyz), so a rerun that reads the
    # frames back finds the same label hashes in the cache
    return ase.io.read(cache, ":")


def block_split(
    walkers: np.ndarray, times_fs: np.ndarray, test_fraction: float, block_fs: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: each walker's trajectory cut into ``block_fs`` time blocks; whole
    blocks drawn at random (seeded) into test until it holds ``test_fraction`` of the frames.
    The train indices come back in a seeded random order."""
    block_of = [(int(w), int(t // block_fs)) for w, t in zip(walkers, times_fs, strict=True)]
    blocks: dict[tuple[int, int], list[int]] = {}
    for i, b in enumerate(block_of):
        blocks.setdefault(b, []).append(i)
    names = sorted(blocks)
    rng = np.random.default_rng(seed)
    n_test = round(test_fraction * len(walkers))
    test: list[int] = []
    for k in rng.permutation(len(names)):
        if len(test) >= n_test:
            break
        test += blocks[names[k]]
    test_idx = np.array(sorted(test), dtype=int)
    train_idx = np.setdiff1d(np.arange(len(walkers)), test_idx)
    return rng.permutation(train_idx), test_idx


def label_in_chunks(
    frames: list[Atoms],
    n_label: int,
    labeler: Labeler,
    executor: Executor,
    labels_dir: Path,
    n_workers: int,
    budget_s: float,
    seed: int,
) -> tuple[list[Atoms], list[dict], dict]:
    """Label the first ``n_label`` frames of a seeded random order, in chunks; no new chunk
    starts after ``budget_s``. Returns (labeled frames in sampling order, failures, timing)."""
    order = np.random.default_rng(seed).permutation(len(frames))[:n_label]
    chunk = 5 * n_workers
    labeled: dict[int, Atoms] = {}
    failed: list[dict] = []
    n_computed, n_tried = 0, 0
    t0 = time.perf_counter()
    for start in range(0, len(order), chunk):
        if time.perf_counter() - t0 > budget_s:
            print(f"labels: time budget of {budget_s:.0f} s spent; stopping", flush=True)
            break
        idx = order[start : start + chunk]
        report = label_frames([frames[i] for i in idx], labeler, executor, labels_dir)
        n_tried = start + len(idx)
        n_computed += report.n_computed
        failed_here = {f["index"] for f in report.failed}
        done = [k for k in range(len(idx)) if k not in failed_here]
        for k, atoms in zip(done, report.labeled, strict=True):
            labeled[int(idx[k])] = atoms
        failed += [{**f, "index": int(idx[f["index"]])} for f in report.failed]
        wall = time.perf_counter() - t0
        per_label = wall / n_computed if n_computed else math.nan
        print(
            f"labels: {n_tried}/{len(order)} ({n_computed} computed, {len(failed)} failed), "
            f"{wall:.0f} s, {per_label:.1f} s wall per computed label "
            f"({n_workers * per_label:.1f} worker-s)",
            flush=True,
        )
    timing = {
        "n_label_tried": n_tried,
        "n_labels_computed": n_computed,
        "label_wall_s": round(time.perf_counter() - t0, 1),
    }
    return [labeled[i] for i in sorted(labeled)], failed, timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-frames", type=int, default=480, help="frames to sample and label")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/data"))
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("runs/ethanol-data"),
        help="label cache and sampled frames (a rerun resumes from here)",
    )
    parser.add_argument(
        "--n-label",
        type=int,
        default=None,
        help="label only the first N frames of a seeded random order (default: all)",
    )
    parser.add_argument(
        "--budget-min",
        type=float,
        default=math.inf,
        help="start no new chunk of labels after this many minutes (rerun to resume)",
    )
    parser.add_argument("--workers", type=int, default=2, help="Dask workers (1 thread each)")
    parser.add_argument("--test-fraction", type=float, default=1 / 6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.n_frames < 2 * len(TEMPERATURES_K) * WALKERS_PER_TEMPERATURE:
        parser.error(f"--n-frames must be at least {2 * len(TEMPERATURES_K) * 2}")
    if not 0 < args.test_fraction < 1:
        parser.error("--test-fraction must be between 0 and 1")

    execution = ExecutionConfig(
        kind="local", n_workers=args.workers, threads_per_worker=1, dashboard_address=None
    )
    labeler = PySCFLabeler(device="cpu")
    with open_executor(execution) as executor:
        frames = sample(executor, args.n_frames, args.seed, args.work_dir)
        labeled, failed, timing = label_in_chunks(
            frames,
            args.n_label or len(frames),
            labeler,
            executor,
            args.work_dir / "labels",
            args.workers,
            60 * args.budget_min,
            args.seed,
        )
    for failure in failed:
        print(f"label failed for frame {failure['index']}: {failure['reason']}")
    if not labeled:
        raise SystemExit("no frame was labeled")

    walkers = np.array([a.info[keys.WALKER] for a in labeled])
    times_fs = np.array([a.info[TIME_FS] for a in labeled])
    train_idx, test_idx = block_split(walkers, times_fs, args.test_fraction, 100.0, args.seed)
    out = args.out_dir
    write_frames(out / f"{NAME}.extxyz", labeled)
    write_frames(out / f"{NAME}_train.extxyz", [labeled[i] for i in train_idx])
    write_frames(out / f"{NAME}_test.extxyz", [labeled[i] for i in test_idx])
    energies = np.array([a.get_potential_energy() for a in labeled])
    forces = np.concatenate([a.get_forces() for a in labeled])
    summary = {
        "level_of_theory": labeler.method,
        "labeler_settings": labeler.settings(),
        "sampler": f"Langevin MD on {SAMPLER_METHOD}, H mass 4 amu, {TIMESTEP_FS:g} fs step, "
        f"friction 0.02/fs, {EQUILIBRATE_FS:g} fs equilibration, a frame every {DUMP_FS:g} fs",
        "temperatures_K": list(TEMPERATURES_K),
        "walkers_per_temperature": WALKERS_PER_TEMPERATURE,
        "n_sampled": len(frames),
        "n_frames": len(labeled),
        "n_failed": len(failed),
        "n_train": len(train_idx),
        "n_test": len(test_idx),
        "split": "whole 100 fs blocks of a walker to test (seeded); train pool shuffled",
        "seed": args.seed,
        "n_workers": args.workers,
        **timing,
        "energy_std_meV_per_atom": round(1e3 * float(energies.std()) / len(labeled[0]), 2),
        "force_rms_meV_per_A": round(1e3 * float(np.sqrt((forces**2).mean())), 1),
        "reproduce": f"python benchmarks/make_ethanol_data.py --n-frames {len(frames)} "
        f"--n-label {timing['n_label_tried']} --seed {args.seed}",
    }
    write_json(out / f"{NAME}.json", summary)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
