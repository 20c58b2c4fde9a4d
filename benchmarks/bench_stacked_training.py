"""The ensemble trained as stacks: one stack of all members, two stacks, or a stack per member.

    nice -n 19 python benchmarks/bench_stacked_training.py [--parts water ethanol patience]
        [--runs "stacks of 1, 1 thread" "stacked, 1 job" "stacked, 2 jobs"] [--n-train 398]
        [--steps 2000] [--ethanol-steps 200] [--patience 200] [--out-dir runs/bench-stacked]

Data: ethanol at PBE/def2-SVP (benchmarks/data, made by make_ethanol_data.py): the first
``--n-train`` frames of the train pool (10% of them for validation), test errors on the 82
held-out frames.

- ``water``: the water example's train section (examples/water/eelt.yaml: 4 members,
  se_e2_a 16-32 / 64-64-64, rcut 4 A, batch 4 frames, 2000 steps, lr 1e-3 -> 1e-5, trained in
  float32) on the ethanol frames (a molecule of 9 atoms instead of 3, so the nets do 3x the
  work per frame and see 3 elements instead of 2).
- ``ethanol``: the default train config (se_e2_a 25-50-100 / 240-240-240, rcut 6 A,
  ``auto:256`` = 29 frames per step) for ``--ethanol-steps`` steps: the time per step of the
  default nets (a full 5000-step run each would take an hour here).
- ``patience``: the water part's settings without and with ``train.patience_steps``
  (``--patience``), stopping at once or after an anneal of 10% of the steps
  (``patience_anneal_fraction``), on 21 frames (the size of an initial data set) and on all
  ``--n-train`` frames, "stacked, 2 jobs".

Each part trains the 4-member ensemble with ``train_ensemble``, timed from the call to its
return (reading data, neighbor lists, statistics, validation, checkpoints and learning curves
included), in up to three ways (``--runs``):

- "stacks of 1, 1 thread": a stack per member (``train.stacks: 4``), one after the other on
  one thread: the cost of the members alone;
- "stacked, 1 job": all members as one stack in one job (one thread);
- "stacked, 2 jobs": ``train.stacks: auto`` on 2 worker processes with one torch thread each
  (what the water example's local Dask cluster of 2 single-threaded workers does): two stacks
  of two.

Measured here (2 shared cores), 200 frames: the water part at 1000 steps, wall s for the 4
members, the per-member trainer (one job per member, since removed) 48.2, stacks of 1 30.4,
one stack 16.0; the ethanol part at 30 steps 14.6, 13.8, 12.4; test errors equal to 0.1
meV/A (371.9 and 636.9 meV/A): one member is no slower as a stack of one than it was alone.

Worker processes are started and have imported torch and eelt before the clock starts, as the
long-lived Dask workers of a run have. Prints wall s, CPU s of the whole process tree,
ms per step, the speed-up over the first run, and the test force (meV/A) and energy (meV/atom)
RMSE of the ensemble mean, the members' test force RMSE range and their steps. Results are
kept in ``out-dir/<run>/result.json``; a rerun only trains what is missing.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import ase.io
import yaml

from eelt.atomic import read_json, write_frames, write_json
from eelt.config import TrainConfig
from eelt.model import DeepPot, Ensemble
from eelt.train import evaluate_rmse, train_ensemble

NAME = "ethanol_pbe_def2svp"
TYPE_MAP = ["H", "C", "O"]
ROOT = Path(__file__).resolve().parent.parent


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (worker processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _warm() -> float:
    """Imports a long-lived worker has done before an iteration trains (torch, eelt's trainer,
    the dynamo module the fused Adam step imports on first use); the CPU s they took."""
    import torch._dynamo  # noqa: F401

    import eelt.train.stacked  # noqa: F401

    return time.process_time()


RUNS = {
    # name: (train.stacks, worker processes (0: a thread pool of one), torch threads)
    "stacks of 1, 1 thread": (4, 0, 1),
    "stacked, 1 job": (1, 0, 1),
    "stacked, 2 jobs": ("auto", 2, 1),
}


def run(key: str, name: str, train: TrainConfig, data: str, test: list, out_dir: Path) -> dict:
    """Train the ensemble once as RUNS[name] says (cached in out_dir/key/result.json); wall s,
    CPU s, test errors."""
    path = out_dir / key / "result.json"
    if path.is_file():
        return read_json(path)
    stacks, processes, threads = RUNS[name]
    train = train.model_copy(update={"stacks": stacks})
    models = out_dir / key / "models"
    warm_cpu = 0.0  # the workers' CPU s before the clock (counted when they exit)
    if processes:  # as the local Dask cluster: worker processes, one thread each
        pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
        warm_cpu = sum(f.result() for f in [pool.submit(_warm) for _ in range(processes)])
    else:
        _warm()
        pool = ThreadPoolExecutor(1)
    with pool:
        cpu0, t0 = _cpu_s(), time.perf_counter()
        results = train_ensemble([data], models, train, TYPE_MAP, pool, torch_threads=threads)
        wall = time.perf_counter() - t0
    cpu = _cpu_s() - cpu0 - warm_cpu
    mean = evaluate_rmse(Ensemble.load(models), test)
    members = [evaluate_rmse(DeepPot.load(r.checkpoint), test) for r in results]
    row = {
        "run": name,
        "wall_s": wall,
        "cpu_s": cpu,
        "steps": [r.steps for r in results],
        "val_force_rmse_meV_per_A": [r.val_force_rmse_meV_per_A for r in results],
        "test_force_rmse_meV_per_A": mean["force_rmse_meV_per_A"],
        "test_energy_rmse_meV_per_atom": mean["energy_rmse_meV_per_atom"],
        "member_test_force_rmse_meV_per_A": [m["force_rmse_meV_per_A"] for m in members],
    }
    write_json(path, row)
    return row


def table(title: str, rows: dict[str, dict], steps: int) -> None:
    print(f"\n{title}")
    print(
        f"{'run':<24} {'wall s':>7} {'CPU s':>7} {'ms/step':>8} {'speed-up':>8} "
        f"{'test F':>7} {'test E':>7} {'members test F':>16} {'steps':>16}"
    )
    base = next(iter(rows.values()))["wall_s"]
    for name, r in rows.items():
        member_f = r["member_test_force_rmse_meV_per_A"]
        steps_run = r["steps"]
        print(
            f"{name:<24} {r['wall_s']:>7.1f} {r['cpu_s']:>7.1f} "
            f"{1e3 * r['wall_s'] / steps:>8.1f} {base / r['wall_s']:>7.2f}x "
            f"{r['test_force_rmse_meV_per_A']:>7.1f} {r['test_energy_rmse_meV_per_atom']:>7.2f} "
            f"{min(member_f):>7.1f}-{max(member_f):<7.1f} "
            f"{min(steps_run):>7}-{max(steps_run):<7}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", default=["water", "ethanol", "patience"])
    parser.add_argument("--n-train", type=int, default=398)
    parser.add_argument("--steps", type=int, default=None, help="water: default the example's")
    parser.add_argument("--ethanol-steps", type=int, default=200)
    parser.add_argument("--patience", type=int, default=200, help="patience_steps")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--data-dir", type=Path, default=ROOT / "benchmarks" / "data")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/bench-stacked"))
    args = parser.parse_args()

    pool = ase.io.read(args.data_dir / f"{NAME}_train.extxyz", ":")
    test = ase.io.read(args.data_dir / f"{NAME}_test.extxyz", ":")
    out = args.out_dir

    def data(n: int) -> str:
        path = out / "data" / f"train_first_{n}.extxyz"
        if not path.is_file():
            write_frames(path, pool[:n])
        return str(path)

    water = yaml.safe_load((ROOT / "examples" / "water" / "eelt.yaml").read_text())["train"]
    if args.steps:
        water["steps"] = args.steps
    water_cfg = TrainConfig(**water)
    n = args.n_train
    print(
        f"ethanol PBE/def2-SVP: {n} frames (10% validation), test {len(test)} frames; "
        "worker processes have one torch thread each, started before the clock"
    )

    def key(part: str, name: str, steps: int) -> str:
        return f"{part}-{name.replace(', ', '-').replace(' ', '')}-{n}-{steps}"

    if "water" in args.parts:
        rows = {
            name: run(key("water", name, water_cfg.steps), name, water_cfg, data(n), test, out)
            for name in args.runs
        }
        table(
            f"Water example's nets, {water_cfg.steps} steps, 4 members ({water_cfg.precision})",
            rows,
            water_cfg.steps,
        )
    if "ethanol" in args.parts:
        cfg = TrainConfig(steps=args.ethanol_steps)
        rows = {
            name: run(key("ethanol", name, cfg.steps), name, cfg, data(n), test, out)
            for name in args.runs
        }
        table(f"Default nets, {cfg.steps} steps, 4 members ({cfg.precision})", rows, cfg.steps)
    if "patience" in args.parts:
        rows = {}
        for size in (21, n):
            for patience, anneal in ((0, 0.0), (args.patience, 0.0), (args.patience, 0.1)):
                update = {"patience_steps": patience, "patience_anneal_fraction": anneal}
                cfg = water_cfg.model_copy(update=update)
                name = f"{size} frames, patience {patience}" + (
                    f", anneal {anneal:g}" if patience else ""
                )
                path = f"patience-{size}-{patience}-{anneal:g}-{water_cfg.steps}"
                rows[name] = run(path, "stacked, 2 jobs", cfg, data(size), test, out)
        table(
            f"Patience (water example's nets, stacked, at most {water_cfg.steps} steps)",
            rows,
            water_cfg.steps,
        )


if __name__ == "__main__":
    main()
