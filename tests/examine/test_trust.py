import math

import numpy as np
import pytest

from eelt.examine import (
    ACCURATE,
    CANDIDATE,
    FAILED,
    TrustCounts,
    adaptive_trust_lo,
    classify,
    deviation_histogram,
)


def test_classify_boundaries_and_nan():
    devi = np.array([0.0, 0.0499, 0.05, 0.1, 0.2499, 0.25, 3.0, np.nan, np.inf])
    labels = classify(devi, 0.05, 0.25)
    expected = [ACCURATE, ACCURATE, CANDIDATE, CANDIDATE, CANDIDATE, FAILED, FAILED, FAILED, FAILED]
    np.testing.assert_array_equal(labels, expected)
    assert labels.shape == devi.shape


def test_classify_rejects_inverted_levels():
    with pytest.raises(ValueError, match="trust_lo <= trust_hi"):
        classify(np.array([0.1]), 0.3, 0.2)


def test_counts_and_ratios():
    counts = TrustCounts.from_labels(np.array([0, 0, 0, 1, 2, 0, 1, 0]))
    assert (counts.n_total, counts.n_accurate, counts.n_candidate, counts.n_failed) == (8, 5, 2, 1)
    assert counts.accurate_ratio == pytest.approx(5 / 8)
    assert counts.candidate_ratio == pytest.approx(2 / 8)
    assert counts.failed_ratio == pytest.approx(1 / 8)
    d = counts.to_dict()
    assert d["n_candidate"] == 2 and d["accurate_ratio"] == pytest.approx(0.625)


def test_empty_counts_have_zero_ratios():
    counts = TrustCounts.from_labels(classify(np.array([]), 0.05, 0.25))
    assert counts.n_total == 0
    assert counts.accurate_ratio == counts.candidate_ratio == counts.failed_ratio == 0.0


def test_counts_reject_unknown_labels():
    with pytest.raises(ValueError, match="0, 1 or 2"):
        TrustCounts.from_labels(np.array([0, 3]))


def test_deviation_histogram_writes_png(tmp_path):
    devi = np.concatenate([np.random.default_rng(0).gamma(2.0, 0.03, 200), [np.nan, 50.0]])
    path = deviation_histogram(devi, 0.05, 0.25, tmp_path / "examine" / "devi.png")
    assert path == tmp_path / "examine" / "devi.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind
    # an empty set still plots
    assert deviation_histogram([], 0.05, 0.25, tmp_path / "empty.png").stat().st_size > 1000


@pytest.fixture
def ladder():
    """Deviations 0.01, 0.02, ..., 1.00 eV/A (exact decimals: 0.5 is 0.5)."""
    return np.arange(1, 101) / 100.0


def test_adaptive_lo_gives_n_candidates(ladder):
    lo = adaptive_trust_lo(ladder, 0.5, n_candidates=5)
    assert lo == pytest.approx(0.45)
    labels = classify(ladder, lo, 0.5)
    assert (labels == CANDIDATE).sum() == 5
    np.testing.assert_allclose(ladder[labels == CANDIDATE], [0.45, 0.46, 0.47, 0.48, 0.49])
    assert (labels == ACCURATE).sum() == 44 and (labels == FAILED).sum() == 51


def test_adaptive_lo_fraction(ladder):
    count = int((ladder < 0.5).sum())
    assert count == 49
    lo = adaptive_trust_lo(ladder, 0.5, fraction=0.1)
    assert (classify(ladder, lo, 0.5) == CANDIDATE).sum() == math.ceil(0.1 * count) == 5
    # 0.1 * 30 is 3.0000000000000004 in floats: still 3 candidates, not 4
    thirty = ladder[:30]
    lo = adaptive_trust_lo(thirty, 0.5, fraction=0.1)
    assert (classify(thirty, lo, 0.5) == CANDIDATE).sum() == 3
    # fraction 1: every frame below trust_hi is a candidate
    assert adaptive_trust_lo(ladder, 0.5, fraction=1.0) == pytest.approx(0.01)


def test_adaptive_lo_more_candidates_than_frames(ladder):
    lo = adaptive_trust_lo(ladder, 0.5, n_candidates=1000)
    assert lo == pytest.approx(0.01)
    assert (classify(ladder, lo, 0.5) == CANDIDATE).sum() == 49


def test_adaptive_lo_respects_bounds(ladder):
    assert adaptive_trust_lo(ladder, 0.5, n_candidates=5, lo_bounds_eV_per_A=(0.0, 0.3)) == 0.3
    assert adaptive_trust_lo(ladder, 0.5, n_candidates=40, lo_bounds_eV_per_A=(0.2, 1.0)) == 0.2
    assert adaptive_trust_lo(
        ladder, 0.5, n_candidates=5, lo_bounds_eV_per_A=(0.2, 0.48)
    ) == pytest.approx(0.45)


def test_adaptive_lo_ignores_nan_and_failed(ladder):
    devi = np.concatenate([ladder, [np.nan] * 20, [np.inf, 7.0]])
    np.random.default_rng(1).shuffle(devi)
    lo = adaptive_trust_lo(devi, 0.5, n_candidates=5)
    assert lo == pytest.approx(0.45)
    assert (classify(devi, lo, 0.5) == CANDIDATE).sum() == 5
    assert adaptive_trust_lo(devi, 0.5, fraction=0.1) == pytest.approx(0.45)  # 20 NaN not counted


def test_adaptive_lo_without_frames_below_hi():
    devi = np.array([0.6, 0.9, np.nan])
    lo = adaptive_trust_lo(devi, 0.5, n_candidates=5, lo_bounds_eV_per_A=(0.02, 0.3))
    assert lo == 0.3
    lo = adaptive_trust_lo(devi, 0.5, n_candidates=5)  # upper bound inf: just below trust_hi
    assert lo < 0.5 and lo == pytest.approx(0.5, rel=1e-12)
    assert (classify(devi, lo, 0.5) == CANDIDATE).sum() == 0
    assert adaptive_trust_lo([], 0.5, fraction=0.5) < 0.5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one"),
        ({"n_candidates": 5, "fraction": 0.1}, "exactly one"),
        ({"n_candidates": 0}, "n_candidates"),
        ({"n_candidates": 2.5}, "n_candidates"),
        ({"fraction": 0.0}, "fraction"),
        ({"fraction": 1.5}, "fraction"),
        ({"n_candidates": 5, "lo_bounds_eV_per_A": (0.3, 0.2)}, "lo_bounds"),
        ({"n_candidates": 5, "lo_bounds_eV_per_A": (-0.1, 0.2)}, "lo_bounds"),
        ({"n_candidates": 5, "lo_bounds_eV_per_A": (0.5, 0.6)}, "lo < trust_hi"),
    ],
)
def test_adaptive_lo_validation(ladder, kwargs, match):
    with pytest.raises(ValueError, match=match):
        adaptive_trust_lo(ladder, 0.5, **kwargs)
