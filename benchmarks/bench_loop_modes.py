"""The water example as it is (two stages, six iterations), run three ways on the same cores:
synchronous with the stacked trainer (the default), synchronous with one training job per member
(``train.stacks`` = ensemble size: stacks of one, as the per-member trainer before it), and
streaming.

    python benchmarks/bench_loop_modes.py [--runs synchronous members streaming] [--target 20]
        [--out-dir runs/bench-loop-modes] [--evaluate-only]

Each run is ``eelt run --plain --quiet`` from a fresh run directory. Streaming uses the same MD
steps per label and per test frame as an iteration: walker segments of 250 steps, a generation
per ``max_candidates`` (20) new labels, the candidate cap over 16 segments (one iteration's
walkers x 1000 steps), one test frame per round; each stage ends with its third generation,
as each synchronous stage ends with its third iteration. Every ensemble of every run is then
evaluated on the pooled held-out frames of all runs (see bench_streaming.evaluate); the
summary gives the wall time, the mean wall time of a training, the loop's wall over the DFT's
own wall and over its labeling stages, and the workers' busy share.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_streaming import evaluate  # noqa: E402

RUNS = ("synchronous", "members", "streaming")


def config(name: str, out: Path) -> Path:
    folder = ROOT / "examples" / "water"
    data = yaml.safe_load((folder / "eelt.yaml").read_text())
    data["name"] = f"water-{name}"
    data["system"]["structures"] = [str(folder / s) for s in data["system"]["structures"]]
    if name == "members":
        data["train"]["stacks"] = data["train"].get("ensemble_size", 4)
    if name == "streaming":
        stage = data["explore"]["stages"][0]
        n_walkers = len(stage["temperatures_K"]) * stage.get("walkers_per_condition", 1)
        segment = 250
        data["loop"].update(
            {
                "mode": "streaming",
                "segment_steps": segment,
                "generation_labels": data["examine"]["max_candidates"],
                "window_segments": n_walkers * stage["n_steps"] // segment,
            }
        )
        per_iteration = data["examine"].get("test_frames", 4)
        data["examine"]["test_frames"] = max(1, per_iteration * segment // stage["n_steps"])
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS)
    parser.add_argument("--target", type=float, default=20.0, help="median test force RMSE, meV/A")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/bench-loop-modes"))
    parser.add_argument("--evaluate-only", action="store_true", help="reuse the runs")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    runs = {}
    for name in args.runs:
        run = args.out_dir / name
        mode = "streaming" if name == "streaming" else "synchronous"
        if not args.evaluate_only:
            cfg = config(name, args.out_dir)
            t0 = time.time()
            subprocess.run(
                [sys.executable, "-m", "eelt.cli", "run", str(cfg), "--run-dir", str(run),
                 "--plain", "--quiet"], check=True,
            )  # fmt: skip
            (run / "bench_wall.json").write_text(json.dumps([t0, time.time() - t0]))
        t0, wall = json.loads((run / "bench_wall.json").read_text())
        runs[name] = (mode, t0, wall)
    summary = evaluate(args.out_dir, runs, args.target)
    (args.out_dir / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
