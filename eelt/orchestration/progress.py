"""Where a run stands, from its reports alone: the stage schedule, labels and DFT core-hours
spent against the budgets, convergence and the run's end state, and the summary that
state.json and ``eelt status`` show.

Functions of the run directory and the config alone (state.json is a view of the reports);
:func:`state_row` is the row of state.json that both schedules write per iteration or
generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eelt.config import RunConfig, StageConfig
from eelt.orchestration.rundir import RunDir
from eelt.orchestration.timing import KINDS, iteration_times, run_times


@dataclass(frozen=True)
class Slot:
    """Where iteration ``iteration`` sits in the stage schedule."""

    iteration: int
    stage: int
    stage_iteration: int


def schedule(stages: list[StageConfig], finished: list[tuple[int, bool]]) -> tuple[int, int]:
    """Next (stage index, iteration within stage) after ``finished`` (stage, ends stage) records.

    A stage advances when an iteration ended it (converged, or its budget spent) or after its
    ``max_iterations``, as DPGEN2's scheduler does. Returns stage == len(stages) when every
    stage is done.
    """
    stage, count = 0, 0
    for s, ends_stage in finished:
        if s != stage:
            continue
        count += 1
        if ends_stage or count >= stages[stage].max_iterations:
            stage, count = stage + 1, 0
    return stage, count


CALIBRATION_FILE = "calibration.json"  # in examine/: written after labeling


def calibration_report(run: RunDir, iteration: int) -> dict[str, Any] | None:
    """Iteration ``iteration``'s calibration record (examine/calibration.json), if written."""
    from eelt import atomic

    path = run.stage_dir(iteration, "examine") / CALIBRATION_FILE
    return atomic.read_json(path) if path.is_file() else None


def explorer_models(run: RunDir, iteration: int) -> Path:
    """The ensemble that explores in ``iteration``: the latest one trained before it."""
    for it in range(iteration - 1, -1, -1):
        report = run.read_report(run.stage_dir(it, "train"))
        if report is not None and report.get("models_dir"):
            return run.root / report["models_dir"]
    return run.init_dir("train")


def init_progress(run: RunDir) -> str:
    """One line on a run still in its initial step (no state written yet): which of
    init/sample, init/label and init/train finished."""
    steps = []
    for step in ("sample", "label", "train"):
        directory = run.init_dir(step)
        if run.read_report(directory) is not None:
            steps.append(f"{step} done")
        elif directory.is_dir():
            steps.append(f"{step} under way")
    what = ", ".join(steps) if steps else "not started"
    return f"{run.root.name}: initial step ({what}); no iteration yet"


def init_labels(init_label_report: dict[str, Any] | None) -> int:
    """Labels the initial step spent: its training frames and the sampler's yardstick."""
    r = init_label_report or {}
    return int(r.get("n_labeled", 0)) + int(r.get("n_test_labeled", 0))


def labels_used(run: RunDir, iterations: list[int] | None = None) -> tuple[int, float]:
    """(labels, DFT core-hours) held by the label reports of ``iterations`` (None: the whole
    run, initial labels included); test frames count."""
    reports = []
    if iterations is None:
        reports.append(run.read_report(run.init_dir("label")))
        it = 0
        while (run.stage_dir(it, "examine")).is_dir():
            reports.append(run.read_report(run.stage_dir(it, "label")))
            it += 1
    else:
        reports = [run.read_report(run.stage_dir(i, "label")) for i in iterations]
    n = sum(r["n_labeled"] + r.get("n_test_labeled", 0) for r in reports if r)
    hours = sum(r.get("dft_core_hours", 0.0) for r in reports if r)
    return n, hours


def stage_iterations(run: RunDir, stage: int, before: int) -> list[int]:
    """The iterations before ``before`` that explored stage ``stage``."""
    out = []
    for it in range(before):
        exam = run.read_report(run.stage_dir(it, "examine"))
        if exam is not None and exam["stage"] == stage:
            out.append(it)
    return out


def label_budget_left(run: RunDir, config: RunConfig, slot: Slot) -> int | None:
    """Labels the run and the stage may still spend (None: no label budget)."""
    left = []
    if config.loop.max_labels is not None:
        left.append(config.loop.max_labels - labels_used(run)[0])
    stage_budget = config.explore.stages[slot.stage].max_labels
    if stage_budget is not None:
        used = labels_used(run, stage_iterations(run, slot.stage, slot.iteration))[0]
        left.append(stage_budget - used)
    return max(min(left), 0) if left else None


def finished_iterations(run: RunDir, config: RunConfig) -> list[dict[str, Any]]:
    """One record per finished iteration (every stage done), oldest first: the examination
    report plus what the later stages found, and whether (and why) the iteration ended its
    stage."""
    from eelt.examine.convergence import checked_metrics, error_converged, stage_budget_end

    records, it = [], 0
    while (exam := run.read_report(run.stage_dir(it, "examine"))) is not None:
        train = run.read_report(run.stage_dir(it, "train"))
        if train is None:
            break
        stage = config.explore.stages[exam["stage"]]
        checked = checked_metrics(train) or {}
        converged = exam["converged"] or error_converged(
            checked.get("force_rmse_meV_per_A"), config.examine.target_force_error_eV_per_A
        )
        n, hours = labels_used(run, stage_iterations(run, exam["stage"], it + 1))
        budget = stage_budget_end(n, hours, stage)
        records.append(
            {
                "iteration": it,
                **exam,
                "converged": bool(converged),
                "stage_budget_spent": budget[1] if budget else None,
                "ends_stage": bool(converged or budget),
            }
        )
        it += 1
    return records


def stall_pair(
    run: RunDir, config: RunConfig, records: list[dict[str, Any]]
) -> tuple[float | None, float | None]:
    """(newest, older) test force RMSE for ``loop.stall_iterations``: the newest ensemble
    against the one trained stall_iterations iterations before (init for -1), both on the test
    frames both were measured on."""
    from eelt.train.metrics import ErrorSums

    k = config.loop.stall_iterations
    if k is None or not records or records[-1]["iteration"] - k < -1:
        return None, None
    i = records[-1]["iteration"]
    ref = i - k  # the older ensemble: trained in iteration ref (init for -1)
    newest = run.read_report(run.stage_dir(i, "train"))
    cal = calibration_report(run, ref + 1) or {}
    old_parts = [ErrorSums.from_dict(cal["explorer_test_sums"])] if cal else []
    if ref >= 0:
        older = run.read_report(run.stage_dir(ref, "train"))
        old_parts += [ErrorSums.from_dict(v) for v in older["test_sums_by_iteration"].values()]
    new_parts = [
        ErrorSums.from_dict(v)
        for key, v in newest["test_sums_by_iteration"].items()
        if int(key) <= ref + 1
    ]
    old = ErrorSums.total(old_parts).metrics()["force_rmse_meV_per_A"]
    new = ErrorSums.total(new_parts).metrics()["force_rmse_meV_per_A"]
    return new, old


def outcome(
    run: RunDir, config: RunConfig, records: list[dict[str, Any]] | None = None
) -> tuple[str, str, int, int]:
    """(status, why, next stage, its iteration) from the finished iterations."""
    from eelt.examine.convergence import (
        CONVERGED,
        MAX_ITERATIONS,
        RUNNING,
        run_budget_end,
        stall_end,
    )

    records = finished_iterations(run, config) if records is None else records
    stages = config.explore.stages
    stage, count = schedule(stages, [(r["stage"], r["ends_stage"]) for r in records])
    last = records[-1] if records else None
    if last and last["converged"] and last["stage"] == len(stages) - 1:
        return CONVERGED, f"stage {last['stage']} converged", stage, count
    k = config.loop.stall_iterations
    ratios = [r["accurate_ratio"] for r in records[-k:]] if k else []
    end = run_budget_end(*labels_used(run), config.loop) or stall_end(
        *stall_pair(run, config, records), ratios, config.loop, "iterations"
    )
    if end is not None:
        return *end, stage, count
    if stage >= len(stages):
        if last and last["stage_budget_spent"]:
            from eelt.examine.convergence import BUDGET_EXHAUSTED

            return (
                BUDGET_EXHAUSTED,
                f"stage {last['stage']}: {last['stage_budget_spent']}",
                stage,
                count,
            )
        return MAX_ITERATIONS, "every stage reached its max_iterations", stage, count
    if len(records) >= config.loop.max_iterations:
        return MAX_ITERATIONS, f"loop.max_iterations {config.loop.max_iterations}", stage, count
    return RUNNING, "", stage, count


def state_row(
    selection: dict[str, Any],
    labeled: dict[str, Any],
    trained: dict[str, Any],
    calibration: dict[str, Any],
) -> dict[str, Any]:
    """The figures of one iteration (or generation) of state.json that both schedules show:
    from its examination (``selection``: trust levels and ratios, summed over a generation's
    segments), labels, training and calibration records."""
    explorer = calibration.get("explorer_test", {})
    test = trained.get("test", {})
    yardstick = trained.get("yardstick", {})
    fit = calibration.get("calibration", {})
    return {
        "trust_lo_eV_per_A": selection.get("trust_lo_eV_per_A"),
        "trust_hi_eV_per_A": selection.get("trust_hi_eV_per_A"),
        "trust_source": selection.get("trust_source"),
        "accurate_ratio": selection.get("accurate_ratio") or 0.0,
        "candidate_ratio": selection.get("candidate_ratio") or 0.0,
        "failed_ratio": selection.get("failed_ratio") or 0.0,
        "n_selected": int(selection.get("n_selected", 0)),
        # of those, edge frames: where walkers left the trusted region (examine.edge_frames)
        "n_edge_frames": int(selection.get("n_edge_frames", 0)),
        "n_labeled": int(labeled.get("n_labeled", 0)),
        "n_test_labeled": int(labeled.get("n_test_labeled", 0)),
        "n_label_failed": int(labeled.get("n_failed", 0) + labeled.get("n_test_failed", 0)),
        "val_force_rmse_meV_per_A": trained.get("val_force_rmse_meV_per_A"),
        "explorer_test_force_rmse_meV_per_A": explorer.get("force_rmse_meV_per_A"),
        "explorer_test_force_mae_meV_per_A": explorer.get("force_mae_meV_per_A"),
        "explorer_test_energy_rmse_meV_per_atom": explorer.get("energy_rmse_meV_per_atom"),
        "explorer_test_force_rmse_by_class_meV_per_A": {
            k: v.get("force_rmse_meV_per_A")
            for k, v in calibration.get("explorer_test_by_class", {}).items()
        },
        "n_test_frames_total": test.get("n_frames", 0),
        "test_force_rmse_meV_per_A": test.get("force_rmse_meV_per_A"),
        "test_force_mae_meV_per_A": test.get("force_mae_meV_per_A"),
        "test_energy_rmse_meV_per_atom": test.get("energy_rmse_meV_per_atom"),
        "yardstick_force_rmse_meV_per_A": yardstick.get("force_rmse_meV_per_A"),
        "yardstick_energy_rmse_meV_per_atom": yardstick.get("energy_rmse_meV_per_atom"),
        "calibration_spearman": fit.get("spearman"),
        "calibration_crossing_eV_per_A": fit.get("crossing_eV_per_A"),
    }


def yardstick_summary(run: RunDir) -> dict[str, Any]:
    """The yardstick's size and the initial ensemble's errors on it (both schedules' state),
    from the initial training's report (no frame file is read)."""
    init = (run.read_report(run.init_dir("train")) or {}).get("yardstick", {})
    return {
        "n_yardstick_frames": int(init.get("n_frames", 0)),
        "init_yardstick_force_rmse_meV_per_A": init.get("force_rmse_meV_per_A"),
        "init_yardstick_energy_rmse_meV_per_atom": init.get("energy_rmse_meV_per_atom"),
    }


def state(ctx) -> dict[str, Any]:
    """The run's summary for ``ctx`` (:class:`eelt.orchestration.context.RunContext`), derived
    from the stage reports (state.json is a view of them)."""
    run, config = ctx.run, ctx.config
    records = finished_iterations(run, config)
    status, why, _, _ = outcome(run, config, records)
    init = run.read_report(run.init_dir("label")) or {}
    n_total = init_labels(init)
    hours_total = init.get("dft_core_hours", 0.0)
    history = []
    for r in records:
        it = r["iteration"]
        lab = run.read_report(run.stage_dir(it, "label")) or {}
        trn = run.read_report(run.stage_dir(it, "train")) or {}
        exp = run.read_report(run.stage_dir(it, "explore")) or {}
        n_total += lab.get("n_labeled", 0) + lab.get("n_test_labeled", 0)
        hours_total += lab.get("dft_core_hours", 0.0)
        history.append(
            {
                "iteration": it,
                "stage": r["stage"],
                "n_explored": r["n_total"],
                "starts": exp.get("starts"),
                "n_walkers": len(exp.get("walkers", [])),
                "n_walkers_failed": len(exp.get("failed", [])),
                "n_walker_restarts": exp.get("n_restarts", 0),
                "n_walker_stops": exp.get("n_stops", 0),
                **state_row(r, lab, trn, calibration_report(run, it) or {}),
                "labels_total": n_total,
                "dft_core_hours_total": hours_total,
                "converged": r["converged"],
                "ends_stage": r["ends_stage"],
            }
        )
    times = _times(run, len(records))
    for h, t in zip(history, times[1:], strict=True):
        h["time"] = t
        h["wall_s"] = t["wall_s"]
        h["busy_share"] = t["busy_share"]
        for stage in ("explore", "examine", "label", "calibrate", "train"):
            h[f"{stage}_wall_s"] = t["stage_wall_s"].get(stage)
    n_train = init.get("n_labeled", 0) + sum(h["n_labeled"] for h in history)
    n_test = sum(h["n_test_labeled"] for h in history)  # the iterations' test frames
    n_explored = sum(h["n_explored"] for h in history)
    return {
        "name": config.name,
        "status": status,
        "status_detail": why,
        "iterations": history,
        "n_init_labeled": init.get("n_labeled", 0),
        "n_user_frames": init.get("n_user_frames", 0),
        "n_init_labels": init_labels(init),  # the sampler's yardstick included
        **yardstick_summary(run),
        "n_train_labels": n_train,
        "n_test_labels": n_test,
        "n_labels": n_total,
        "n_explored": n_explored,
        # candidates and test frames labeled, as a share of the frames explored
        "explored_labeled_fraction": (n_train + n_test - init.get("n_labeled", 0)) / n_explored
        if n_explored
        else None,
        "dft_core_hours": hours_total,
        "models_dir": str(explorer_models(run, len(records)).relative_to(run.root)),
        "init_time": times[0],
        "time": run_times(
            run.root,
            times,
            ctx.session.elapsed_s() if ctx.session is not None else 0.0,
            ctx.worker_slots,
        ),
    }


def _times(run: RunDir, n_iterations: int) -> list[dict[str, Any]]:
    """eelt.orchestration.timing's accounting of the initial stages, then of each finished
    iteration."""
    parts = []
    for it in range(-1, n_iterations):
        stage_dir = run.init_dir if it < 0 else lambda s, i=it: run.stage_dir(i, s)
        reports = {s: run.read_report(stage_dir(s)) for s in KINDS if s != "explore" or it >= 0}
        where = run.root / ("init" if it < 0 else f"iter-{it:03d}")
        parts.append(iteration_times(where, reports))
    return parts
