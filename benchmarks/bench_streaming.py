"""Synchronous against streaming loop on the same config and cores: wall time to reach a test
force RMSE, loop wall over the DFT's own wall (and over the labeling wall), worker busy share.

Runs the water example's first stage (PySCF PBE/def2-SVP, 300/500 K walkers), or with
``--example ethanol`` the ethanol example's stage as plain MD at 300 and 600 K, twice with
`eelt run --plain`, once with `loop.mode: synchronous` and once `streaming` (walker segments of
``--segment-steps``, a generation per ``max_candidates`` new labels), both stopped by the same
label budget. Every ensemble either run trained (iterations, generations) is then evaluated on
the pooled held-out test frames of both runs (PySCF labels, drawn at random from each run's
explored frames), against the time its models were written.

    python benchmarks/bench_streaming.py [--example water] [--max-labels 110] [--target 30] \
        [--out-dir runs/bench-streaming]
    python benchmarks/bench_streaming.py --example ethanol --segment-steps 500 \
        --max-labels 76 --target 100 --out-dir runs/bench-streaming-ethanol
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


EXAMPLES = {"water": "examples/water", "ethanol": "examples/ethanol-metad"}


def config(example: str, mode: str, max_labels: int, segment_steps: int, out: Path) -> Path:
    folder = ROOT / EXAMPLES[example]
    data = yaml.safe_load((folder / "eelt.yaml").read_text())
    data["name"] = f"{example}-{mode}"
    data["system"]["structures"] = [str(folder / s) for s in data["system"]["structures"]]
    stage = data["explore"]["stages"][0]
    if example == "ethanol":  # plain MD at two temperatures: the metadynamics example's stage
        stage.pop("biases", None)  # without its bias (hills would restart every segment)
        stage.update({"temperatures_K": [300, 600], "walkers_per_condition": 1})
    stage["max_iterations"] = 100
    data["explore"]["stages"] = [stage]
    loop = data.setdefault("loop", {})
    loop.update({"mode": mode, "max_labels": max_labels, "max_iterations": 100})
    n_walkers = len(stage["temperatures_K"]) * stage.get("walkers_per_condition", 1)
    if mode == "streaming":  # the same MD steps per max_candidates labels as an iteration
        loop.update(
            {
                "segment_steps": segment_steps,
                "generation_labels": data["examine"].get("max_candidates", 20),
                "window_segments": n_walkers * max(stage["n_steps"] // segment_steps, 1),
            }
        )
        # the same held-out frames per MD step: examine.test_frames counts per round here
        per_iteration = data["examine"].get("test_frames", 4)
        data["examine"]["test_frames"] = max(1, per_iteration * segment_steps // stage["n_steps"])
    path = out / f"{mode}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def ensembles(run: Path, mode: str) -> list[tuple[str, Path, Path]]:
    """(name, models dir, report whose mtime says when they were ready), in order."""
    out = [("init", run / "init" / "train", run / "init" / "train" / "report.json")]
    if mode == "synchronous":
        for d in sorted(run.glob("iter-*/train")):
            if (d / "report.json").is_file() and list(d.glob("model-*.pt")):
                out.append((d.parent.name, d, d / "report.json"))
    else:
        for d in sorted((run / "stream" / "generations").glob("gen-*")):
            if (d / "report.json").is_file() and list(d.glob("model-*.pt")):
                out.append((d.name, d, d / "report.json"))
    return out


def train_walls(run: Path, mode: str) -> list[float]:
    """Wall seconds of each training after init (iterations' train stages, generations)."""
    if mode == "synchronous":
        files = sorted(run.glob("iter-*/timing.json"))
        return [json.loads(f.read_text())["train"]["wall_s"] for f in files
                if "train" in json.loads(f.read_text())]  # fmt: skip
    reports = sorted((run / "stream" / "generations").glob("gen-*/report.json"))
    return [json.loads(r.read_text())["wall_s"] for r in reports]


def evaluate(out_dir: Path, runs: dict[str, tuple[str, float, float]], target: float) -> dict:
    """Every ensemble of the runs ``out_dir/NAME`` (NAME: (mode, start time, wall s)) on the
    pooled held-out frames of all of them, against the time its models were ready; prints the
    tables and returns the summary by run."""
    from eelt.model import Ensemble
    from eelt.train import evaluate_rmse

    tests = []
    for name in runs:
        for f in sorted((out_dir / name / "data" / "test").glob("*.extxyz")):
            tests += ase.io.read(f, ":")
    print(f"pooled held-out frames: {len(tests)} (PySCF PBE/def2-SVP, all runs)")
    print("test F: force RMSE (meV/A) over all pooled frames, and the median of the frames' own")
    print("force RMSE (a few stretched frames far above trust_hi dominate the first)")
    print(
        f"{'run':12} {'ensemble':9} {'time (s)':>9} {'labels':>7} {'test F RMSE':>12} {'median':>7}"
    )
    summary = {}
    for name, (mode, t0, wall) in runs.items():
        run = out_dir / name
        state = json.loads((run / "state.json").read_text())
        labels = [state["n_init_labeled"]] + [h["labels_total"] for h in state["iterations"]]
        reached, median = None, None
        for i, (ens, models, report) in enumerate(ensembles(run, mode)):
            ensemble = Ensemble.load(models)
            rmse = evaluate_rmse(ensemble, tests)["force_rmse_meV_per_A"]
            median = float(
                np.median([evaluate_rmse(ensemble, [a])["force_rmse_meV_per_A"] for a in tests])
            )
            at = report.stat().st_mtime - t0
            n = labels[i] if i < len(labels) else None
            print(f"{name:12} {ens:9} {at:9.0f} {n if n is not None else '-':>7} {rmse:12.1f} "
                  f"{median:7.1f}")  # fmt: skip
            if reached is None and median <= target:
                reached = at
        t = state["time"]
        trains = train_walls(run, mode)
        summary[name] = {
            "mode": mode,
            "wall_s": wall,
            "labels": state["n_labels"],
            "final_median_meV_per_A": median,
            "reached_target_s": reached,
            "train_wall_mean_s": float(np.mean(trains)) if trains else None,
            "n_trainings": len(trains),
            "wall_over_label_wall": t.get("wall_over_label_wall"),
            "wall_over_dft_wall": t.get("wall_over_dft_wall"),
            "busy_share": t.get("busy_share"),
            "busy_s": t.get("busy_s"),
            "status": state["status"],
        }
    print()
    print(f"{'run':12} {'wall (s)':>9} {'labels':>7} {'final median':>13} "
          f"{'median to ' + format(target, 'g') + ' (s)':>18} {'train (s)':>10} "
          f"{'wall/DFT wall':>14} {'wall/label wall':>16} {'busy':>6} status")  # fmt: skip
    for name, s in summary.items():
        reached = f"{s['reached_target_s']:.0f}" if s["reached_target_s"] is not None else "never"
        ratio = f"{s['wall_over_label_wall']:.1f}" if s["wall_over_label_wall"] else "-"
        dft = f"{s['wall_over_dft_wall']:.1f}" if s.get("wall_over_dft_wall") else "-"
        busy = f"{s['busy_share']:.0%}" if s["busy_share"] is not None else "-"
        train = f"{s['train_wall_mean_s']:.1f}" if s["train_wall_mean_s"] else "-"
        print(
            f"{name:12} {s['wall_s']:9.0f} {s['labels']:7d} {s['final_median_meV_per_A']:13.1f} "
            f"{reached:>18} {train:>10} {dft:>14} {ratio:>16} {busy:>6} {s['status']}"
        )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", choices=sorted(EXAMPLES), default="water")
    parser.add_argument("--max-labels", type=int, default=110)
    parser.add_argument("--segment-steps", type=int, default=250)
    parser.add_argument("--target", type=float, default=30.0, help="test force RMSE, meV/A")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/bench-streaming"))
    parser.add_argument("--evaluate-only", action="store_true", help="reuse the two runs")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)

    walls: dict[str, tuple[float, float]] = {}
    for mode in ("synchronous", "streaming"):
        run = args.out_dir / mode
        if not args.evaluate_only:
            cfg = config(args.example, mode, args.max_labels, args.segment_steps, args.out_dir)
            t0 = time.time()
            subprocess.run(
                [sys.executable, "-m", "eelt.cli", "run", str(cfg), "--run-dir", str(run),
                 "--plain", "--quiet"], check=True,
            )  # fmt: skip
            walls[mode] = (t0, time.time() - t0)
            (run / "bench_wall.json").write_text(json.dumps(walls[mode]))
        else:
            walls[mode] = tuple(json.loads((run / "bench_wall.json").read_text()))

    summary = evaluate(args.out_dir, {m: (m, *w) for m, w in walls.items()}, args.target)
    (args.out_dir / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
