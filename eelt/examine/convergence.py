"""When a stage or a run is done: accurate ratio over consecutive iterations, a test-error
target, a stalled test error. Pure functions on the numbers the reports hold."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# how a run ends (state.json "status"); "running" until one holds
CONVERGED = "converged"
BUDGET_EXHAUSTED = "budget_exhausted"
STALLED = "stalled"
MAX_ITERATIONS = "max_iterations"
RUNNING = "running"
END_STATES = (CONVERGED, BUDGET_EXHAUSTED, STALLED, MAX_ITERATIONS)


def ratio_converged(accurate_ratios: Sequence[float], threshold: float, n_consecutive: int) -> bool:
    """The last ``n_consecutive`` accurate ratios (of one stage, oldest first) all reach
    ``threshold``."""
    if n_consecutive < 1:
        raise ValueError(f"n_consecutive must be >= 1, got {n_consecutive}")
    recent = list(accurate_ratios)[-n_consecutive:]
    return len(recent) == n_consecutive and all(r >= threshold for r in recent)


def error_converged(test_force_rmse_meV_per_A: float | None, target_eV_per_A: float | None) -> bool:
    """The test force RMSE (meV/Angstrom) is at or below the target (eV/Angstrom)."""
    if test_force_rmse_meV_per_A is None or target_eV_per_A is None:
        return False
    return test_force_rmse_meV_per_A <= 1e3 * target_eV_per_A


def checked_metrics(trained: Mapping[str, Any]) -> dict[str, Any] | None:
    """Of a training report's held-out errors, those a test-error target is checked against:
    the ensemble's metrics on its test frames (frames its walkers found) or on the yardstick
    (frames no model chose), whichever has the larger force RMSE, with ``source`` naming it;
    None when neither has frames."""
    found = [
        {**trained[key], "source": key}
        for key in ("test", "yardstick")
        if (trained.get(key) or {}).get("force_rmse_meV_per_A") is not None
    ]
    return max(found, key=lambda m: m["force_rmse_meV_per_A"]) if found else None


def stalled(new_rmse: float | None, old_rmse: float | None, min_improvement: float) -> bool:
    """The newer ensemble's test error did not improve on the older one's (same frames) by
    more than ``min_improvement`` (a fraction of the older one's)."""
    if new_rmse is None or old_rmse is None or old_rmse <= 0:
        return False
    return new_rmse > (1.0 - min_improvement) * old_rmse


def over_budget(used: float, budget: float | None) -> bool:
    """A budget (None: none) is spent once ``used`` reaches it."""
    return budget is not None and used >= budget


End = tuple[str, str]  # (status, why)


def budget_end(
    labels: int, core_hours: float, max_labels: int | None, max_core_hours: float | None, whose: str
) -> End | None:
    """A label or DFT core-hour budget spent? ``whose`` prefixes the budget's name in the
    reason ("loop." for the run's, "its " for a stage's)."""
    if over_budget(labels, max_labels):
        return BUDGET_EXHAUSTED, f"{labels} labels of {whose}max_labels {max_labels}"
    if over_budget(core_hours, max_core_hours):
        return BUDGET_EXHAUSTED, (
            f"{core_hours:.3g} DFT core-hours of {whose}max_dft_core_hours {max_core_hours}"
        )
    return None


def run_budget_end(labels: int, core_hours: float, loop) -> End | None:
    """The run's own budgets (``loop.max_labels``, ``loop.max_dft_core_hours``), spent?"""
    return budget_end(labels, core_hours, loop.max_labels, loop.max_dft_core_hours, "loop.")


def stage_budget_end(labels: int, core_hours: float, stage) -> End | None:
    """A stage's budgets (its ``max_labels``, ``max_dft_core_hours``), spent?"""
    return budget_end(labels, core_hours, stage.max_labels, stage.max_dft_core_hours, "its ")


def stall_end(
    new_rmse: float | None,
    old_rmse: float | None,
    accurate_ratios: Sequence[float],
    loop,
    per: str,
) -> End | None:
    """``loop.stall_iterations``: the newest ensemble's test force RMSE improved by no more than
    ``loop.stall_min_improvement`` on that of the one ``stall_iterations`` ``per`` (iterations,
    generations) before, while every accurate ratio of those ``per`` (``accurate_ratios``)
    stayed below ``loop.stall_accurate_ratio`` (None: the test error alone decides)?"""
    if loop.stall_iterations is None:
        return None
    if not stalled(new_rmse, old_rmse, loop.stall_min_improvement):
        return None
    limit = loop.stall_accurate_ratio
    ratios = list(accurate_ratios)
    if limit is not None and (not ratios or max(ratios) >= limit):
        return None
    best = f", accurate ratio at most {max(ratios):.3f}" if ratios else ""
    return STALLED, (
        f"not learning: test force RMSE {old_rmse:.1f} -> {new_rmse:.1f} meV/A (improved by "
        f"<= {loop.stall_min_improvement:.0%}) over {loop.stall_iterations} {per}{best}; "
        "more candidates (examine.max_candidates), a smaller timestep or a lower temperature "
        "may help (loop.stall_iterations: null runs on)"
    )
