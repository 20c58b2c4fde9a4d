"""A run's report: one self-contained HTML file (tables, and every plot as a base64 data URI; no
script, no external resource), read from the run directory alone.

It holds the status tables of ``eelt status``, the labels and DFT core-hours, each iteration's
label failures by kind, the run's learning curve (:func:`learning_curve_png`, test force RMSE
against labels spent) and the PNGs the run writes: the initial and each iteration's training
curves, deviation histograms, calibration plots and the first few walkers' plots.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from eelt import atomic
from eelt.orchestration.rundir import RunDir
from eelt.orchestration.status_columns import (
    ACCURACY_CAPTION,
    ACCURACY_COLUMNS,
    ACCURACY_TITLE,
    EXPLORE_CAPTION,
    EXPLORE_COLUMNS,
    fmt,
    labels_line,
    run_title,
    stream_line,
)

REPORT_FILE = "report.html"  # in the run directory, by default
WALKER_PLOTS = 2  # walkers per iteration whose plots are embedded
FAILURES_SHOWN = 5  # failure reasons listed per iteration
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { padding: 0.2em 0.6em; text-align: right; border-bottom: 1px solid #ddd; }
td.text, th.text { text-align: left; }
caption { caption-side: bottom; text-align: left; font-size: 0.85em; color: #555; padding-top: 0.4em; }
figure { display: inline-block; margin: 0.4em; vertical-align: top; }
figure img { max-width: 520px; border: 1px solid #eee; }
figcaption, .meta { font-size: 0.8em; color: #666; }
"""


# --- the run's learning curve ------------------------------------------------------------------
def learning_curve_points(state: dict[str, Any]) -> dict[str, list[tuple[int, float, int]]]:
    """(labels, force RMSE in meV/A, iteration; -1 for the initial ensemble) per curve: ``new``
    (the ensemble trained in an iteration, on all held-out frames so far, at the labels spent
    by its end), ``explorer`` (the ensemble that explored an iteration, on that iteration's
    held-out frames, at the labels spent when it was trained) and ``yardstick`` (each ensemble
    on the frames no model chose)."""
    points: dict[str, list[tuple[int, float, int]]] = {"new": [], "explorer": [], "yardstick": []}
    before = state.get("n_init_labels", state.get("n_init_labeled", 0))
    rows = [(-1, before, state.get("init_yardstick_force_rmse_meV_per_A"), None, None)]
    for row in state.get("iterations", []):
        rows.append(
            (row["iteration"], row.get("labels_total"), row.get("yardstick_force_rmse_meV_per_A"),
             row.get("test_force_rmse_meV_per_A"), row.get("explorer_test_force_rmse_meV_per_A"))
        )  # fmt: skip
    for it, labels, yardstick, new, explorer in rows:
        for name, value, x in (
            ("explorer", explorer, before),
            ("new", new, labels),
            ("yardstick", yardstick, labels),
        ):
            if x is not None and value is not None and math.isfinite(value) and value > 0:
                points[name].append((int(x), float(value), int(it)))
        before = labels if labels is not None else before
    return points


def _learning_curve_figure(state: dict[str, Any]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global state, safe off the main thread

    fig = Figure(figsize=(6.4, 4.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    points = learning_curve_points(state)
    styles = {
        "new": ("o-", "C0", "new ensemble, all held-out frames so far"),
        "explorer": ("s--", "C1", "exploring ensemble, that iteration's held-out frames"),
        "yardstick": ("^:", "C2", "each ensemble on the yardstick (frames no model chose)"),
    }
    for name, (style, color, label) in styles.items():
        if points[name]:
            xs, ys, its = zip(*points[name], strict=True)
            ax.plot(xs, ys, style, color=color, label=label, ms=4)
            if name == "new":
                for x, y, it in points[name]:
                    ax.annotate(str(it), (x, y), textcoords="offset points", xytext=(3, 4),
                                fontsize=7, color=color)  # fmt: skip
    if any(points.values()):
        ax.set_yscale("log")
        ax.legend(fontsize="small", title="numbers: iteration", title_fontsize="small")
    else:
        ax.text(0.5, 0.5, "no held-out test errors yet", ha="center", va="center",
                transform=ax.transAxes)  # fmt: skip
    ax.set_xlabel("labels spent (cumulative, initial and test frames included)")
    ax.set_ylabel("held-out force RMSE (meV/Å)")
    ax.set_title(f"{state.get('name', '')}: true force error against labels", fontsize="medium")
    ax.grid(alpha=0.3, which="both")
    return fig


def learning_curve_png(state: dict[str, Any], path: str | Path) -> Path:
    """Save (atomically) the run's learning curve from its state (state.json): test force RMSE
    (meV/A, log scale) of each new ensemble and of each exploring ensemble against the labels
    spent; returns ``path``."""
    fig = _learning_curve_figure(state)
    return atomic.atomic_write(path, lambda p: fig.savefig(p, format="png"))


# --- HTML pieces -------------------------------------------------------------------------------
@dataclass
class Report:
    """What :func:`write_report` wrote: the file, and the run-relative paths of the PNGs it
    embeds (``learning curve`` for the one it drew)."""

    path: Path
    images: list[str] = field(default_factory=list)
    n_bytes: int = 0


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


class _Page:
    """The HTML body under construction and the images embedded in it."""

    def __init__(self, run: RunDir):
        self.run = run
        self.parts: list[str] = []
        self.images: list[str] = []

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def figure(self, png: bytes, name: str, caption: str = "") -> None:
        self.images.append(name)
        text = _e(caption or name)
        self.add(
            f'<figure><img src="{_data_uri(png)}" alt="{_e(name)}">'
            f"<figcaption>{text}</figcaption></figure>"
        )

    def png(self, path: Path, caption: str = "") -> bool:
        """Embed the PNG at ``path`` if it is one; False if it is missing or not a PNG."""
        if not path.is_file():
            return False
        data = path.read_bytes()
        if not data.startswith(PNG_SIGNATURE):
            return False
        self.figure(data, str(path.relative_to(self.run.root)), caption)
        return True


def _table(columns, rows: list[dict], caption: str, title: str = "") -> str:
    head = "".join(f"<th>{_e(col)}</th>" for col, _, _ in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{_e(fmt(r.get(key), spec))}</td>" for _, key, spec in columns)
        + "</tr>"
        for r in rows
    )
    heading = f"<h2>{_e(title)}</h2>" if title else ""
    return (
        f"{heading}<table><caption>{_e(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _failures(run: RunDir, state: dict[str, Any]) -> str:
    """Label failures per labeling (init and iterations): counts by kind and the first reasons."""
    label_dirs = [("init", run.init_dir("label"))] + [
        (str(row["iteration"]), run.stage_dir(row["iteration"], "label"))
        for row in state.get("iterations", [])
    ]
    rows, reasons = [], []
    for name, directory in label_dirs:
        report = run.read_report(directory)
        if report is None:
            continue
        by_kind = report.get("failed_by_kind", {})
        rows.append(
            "<tr>"
            f'<td class="text">{_e(name)}</td>'
            + "".join(
                f"<td>{_e(report.get(key, 0))}</td>"
                for key in ("n_labeled", "n_failed", "n_test_labeled", "n_test_failed")
            )
            + '<td class="text">'
            + f"{_e(', '.join(f'{k} {n}' for k, n in sorted(by_kind.items())) or '-')}</td>"
            "</tr>"
        )
        failed = report.get("failed", [])
        for f in failed[:FAILURES_SHOWN]:
            what = "test frame" if f.get("test_frame") else "frame"
            reasons.append(
                f"<li>{_e(name)}: {_e(what)} {_e(f.get('index', '?'))} "
                f"({_e(f.get('kind', 'error'))}): {_e(f.get('reason', ''))}</li>"
            )
        if len(failed) > FAILURES_SHOWN:
            reasons.append(f"<li>{_e(name)}: {len(failed) - FAILURES_SHOWN} more</li>")
    head = "".join(
        f'<th class="text">{_e(c)}</th>' if c in ("iter", "failed by kind") else f"<th>{_e(c)}</th>"
        for c in ("iter", "labeled", "failed", "test labeled", "test failed", "failed by kind")
    )
    caption = (
        "labeled / failed: training frames (init: the start structures and their perturbed "
        "copies); test: held-out frames; kinds as the labelers report them"
    )
    listing = f"<ul>{''.join(reasons)}</ul>" if reasons else "<p>No label failed.</p>"
    return (
        f"<h2>label failures</h2><table><caption>{_e(caption)}</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{listing}"
    )


def _walker_plots(page: _Page, iteration: int, max_walkers: int) -> None:
    """The plots of the first ``max_walkers`` walkers (their own and their free-energy plots)."""
    run = page.run
    explore = run.stage_dir(iteration, "explore")
    report = run.read_report(explore)
    if report is not None:
        walkers = [
            [run.root / w["plot"]]
            + [run.root / p for p in w.get("extra_files", []) if p.endswith(".png")]
            for w in report["walkers"]
            if w.get("plot")
        ]
    else:  # still exploring: whatever plots are there
        walkers = [[p] for p in sorted(explore.glob("*.png"))]
    shown = walkers[:max_walkers]
    if walkers:
        page.add(f'<p class="meta">walker plots: {len(shown)} of {len(walkers)} walkers shown</p>')
    for paths in shown:
        for path in paths:
            page.png(path)


def _iteration_number(path: Path) -> int | None:
    match = re.fullmatch(r"iter-(\d+)", path.name)
    return int(match.group(1)) if match else None


def render_report(
    run_dir: str | Path, max_walker_plots: int = WALKER_PLOTS
) -> tuple[str, list[str]]:
    """The report's HTML and the names of the PNGs it embeds."""
    run = RunDir(run_dir)
    state = run.read_state()
    page = _Page(run)
    title = run_title(state)
    page.add(f"<h1>{_e(title)}</h1>")
    page.add(f"<p>{_e(labels_line(state))}</p>")
    if line := stream_line(state):
        page.add(f"<p>{_e(line)}</p>")
    written = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page.add(
        f'<p class="meta">run directory {_e(run.root.resolve())}; report written {written}</p>'
    )

    page.add("<h2>learning curve</h2>")
    buf = io.BytesIO()
    _learning_curve_figure(state).savefig(buf, format="png")
    page.figure(
        buf.getvalue(),
        "learning curve",
        "test force RMSE against labels spent; new ensemble at the labels of its iteration's "
        "end, exploring ensemble at the labels it was trained on",
    )
    rows = state.get("iterations", [])
    page.add(_table(EXPLORE_COLUMNS, rows, EXPLORE_CAPTION, "iterations"))
    page.add(_table(ACCURACY_COLUMNS, rows, ACCURACY_CAPTION, ACCURACY_TITLE))
    page.add(_failures(run, state))

    page.add("<h2>initial ensemble</h2>")
    if not page.png(run.init_dir("train") / "learning_curves.png"):
        page.add("<p>No learning curves yet.</p>")
    finished = {row["iteration"]: row for row in rows}
    iterations = sorted(
        n for p in run.root.glob("iter-*") if p.is_dir() and (n := _iteration_number(p)) is not None
    )
    for it in iterations:
        row = finished.get(it)
        where = f"stage {row['stage']}" if row else "in progress"
        page.add(f"<h2>iteration {it} ({_e(where)})</h2>")
        for stage, name in (
            ("examine", "deviation.png"),
            ("examine", "calibration.png"),
            ("train", "learning_curves.png"),
        ):
            page.png(run.stage_dir(it, stage) / name)
        _walker_plots(page, it, max_walker_plots)
    if (run.root / "baseline").is_dir():
        page.add("<h2>baseline: selection against random</h2>")
        page.png(run.root / "baseline" / "force_rmse.png")

    page.add(f'<p class="meta">{len(page.images)} plots embedded</p>')
    document = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(page.parts)
        + "\n</body></html>\n"
    )
    return document, page.images


def write_report(
    run_dir: str | Path, out: str | Path | None = None, max_walker_plots: int = WALKER_PLOTS
) -> Report:
    """Write the run's HTML report to ``out`` (default RUN_DIR/report.html), atomically."""
    document, images = render_report(run_dir, max_walker_plots)
    path = Path(out) if out is not None else Path(run_dir) / REPORT_FILE
    atomic.write_text(path, document)
    return Report(path, images, len(document.encode()))
