"""How well the ensemble's max force deviation tracks the true max force error on labeled frames.

Deviation (eV/Angstrom): DeePMD's model deviation, max over atoms of sqrt(mean_k |F_k - <F>|^2).
Error (eV/Angstrom): max over atoms of |F_pred - F_DFT| on frames that were labeled with DFT.
A power law log10(error) = intercept + slope * log10(deviation) turns a target force error into
the deviation that predicts it, a data-driven trust_lo.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from eelt.atomic import atomic_write
from eelt.examine.trust import _check_levels

MIN_PAIRS = 3  # fewer pairs give no rank correlation and no fit

# Marker and colour per kind of labeled frame; other kinds cycle through _OTHER_STYLES.
_KIND_STYLES = {
    "candidate": ("o", "tab:orange"),
    "test": ("s", "tab:blue"),
}
_OTHER_STYLES = [
    ("^", "tab:purple"),
    ("D", "tab:brown"),
    ("v", "tab:pink"),
    ("P", "tab:olive"),
    ("X", "tab:cyan"),
    ("*", "tab:gray"),
]


@dataclass(frozen=True)
class Calibration:
    """Rank correlation and power-law fit of max force error vs max force deviation.

    ``n_frames``: pairs used (both values finite and > 0). ``spearman``: rank correlation of
    deviation vs error. ``slope``, ``intercept``: least squares of log10(error) on
    log10(deviation) (error in eV/Angstrom = 10**intercept * deviation**slope).
    ``crossing_eV_per_A``: the deviation at which the fitted error equals the target.
    Any of these is None when it cannot be computed.
    """

    n_frames: int
    spearman: float | None
    slope: float | None
    intercept: float | None
    target_force_error_eV_per_A: float | None
    crossing_eV_per_A: float | None

    @property
    def has_fit(self) -> bool:
        return self.slope is not None and self.intercept is not None

    def predicted_error(self, max_devi_f: np.ndarray | float) -> np.ndarray:
        """Fitted max force error (eV/Angstrom) at deviations ``max_devi_f`` (eV/Angstrom, > 0)."""
        if not self.has_fit:
            raise ValueError("calibration has no fit (fewer than 3 pairs or constant deviation)")
        return 10.0 ** (self.intercept + self.slope * np.log10(np.asarray(max_devi_f, float)))

    def to_dict(self) -> dict:
        """JSON-able dict; non-finite numbers become None."""
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in asdict(self).items()
        }


def _pairs(max_devi_f, max_force_error) -> tuple[np.ndarray, np.ndarray]:
    devi = np.asarray(max_devi_f, dtype=float)
    err = np.asarray(max_force_error, dtype=float)
    if devi.ndim != 1 or err.ndim != 1 or devi.shape != err.shape:
        raise ValueError(
            "max_devi_f and max_force_error must be 1-D arrays of the same length, got shapes "
            f"{devi.shape} and {err.shape}"
        )
    return devi, err


def _good(devi: np.ndarray, err: np.ndarray) -> np.ndarray:
    """Mask of pairs usable on log axes: both finite and > 0."""
    return np.isfinite(devi) & np.isfinite(err) & (devi > 0) & (err > 0)


def _finite_or_none(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def calibrate(
    max_devi_f: np.ndarray,
    max_force_error: np.ndarray,
    target_force_error_eV_per_A: float | None = None,
) -> Calibration:
    """Spearman correlation and log-log fit of max force error (eV/Angstrom) on max force
    deviation (eV/Angstrom); pairs with a non-finite or non-positive value are dropped.

    With ``target_force_error_eV_per_A``, also the deviation where the fit reaches the target
    (None when there is no fit, the slope is <= 0, or the crossing overflows).
    """
    devi, err = _pairs(max_devi_f, max_force_error)
    if target_force_error_eV_per_A is not None:
        target = float(target_force_error_eV_per_A)
        if not (math.isfinite(target) and target > 0):
            raise ValueError(
                f"target_force_error_eV_per_A must be finite and > 0, got {target_force_error_eV_per_A!r}"
            )
    else:
        target = None
    good = _good(devi, err)
    devi, err = devi[good], err[good]
    n = int(devi.size)

    spearman = None
    if n >= MIN_PAIRS and np.ptp(devi) > 0 and np.ptp(err) > 0:
        from scipy.stats import spearmanr  # lazy: scipy.stats is slow to import

        spearman = _finite_or_none(spearmanr(devi, err).statistic)

    slope = intercept = crossing = None
    if n >= MIN_PAIRS and np.ptp(devi) > 0:
        log_d, log_e = np.log10(devi), np.log10(err)
        slope_, intercept_ = np.polyfit(log_d, log_e, 1)
        slope, intercept = _finite_or_none(slope_), _finite_or_none(intercept_)
        if target is not None and slope is not None and intercept is not None and slope > 0:
            exponent = (math.log10(target) - intercept) / slope
            # a slope near 0 (a flat error) puts the crossing beyond any float: no crossing
            crossing = _finite_or_none(10.0**exponent) if abs(exponent) < 300 else None
            if crossing is not None and crossing <= 0:  # underflow to 0
                crossing = None

    return Calibration(
        n_frames=n,
        spearman=spearman,
        slope=slope,
        intercept=intercept,
        target_force_error_eV_per_A=target,
        crossing_eV_per_A=crossing,
    )


def calibrated_trust_levels(
    crossing_eV_per_A: float,
    lo_bounds_eV_per_A: tuple[float, float],
    hi_factor: float,
) -> tuple[float, float]:
    """(trust_lo, trust_hi) in eV/Angstrom: trust_lo is the calibration crossing clipped to
    ``lo_bounds_eV_per_A`` (0 < lo <= hi), trust_hi = ``hi_factor`` (> 1) * trust_lo."""
    if crossing_eV_per_A is None or not math.isfinite(float(crossing_eV_per_A)):
        raise ValueError(f"crossing_eV_per_A must be a finite number, got {crossing_eV_per_A!r}")
    if len(lo_bounds_eV_per_A) != 2:
        raise ValueError(f"lo_bounds_eV_per_A must be (lo, hi), got {lo_bounds_eV_per_A!r}")
    lo_min, lo_max = (float(b) for b in lo_bounds_eV_per_A)
    if not (math.isfinite(lo_min) and lo_min > 0 and lo_max >= lo_min):
        raise ValueError(
            f"lo_bounds_eV_per_A must satisfy 0 < lo <= hi with lo finite, got {lo_bounds_eV_per_A!r}"
        )
    hi_factor = float(hi_factor)
    if not (math.isfinite(hi_factor) and hi_factor > 1):
        raise ValueError(f"hi_factor must be finite and > 1, got {hi_factor!r}")
    trust_lo = min(max(float(crossing_eV_per_A), lo_min), lo_max)
    return trust_lo, hi_factor * trust_lo


def _kind_style(kind: str, others: dict[str, tuple[str, str]]) -> tuple[str, str]:
    if kind in _KIND_STYLES:
        return _KIND_STYLES[kind]
    if kind not in others:
        others[kind] = _OTHER_STYLES[len(others) % len(_OTHER_STYLES)]
    return others[kind]


def calibration_plot(
    max_devi_f: np.ndarray,
    max_force_error: np.ndarray,
    kinds: Sequence[str],
    trust_lo: float,
    trust_hi: float,
    path: str | os.PathLike,
    calibration: Calibration | None = None,
    title: str | None = None,
) -> Path:
    """Save (atomically) a log-log PNG of true max force error vs predicted max force deviation
    (both eV/Angstrom), one marker per kind ("candidate", "test", ...), with the trust levels,
    the y = x diagonal and, from ``calibration``, the fit, the target and its crossing.

    Points with a non-finite or non-positive value cannot sit on log axes and are left out (the
    title says how many). The Spearman in the title is the one of ``calibration`` when given,
    else computed from the plotted points.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, safe off the main thread

    _check_levels(trust_lo, trust_hi)
    devi, err = _pairs(max_devi_f, max_force_error)
    kinds = [str(k) for k in kinds]
    if len(kinds) != devi.size:
        raise ValueError(f"kinds must have one entry per point ({devi.size}), got {len(kinds)}")
    good = _good(devi, err)
    n_left_out = int(devi.size - good.sum())
    x, y = devi[good], err[good]
    kinds_good = [k for k, g in zip(kinds, good, strict=True) if g]
    stats = calibration if calibration is not None else calibrate(x, y)

    # Shared x/y limits so the diagonal sits at 45 degrees; include every line drawn.
    extent = [*x, *y, *(v for v in (trust_lo, trust_hi) if v > 0)]
    if calibration is not None:
        extent += [
            v
            for v in (calibration.target_force_error_eV_per_A, calibration.crossing_eV_per_A)
            if v is not None
        ]
    lo, hi = (min(extent) / 2.0, max(extent) * 2.0) if extent else (1e-3, 1.0)
    if hi / lo < 100.0:  # at least two decades, so log ticks are whole powers of ten
        mid = math.sqrt(lo * hi)
        lo, hi = mid / 10.0, mid * 10.0

    fig = Figure(figsize=(6.0, 5.5), dpi=100)
    ax = fig.add_subplot()
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=1.0, ls=":", label="y = x")
    others: dict[str, tuple[str, str]] = {}
    for kind in dict.fromkeys(kinds_good):  # first-seen order
        sel = np.array([k == kind for k in kinds_good])
        marker, color = _kind_style(kind, others)
        ax.scatter(
            x[sel],
            y[sel],
            marker=marker,
            color=color,
            s=18,
            alpha=0.75,
            label=f"{kind} ({sel.sum()})",
        )
    if trust_lo > 0:
        ax.axvline(trust_lo, color="tab:green", ls="--", label=f"trust_lo {trust_lo:g}")
    if trust_hi > 0:
        ax.axvline(trust_hi, color="tab:red", ls="--", label=f"trust_hi {trust_hi:g}")
    if calibration is not None and calibration.has_fit:
        grid = np.geomspace(lo, hi, 50)
        ax.plot(
            grid,
            calibration.predicted_error(grid),
            color="k",
            lw=1.2,
            label=f"fit: slope {calibration.slope:.2f}, 10^{calibration.intercept:.2f}",
        )
    target = calibration.target_force_error_eV_per_A if calibration is not None else None
    if target is not None:
        ax.axhline(target, color="tab:purple", ls="-.", lw=1.0, label=f"target {target:g}")
        crossing = calibration.crossing_eV_per_A
        if crossing is not None:
            ax.plot(
                [crossing],
                [target],
                marker="*",
                ms=14,
                color="tab:purple",
                ls="none",
                label=f"crossing {crossing:.3g}",
            )
    if x.size == 0:
        ax.text(
            0.5,
            0.5,
            "no labeled frames to plot",
            transform=ax.transAxes,
            ha="center",
            va="center",
            bbox={"fc": "white", "ec": "0.7"},
        )
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("predicted max force deviation (eV/Å)")
    ax.set_ylabel("true max atomic force error (eV/Å)")
    rho = "n/a" if stats.spearman is None else f"{stats.spearman:.3f}"
    line = f"n = {x.size}, Spearman ρ = {rho}"
    if calibration is not None and calibration.n_frames != x.size:
        line += f" (calibration on {calibration.n_frames})"
    if n_left_out:
        line += f"; {n_left_out} left out (non-positive or non-finite)"
    ax.set_title(f"{title}\n{line}" if title else line, fontsize="medium")
    ax.legend(loc="upper left", fontsize="x-small")
    fig.tight_layout()
    return atomic_write(path, lambda p: fig.savefig(p, format="png"))


def calibrated_levels(levels: dict, calibrations, cfg) -> dict:
    """``levels`` with ``trust_levels: calibrated``: from the first of ``calibrations`` ((where,
    calibration record) pairs, newest first) whose fit crossed the target error; unchanged
    otherwise, and for relative deviations."""
    if cfg.trust_levels != "calibrated" or levels["deviation"] == "relative":
        return levels
    for where, record in calibrations:
        crossing = (record or {}).get("calibration", {}).get("crossing_eV_per_A")
        if crossing is not None:
            lo, hi = calibrated_trust_levels(
                crossing, tuple(cfg.trust_lo_bounds_eV_per_A), cfg.trust_hi_factor
            )
            return {
                **levels,
                "trust_lo_eV_per_A": float(lo),
                "trust_hi_eV_per_A": float(hi),
                "trust_source": f"calibrated in {where}",
            }
    return levels


@dataclass(frozen=True)
class ExploredLabels:
    """Labeled frames of one examination, for the calibration of the ensemble that explored
    them: the examination's ``levels`` (its report: deviation kind and trust levels), its
    labeled ``candidates`` and ``tests``, the ``models`` directory of the exploring ensemble,
    and ``row`` fields copied into each frame's record (e.g. round and walker)."""

    levels: dict
    candidates: list
    tests: list
    models: Path
    row: dict


def calibrate_explorers(
    groups: Sequence[ExploredLabels],
    target_force_error_eV_per_A: float | None,
    plot_path: str | os.PathLike,
    title: str,
) -> dict:
    """How the exploring ensembles did on the frames they explored and that were labeled: each
    frame predicted by the ensemble that explored it, with the deviation that ensemble recorded
    during the MD. Returns the record (calibration fit, test error overall and per trust class,
    ErrorSums, one row per frame) and draws the calibration plot at ``plot_path``."""
    from eelt import keys
    from eelt.examine.trust import TRUST_CLASSES, classify
    from eelt.model.families import load_ensemble
    from eelt.train.metrics import ErrorSums, predict_frames

    devi, error, kinds, rows = [], [], [], []
    test_sums = ErrorSums()
    by_class = {name: ErrorSums() for name in TRUST_CLASSES}
    ensembles: dict[Path, object] = {}
    for group in groups:
        frames = group.candidates + group.tests
        if not frames:
            continue
        if group.models not in ensembles:
            ensembles[group.models] = load_ensemble(group.models)
        pred = predict_frames(ensembles[group.models], frames)
        d = np.array([f.info.get(keys.MAX_DEVI_F, np.nan) for f in frames], dtype=float)
        levels = group.levels
        if levels.get("deviation") == "relative":
            rel = [f.info.get(keys.MAX_DEVI_F_REL, np.nan) for f in frames]
            c = classify(np.array(rel, dtype=float), levels["trust_lo_relative"],
                         levels["trust_hi_relative"])  # fmt: skip
        else:
            c = classify(d, levels["trust_lo_eV_per_A"], levels["trust_hi_eV_per_A"])
        e = pred.max_force_error_eV_per_A
        test_idx = np.arange(len(group.candidates), len(frames))
        if len(test_idx):
            test_sums = test_sums + ErrorSums.of(pred.subset(test_idx))
            for code, name in enumerate(TRUST_CLASSES):
                idx = test_idx[c[test_idx] == code]
                if len(idx):
                    by_class[name] = by_class[name] + ErrorSums.of(pred.subset(idx))
        k = ["candidate"] * len(group.candidates) + ["test"] * len(group.tests)
        devi.append(d)
        error.append(e)
        kinds += k
        rows += [
            {
                "kind": kind,
                **group.row,
                "trust_class": TRUST_CLASSES[int(code)],
                "max_devi_f": float(dv),
                "max_force_error_eV_per_A": float(er),
            }
            for kind, code, dv, er in zip(k, c, d, e, strict=True)
        ]
    devi_all = np.concatenate(devi) if devi else np.zeros(0)
    error_all = np.concatenate(error) if error else np.zeros(0)
    cal = calibrate(devi_all, error_all, target_force_error_eV_per_A)
    last = groups[-1].levels if groups else {}
    absolute = last.get("deviation") != "relative" and last.get("trust_lo_eV_per_A") is not None
    lo, hi = (last["trust_lo_eV_per_A"], last["trust_hi_eV_per_A"]) if absolute else (0.0, 0.0)
    calibration_plot(devi_all, error_all, kinds, lo, hi, plot_path, calibration=cal, title=title)
    return {
        "calibration": cal.to_dict(),
        "explorer_test": test_sums.metrics(),
        "explorer_test_sums": test_sums.to_dict(),
        "explorer_test_by_class": {k: v.metrics() for k, v in by_class.items()},
        "frames": rows,
    }
