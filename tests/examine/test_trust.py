import numpy as np
import pytest

from eelt.examine import ACCURATE, CANDIDATE, FAILED, TrustCounts, classify, deviation_histogram


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
