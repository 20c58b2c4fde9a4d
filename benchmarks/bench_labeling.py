"""Labeling throughput on a local Dask cluster: labels per minute, worker busy share, dispatch
overhead, and threads per DFT job against speed.

    python benchmarks/bench_labeling.py [--frames 8] [--sleep-jobs 20]

Ethanol frames (from benchmarks/data) labeled with PySCF PBE/def2-SVP into a fresh label store
each time, on 1 and 2 workers with 1 thread per job and on 1 worker with 2 threads per job.
Busy share: the jobs' own wall times over (wall x workers). Overhead: jobs that sleep 1 s and
return a zero label, on 2 workers; the time beyond 1 s per job and worker.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from eelt.config import ExecutionConfig
from eelt.label import PySCFLabeler, label_frames
from eelt.orchestration.execution import open_executor

DATA = Path(__file__).resolve().parent / "data" / "ethanol_pbe_def2svp_test.extxyz"


@dataclass(frozen=True)
class SleepOneSecond:
    """A job that does nothing for 1 s and returns a zero label."""

    name: ClassVar[str] = "sleep"
    token: str = ""

    def settings(self) -> dict:
        return {"labeler": self.name, "token": self.token}

    def __call__(self, atoms: Atoms) -> Atoms:
        time.sleep(1.0)
        out = atoms.copy()
        out.calc = SinglePointCalculator(out, energy=0.0, forces=np.zeros((len(atoms), 3)))
        return out


def bare(frames: list[Atoms]) -> list[Atoms]:
    return [Atoms(f.numbers, positions=f.positions) for f in frames]


def measure(frames, labeler, n_workers: int, threads_per_job: int = 1) -> dict:
    cfg = ExecutionConfig(kind="local", n_workers=n_workers, threads_per_job=threads_per_job)
    with tempfile.TemporaryDirectory() as store, open_executor(cfg) as executor:
        label_frames(bare(frames[:1]), labeler, executor, Path(store) / "warm")  # imports
        t0 = time.perf_counter()
        report = label_frames(bare(frames), labeler, executor, Path(store) / "labels")
        wall = time.perf_counter() - t0
        # each label file keeps its job's own wall time on the worker
        job_s = sum(
            ase.io.read(p).info.get("label_wall_s", 0.0)
            for p in (Path(store) / "labels").glob("*.extxyz")
        )
    return {
        "wall_s": wall,
        "labels_per_min": 60.0 * len(report.labeled) / wall,
        "busy": job_s / (wall * n_workers),
        "mean_job_s": job_s / max(len(report.labeled), 1),
        "failed": len(report.failed),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--sleep-jobs", type=int, default=20)
    args = parser.parse_args()
    frames = ase.io.read(DATA, f":{args.frames + 1}")[1:]
    print("| workers | threads per job | labels/min | mean job (s) | busy share | wall (s) |")
    print("|---|---|---|---|---|---|")
    for workers, threads in ((1, 1), (2, 1), (1, 2)):
        labeler = PySCFLabeler(xc="pbe", basis="def2-svp", device="cpu", threads=threads)
        r = measure(frames, labeler, workers, threads)
        print(
            f"| {workers} | {threads} | {r['labels_per_min']:.1f} | {r['mean_job_s']:.1f} | "
            f"{r['busy']:.0%} | {r['wall_s']:.0f} |",
            flush=True,
        )
    sleepers = [Atoms("H", positions=[[0.0, 0.0, 0.01 * k]]) for k in range(args.sleep_jobs)]
    r = measure(sleepers, SleepOneSecond(str(time.time())), 2)
    overhead = r["wall_s"] * 2 / args.sleep_jobs - 1.0
    print(
        f"\n1-second jobs on 2 workers: {args.sleep_jobs} in {r['wall_s']:.1f} s, busy share "
        f"{r['busy']:.0%}, dispatch overhead {overhead:.1%} of a job"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
