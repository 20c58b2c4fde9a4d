"""DeePMD-kit's own trainer (PyTorch se_e2_a) on the ethanol data of bench_training.py.

Trains with ``dp --pt train`` on the first N frames of the train pool, then evaluates the
checkpoint with deepmd.infer.DeepPot on the held-out test split: energy RMSE in meV/atom
(per-frame error / n_atoms, as eelt's evaluate_rmse) and force RMSE in meV/Angstrom over all
components, beside the wall seconds of training, so eelt's trainer and DeePMD-kit's can be
compared at equal steps.

Model: the sizes of eelt's DeepPot: se_e2_a, rcut 6 A, rcut_smth 0.5 A, embedding
[25, 50, 100], axis_neuron 16, type_one_side false, fitting [240, 240, 240] with resnet_dt
(DeePMD's default), sel [6, 2, 1] for H, C, O (the most a 9-atom molecule can have);
float64 (DeePMD's default) or ``--precision float32``. DeePMD fits its own energy bias.

Presets (Adam, stepped exponential lr decay, DeePMD loss prefactors e 0.02 -> 1, f 1000 -> 1):

- ``deepmd``: DeePMD's defaults: batch_size "auto" (= auto:32, 4 frames of ethanol), start_lr
  1e-3, stop_lr 3.51e-8, decay_steps 5000 (DeePMD replaces decay_steps >= steps by 100, or
  steps // 100 + 1 for under 1000 steps).
- ``eelt``: eelt's TrainConfig defaults: batch_size "auto:256" (29 frames), start_lr 3e-3,
  stop_lr 1e-4, decay_steps 100.

DeePMD computes the decay rate from stop_lr, so either schedule reaches stop_lr at ``--steps``.
No validation data; the training loss is printed every ``--disp-freq`` steps (lcurve.out).

Runs in the separate venv holding deepmd-kit 3.x (see bench_deepmd.py; where its compiled op
library was built for another torch, move libdeepmd_op_pt.so aside: se_e2_a uncompressed
needs none of its ops):

    /work/dpvenv/bin/python benchmarks/bench_deepmd_training.py --preset deepmd \\
        --n-train 200 --steps 5000 [--precision float64|float32] [--threads 1] \\
        [--work-dir runs/bench-deepmd-training]

Each run lives in ``work-dir/<preset>-<precision>-n<N>-s<steps>/`` (npy systems, input.json,
train.log, checkpoints) with its result in ``result.json``, which a rerun prints instead of
training again; delete the directory to start over. "wall s" is that of the whole ``dp --pt
train`` process (start-up, neighbor and data statistics included), "loop s" the training loop
alone (the sum of the log's "total wall time" per display), on ``--threads`` threads (OMP,
DP_INTRA_OP; one inter-op thread).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np

NAME = "ethanol_pbe_def2svp"
TYPE_MAP = ["H", "C", "O"]
SEL = [6, 2, 1]  # H, C, O neighbors within rcut: all other atoms of a 9-atom ethanol
RCUT_A, RCUT_SMTH_A = 6.0, 0.5
EMBEDDING, AXIS_NEURON, FITTING = [25, 50, 100], 16, [240, 240, 240]
PREFS = {"start_pref_e": 0.02, "limit_pref_e": 1.0, "start_pref_f": 1000.0, "limit_pref_f": 1.0}
PRESETS = {
    "deepmd": {"batch_size": "auto", "start_lr": 1e-3, "stop_lr": 3.51e-8, "decay_steps": 5000},
    "eelt": {"batch_size": "auto:256", "start_lr": 3e-3, "stop_lr": 1e-4, "decay_steps": 100},
}


def frames_per_batch(batch_size: str, n_atoms: int) -> int:
    """Frames per step of DeePMD's batch_size ("auto" = "auto:32": ceil(N / n_atoms))."""
    if batch_size.isdigit():
        return int(batch_size)
    rule = int(batch_size.split(":")[1]) if ":" in batch_size else 32
    return math.ceil(rule / n_atoms)


def effective_decay_steps(decay_steps: int, steps: int) -> int:
    """decay_steps as DeePMD uses it: one >= steps is replaced as in LearningRateExp."""
    if decay_steps < steps:
        return decay_steps
    return 100 if steps // 10 > 100 else steps // 100 + 1


def write_system(frames: list, path: Path) -> None:
    """A DeePMD npy system (no cell: nopbc) of frames sharing one atom order; eV and Angstrom."""
    symbols = frames[0].get_chemical_symbols()
    if any(a.get_chemical_symbols() != symbols for a in frames):
        raise ValueError("frames differ in atom order")
    set_dir = path / "set.000"
    set_dir.mkdir(parents=True, exist_ok=True)
    (path / "type.raw").write_text("\n".join(str(TYPE_MAP.index(s)) for s in symbols) + "\n")
    (path / "type_map.raw").write_text("\n".join(TYPE_MAP) + "\n")
    (path / "nopbc").write_text("")
    n = len(frames)
    np.save(set_dir / "coord.npy", np.stack([a.get_positions() for a in frames]).reshape(n, -1))
    np.save(set_dir / "energy.npy", np.array([a.get_potential_energy() for a in frames]))
    np.save(set_dir / "force.npy", np.stack([a.get_forces() for a in frames]).reshape(n, -1))


def input_json(preset: str, steps: int, precision: str, disp_freq: int, seed: int) -> dict:
    """dp --pt train input: the model of eelt's sizes and the preset's training settings."""
    p = PRESETS[preset]
    return {
        "model": {
            "type_map": TYPE_MAP,
            "descriptor": {
                "type": "se_e2_a",
                "sel": SEL,
                "rcut": RCUT_A,
                "rcut_smth": RCUT_SMTH_A,
                "neuron": EMBEDDING,
                "axis_neuron": AXIS_NEURON,
                "type_one_side": False,
                "resnet_dt": False,
                "precision": precision,
                "seed": seed,
            },
            "fitting_net": {
                "neuron": FITTING,
                "resnet_dt": True,
                "precision": precision,
                "seed": seed,
            },
        },
        "learning_rate": {
            "type": "exp",
            "start_lr": p["start_lr"],
            "stop_lr": p["stop_lr"],
            "decay_steps": p["decay_steps"],
        },
        "loss": {"type": "ener", **PREFS},
        "training": {
            "training_data": {"systems": ["train"], "batch_size": p["batch_size"]},
            "numb_steps": steps,
            "seed": seed,
            "disp_file": "lcurve.out",
            "disp_freq": disp_freq,
            "save_freq": steps,
            "save_ckpt": "model.ckpt",
            "max_ckpt_keep": 1,
        },
    }


def thread_env(threads: int) -> dict:
    """The environment with OpenMP / DeePMD intra- and inter-op threads set."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        DP_INTRA_OP_PARALLELISM_THREADS=str(threads),
        DP_INTER_OP_PARALLELISM_THREADS="1",
    )
    return env


def train(run_dir: Path, threads: int) -> float:
    """Run ``dp --pt train input.json`` in run_dir (log in train.log); its wall seconds."""
    cmd = [sys.executable, "-m", "deepmd", "--pt", "train", "input.json"]
    t0 = time.perf_counter()
    with open(run_dir / "train.log", "w") as log:
        proc = subprocess.run(
            cmd, cwd=run_dir, env=thread_env(threads), stdout=log, stderr=subprocess.STDOUT
        )
    wall_s = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (run_dir / "train.log").read_text().splitlines()[-20:]
        raise RuntimeError(f"dp --pt train failed ({proc.returncode}):\n" + "\n".join(tail))
    return wall_s


def loop_seconds(log: str) -> float:
    """Seconds of the training loop alone: the sum of the log's "total wall time" per display."""
    return sum(float(s) for s in re.findall(r"total wall time = ([0-9.]+) s", log))


def test_rmse(checkpoint: Path, frames: list) -> dict:
    """Energy RMSE (meV/atom, per-frame error / n_atoms) and force RMSE (meV/A) on frames."""
    from deepmd.infer import DeepPot

    dp = DeepPot(str(checkpoint))
    types = [TYPE_MAP.index(s) for s in frames[0].get_chemical_symbols()]
    n, n_atoms = len(frames), len(types)
    coord_A = np.stack([a.get_positions() for a in frames]).reshape(n, -1)
    e_eV, f_eV_per_A, _ = dp.eval(coord_A, None, types)
    e_ref_eV = np.array([a.get_potential_energy() for a in frames])
    f_ref_eV_per_A = np.stack([a.get_forces() for a in frames])
    de_per_atom_eV = (np.asarray(e_eV).reshape(n) - e_ref_eV) / n_atoms
    df_eV_per_A = np.asarray(f_eV_per_A).reshape(n, n_atoms, 3) - f_ref_eV_per_A
    return {
        "test_energy_rmse_meV_per_atom": float(np.sqrt(np.mean(de_per_atom_eV**2)) * 1000),
        "test_force_rmse_meV_per_A": float(np.sqrt(np.mean(df_eV_per_A**2)) * 1000),
        "n_test": n,
    }


def run(args: argparse.Namespace) -> dict:
    """Train and test one configuration, or read its result.json from an earlier run."""
    key = f"{args.preset}-{args.precision}-n{args.n_train}-s{args.steps}"
    run_dir = args.work_dir / key
    result_path = run_dir / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    pool = ase.io.read(args.data_dir / f"{NAME}_train.extxyz", ":")
    test = ase.io.read(args.data_dir / f"{NAME}_test.extxyz", ":")
    if args.n_train > len(pool):
        raise SystemExit(f"--n-train {args.n_train} > {len(pool)} frames in the train pool")
    train_frames = pool[: args.n_train]
    run_dir.mkdir(parents=True, exist_ok=True)
    write_system(train_frames, run_dir / "train")
    config = input_json(args.preset, args.steps, args.precision, args.disp_freq, args.seed)
    (run_dir / "input.json").write_text(json.dumps(config, indent=2) + "\n")
    wall_s = train(run_dir, args.threads)
    p = PRESETS[args.preset]
    n_atoms = len(train_frames[0])
    result = {
        "preset": args.preset,
        "precision": args.precision,
        "n_train": args.n_train,
        "steps": args.steps,
        "batch_size": p["batch_size"],
        "frames_per_batch": frames_per_batch(p["batch_size"], n_atoms),
        "start_lr": p["start_lr"],
        "stop_lr": p["stop_lr"],
        "decay_steps": effective_decay_steps(p["decay_steps"], args.steps),
        "threads": args.threads,
        "wall_s": wall_s,
        "loop_s": loop_seconds((run_dir / "train.log").read_text()),
        **test_rmse(run_dir / "model.ckpt.pt", test),
    }
    result_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=tuple(PRESETS), default="deepmd")
    parser.add_argument("--n-train", type=int, default=200, help="first N frames of the pool")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--precision", choices=("float64", "float32"), default="float64")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--disp-freq", type=int, default=500, help="steps between lcurve rows")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).parent / "data")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench-deepmd-training"))
    args = parser.parse_args()

    os.environ.update(thread_env(args.threads))  # for the test evaluation in this process
    r = run(args)
    print(
        f"{'preset':<7} {'prec':<8} {'N train':>7} {'steps':>6} {'batch':>13} {'wall s':>7} "
        f"{'loop s':>7} {'E RMSE meV/atom':>16} {'F RMSE meV/A':>13}"
    )
    batch = f"{r['batch_size']}={r['frames_per_batch']}"
    print(
        f"{r['preset']:<7} {r['precision']:<8} {r['n_train']:>7} {r['steps']:>6} {batch:>13} "
        f"{r['wall_s']:>7.0f} {r['loop_s']:>7.0f} "
        f"{r['test_energy_rmse_meV_per_atom']:>16.2f} {r['test_force_rmse_meV_per_A']:>13.1f}"
    )


if __name__ == "__main__":
    main()
