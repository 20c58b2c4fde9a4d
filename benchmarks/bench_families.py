"""MACE against DeepPot-SE on the project's ethanol PBE/def2-SVP data: learning curves, time.

    nice -n 19 python benchmarks/bench_families.py [--sizes 50 100 200 400]
        [--families mace deeppot] [--members 2] [--out-dir runs/bench-families]

For each family and N: ``eelt train --model FAMILY`` with that family's defaults (no config but
``train.ensemble_size: MEMBERS`` and a local Dask of 2 one-thread workers, as the CLI's
defaults) on the first N frames of benchmarks/data/ethanol_pbe_def2svp_train.extxyz (10% of them
are its validation split, as in any training), then the force and energy RMSE of the ensemble's
mean and of each member on the held-out test file (82 frames from whole 100 fs blocks of
walkers at 300, 450 and 600 K; also per temperature). Wall and CPU seconds are those of the
``eelt train`` process and its children (the Dask workers). Each point keeps its result in
``out-dir/FAMILY-N/bench.json``, so a rerun only trains what is missing; delete the directory to
start over. Prints one table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np

DATA = Path(__file__).parent / "data"
TRAIN = DATA / "ethanol_pbe_def2svp_train.extxyz"
TEST = DATA / "ethanol_pbe_def2svp_test.extxyz"


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def train_point(family: str, n: int, members: int, out_dir: Path) -> dict:
    """Train one ensemble (unless its result is there) and return its bench.json."""
    point = out_dir / f"{family}-{n}"
    result_file = point / "bench.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    point.mkdir(parents=True, exist_ok=True)
    data = point / "train.extxyz"
    ase.io.write(data, ase.io.read(TRAIN, f":{n}"))
    config = point / "train.yaml"
    config.write_text(
        f"train:\n  ensemble_size: {members}\n"
        "execution:\n  kind: local\n  n_workers: 2\n  threads_per_worker: 1\n"
    )
    command = [sys.executable, "-m", "eelt.cli", "train", "--model", family, "--config",
               str(config), "--data", str(data), "--out", str(point / "models"), "--quiet",
               "--json"]  # fmt: skip
    cpu0, t0 = children_cpu_s(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall_s, cpu_s = time.perf_counter() - t0, children_cpu_s() - cpu0
    if done.returncode != 0:
        raise SystemExit(f"{family} N={n}: eelt train failed:\n{done.stderr[-2000:]}")
    result = {
        "family": family,
        "n_frames": n,
        "members": members,
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "training": json.loads(done.stdout),
        **test_errors(point / "models"),
    }
    result_file.write_text(json.dumps(result, indent=1))
    return result


def test_errors(models: Path, test: Path = TEST) -> dict:
    """RMSE of the ensemble's mean and of each member on the ``test`` file, overall and per
    ``temperature_K`` of its frames: forces meV/A, energies meV/atom."""
    from eelt.model.families import load_ensemble

    ensemble = load_ensemble(models)
    frames = ase.io.read(test, ":")
    energies, forces = [], []
    for start in range(0, len(frames), 16):
        out = ensemble.predict(frames[start : start + 16])
        energies.append(out["energy"].double().detach().numpy())
        forces.append(out["forces"].double().detach().numpy())
    energy, force = np.concatenate(energies, 1), np.concatenate(forces, 1)  # (K, F), (K, N, 3)
    ref_e = np.array([a.get_potential_energy() for a in frames])
    ref_f = np.concatenate([a.get_forces() for a in frames])
    n_atoms = np.array([len(a) for a in frames])
    atom_frame = np.repeat(np.arange(len(frames)), n_atoms)

    def rmse(pred_e: np.ndarray, pred_f: np.ndarray, keep: np.ndarray) -> tuple[float, float]:
        de = (pred_e - ref_e)[keep] / n_atoms[keep]
        df = (pred_f - ref_f)[np.isin(atom_frame, np.flatnonzero(keep))]
        return 1e3 * float(np.sqrt((df**2).mean())), 1e3 * float(np.sqrt((de**2).mean()))

    everything = np.ones(len(frames), bool)
    mean_f, mean_e = rmse(energy.mean(0), force.mean(0), everything)
    temperatures = np.array([a.info.get("temperature_K", np.nan) for a in frames])
    per_t = {
        f"{t:.0f}": rmse(energy.mean(0), force.mean(0), temperatures == t)[0]
        for t in sorted(set(temperatures[~np.isnan(temperatures)]))
    }
    members = [rmse(energy[k], force[k], everything) for k in range(len(energy))]
    return {
        "n_test": len(frames),
        "force_rmse_meV_per_A": mean_f,
        "energy_rmse_meV_per_atom": mean_e,
        "force_rmse_by_temperature_meV_per_A": per_t,
        "member_force_rmse_meV_per_A": [m[0] for m in members],
        "member_energy_rmse_meV_per_atom": [m[1] for m in members],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--families", nargs="+", default=["mace", "deeppot"])
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=Path("runs/bench-families"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = []
    for n in args.sizes:
        for family in args.families:
            r = train_point(family, n, args.members, args.out_dir)
            per_t = " / ".join(
                f"{v:.1f}" for v in r["force_rmse_by_temperature_meV_per_A"].values()
            )
            members = ", ".join(f"{v:.1f}" for v in r["member_force_rmse_meV_per_A"])
            rows.append(
                f"| {family} | {n} | {r['force_rmse_meV_per_A']:.1f} | {per_t} | {members} | "
                f"{r['energy_rmse_meV_per_atom']:.2f} | {r['wall_s'] / 60:.1f} | "
                f"{r['cpu_s'] / 60:.1f} |"
            )
            print(rows[-1], flush=True)
    temps = "/".join(r["force_rmse_by_temperature_meV_per_A"])
    print(f"\n| family | frames | force RMSE, mean (meV/A) | by T {temps} K | members | "
          "energy RMSE (meV/atom) | wall (min) | CPU (min) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
