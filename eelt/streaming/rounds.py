"""The end of a round (one segment of every walker, examined): does the run end, and does a
training generation start? A pure function of the round's numbers, reusing eelt.examine's
end-state helpers; the scheduler persists its answer (``stream/rounds/rNNNN.json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eelt.config import RunConfig
from eelt.examine import (
    BUDGET_EXHAUSTED,
    CONVERGED,
    MAX_ITERATIONS,
    STALLED,
    error_converged,
    over_budget,
    ratio_converged,
)


@dataclass(frozen=True)
class RoundNumbers:
    """What a round's end looks at.

    ``window``: the selection reports of the last ``loop.window_segments`` segments (oldest
    first), each with the ``generation`` that explored it; ``exploring``: the generation of this
    round's segments; ``newest_test``: the test metrics of the newest generation finished
    before this round's end may look (None: none yet); ``labels``: labels spent (initial ones,
    and every candidate and test frame chosen so far); ``core_hours``: DFT core-hours of the
    labels held; ``pending``: candidates chosen since the last generation started;
    ``unseen``: candidates and test frames chosen since then (an end starts one last
    generation for them, which trains only if there are candidates); ``generations``:
    generations started so far (init not counted).
    """

    window: list[dict[str, Any]]
    exploring: int
    newest_test: dict[str, Any] | None
    labels: int
    core_hours: float
    pending: int
    unseen: int
    generations: int


def window_accurate_ratio(window: list[dict[str, Any]], generation: int, size: int) -> float | None:
    """Accurate frames over all frames of the window, when its ``size`` segments were all
    explored by ``generation`` (None otherwise: a new generation first fills a window)."""
    if len(window) < size or any(s["generation"] != generation for s in window):
        return None
    total = sum(s["n_total"] for s in window)
    return sum(s["n_accurate"] for s in window) / total if total else None


def close_round(round_: int, numbers: RoundNumbers, config: RunConfig) -> dict[str, Any]:
    """The round's record: ``end`` (None, or the status and why) and ``trigger`` (the
    generation that starts now, trained on every label chosen up to this round; None)."""
    loop, examine = config.loop, config.examine
    stage = config.explore.stages[0]
    ratio = window_accurate_ratio(numbers.window, numbers.exploring, loop.window_segments)
    end = None
    if ratio is not None and ratio_converged([ratio], examine.converged_accurate_ratio, 1):
        end = (CONVERGED, f"accurate ratio {ratio:.3f} over {loop.window_segments} segments")
    elif numbers.newest_test and error_converged(
        numbers.newest_test.get("force_rmse_meV_per_A"), examine.target_force_error_eV_per_A
    ):
        rmse = numbers.newest_test["force_rmse_meV_per_A"]
        end = (CONVERGED, f"test force RMSE {rmse:.1f} meV/A at the target")
    else:
        label_budgets = [b for b in (loop.max_labels, stage.max_labels) if b is not None]
        hour_budgets = [b for b in (loop.max_dft_core_hours, stage.max_dft_core_hours) if b]
        if label_budgets and over_budget(numbers.labels, min(label_budgets)):
            end = (BUDGET_EXHAUSTED, f"{numbers.labels} labels of max_labels {min(label_budgets)}")
        elif hour_budgets and over_budget(numbers.core_hours, min(hour_budgets)):
            end = (
                BUDGET_EXHAUSTED,
                f"{numbers.core_hours:.3g} DFT core-hours of max_dft_core_hours "
                f"{min(hour_budgets)}",
            )
        elif (
            numbers.pending == 0
            and len(numbers.window) >= loop.window_segments
            and not any(s["n_selected"] for s in numbers.window)
        ):
            end = (STALLED, f"no candidate in the last {loop.window_segments} segments")
    trigger = None
    if numbers.pending >= loop.generation_labels or (end is not None and numbers.unseen > 0):
        trigger = numbers.generations + 1
        if trigger >= loop.max_iterations and end is None:
            end = (MAX_ITERATIONS, f"loop.max_iterations {loop.max_iterations} generations")
    return {
        "round": round_,
        "trigger": trigger,
        "end": None if end is None else {"status": end[0], "detail": end[1]},
        "window_accurate_ratio": ratio,
        "labels": numbers.labels,
        "pending": numbers.pending,
    }
