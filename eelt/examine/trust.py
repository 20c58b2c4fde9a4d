"""Trust levels on the max force deviation: accurate / candidate / failed; counts and a plot."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from eelt.atomic import atomic_write

ACCURATE, CANDIDATE, FAILED = 0, 1, 2


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
