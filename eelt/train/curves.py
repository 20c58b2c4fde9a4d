"""Learning curves: one csv per member (step, lr, loss, train/validation RMSE) and a png of all.

Rows at logged steps hold the loss and RMSE of that step's training batch (before its update,
as DeePMD's lcurve) and of the full validation set; the last row (step = steps) holds the
final model's RMSE on the full training and validation sets.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from eelt.atomic import atomic_write, write_text

COLUMNS = (
    "step",
    "lr",
    "loss",
    "train_energy_rmse_meV_per_atom",
    "train_force_rmse_meV_per_A",
    "val_energy_rmse_meV_per_atom",
    "val_force_rmse_meV_per_A",
    "wall_s",
)


def write_curve(path: str | Path, rows: Sequence[Mapping[str, float]]) -> Path:
    """Write rows (dicts keyed by COLUMNS) as csv, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in COLUMNS})
    return write_text(path, buf.getvalue())


def read_curve(path: str | Path) -> list[dict[str, float]]:
    """Rows of a learning-curve csv, values as floats (step as int)."""
    with open(path, newline="") as fh:
        rows = []
        for raw in csv.DictReader(fh):
            row = {k: float(v) if v not in ("", None) else math.nan for k, v in raw.items()}
            row["step"] = int(row["step"])
            rows.append(row)
    return rows


def plot_curves(curves: Mapping[str, Sequence[Mapping[str, float]]], path: str | Path) -> Path:
    """Plot force and energy RMSE (train dashed, validation solid) vs step for every member."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax_f, ax_e = fig.subplots(1, 2)
    for k, (label, rows) in enumerate(curves.items()):
        color = f"C{k % 10}"
        steps = [r["step"] for r in rows]
        for ax, kind in ((ax_f, "force_rmse_meV_per_A"), (ax_e, "energy_rmse_meV_per_atom")):
            train = [r[f"train_{kind}"] for r in rows]
            val = [r[f"val_{kind}"] for r in rows]
            ax.plot(steps, train, "--", color=color, lw=1, alpha=0.7)
            if any(math.isfinite(v) for v in val):
                ax.plot(steps, val, "-", color=color, lw=1.5, label=label)
            else:
                ax.plot([], [], "-", color=color, label=label)
    ax_f.set_ylabel("force RMSE (meV/Å)")
    ax_e.set_ylabel("energy RMSE (meV/atom)")
    for ax in (ax_f, ax_e):
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    ax_f.legend(title="validation (solid), train (dashed)", fontsize="small")
    return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
