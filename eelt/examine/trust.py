"""Trust levels on the max force deviation: accurate / candidate / failed; counts and a plot."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from eelt import keys
from eelt.atomic import atomic_write

ACCURATE, CANDIDATE, FAILED = 0, 1, 2
TRUST_CLASSES = ("accurate", "candidate", "failed")  # names, indexed by the codes above


def _check_levels(trust_lo: float, trust_hi: float) -> None:
    if not (np.isfinite(trust_lo) and np.isfinite(trust_hi)) or trust_lo > trust_hi:
        raise ValueError(
            f"trust levels must be finite with trust_lo <= trust_hi, got {trust_lo!r}, {trust_hi!r}"
        )


def classify(max_devi_f: np.ndarray, trust_lo: float, trust_hi: float) -> np.ndarray:
    """Label each frame by its max force deviation (eV/Angstrom): 0 accurate (< lo),
    1 candidate ([lo, hi)), 2 failed (>= hi or NaN)."""
    _check_levels(trust_lo, trust_hi)
    devi = np.asarray(max_devi_f, dtype=float)
    labels = np.full(devi.shape, FAILED, dtype=np.int8)
    labels[devi < trust_hi] = CANDIDATE
    labels[devi < trust_lo] = ACCURATE
    return labels


def adaptive_trust_lo(
    max_devi_f: np.ndarray,
    trust_hi: float,
    *,
    n_candidates: int | None = None,
    fraction: float | None = None,
    lo_bounds_eV_per_A: tuple[float, float] = (0.0, math.inf),
) -> float:
    """DPGEN2's "adaptive lower" trust level (eV/Angstrom): the trust_lo that makes about
    ``n_candidates`` (or ``fraction``, in (0, 1], of) the frames below ``trust_hi`` candidates.

    It is the k-th largest finite deviation below trust_hi (k = n_candidates, or
    ceil(fraction * count); all of them if fewer), so the frames with deviation >= it are the
    candidates (more than k on ties), clipped to ``lo_bounds_eV_per_A``. NaN deviations are
    failed frames and are ignored. With no frame below trust_hi, the upper bound is returned.
    The result is always strictly below trust_hi (the upper bound is capped at the largest float
    below it), so ``classify(devi, result, trust_hi)`` holds.
    """
    trust_hi = float(trust_hi)
    if not (math.isfinite(trust_hi) and trust_hi > 0):
        raise ValueError(f"trust_hi must be finite and > 0, got {trust_hi!r}")
    if (n_candidates is None) == (fraction is None):
        raise ValueError("give exactly one of n_candidates and fraction")
    if n_candidates is not None and (int(n_candidates) != n_candidates or n_candidates < 1):
        raise ValueError(f"n_candidates must be a positive integer, got {n_candidates!r}")
    if fraction is not None and not (0.0 < fraction <= 1.0):
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    lo_min, lo_max = (float(b) for b in lo_bounds_eV_per_A)
    if not (0.0 <= lo_min <= lo_max and lo_min < trust_hi):
        raise ValueError(
            f"lo_bounds_eV_per_A must satisfy 0 <= lo <= hi and lo < trust_hi ({trust_hi:g}), "
            f"got {lo_bounds_eV_per_A!r}"
        )
    lo_max = min(lo_max, float(np.nextafter(trust_hi, -np.inf)))
    devi = np.asarray(max_devi_f, dtype=float).ravel()
    below = np.sort(devi[np.isfinite(devi) & (devi < trust_hi)])[::-1]
    if below.size == 0:
        return lo_max
    if n_candidates is not None:
        k = int(n_candidates)
    else:  # round first so that 0.1 * 30 = 3.0000000000000004 means 3, not 4
        k = max(1, math.ceil(round(fraction * below.size, 9)))
    value = float(below[min(k, below.size) - 1])
    return min(max(value, lo_min), lo_max)


@dataclass(frozen=True)
class TrustCounts:
    """How many frames fell in each trust class."""

    n_total: int
    n_accurate: int
    n_candidate: int
    n_failed: int

    @classmethod
    def from_labels(cls, labels: np.ndarray) -> TrustCounts:
        labels = np.asarray(labels)
        unknown = np.setdiff1d(labels, [ACCURATE, CANDIDATE, FAILED])
        if unknown.size:
            raise ValueError(f"trust labels must be 0, 1 or 2, got {unknown.tolist()}")
        return cls(
            n_total=int(labels.size),
            n_accurate=int((labels == ACCURATE).sum()),
            n_candidate=int((labels == CANDIDATE).sum()),
            n_failed=int((labels == FAILED).sum()),
        )

    def _ratio(self, n: int) -> float:
        return n / self.n_total if self.n_total else 0.0

    @property
    def accurate_ratio(self) -> float:
        return self._ratio(self.n_accurate)

    @property
    def candidate_ratio(self) -> float:
        return self._ratio(self.n_candidate)

    @property
    def failed_ratio(self) -> float:
        return self._ratio(self.n_failed)

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "accurate_ratio": self.accurate_ratio,
            "candidate_ratio": self.candidate_ratio,
            "failed_ratio": self.failed_ratio,
        }


def classify_frames(frames: list, levels: dict, cfg) -> tuple[np.ndarray, dict, np.ndarray, str]:
    """The frames' max force deviation (absolute or relative, per ``cfg.deviation``), the trust
    levels with trust_lo made adaptive when ``cfg.trust_levels`` says so, and each frame's
    class. Returns (deviations, levels, classes, unit suffix of the level keys)."""

    levels = dict(levels)
    relative = cfg.deviation == "relative"
    unit = "_relative" if relative else "_eV_per_A"
    key = keys.MAX_DEVI_F_REL if relative else keys.MAX_DEVI_F
    devi = np.array([a.info.get(key, np.nan) for a in frames], dtype=float)
    if cfg.trust_levels == "adaptive" and len(frames):
        bounds = (0.0, np.inf) if relative else tuple(cfg.trust_lo_bounds_eV_per_A)
        levels["trust_lo" + unit] = adaptive_trust_lo(
            devi,
            levels["trust_hi" + unit],
            n_candidates=cfg.adaptive_n_candidates,
            fraction=cfg.adaptive_fraction,
            lo_bounds_eV_per_A=bounds,
        )
        levels["trust_source"] = "adaptive"
    classes = classify(devi, levels["trust_lo" + unit], levels["trust_hi" + unit])
    return devi, levels, classes, unit


def deviation_histogram(
    max_devi_f: np.ndarray, trust_lo: float, trust_hi: float, path: str | os.PathLike
) -> Path:
    """Save (atomically) a PNG histogram of the max force deviation (eV/Angstrom) with the trust
    levels drawn; values beyond twice trust_hi pile into the last bin, NaN counts as failed."""
    from matplotlib.figure import Figure  # no pyplot: no global state, safe off the main thread

    _check_levels(trust_lo, trust_hi)
    devi = np.asarray(max_devi_f, dtype=float).ravel()
    counts = TrustCounts.from_labels(classify(devi, trust_lo, trust_hi))
    finite = devi[np.isfinite(devi)]
    upper = 2.0 * trust_hi if trust_hi > 0 else max(float(finite.max(initial=0.0)), 1.0)
    fig = Figure(figsize=(6.0, 4.0), dpi=100)
    ax = fig.add_subplot()
    ax.axvspan(0.0, trust_lo, color="tab:green", alpha=0.12, label="accurate")
    ax.axvspan(trust_lo, trust_hi, color="tab:orange", alpha=0.12, label="candidate")
    ax.axvspan(trust_hi, upper, color="tab:red", alpha=0.12, label="failed")
    if finite.size:
        ax.hist(np.clip(finite, 0.0, upper), bins=50, range=(0.0, upper), color="tab:blue")
    ax.axvline(trust_lo, color="tab:green", ls="--")
    ax.axvline(trust_hi, color="tab:red", ls="--")
    ax.set_xlim(0.0, upper)
    ax.set_xlabel(f"max force deviation (eV/Å); last bin: >= {upper:g}")
    ax.set_ylabel("frames")
    ax.set_title(
        f"{counts.n_total} frames: {counts.n_accurate} accurate, "
        f"{counts.n_candidate} candidate, {counts.n_failed} failed"
    )
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    return atomic_write(path, lambda p: fig.savefig(p, format="png"))


def stage_trust_levels(cfg, stage) -> dict:
    """A stage's trust levels and where they come from: the stage's own (``trust_lo_eV_per_A``,
    ``trust_hi_eV_per_A``) or the examine section's ``cfg``; relative levels with
    ``deviation: relative``."""
    if cfg.deviation == "relative":
        return {
            "deviation": "relative",
            "trust_lo_eV_per_A": None,
            "trust_hi_eV_per_A": None,
            "trust_lo_relative": cfg.trust_lo_relative,
            "trust_hi_relative": cfg.trust_hi_relative,
            "trust_source": "config",
        }
    lo = stage.trust_lo_eV_per_A or cfg.trust_lo_eV_per_A
    hi = stage.trust_hi_eV_per_A or cfg.trust_hi_eV_per_A
    source = "stage" if stage.trust_lo_eV_per_A or stage.trust_hi_eV_per_A else "config"
    return {
        "deviation": "absolute",
        "trust_lo_eV_per_A": float(lo),
        "trust_hi_eV_per_A": float(hi),
        "trust_source": source,
    }


def deviation_key(cfg) -> str:
    """The per-frame deviation (info key) that the trust levels of examine section ``cfg``
    apply to."""
    return keys.MAX_DEVI_F_REL if cfg.deviation == "relative" else keys.MAX_DEVI_F
