"""What the Prefect UI shows of a run: the contents of its artifacts, built from the stage
reports and the run's state (plain functions; the flow publishes them).

Plots travel inside markdown artifacts as PNG data URIs: Prefect's UI renders them in the
artifact's page (measured with Prefect 3.8 in Chromium), and the run directory stays the only
place files live. An image artifact would also show the whole data URI as its link text.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from eelt.orchestration.status_columns import labels_line, time_line

MAX_IMAGE_BYTES = 2 * 2**20  # a larger PNG is named, not embedded


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes."""
    key = "-".join(parts).lower()
    return "".join(c if c.isalnum() or c == "-" else "-" for c in key)


def image_markdown(path: Path, alt: str) -> str:
    """``path`` as a markdown image with a PNG data URI (or a line saying why not)."""
    path = Path(path)
    if not path.is_file():
        return f"*{alt}: not written*"
    data = path.read_bytes()
    if len(data) > MAX_IMAGE_BYTES:
        return f"*{alt}: `{path}` ({len(data) / 2**20:.1f} MiB, too large to embed)*"
    return f"![{alt}](data:image/png;base64,{base64.b64encode(data).decode()})"


def iteration_rows(
    record: dict[str, Any], times: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The iteration's table: examination, labels, calibration, training, and the wall time of
    each stage (``times``: eelt.orchestration.timing's record of the iteration)."""
    exam = record["examine"]
    rows = [
        {"quantity": "frames explored", "value": exam["n_total"]},
        {"quantity": "accurate ratio", "value": round(exam["accurate_ratio"], 4)},
        {"quantity": "candidate ratio", "value": round(exam["candidate_ratio"], 4)},
        {"quantity": "failed ratio", "value": round(exam["failed_ratio"], 4)},
        {"quantity": "candidates selected", "value": exam["n_selected"]},
        {"quantity": "converged", "value": exam["converged"]},
    ]
    if "label" in record:
        label = record["label"]
        rows += [
            {"quantity": "labels done", "value": label["n_labeled"]},
            {"quantity": "test frames labeled", "value": label.get("n_test_labeled", 0)},
            {"quantity": "labels failed", "value": label["n_failed"]},
        ]
        for kind, n in sorted(label.get("failed_by_kind", {}).items()):
            rows.append({"quantity": f"labels failed: {kind}", "value": n})
    calibration = record.get("calibrate", {})
    explorer = calibration.get("explorer_test", {})
    cal = calibration.get("calibration", {})
    for quantity, value, digits in (
        ("explorer test force RMSE (meV/A)", explorer.get("force_rmse_meV_per_A"), 2),
        ("explorer test energy RMSE (meV/atom)", explorer.get("energy_rmse_meV_per_atom"), 3),
        ("deviation-error Spearman", cal.get("spearman"), 3),
        ("deviation at the target error (eV/A)", cal.get("crossing_eV_per_A"), 4),
    ):
        if value is not None:
            rows.append({"quantity": quantity, "value": round(value, digits)})
    train = record.get("train", {})
    for quantity, key, digits in (
        ("validation energy RMSE (meV/atom)", "val_energy_rmse_meV_per_atom", 3),
        ("validation force RMSE (meV/A)", "val_force_rmse_meV_per_A", 2),
    ):
        if train.get(key) is not None:
            rows.append({"quantity": quantity, "value": round(train[key], digits)})
    test = train.get("test", {})
    if test.get("force_rmse_meV_per_A") is not None:
        rows.append(
            {
                "quantity": f"new ensemble test force RMSE (meV/A, {test['n_frames']} frames)",
                "value": round(test["force_rmse_meV_per_A"], 2),
            }
        )
    for stage, t in (times or {}).items():
        rows.append({"quantity": f"{stage} wall time (s)", "value": round(t["wall_s"], 1)})
    return rows


def iteration_plots_markdown(root: Path, index: int, record: dict[str, Any]) -> str:
    """The iteration's plots: deviation histogram, calibration, learning curves."""
    it = Path(root) / f"iter-{index:03d}"
    exam = record["examine"]
    levels = (
        f"trust levels {exam.get('trust_lo_eV_per_A', float('nan')):.3g} / "
        f"{exam.get('trust_hi_eV_per_A', float('nan')):.3g} eV/A"
        if "trust_lo_eV_per_A" in exam
        else ""
    )
    return "\n".join(
        [
            f"# Iteration {index}: plots",
            "",
            "## Max force deviation of the explored frames",
            "",
            f"Accurate {exam['accurate_ratio']:.3f}, candidate {exam['candidate_ratio']:.3f}, "
            f"failed {exam['failed_ratio']:.3f}" + (f"; {levels}" if levels else "") + ".",
            "",
            image_markdown(it / "examine" / "deviation.png", "deviation histogram"),
            "",
            "## Calibration: predicted deviation against the true force error",
            "",
            image_markdown(it / "examine" / "calibration.png", "calibration"),
            "",
            "## Learning curves of the new ensemble",
            "",
            image_markdown(it / "train" / "learning_curves.png", "learning curves"),
        ]
    )


def generation_plots_markdown(root: Path, row: dict[str, Any]) -> str:
    """A streaming generation's plots: the calibration of the ensembles that explored its
    rounds, and its learning curves."""
    g = row["generation"]
    folder = Path(root) / "stream" / "generations" / f"gen-{g:03d}"
    rmse = row.get("test_force_rmse_meV_per_A")
    explorer = row.get("explorer_test_force_rmse_meV_per_A")
    return "\n".join(
        [
            f"# Generation {g}: plots",
            "",
            f"Rounds {row['rounds'][0]}-{row['rounds'][1]} (stage {row['stage']}), explored by "
            f"generation(s) {', '.join(str(e) for e in row['explored_by'])}; "
            f"{row['n_labeled']} new labels, {row['n_test_labeled']} test frames; "
            f"explorer test F RMSE {'-' if explorer is None else format(explorer, '.1f')} meV/A, "
            f"this generation's {'-' if rmse is None else format(rmse, '.1f')} meV/A on "
            f"{row['n_test_frames_total']} test frames.",
            "",
            "## Calibration: predicted deviation against the true force error",
            "",
            image_markdown(folder / "calibration.png", "calibration"),
            "",
            "## Learning curves",
            "",
            image_markdown(folder / "learning_curves.png", "learning curves")
            if row["n_labeled"]
            else "No new labels: not trained (the previous generation's models, measured on the "
            "new test frames).",
        ]
    )


def history_markdown(state: dict[str, Any], plot: Path | None = None) -> str:
    """The run's history: status, labels, one row per iteration, and the learning curve."""

    def fmt(value, spec=".1f"):
        return "-" if value is None else format(value, spec)

    lines = [
        f"# eelt run `{state['name']}`: {state['status']}",
        "",
        f"{state.get('status_detail', '')}",
        "",
        "L" + labels_line(state)[1:],
        "",
        time_line(state),
        "",
    ]
    if plot is not None:
        lines += [image_markdown(plot, "test force error against labels"), ""]
    lines += [
        "| iteration | stage | explored | accurate | candidate | failed | labeled + test | labels "
        "total | explorer test F RMSE (meV/A) | new test F RMSE (meV/A) | yardstick F RMSE "
        "(meV/A) | val. F RMSE (meV/A) | Spearman |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for h in state["iterations"]:
        lines.append(
            f"| {h['iteration']} | {h['stage']} | {h['n_explored']} | {h['accurate_ratio']:.3f} | "
            f"{h['candidate_ratio']:.3f} | {h['failed_ratio']:.3f} | {h['n_labeled']} + "
            f"{h.get('n_test_labeled', 0)} | {h.get('labels_total', '-')} | "
            f"{fmt(h.get('explorer_test_force_rmse_meV_per_A'))} | "
            f"{fmt(h.get('test_force_rmse_meV_per_A'))} | "
            f"{fmt(h.get('yardstick_force_rmse_meV_per_A'))} | "
            f"{fmt(h.get('val_force_rmse_meV_per_A'))} | {fmt(h.get('calibration_spearman'), '.2f')} |"
        )
    lines += [
        "",
        "Explorer test: the ensemble that explored, on that iteration's held-out frames; new "
        "test: the ensemble trained in it, on all held-out frames so far (the run's learning "
        "curve: true error against labels); yardstick: the same ensemble on frames no model "
        "chose (examine.yardstick_data; - without one).",
    ]
    return "\n".join(lines)
