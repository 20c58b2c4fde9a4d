"""What a training leaves beside its members and reads back on resume: metrics.json (each
member's result and the ensemble's summary) and, for a member whose results were not written,
its learning curve's last row."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from eelt.atomic import read_json, write_json
from eelt.train.curves import read_curve
from eelt.train.result import MemberResult


def known_results(metrics_path: Path) -> dict[int, MemberResult]:
    """The members' results in a metrics.json (none when it is missing), by member."""
    known: dict[int, MemberResult] = {}
    if Path(metrics_path).is_file():
        for d in read_json(metrics_path).get("members", []):
            r = MemberResult.from_dict(d)
            if Path(r.checkpoint).name == f"model-{r.member}.pt":
                known[r.member] = r
    return known


def summary(results: list[MemberResult]) -> dict:
    """The ensemble's mean and max of each error over members that have it (meV)."""

    def stats(name: str) -> dict:
        values = [getattr(r, name) for r in results if math.isfinite(getattr(r, name))]
        if not values:
            return {"mean": None, "max": None}
        return {"mean": float(np.mean(values)), "max": float(np.max(values))}

    return {
        "n_members": len(results),
        "members": [r.member for r in results],
        "train_energy_rmse_meV_per_atom": stats("train_energy_rmse_meV_per_atom"),
        "train_force_rmse_meV_per_A": stats("train_force_rmse_meV_per_A"),
        "val_energy_rmse_meV_per_atom": stats("val_energy_rmse_meV_per_atom"),
        "val_force_rmse_meV_per_A": stats("val_force_rmse_meV_per_A"),
    }


def write_metrics(path: Path, results: dict[int, MemberResult]) -> None:
    """metrics.json: the members' results in order and their summary; atomic."""
    ordered = [results[m] for m in sorted(results)]
    write_json(path, {"members": [r.to_dict() for r in ordered], "ensemble": summary(ordered)})


def previous_result(
    out_dir: Path, m: int, seed: int, known: dict[int, MemberResult]
) -> MemberResult:
    """Result of a member trained by an earlier call: from metrics.json, else from the last
    row of its learning curve (a crash between checkpoint and metrics.json)."""
    if m in known:
        return known[m]
    checkpoint = out_dir / f"model-{m}.pt"
    curve = checkpoint.with_suffix(".csv")
    rows = read_curve(curve) if curve.is_file() else []
    last = rows[-1] if rows else {}
    return MemberResult(
        member=m,
        checkpoint=str(checkpoint),
        steps=int(last.get("step", 0)),
        wall_s=float(last.get("wall_s", math.nan)),
        train_energy_rmse_meV_per_atom=last.get("train_energy_rmse_meV_per_atom", math.nan),
        train_force_rmse_meV_per_A=last.get("train_force_rmse_meV_per_A", math.nan),
        val_energy_rmse_meV_per_atom=last.get("val_energy_rmse_meV_per_atom", math.nan),
        val_force_rmse_meV_per_A=last.get("val_force_rmse_meV_per_A", math.nan),
        seed=seed,
    )
