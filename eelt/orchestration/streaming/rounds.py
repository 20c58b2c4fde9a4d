"""The end of a round (one segment of every walker, examined): does the run end, and does a
training generation start? A pure function of the round's numbers, reusing eelt.examine's
end-state helpers; the scheduler persists its answer (``stream/rounds/rNNNN.json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eelt.config import RunConfig
from eelt.examine.convergence import (
    CONVERGED,
    MAX_ITERATIONS,
    STALLED,
    error_converged,
    ratio_converged,
    run_budget_end,
    stage_budget_end,
    stall_end,
)


@dataclass(frozen=True)
class RoundNumbers:
    """What a round's end looks at.

    ``window``: the selection reports of the last ``loop.window_segments`` segments (oldest
    first), each with the ``generation`` that explored it and its ``stage``; ``exploring``: the
    generation of this round's segments; ``newest_test``: the held-out metrics of the newest
    generation finished before this round's end may look, those a target is checked against
    (:func:`eelt.examine.convergence.checked_metrics`; None: none yet); ``labels``: labels
    spent (initial ones, and every candidate and test frame chosen so far); ``core_hours``: DFT
    core-hours of the labels held; ``pending``: candidates chosen since the last generation
    started; ``unseen``: candidates and test frames chosen since then (an end starts one last
    generation for them, which trains only if there are candidates); ``generations``:
    generations started so far (init not counted).

    The round's stage: ``stage`` (its index), ``stage_generations`` (generations started at the
    closes of its earlier rounds), ``stage_labels`` / ``stage_core_hours`` (spent on its rounds'
    selections), ``stage_ending`` (an earlier close already ended it: the round ran before that
    decision could reach it), ``newest_covers_stage`` (the newest generation has test frames of
    this stage). ``stall``: (newest, older) test force RMSE on the same frames for
    ``loop.stall_iterations``, None where there is no such pair; ``stall_ratios``: the accurate
    ratios of the generations that explored in between (older one first).
    """

    window: list[dict[str, Any]]
    exploring: int
    newest_test: dict[str, Any] | None
    labels: int
    core_hours: float
    pending: int
    unseen: int
    generations: int
    stage: int = 0
    stage_generations: int = 0
    stage_labels: int = 0
    stage_core_hours: float = 0.0
    stage_ending: bool = False
    newest_covers_stage: bool = True
    stall: tuple[float | None, float | None] = (None, None)
    stall_ratios: tuple[float, ...] = ()


def window_accurate_ratio(
    window: list[dict[str, Any]], generation: int, size: int, stage: int | None = None
) -> float | None:
    """Accurate frames over all frames of the window, when its ``size`` segments were all
    explored by ``generation`` (in ``stage``, when given); None otherwise: a new generation or
    stage first fills a window."""
    if len(window) < size or any(s["generation"] != generation for s in window):
        return None
    if stage is not None and any(s.get("stage", 0) != stage for s in window):
        return None
    total = sum(s["n_total"] for s in window)
    return sum(s["n_accurate"] for s in window) / total if total else None


def _stage_end(numbers: RoundNumbers, config: RunConfig, ratio: float | None):
    """Why the round's stage ends at this close (status, detail), or None."""
    loop, examine = config.loop, config.examine
    stage = config.explore.stages[numbers.stage]
    if ratio is not None and ratio_converged([ratio], examine.converged_accurate_ratio, 1):
        return CONVERGED, f"accurate ratio {ratio:.3f} over {loop.window_segments} segments"
    if (
        numbers.newest_test
        and numbers.newest_covers_stage
        and error_converged(
            numbers.newest_test.get("force_rmse_meV_per_A"), examine.target_force_error_eV_per_A
        )
    ):
        rmse = numbers.newest_test["force_rmse_meV_per_A"]
        source = numbers.newest_test.get("source", "test")
        return CONVERGED, f"{source} force RMSE {rmse:.1f} meV/A at the target"
    if (
        budget := stage_budget_end(numbers.stage_labels, numbers.stage_core_hours, stage)
    ) is not None:
        return budget
    if (
        numbers.pending == 0
        and len(numbers.window) >= loop.window_segments
        and all(s.get("stage", 0) == numbers.stage for s in numbers.window)
        and not any(s["n_selected"] for s in numbers.window)
    ):
        return STALLED, f"no candidate in the last {loop.window_segments} segments"
    return None


def close_round(round_: int, numbers: RoundNumbers, config: RunConfig) -> dict[str, Any]:
    """The round's record: ``end`` (None, or the status and why), ``trigger`` (the generation
    that starts now, trained on every label chosen up to this round; None) and ``next_stage``
    (the stage that begins two rounds later, when this close ends the round's stage; None).

    A stage ends, as in the synchronous loop, when it converges (accurate ratio over a window of
    its own segments, or the test-error target), spends its budgets, stalls (a window without
    a candidate) or starts its ``max_iterations``-th generation; the end of the last stage ends
    the run. The run's own budgets, ``loop.max_iterations`` and ``loop.stall_iterations`` end it
    from any stage."""
    loop = config.loop
    stages = config.explore.stages
    last_stage = numbers.stage == len(stages) - 1
    ratio = window_accurate_ratio(
        numbers.window, numbers.exploring, loop.window_segments, numbers.stage
    )
    stage_end = None if numbers.stage_ending else _stage_end(numbers, config, ratio)
    end = None
    if last_stage and stage_end is not None and stage_end[0] == CONVERGED:
        end = (
            CONVERGED,
            stage_end[1] if len(stages) == 1 else f"stage {numbers.stage}: {stage_end[1]}",
        )
    else:
        end = run_budget_end(numbers.labels, numbers.core_hours, loop) or stall_end(
            *numbers.stall, numbers.stall_ratios, loop, "generations"
        )
    trigger = None
    if numbers.pending >= loop.generation_labels or (
        (end is not None or (stage_end is not None and last_stage)) and numbers.unseen > 0
    ):
        trigger = numbers.generations + 1
        if end is None and trigger >= loop.max_iterations:
            end = (MAX_ITERATIONS, f"loop.max_iterations {loop.max_iterations} generations")
        if (
            stage_end is None
            and not numbers.stage_ending
            and numbers.stage_generations + 1 >= stages[numbers.stage].max_iterations
        ):
            stage_end = (
                MAX_ITERATIONS,
                f"its max_iterations {stages[numbers.stage].max_iterations}",
            )
    next_stage = None
    if end is None and stage_end is not None:
        if last_stage:
            status, detail = stage_end
            if len(stages) > 1 or status == MAX_ITERATIONS:
                detail = f"stage {numbers.stage}: {detail}"
            end = (status, detail)
            if trigger is None and numbers.unseen > 0:  # one last generation for what is unseen
                trigger = numbers.generations + 1
        else:
            next_stage = numbers.stage + 1
    return {
        "round": round_,
        "stage": numbers.stage,
        "trigger": trigger,
        "end": None if end is None else {"status": end[0], "detail": end[1]},
        "stage_end": None
        if stage_end is None
        else {"status": stage_end[0], "detail": stage_end[1]},
        "next_stage": next_stage,
        "window_accurate_ratio": ratio,
        "labels": numbers.labels,
        "pending": numbers.pending,
    }
