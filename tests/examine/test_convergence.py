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


def _loop(**kw):
    from eelt.config import LoopConfig

    return LoopConfig(**kw)


def test_stall_end_is_on_by_default_and_needs_a_low_accurate_ratio():
    from eelt.examine.convergence import STALLED, stall_end

    loop = _loop()
    assert loop.stall_iterations == 3 and loop.stall_accurate_ratio == 0.05
    status, why = stall_end(1800.0, 1850.0, [0.0, 0.0, 0.01], loop, "iterations")
    assert status == STALLED
    assert "1850.0 -> 1800.0 meV/A" in why and "over 3 iterations" in why
    # the test error fell by more than stall_min_improvement (5%): learning
    assert stall_end(1700.0, 1850.0, [0.0, 0.0, 0.0], loop, "iterations") is None
    # one iteration with walkers mostly accurate: not stalled (cu-emt's flat test error)
    assert stall_end(58.4, 59.7, [0.05, 0.56, 0.76], loop, "iterations") is None
    assert stall_end(1800.0, 1850.0, [], loop, "iterations") is None
    # the test error alone, or off
    alone = _loop(stall_accurate_ratio=None)
    assert stall_end(58.4, 59.7, [0.5, 0.56, 0.76], alone, "iterations")[0] == STALLED
    assert stall_end(1800.0, 1850.0, [0.0], _loop(stall_iterations=None), "x") is None
