"""How well eelt's trainer learns ethanol at PBE/def2-SVP (data: make_ethanol_data.py).

    nice -n 19 python benchmarks/bench_training.py [--parts curve timing warm ensemble long]
        [--sizes 50 100 200 400] [--steps 2000] [--out-dir runs/bench-training]

Parts (each prints a table; every training run keeps its result in ``out-dir/<run>/result.json``,
so a rerun only trains what is missing and parts may run as concurrent processes; delete the
directory to start over):

- ``curve``: one member (TrainConfig defaults except ``steps``; no validation split, so N frames
  are N training frames) on the first N frames of the train pool; energy RMSE (meV/atom) and
  force RMSE (meV/Angstrom) on the held-out test split.
- ``timing``: wall seconds per 1000 training steps, float64 and float32, one member on 1 and on 2
  torch threads, and two members at once on one thread each (their throughput).
- ``warm``: an EELT-like iteration: a model trained on N frames (``--warm-old``), then
  ``--warm-fraction`` x N new frames; (a) warm start (init_from, ``warm_steps`` at
  ``warm_start_lr``) against (b) from scratch (``steps`` at ``start_lr``), both with the default
  10% validation split of the same file. ``--warm-new worst`` (default), as an iteration that
  explores a higher temperature and labels the candidates the model gets wrong: the N old frames
  come from the cooler walkers, the new ones are the frames of the hottest walkers with the largest
  force error under the old model; ``hot``: the first frames of the hottest walkers; ``same``:
  both from the same MD (the first frames of the pool). Target: (b)'s final validation force
  RMSE; the table gives the step and wall time at which each run first reaches it, read from the
  learning-curve csv next to the checkpoint.
- ``ensemble``: four members on the largest size; test RMSE of their mean and of each member.
- ``long``: the largest size with ``--long-steps`` steps, to see what the default budget leaves.
- ``lr``: the largest size at the default steps with each of ``--lrs`` as start_lr.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ase.io
import torch

from eelt import keys
from eelt.atomic import read_json, write_frames, write_json
from eelt.config import ModelConfig, TrainConfig
from eelt.model import DeepPot, Ensemble
from eelt.train import TrainingDiverged, evaluate_rmse, train_ensemble, train_member
from eelt.train.curves import read_curve

NAME = "ethanol_pbe_def2svp"
TYPE_MAP = ["H", "C", "O"]
PARTS = ("curve", "timing", "warm", "ensemble", "long", "lr")


class Bench:
    """Training runs under ``out_dir``, each done once: its result (test RMSE, wall time) is kept
    in ``out_dir/<key>/result.json`` and reused by a rerun."""

    def __init__(self, data_dir: Path, out_dir: Path, threads: int):
        self.out_dir = out_dir
        self.threads = threads
        self.pool = ase.io.read(data_dir / f"{NAME}_train.extxyz", ":")
        self.test = ase.io.read(data_dir / f"{NAME}_test.extxyz", ":")

    def result(self, key: str) -> dict | None:
        path = self.out_dir / key / "result.json"
        return read_json(path) if path.is_file() else None

    def subset(self, n: int) -> str:
        """File of the first ``n`` frames of the train pool."""
        return self.frames_file(f"train_first_{n}", self.pool[:n])

    def frames_file(self, name: str, frames: list) -> str:
        path = self.out_dir / "data" / f"{name}.extxyz"
        if not path.is_file():
            write_frames(path, frames)
        return str(path)

    def hot_split(self, n_old: int) -> tuple[str, list, list]:
        """(file of the first ``n_old`` pool frames below the top temperature, those frames,
        the pool's frames at the top temperature)."""
        top = max(a.info[keys.TEMPERATURE_K] for a in self.pool)
        cool = [a for a in self.pool if a.info[keys.TEMPERATURE_K] < top][:n_old]
        hot = [a for a in self.pool if a.info[keys.TEMPERATURE_K] == top]
        if n_old > len(cool):
            raise SystemExit(f"need {n_old} frames below {top:g} K; the pool has {len(cool)}")
        return self.frames_file(f"cool_first_{n_old}", cool), cool, hot

    def train(
        self, key: str, n: int, train: TrainConfig, seed: int = 0, data: str | None = None, **kwargs
    ) -> dict:
        """Train one member on ``data`` (default: the first ``n`` pool frames), cached under
        ``key``; test RMSE of the result."""
        if (done := self.result(key)) is not None:
            return done
        checkpoint = self.out_dir / key / "model.pt"
        cpu0 = time.process_time()
        result = train_member(
            [data or self.subset(n)],
            checkpoint,
            train,
            TYPE_MAP,
            seed,
            device="cpu",
            torch_threads=kwargs.pop("torch_threads", self.threads),
            **kwargs,
        )
        cpu_s = time.process_time() - cpu0  # all threads of this process (alone: this run)
        test = evaluate_rmse(DeepPot.load(checkpoint), self.test)
        row = {
            "n_frames": n,
            "n_train": result.n_train_frames,
            "steps": result.steps,
            "wall_s": result.wall_s,
            "cpu_s": cpu_s,
            "val_force_rmse_meV_per_A": result.val_force_rmse_meV_per_A,
            "train_force_rmse_meV_per_A": result.train_force_rmse_meV_per_A,
            "test_energy_rmse_meV_per_atom": test["energy_rmse_meV_per_atom"],
            "test_force_rmse_meV_per_A": test["force_rmse_meV_per_A"],
            "checkpoint": str(checkpoint),
        }
        self.save(key, row)
        return row

    def save(self, key: str, row: dict) -> None:
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in row.items()
        }
        write_json(self.out_dir / key / "result.json", clean)


def learning_curve(bench: Bench, sizes: list[int], steps: int, precision: str = "float32") -> None:
    train = TrainConfig(steps=steps, validation_fraction=0.0, precision=precision)
    tag = "" if precision == "float32" else f"-{precision}"
    print(
        f"\nLearning curve: one member, {steps} steps, default model (trained in {precision}); "
        f"test: {len(bench.test)} frames"
    )
    print(
        f"{'N train':>8} {'E RMSE meV/atom':>16} {'F RMSE meV/A':>13} {'train F':>8} {'wall s':>7}"
    )
    for n in sizes:
        r = bench.train(f"curve-{n}-{steps}{tag}", n, train)
        print(
            f"{n:>8} {r['test_energy_rmse_meV_per_atom']:>16.2f} "
            f"{r['test_force_rmse_meV_per_A']:>13.1f} {r['train_force_rmse_meV_per_A']:>8.1f} "
            f"{r['wall_s']:>7.0f}",
            flush=True,
        )


def timing(bench: Bench, n: int, steps: int) -> None:
    """Wall (and process CPU) seconds per 1000 steps from short runs (``steps``), the fixed cost
    (statistics, final evaluation) included, so slightly pessimistic; with the 1-minute load
    average at the end of each run, since a busy machine changes these numbers."""
    print(f"\nTraining time per 1000 steps: wall s (CPU s) [load] ({steps}-step runs, {n} frames)")
    print(
        f"{'precision':>9} {'1 member, 1 thr':>24} {'1 member, 2 thr':>24} {'2 members, 1 thr each':>24}"
    )
    for precision in ("float64", "float32"):
        train = TrainConfig(
            steps=steps,
            validation_fraction=0.0,
            precision=precision,
            model=ModelConfig(precision=precision),
        )
        cells = []
        for threads in (1, 2):
            key = f"time-{precision}-{threads}thr-{steps}"
            r = bench.train(key, n, train, torch_threads=threads)
            if "load" not in r:
                bench.save(key, {**r, "load": os.getloadavg()[0]})
            cells.append(bench.result(key))
        key = f"time-{precision}-2members-{steps}"
        if bench.result(key) is None:
            t0, cpu0 = time.perf_counter(), time.process_time()
            with ThreadPoolExecutor(2) as pool:
                futures = [
                    pool.submit(bench.train, f"{key}-m{m}", n, train, seed=m, torch_threads=1)
                    for m in range(2)
                ]
                for f in futures:
                    f.result()
            bench.save(
                key,
                {
                    "wall_s": time.perf_counter() - t0,
                    "cpu_s": time.process_time() - cpu0,
                    "load": os.getloadavg()[0],
                    "steps": 2 * steps,
                },
            )
        cells.append(bench.result(key))  # the two run side by side: wall per 1000 steps of each
        text = [
            f"{1000 * c['wall_s'] / steps:.0f} ({1000 * c['cpu_s'] / steps:.0f}) [{c['load']:.1f}]"
            for c in cells
        ]
        print(f"{precision:>9} {text[0]:>24} {text[1]:>24} {text[2]:>24}", flush=True)


def crossing(curve_csv: str, target: float) -> tuple[int | None, float | None]:
    """(step, wall s) of the first learning-curve row whose validation force RMSE <= target."""
    for row in read_curve(curve_csv):
        if row["val_force_rmse_meV_per_A"] <= target * (1 + 1e-9):
            return row["step"], row["wall_s"]
    return None, None


def worst_frames(checkpoint: str, frames: list, n: int) -> list:
    """The ``n`` frames with the largest force RMSE under the model, as an iteration's
    candidates are those where the ensemble disagrees most (kept in their input order)."""
    model = DeepPot.load(checkpoint)
    errors = [evaluate_rmse(model, [a])["force_rmse_meV_per_A"] for a in frames]
    worst = sorted(range(len(frames)), key=lambda i: -errors[i])[:n]
    return [frames[i] for i in sorted(worst)]


def warm_start(bench: Bench, n_old: int, steps: int, fraction: float, new: str) -> None:
    n_added = max(1, round(fraction * n_old))
    n_new = n_old + n_added
    train = TrainConfig(steps=steps)
    if new == "same":
        n_new = min(len(bench.pool), n_new)
        old_file, new_file = bench.subset(n_old), bench.subset(n_new)
        base = bench.train(f"warm-base-{n_old}-{steps}", n_old, train, data=old_file)
        tag, what = "", "new frames from the same MD"
    else:
        old_file, cool, hot = bench.hot_split(n_old)
        base = bench.train(f"warm-hot-base-{n_old}-{steps}", n_old, train, data=old_file)
        if n_added > len(hot):
            raise SystemExit(f"need {n_added} frames at the top temperature; pool has {len(hot)}")
        if new == "hot":
            added, what = hot[:n_added], "new frames from the hottest walkers"
        else:
            added = worst_frames(base["checkpoint"], hot, n_added)
            what = f"the {n_added} frames of the hottest walkers the old model gets most wrong"
        new_file = bench.frames_file(f"cool_{n_old}_{new}_{n_added}", cool + added)
        tag = f"{new}-"
    scratch = bench.train(f"warm-{tag}scratch-{n_new}-{steps}", n_new, train, data=new_file)
    warm = bench.train(
        f"warm-{tag}warm-{n_new}-{train.warm_steps}",
        n_new,
        train,
        data=new_file,
        init_from=base["checkpoint"],
        steps=train.warm_steps,
        start_lr=train.warm_start_lr,
    )
    target = scratch["val_force_rmse_meV_per_A"]
    print(
        f"\nWarm start vs scratch: {n_old} -> {n_new} frames, {what} (10% validation); "
        f"target = scratch's final validation force RMSE {target:.1f} meV/A"
    )
    print(
        f"{'run':<28} {'steps':>6} {'wall s':>7} {'val F at 0':>11} {'final val F':>12} "
        f"{'test F':>7} {'reaches target at step':>23} {'at wall s':>10}"
    )
    print(
        f"{f'base ({n_old} old frames)':<28} {base['steps']:>6} {base['wall_s']:>7.0f} {'':>11} "
        f"{'(own val.)':>12} {base['test_force_rmse_meV_per_A']:>7.1f}"
    )
    for name, r in (
        (f"(b) scratch, lr {train.start_lr:g}", scratch),
        (f"(a) warm, lr {train.warm_start_lr:g}", warm),
    ):
        curve = str(Path(r["checkpoint"]).with_suffix(".csv"))
        step, wall = crossing(curve, target)
        print(
            f"{name:<28} {r['steps']:>6} {r['wall_s']:>7.0f} "
            f"{read_curve(curve)[0]['val_force_rmse_meV_per_A']:>11.1f} "
            f"{r['val_force_rmse_meV_per_A']:>12.1f} {r['test_force_rmse_meV_per_A']:>7.1f} "
            f"{'never' if step is None else step:>23} {'-' if wall is None else f'{wall:.0f}':>10}",
            flush=True,
        )
    step, wall = crossing(
        str(Path(scratch["checkpoint"]).with_suffix(".csv")), warm["val_force_rmse_meV_per_A"]
    )
    reach = "never" if step is None else f"at step {step} ({wall:.0f} s)"
    print(f"(b) reaches (a)'s final validation error: {reach}")


def ensemble(bench: Bench, n: int, steps: int) -> None:
    train = TrainConfig(steps=steps, validation_fraction=0.0, ensemble_size=4)
    out = bench.out_dir / f"ensemble-{n}-{steps}"
    key = f"ensemble-{n}-{steps}"
    if bench.result(key) is None:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:  # 2 cores: two members at a time, 1 thread each
            results = train_ensemble([bench.subset(n)], out, train, TYPE_MAP, pool, torch_threads=1)
        members = [evaluate_rmse(DeepPot.load(r.checkpoint), bench.test) for r in results]
        mean = evaluate_rmse(Ensemble.load(out), bench.test)
        bench.save(
            key,
            {
                "wall_s": time.perf_counter() - t0,
                "mean": mean,
                "members": members,
            },
        )
    r = bench.result(key)
    print(
        f"\nEnsemble of 4 on {n} frames, {steps} steps each ({r['wall_s']:.0f} s wall, 2 at a time)"
    )
    print(f"{'model':<12} {'E RMSE meV/atom':>16} {'F RMSE meV/A':>13}")
    for name, m in [(f"member {k}", m) for k, m in enumerate(r["members"])] + [
        ("mean of 4", r["mean"])
    ]:
        print(
            f"{name:<12} {m['energy_rmse_meV_per_atom']:>16.2f} {m['force_rmse_meV_per_A']:>13.1f}"
        )


def learning_rates(bench: Bench, n: int, steps: int, lrs: list[float]) -> None:
    print(f"\nStart learning rate: one member, {n} frames, {steps} steps; test RMSE")
    print(
        f"{'start_lr':>9} {'E RMSE meV/atom':>16} {'F RMSE meV/A':>13} {'train F':>8} {'wall s':>7}"
    )
    for lr in lrs:
        train = TrainConfig(steps=steps, validation_fraction=0.0, start_lr=lr)
        try:
            r = bench.train(f"lr-{lr:g}-{n}-{steps}", n, train)
        except TrainingDiverged as err:
            print(f"{lr:>9g} diverged: {err}")
            continue
        print(
            f"{lr:>9g} {r['test_energy_rmse_meV_per_atom']:>16.2f} "
            f"{r['test_force_rmse_meV_per_A']:>13.1f} {r['train_force_rmse_meV_per_A']:>8.1f} "
            f"{r['wall_s']:>7.0f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("benchmarks/data"))
    parser.add_argument("--out-dir", type=Path, default=Path("runs/bench-training"))
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--steps", type=int, default=TrainConfig().steps)
    parser.add_argument("--long-steps", type=int, default=8000)
    parser.add_argument("--long-precision", choices=("float64", "float32"), default="float32")
    parser.add_argument("--timing-steps", type=int, default=200)
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 2e-3])
    parser.add_argument("--warm-old", type=int, default=200, help="frames before the iteration")
    parser.add_argument("--warm-fraction", type=float, default=0.2, help="new / old frames")
    parser.add_argument("--warm-new", choices=("worst", "hot", "same"), default="worst")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per member")
    args = parser.parse_args()

    bench = Bench(args.data_dir, args.out_dir, args.threads)
    sizes = sorted({min(n, len(bench.pool)) for n in args.sizes})
    print(
        f"train pool {len(bench.pool)} frames, test {len(bench.test)} frames; torch "
        f"{torch.__version__}, {args.threads} threads per member unless stated"
    )
    t0 = time.perf_counter()
    if "curve" in args.parts:
        learning_curve(bench, sizes, args.steps)
    if "long" in args.parts:
        learning_curve(bench, sizes[-1:], args.long_steps, args.long_precision)
    if "timing" in args.parts:
        timing(bench, sizes[0], args.timing_steps)
    if "warm" in args.parts:
        warm_start(bench, args.warm_old, args.steps, args.warm_fraction, args.warm_new)
    if "ensemble" in args.parts:
        ensemble(bench, sizes[-1], args.steps)
    if "lr" in args.parts:
        learning_rates(bench, sizes[-1], args.steps, args.lrs)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
