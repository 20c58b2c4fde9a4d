"""Label efficiency: does choosing frames by ensemble deviation beat choosing them at random?

    python benchmarks/bench_label_efficiency.py [--run-dir runs/ethanol-le] [--labels 41 61]
        [--data benchmarks/data/ethanol_pbe_def2svp_test.extxyz]

1. ``eelt run benchmarks/label_efficiency/ethanol.yaml --plain``: ethanol from one geometry,
   PySCF PBE/def2-SVP labels, the loop's defaults (init, trust levels, selection, training), one
   stage at 300/600 K, 4 iterations, 10 candidates and 4 held-out test frames per iteration.
2. ``eelt baseline RUN --labels N ... --data FILE``: for each N, one ensemble trained from
   scratch on the run's own training data cut to N frames ("selected") and one on the run's
   initial frames plus random explored frames ("random"), same train settings.
3. Prints the run's own learning curve (true error on its held-out frames against labels),
   the baseline table on the run's test frames and on ``--data`` (the project's held-out
   ethanol set, MD at 300/450/600 K), the labels random needs to match the selection's error
   (log-log interpolation between the N points), the share of explored frames labeled and the
   DFT core-hours. Both steps resume: a rerun computes no label and trains no finished member.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "label_efficiency" / "ethanol.yaml"
DATA = HERE / "data" / "ethanol_pbe_def2svp_test.extxyz"


def labels_for(rmse: float, points: list[tuple[int, float]]) -> float | None:
    """Labels at which the curve through ``points`` (N, RMSE) reaches ``rmse``, by log-log
    interpolation (or extrapolation from the last two points); None if it does not fall."""
    pts = sorted(p for p in points if p[1] is not None)
    if len(pts) < 2:
        return None
    pairs = list(zip(pts, pts[1:], strict=False))
    (n0, r0), (n1, r1) = next(
        (p for p in pairs if min(p[0][1], p[1][1]) <= rmse <= max(p[0][1], p[1][1])), pairs[-1]
    )
    if r0 == r1:
        return None
    slope = (math.log(r1) - math.log(r0)) / (math.log(n1) - math.log(n0))
    if slope >= 0:
        return None
    return math.exp(math.log(n0) + (math.log(rmse) - math.log(r0)) / slope)


def hydroxyl_dihedral_deg(frames) -> np.ndarray:
    """|H-O-C-C| (degrees, 0-180) of ethanol frames: near 180 trans, near 60 gauche."""
    sym = frames[0].get_chemical_symbols()
    d = frames[0].get_all_distances()
    o = sym.index("O")
    c_near, c_far = sorted((i for i, s in enumerate(sym) if s == "C"), key=lambda c: d[o, c])
    h = min((i for i, s in enumerate(sym) if s == "H"), key=lambda i: d[o, i])
    angles = np.array([f.get_dihedral(h, o, c_near, c_far) for f in frames])
    return np.abs((angles + 180.0) % 360.0 - 180.0)


def by_rotor(models_dir: Path, frames) -> dict[str, dict]:
    """Test errors of an ensemble on the frames with |H-O-C-C| below / above 90 degrees."""
    from eelt.model import Ensemble
    from eelt.train import ErrorSums, predict_frames

    pred = predict_frames(Ensemble.load(models_dir), frames)
    dih = hydroxyl_dihedral_deg(frames)
    return {
        name: ErrorSums.of(pred.subset(np.flatnonzero(mask))).metrics()
        for name, mask in (("gauche-like (<90)", dih < 90), ("trans-like (>=90)", dih >= 90))
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/ethanol-le"))
    parser.add_argument("--labels", type=int, nargs="+", default=[41, 61])
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()

    eelt = [sys.executable, "-m", "eelt.cli"]
    subprocess.run(
        [*eelt, "run", str(args.config), "--plain", "--quiet", "--run-dir", str(args.run_dir)],
        check=True,
    )
    cmd = [*eelt, "baseline", str(args.run_dir), "--json", "--quiet", "--data", str(args.data)]
    for n in args.labels:
        cmd += ["--labels", str(n)]
    report = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    state = json.loads((args.run_dir / "state.json").read_text())

    print(f"run {state['name']}: {state['status']} ({state['status_detail']})")
    print("iteration  labels  explorer test F  new-ensemble test F  (meV/A, run's held-out)")
    for h in state["iterations"]:
        print(
            f"{h['iteration']:9d}  {h['labels_total']:6d}  "
            f"{h['explorer_test_force_rmse_meV_per_A']:15.1f}  {h['test_force_rmse_meV_per_A']:19.1f}"
        )
    n_explored = sum(h["n_explored"] for h in state["iterations"])
    print(
        f"labels: {state['n_labels']} ({state['n_init_labeled']} initial, "
        f"{state['n_train_labels']} training, {state['n_test_labels']} test); explored frames "
        f"labeled: {(state['n_labels'] - state['n_init_labeled']) / n_explored:.1%} of "
        f"{n_explored}; DFT {state['dft_core_hours']:.2f} core-hours"
    )
    print()
    print("N   set        run test F  run test E  --data F  --data E   (meV/A, meV/atom)")
    curves: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for entry in report["results"]:
        for name in ("selected", "random"):
            r = entry.get(name)
            if r is None:
                continue
            row = [r["test"]["force_rmse_meV_per_A"], r["test"]["energy_rmse_meV_per_atom"]]
            row += [r["data"]["force_rmse_meV_per_A"], r["data"]["energy_rmse_meV_per_atom"]]
            print(f"{entry['n_labels']:<3d} {name:9s} " + "  ".join(f"{v:10.2f}" for v in row))
            curves.setdefault((name, "test"), []).append((entry["n_labels"], row[0]))
            curves.setdefault((name, "data"), []).append((entry["n_labels"], row[2]))
    print()
    for where in ("test", "data"):
        for n, rmse in curves.get(("selected", where), []):
            need = labels_for(rmse, curves.get(("random", where), []))
            need_text = (
                "not reached (random's error does not fall)" if need is None else f"{need:.0f}"
            )
            print(
                f"{where}: selection reaches {rmse:.1f} meV/A with {n} labels; random needs "
                f"{need_text}"
            )
    print()
    data = ase.io.read(args.data, ":")
    explored = [
        f for p in sorted(args.run_dir.glob("iter-*/explore/*.extxyz")) for f in ase.io.read(p, ":")
    ]
    dih = hydroxyl_dihedral_deg(explored)
    print(
        f"hydroxyl rotor |H-O-C-C|: explored frames below 90 degrees: {(dih < 90).mean():.1%}; "
        f"--data frames: {(hydroxyl_dihedral_deg(data) < 90).mean():.1%}"
    )
    last = report["results"][-1]
    ensembles = {"run (final ensemble)": args.run_dir / state["models_dir"]}
    for name in ("selected", "random"):
        if last.get(name):
            ensembles[f"{name} N={last['n_labels']}"] = args.run_dir / last[name]["models_dir"]
    for name, models in ensembles.items():
        parts = by_rotor(models, data)
        print(
            f"{name}: --data force RMSE "
            + ", ".join(
                f"{k} {v['force_rmse_meV_per_A']:.1f} ({v['n_frames']})" for k, v in parts.items()
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
