"""Initial data from perturbed copies vs the thermal sampler (init.sampler), for any molecule,
labeled with GFN2-xTB or PySCF: two n-frame sets written as extxyz, to train with ``eelt train``
and compare with ``eelt evaluate`` on a held-out set from make_heldout.py.

    nice -n 19 python benchmarks/bench_init_sampler.py benchmarks/data/ethanol_pbe_def2svp.extxyz \\
        --out-dir runs/init-sampler [--n-frames 40] [--temperatures-K 300 500 800] \\
        [--reference xtb|pyscf --xc pbe --basis def2-svp --workers 2]

perturbed.extxyz: the start (frame 0) and n-1 copies perturbed as init.n_perturbed does
(0.05 A std); sampler.extxyz: n frames chosen for diversity from GFN2-xTB Langevin MD of the
start and its conformer starts at each temperature (eelt.explore.sampler).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import ase.io
import numpy as np

from eelt.config import ExecutionConfig
from eelt.explore.perturb import perturbed_copies
from eelt.explore.sampler import calculator_factory, diverse_choice, sample_frames
from eelt.label import PySCFLabeler, XTBLabeler, label_frames
from eelt.orchestration.execution import open_executor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("structure", type=Path)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--n-frames", type=int, default=40)
    parser.add_argument("--temperatures-K", type=float, nargs="+", default=[300.0, 500.0, 800.0])
    parser.add_argument("--n-steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", choices=["xtb", "pyscf"], default="xtb")
    parser.add_argument("--xc", default="pbe")
    parser.add_argument("--basis", default="def2-svp")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    start = ase.io.read(args.structure, 0)
    start = ase.Atoms(start.numbers, start.positions)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    labeler = (
        PySCFLabeler(xc=args.xc, basis=args.basis) if args.reference == "pyscf" else XTBLabeler()
    )
    rng = np.random.default_rng(args.seed)
    perturbed = [start] + perturbed_copies(start, args.n_frames - 1, 0.05, 0.0, rng)
    t0 = time.perf_counter()
    trajectory = sample_frames(
        [start], calculator_factory("xtb"), args.temperatures_K, args.n_steps,
        None, 20, 400, True, args.seed,
    )  # fmt: skip
    sampled_s = time.perf_counter() - t0
    chosen = [trajectory[k] for k in diverse_choice(trajectory, args.n_frames)]
    execution = ExecutionConfig(kind="local", n_workers=args.workers, threads_per_worker=1)
    with open_executor(execution) as executor:
        for name, frames in (("perturbed", perturbed), ("sampler", chosen)):
            report = label_frames(frames, labeler, executor, args.out_dir / "labels")
            for failed in report.failed:
                print(f"{name} frame {failed['index']}: not labeled: {failed['reason']}")
            ase.io.write(args.out_dir / f"{name}.extxyz", report.labeled)
    print(
        f"{args.out_dir}: {len(perturbed)} perturbed, {len(chosen)} sampler frames of "
        f"{len(trajectory)}; sampler MD {sampled_s:.0f} s"
    )


if __name__ == "__main__":
    main()
