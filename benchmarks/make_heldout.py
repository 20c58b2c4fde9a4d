"""A held-out reference set for any molecule, made independently of a run: thermal MD with a
cheap method, frames relabeled with the reference.

    nice -n 19 python benchmarks/make_heldout.py STRUCTURE --out FILE.extxyz
        [--temperatures-K 300 500 800] [--frames-per-temperature 20] [--reference pyscf|xtb]
        [--xc pbe --basis def2-svp] [--workers 2] [--seed 0] [--work-dir runs/heldout]

Sampling: per temperature, one Langevin walker (ASE, friction 0.01/fs, 0.5 fs with hydrogen and
1 fs otherwise) on GFN2-xTB (tblite), started from the structure's first frame with
Maxwell-Boltzmann momenta, 200 fs of equilibration, then one frame every 20 fs. The reference is
eelt's PySCF labeler (PBE/def2-SVP by default, as the examples) or GFN2-xTB itself, over a local
Dask cluster; labels are cached under ``work-dir/labels`` by content hash, so a rerun resumes.
Each frame keeps ``temperature_K`` in its info. Prints the frames written and the time taken.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import ase.io
from ase import Atoms

from eelt.config import ExecutionConfig
from eelt.explore.sampler import default_timestep_fs, langevin_frames
from eelt.label import PySCFLabeler, XTBLabeler, label_frames
from eelt.orchestration.execution import open_executor

EQUILIBRATE_FS = 200.0
DUMP_FS = 20.0


def sample(start: Atoms, temperature_K: float, n_frames: int, seed: int) -> list[Atoms]:
    """``n_frames`` frames of GFN2-xTB Langevin MD at ``temperature_K``, one every DUMP_FS."""
    dt_fs = default_timestep_fs(start)
    dump = round(DUMP_FS / dt_fs)
    return langevin_frames(
        start, XTBLabeler().calculator(), temperature_K, n_frames * dump, dt_fs, dump,
        round(EQUILIBRATE_FS / dt_fs), seed,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("structure", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--temperatures-K", type=float, nargs="+", default=[300.0, 500.0, 800.0])
    parser.add_argument("--frames-per-temperature", type=int, default=20)
    parser.add_argument("--reference", choices=["pyscf", "xtb"], default="pyscf")
    parser.add_argument("--xc", default="pbe")
    parser.add_argument("--basis", default="def2-svp")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=Path("runs/heldout"))
    args = parser.parse_args()
    start = ase.io.read(args.structure, 0)
    t0 = time.perf_counter()
    frames = [
        frame
        for k, temperature in enumerate(args.temperatures_K)
        for frame in sample(start, temperature, args.frames_per_temperature, args.seed + k)
    ]
    sampled_s = time.perf_counter() - t0
    labeler = (
        PySCFLabeler(xc=args.xc, basis=args.basis) if args.reference == "pyscf" else XTBLabeler()
    )
    execution = ExecutionConfig(kind="local", n_workers=args.workers, threads_per_worker=1)
    with open_executor(execution) as executor:
        report = label_frames(frames, labeler, executor, args.work_dir / "labels")
    for failed in report.failed:
        print(f"frame {failed['index']}: not labeled: {failed['reason']}")
    failed = {f["index"] for f in report.failed}
    kept = [frame for i, frame in enumerate(frames) if i not in failed]
    for frame, labeled in zip(kept, report.labeled, strict=True):
        labeled.info["temperature_K"] = frame.info["temperature_K"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(args.out, report.labeled)
    print(
        f"{args.out}: {len(report.labeled)} frames ({args.reference} labels) at "
        f"{', '.join(f'{t:g}' for t in args.temperatures_K)} K; sampling {sampled_s:.0f} s, "
        f"labels {time.perf_counter() - t0 - sampled_s:.0f} s"
    )


if __name__ == "__main__":
    main()
