"""Stage convergence, stalled test errors and budgets as pure functions, and the loop's end
states on sequences of reports."""

import pytest

from eelt.examine import error_converged, over_budget, ratio_converged, stalled


def test_ratio_converged_needs_n_consecutive_iterations():
    assert ratio_converged([0.5, 0.995], 0.99, 1)
    assert not ratio_converged([0.995, 0.5], 0.99, 1)
    assert not ratio_converged([0.995], 0.99, 2)
    assert not ratio_converged([0.995, 0.98, 0.995], 0.99, 2)
    assert ratio_converged([0.5, 0.995, 0.999], 0.99, 2)
    with pytest.raises(ValueError):
        ratio_converged([1.0], 0.99, 0)


def test_error_target_in_eV_per_A_against_rmse_in_meV_per_A():
    assert error_converged(49.9, 0.05) and error_converged(50.0, 0.05)
    assert not error_converged(50.1, 0.05)
    assert not error_converged(None, 0.05) and not error_converged(10.0, None)


def test_stalled_when_improvement_below_the_fraction():
    assert stalled(96.0, 100.0, 0.05)  # 4% better: stalled
    assert not stalled(94.0, 100.0, 0.05)
    assert stalled(120.0, 100.0, 0.05)  # worse
    assert not stalled(None, 100.0, 0.05) and not stalled(90.0, None, 0.05)


def test_budget():
    assert over_budget(10, 10) and not over_budget(9, 10) and not over_budget(1e9, None)
