"""Whole EELT runs, one per config (e.g. the same config with each model family), scored on a
held-out set that no run made: labels against held-out error, iteration by iteration.

    nice -n 19 python benchmarks/bench_family_runs.py --heldout FILE.extxyz
        CONFIG [CONFIG ...] [--out-dir runs/bench-family-runs]

Each config runs with ``eelt run CONFIG --plain --quiet --run-dir OUT/NAME`` (a finished run is
not run again: eelt resumes and finds nothing to do), then the initial ensemble and every
iteration's ensemble are evaluated on the held-out file (make one with make_heldout.py). Prints
one table per run: QM labels so far (training + the run's own test frames), the held-out force
RMSE of the ensemble's mean overall and per temperature, its energy RMSE, the run's own test
force RMSE (frames its walkers found) and the run's wall time so far.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml
from bench_families import test_errors


def run(config: Path, root: Path) -> float:
    """Run (or resume) ``config`` into ``root``; the wall seconds this call took."""
    t0 = time.perf_counter()
    command = [sys.executable, "-m", "eelt.cli", "run", str(config), "--plain", "--quiet",
               "--run-dir", str(root)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{config}: eelt run failed:\n{done.stdout[-1000:]}{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def rows(root: Path, heldout: Path) -> list[str]:
    state = json.loads((root / "state.json").read_text())
    init = test_errors(root / "init" / "train", heldout)
    out = [_row("init", state["n_init_labeled"], init, None, state["init_time"]["wall_s"])]
    wall_s = state["init_time"]["wall_s"]
    for it in state["iterations"]:
        wall_s += it["wall_s"]
        # an iteration that labeled no candidate trained nothing: its report names the models
        trained = json.loads(
            (root / f"iter-{it['iteration']:03d}" / "train" / "report.json").read_text()
        )
        errors = test_errors(root / trained["models_dir"], heldout)
        own = it["test_force_rmse_meV_per_A"]
        out.append(_row(str(it["iteration"]), it["labels_total"], errors, own, wall_s))
    return out


def _row(name: str, labels: int, errors: dict, own: float | None, wall_s: float) -> str:
    per_t = " / ".join(f"{v:.0f}" for v in errors["force_rmse_by_temperature_meV_per_A"].values())
    own_text = "" if own is None else f"{own:.1f}"
    return (
        f"| {name} | {labels} | {errors['force_rmse_meV_per_A']:.1f} | {per_t} | "
        f"{errors['energy_rmse_meV_per_atom']:.2f} | {own_text} | {wall_s / 60:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", type=Path, nargs="+")
    parser.add_argument("--heldout", type=Path, required=True)
    parser.add_argument("--out-dir", type=Path, default=Path("runs/bench-family-runs"))
    args = parser.parse_args()
    for config in args.configs:
        name = yaml.safe_load(config.read_text())["name"]
        root = args.out_dir / name
        print(f"{config}: {run(config, root):.0f} s", flush=True)
        print(f"\n{name} ({config}), held-out {args.heldout.name}:")
        print(
            "| iteration | QM labels | held-out force RMSE (meV/A) | by temperature | "
            "energy RMSE (meV/atom) | own test force RMSE | wall (min) |"
        )
        print("|---|---|---|---|---|---|---|")
        print("\n".join(rows(root, args.heldout)), flush=True)


if __name__ == "__main__":
    main()
