"""Score ensembles on several held-out sets made apart from the runs: the worst set decides.

    python benchmarks/score_heldout.py --heldout A.extxyz [B.extxyz ...] \\
        (--run RUN_DIR [RUN_DIR ...] | --models DIR [DIR ...]) [--json OUT.json]

A set is one held-out file's frames at one ``temperature_K`` (make them with make_heldout.py,
e.g. one file from the start structure and one from a conformer no run started from). For a
run, every ensemble it trained is scored (the initial one and each iteration's, with the run's
QM labels so far: training, test and yardstick frames); for a models dir (``eelt baseline``'s
``baseline/N*/SET``, an ``eelt train`` output) just that one. Prints one row per ensemble: its
labels, the force RMSE of the ensemble's mean on each set (meV/A), the worst of them, and the
worst energy RMSE (meV/atom).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench_families import test_errors


def run_ensembles(root: Path) -> list[tuple[str, int, Path]]:
    """(name, QM labels so far, models dir) of each ensemble a run trained, oldest first."""
    state = json.loads((root / "state.json").read_text())
    init = json.loads((root / "init" / "label" / "report.json").read_text())
    n_init = init["n_labeled"] + init.get("n_test_labeled", 0)
    out = [(f"{root.name} init", n_init, root / "init" / "train")]
    for it in state["iterations"]:
        report = json.loads(
            (root / f"iter-{it['iteration']:03d}" / "train" / "report.json").read_text()
        )
        out.append(
            (f"{root.name} {it['iteration']}", it["labels_total"], root / report["models_dir"])
        )
    return out


def scores(models: Path, heldout: list[Path]) -> tuple[dict[str, float], float, float]:
    """Force RMSE per set ('file@T'), the worst force RMSE and the worst energy RMSE."""
    per_set, worst_e = {}, 0.0
    for path in heldout:
        errors = test_errors(models, path)
        for t, value in errors["force_rmse_by_temperature_meV_per_A"].items():
            per_set[f"{path.stem}@{t}K"] = value
        worst_e = max(worst_e, errors["energy_rmse_meV_per_atom"])
    return per_set, max(per_set.values()), worst_e


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heldout", type=Path, nargs="+", required=True)
    parser.add_argument("--run", type=Path, nargs="*", default=[])
    parser.add_argument("--models", type=Path, nargs="*", default=[])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    ensembles = [e for root in args.run for e in run_ensembles(root)]
    for models in args.models:
        manifest = models / "set.json"
        n = json.loads(manifest.read_text())["n_labels"] if manifest.is_file() else -1
        ensembles.append((str(models), n, models))
    rows, header = [], None
    for name, labels, models in ensembles:
        per_set, worst_f, worst_e = scores(models, args.heldout)
        if header is None:
            header = list(per_set)
            print("| ensemble | QM labels | " + " | ".join(header) + " | worst F | worst E |")
            print("|---" * (len(header) + 4) + "|")
        cells = " | ".join(f"{per_set[k]:.1f}" for k in header)
        print(f"| {name} | {labels} | {cells} | {worst_f:.1f} | {worst_e:.2f} |", flush=True)
        rows.append({"ensemble": name, "labels": labels, "force_rmse_by_set_meV_per_A": per_set,
                     "worst_force_rmse_meV_per_A": worst_f,
                     "worst_energy_rmse_meV_per_atom": worst_e})  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
