"""The synchronous schedule: explore -> examine -> label -> calibrate -> train, one iteration
after the other, until the run ends.

Each stage of an iteration is a function of the run (:class:`RunContext`) and the iteration's
place in the stage schedule (:class:`Slot`) that reads its inputs from the run directory, hands
them to the stage packages' functions (the same ones the streaming schedule uses) and writes
its report under ``iter-NNN/<stage>/``. A stage whose report exists is skipped, so a run
resumes after any crash without redoing finished work. ``run_synchronous`` drives the stages
through a :class:`StageRunner`: the direct one, or a Prefect one in ``flows/``.
"""

from __future__ import annotations

import logging
from concurrent.futures import as_completed
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from eelt import atomic
from eelt.errors import EeltError
from eelt.orchestration import timing, tracking
from eelt.orchestration.context import RunContext, StageRunner
from eelt.orchestration.initial import finished, label_into, run_init, train_into
from eelt.orchestration.progress import (
    CALIBRATION_FILE,
    Slot,
    calibration_report,
    explorer_models,
    finished_iterations,
    label_budget_left,
    outcome,
    stage_iterations,
    state,
)

log = logging.getLogger(__name__)

STARTS_FILE = "starts.xyz"  # in explore/ (extxyz): the structures its walkers start from


def trust_levels(ctx: RunContext, slot: Slot) -> dict[str, Any]:
    """The iteration's trust levels (eV/A) and where they come from: the stage's or the
    examine section's, or (calibrated) from the latest iteration's calibration that found a
    crossing. With ``trust_levels: adaptive`` the examination replaces trust_lo."""
    from eelt.examine.calibration import calibrated_levels
    from eelt.examine.trust import stage_trust_levels

    cfg = ctx.config.examine
    levels = stage_trust_levels(cfg, ctx.config.explore.stages[slot.stage])
    earlier = (
        (f"iteration {it}", calibration_report(ctx.run, it))
        for it in range(slot.iteration - 1, -1, -1)
    )
    return calibrated_levels(levels, earlier, cfg)


def explore_starts(ctx: RunContext, slot: Slot) -> tuple[list[Atoms], str]:
    """The iteration's start structures and where they come from."""
    from eelt.examine.trust import deviation_key
    from eelt.explore.walker import read_trajectory
    from eelt.explore.walkers import choose_starts

    run, stage = ctx.run, ctx.config.explore.stages[slot.stage]
    previous, lo = None, None
    if slot.iteration > 0 and stage.starts in ("last", "uncertain"):
        it = slot.iteration - 1
        previous = [read_trajectory(p) for p in run.explored_files(it)]
        exam = run.read_report(run.stage_dir(it, "examine")) or {}
        relative = ctx.config.examine.deviation == "relative"
        lo = exam.get("trust_lo_relative" if relative else "trust_lo_eV_per_A")
    files = run.stage_starts(slot.stage) if isinstance(stage.starts, list) else []
    return choose_starts(
        stage, run.starts(), files, previous, lo, deviation_key(ctx.config.examine),
        f"iteration {slot.iteration - 1}",
        run.sampler_frames() if stage.starts == "sampler" else [], slot.iteration,
    )  # fmt: skip


def explore(ctx: RunContext, slot: Slot) -> dict[str, Any]:
    """Run every walker of the stage (start x temperature x pressure x repeat)."""
    out = ctx.run.stage_dir(slot.iteration, "explore")
    if (done := finished(ctx, out)) is not None:
        return done
    from eelt.explore.job import finished_walker, walker_job
    from eelt.explore.walkers import stage_walkers, walker_job_kwargs

    explore_cfg = ctx.config.explore
    stage = explore_cfg.stages[slot.stage]
    models = explorer_models(ctx.run, slot.iteration)
    levels = trust_levels(ctx, slot)
    starts, source = explore_starts(ctx, slot)
    atomic.write_frames(out / STARTS_FILE, starts)
    walkers = stage_walkers(stage, starts)
    seeds = np.random.SeedSequence([explore_cfg.seed, slot.iteration]).generate_state(len(walkers))
    jobs, earlier = {}, []
    for walker, seed in zip(walkers, seeds, strict=True):
        path = out / f"{walker.name}.extxyz"
        if (summary := finished_walker(path)) is not None:
            earlier.append(summary)  # finished before a crash: not run again
            continue
        kwargs = walker_job_kwargs(
            explore_cfg, stage, walker, n_steps=stage.n_steps, seed=seed, levels=levels,
            relative_eps_eV_per_A=ctx.config.examine.relative_eps_eV_per_A,
            plot=explore_cfg.plot_walkers,
        )  # fmt: skip
        name = kwargs.pop("walker")
        future = ctx.executor.submit(
            walker_job, str(models), walker.start, str(path), name, **kwargs
        )
        jobs[future] = walker.name
    if earlier:
        log.info("explore: %d walkers finished earlier, not run again", len(earlier))
    summaries, failed = list(earlier), []
    n_walkers = len(earlier) + len(jobs)
    where = f"iter-{slot.iteration:03d}"
    with tracking.task(
        f"{where}-explore", f"{where}: explore, {n_walkers} walkers", n_walkers
    ) as progress:
        progress.update(len(summaries))
        for future in as_completed(jobs):
            try:
                summaries.append(future.result())
            except Exception as err:  # a dead worker or a crashed walker: record, go on
                failed.append({"walker": jobs[future], "reason": f"{type(err).__name__}: {err}"})
                log.warning("walker %s failed: %s", jobs[future], failed[-1]["reason"])
            progress.advance()
    walker_records = [_walker_record(s.to_dict(), ctx.root) for s in summaries]
    if not walker_records:
        raise EeltError(
            f"explore: every walker of iteration {slot.iteration} failed: {failed[0]['reason']}"
        )
    walker_records.sort(key=lambda w: w["walker"])
    report = {
        "stage": slot.stage,
        "stage_iteration": slot.stage_iteration,
        "models_dir": str(models.relative_to(ctx.root)),
        "starts": source,
        "n_starts": len(starts),
        "walkers": walker_records,
        "failed": failed,
        "n_frames": sum(w["n_frames"] for w in walker_records),
        "n_restarts": sum(w["restarts"] for w in walker_records),
        "n_stops": sum(len(w["stops"]) for w in walker_records),
    }
    ctx.run.write_report(out, report)
    return report


def _walker_record(record: dict[str, Any], root: Path) -> dict[str, Any]:
    """A walker's summary with paths relative to the run directory (JSON-safe)."""
    for k in ("trajectory", "plot"):
        if record[k]:
            record[k] = str(Path(record[k]).relative_to(root))
    record["extra_files"] = [str(Path(p).relative_to(root)) for p in record["extra_files"]]
    if not np.isfinite(record["max_devi_f_max"]):
        record["max_devi_f_max"] = None
    return record


def examine(ctx: RunContext, slot: Slot) -> dict[str, Any]:
    """Split the iteration's explored frames by trust level; draw the held-out test frames
    uniformly from the fresh ones; select at most max_candidates (diverse) candidates."""
    out = ctx.run.stage_dir(slot.iteration, "examine")
    if (done := finished(ctx, out)) is not None:
        return done
    from eelt.examine.convergence import ratio_converged
    from eelt.examine.examination import Allowance, Classified, examine_frames
    from eelt.examine.trust import classify_frames, deviation_histogram
    from eelt.explore.walker import read_trajectory
    from eelt.label import frame_hash
    from eelt.label.batch import training_hashes

    run, cfg = ctx.run, ctx.config.examine
    stage = ctx.config.explore.stages[slot.stage]
    frames: list[Atoms] = []
    for path in run.explored_files(slot.iteration):
        frames += read_trajectory(path)
    classified = Classified(*classify_frames(frames, trust_levels(ctx, slot), cfg))
    counts = classified.counts
    earlier = [
        run.read_report(run.stage_dir(it, "examine"))["accurate_ratio"]
        for it in stage_iterations(run, slot.stage, slot.iteration)
    ]
    converged = ratio_converged(
        [*earlier, counts.accurate_ratio], cfg.converged_accurate_ratio, cfg.converged_n_iterations
    )
    cap = stage.max_candidates or cfg.max_candidates
    if converged and slot.stage == len(ctx.config.explore.stages) - 1:
        cap = 0  # the run ends here: only the test frames are labeled, to measure it
    allowance = Allowance(cap, label_budget_left(run, ctx.config, slot), cfg.test_frames)
    settings = ctx.labeler.settings()
    hashes = [frame_hash(f, settings) for f in frames]
    committed = training_hashes(run.data_files())
    chosen = examine_frames(
        frames, hashes, committed, classified, cfg, allowance, (slot.iteration,), out
    )
    levels, unit = classified.levels, classified.unit
    lo, hi = levels["trust_lo" + unit], levels["trust_hi" + unit]
    deviation_histogram(classified.devi, lo, hi, out / "deviation.png")
    report = {
        "stage": slot.stage,
        "stage_iteration": slot.stage_iteration,
        **chosen,
        "converged": bool(converged),
    }
    log.info(
        "iteration %d: trust levels %.3g / %.3g %s (%s); accurate %.3f, candidate %.3f, "
        "failed %.3f; %d candidates (%d edge frames) and %d test frames to label",
        slot.iteration, lo, hi, "(relative)" if cfg.deviation == "relative" else "eV/A",
        levels["trust_source"], counts.accurate_ratio, counts.candidate_ratio,
        counts.failed_ratio, report["n_selected"], report["n_edge_frames"],
        report["n_test_frames"],
    )  # fmt: skip
    ctx.run.write_report(out, report)
    return report


def label(ctx: RunContext, slot: Slot) -> dict[str, Any]:
    """Label the candidates (training data) and the test frames (held out)."""
    out = ctx.run.stage_dir(slot.iteration, "label")
    if (done := finished(ctx, out)) is not None:
        return done
    from eelt.examine.examination import CANDIDATES_FILE, TEST_FRAMES_FILE
    from eelt.explore.walker import read_trajectory

    exam_dir = ctx.run.stage_dir(slot.iteration, "examine")
    frames = read_trajectory(exam_dir / CANDIDATES_FILE)
    test_path = exam_dir / TEST_FRAMES_FILE
    tests = read_trajectory(test_path) if test_path.is_file() else []
    return label_into(
        ctx, frames, tests, out, ctx.run.data_dir / f"iter-{slot.iteration:03d}.extxyz",
        ctx.run.test_data_file(slot.iteration),
    )  # fmt: skip


def calibrate(ctx: RunContext, slot: Slot) -> dict[str, Any]:
    """The exploring ensemble against DFT on this iteration's labeled frames: its error on
    the test frames (overall and per trust class) and how its max force deviation tracks its
    true max atomic force error (examine/calibration.json and calibration.png)."""
    if (done := calibration_report(ctx.run, slot.iteration)) is not None:
        log.info("iter-%03d calibration: finished earlier, skipped", slot.iteration)
        return done
    import ase.io

    from eelt.examine.calibration import ExploredLabels, calibrate_explorers

    run = ctx.run
    exam_dir = run.stage_dir(slot.iteration, "examine")
    exam = run.read_report(exam_dir)
    labeled = run.read_report(run.stage_dir(slot.iteration, "label"))

    def frames(key: str) -> list[Atoms]:
        return ase.io.read(run.root / labeled[key], ":") if labeled.get(key) else []

    models = explorer_models(run, slot.iteration)
    record = calibrate_explorers(
        [ExploredLabels(exam, frames("data_file"), frames("test_file"), models, {})],
        ctx.config.examine.target_force_error_eV_per_A,
        exam_dir / "calibration.png",
        f"iteration {slot.iteration}: exploring ensemble {models.relative_to(run.root)}",
    )
    record = {"models_dir": str(models.relative_to(run.root)), **record}
    atomic.write_json(exam_dir / CALIBRATION_FILE, record)
    return record


def train(ctx: RunContext, slot: Slot) -> dict[str, Any]:
    """The next ensemble: warm from the explorers on every label so far (nothing trained when
    the iteration labeled no candidate)."""
    out = ctx.run.stage_dir(slot.iteration, "train")
    if (done := finished(ctx, out)) is not None:
        return done
    labeled = ctx.run.read_report(ctx.run.stage_dir(slot.iteration, "label"))
    report = train_into(
        ctx, out, explorer_models(ctx.run, slot.iteration), ctx.run.data_files(),
        labeled["n_labeled"], ctx.run.test_data_files(before=slot.iteration + 1),
        f"iter-{slot.iteration:03d}",
    )  # fmt: skip
    ctx.run.write_report(out, report)
    return report


def next_slot(ctx: RunContext) -> Slot | None:
    """Where the next iteration sits in the stage schedule; None when the run has ended."""
    records = finished_iterations(ctx.run, ctx.config)
    status, _, stage, count = outcome(ctx.run, ctx.config, records)
    if status != "running":
        return None
    return Slot(len(records), stage, count)


def iterate(ctx: RunContext, slot: Slot, runner: StageRunner) -> dict[str, Any]:
    """One iteration's stages, each timed and run through ``runner``."""
    it = slot.iteration
    where = ctx.root / f"iter-{it:03d}"
    reports = {}
    for stage, body in (
        ("explore", explore), ("examine", examine), ("label", label),
        ("calibrate", calibrate), ("train", train),
    ):  # fmt: skip
        output = (
            ctx.run.stage_dir(it, "examine") / CALIBRATION_FILE
            if stage == "calibrate"
            else ctx.run.report_path(ctx.run.stage_dir(it, stage))
        )
        reports[stage] = ctx.timed_stage(
            runner, where, stage, output, lambda body=body: body(ctx, slot)
        )
    return {
        "iteration": it,
        **reports,
        "explore": {"n_frames": reports["explore"]["n_frames"]},
    }


def run_synchronous(ctx: RunContext, runner: StageRunner) -> dict[str, Any]:
    """Run (or resume) the synchronous schedule to the end; return the final state."""
    if (ctx.root / "stream").is_dir():
        raise EeltError(f"{ctx.root}: a streaming run; resume it with loop.mode streaming")
    with timing.Session(ctx.root) as ctx.session:
        with timing.entered("init"):  # where a stop between stages leaves the run
            run_init(ctx, runner)
        ctx.run.write_state(state(ctx))
        while (slot := next_slot(ctx)) is not None:
            with timing.entered(f"iter-{slot.iteration:03d}"):
                runner.iteration(slot.iteration, lambda s=slot: iterate(ctx, s, runner))
            ctx.run.write_state(current := state(ctx))
            runner.state_written(current)
    ctx.session = None
    final = state(ctx)  # after the session: the run's wall time counts it
    ctx.run.write_state(final)
    runner.state_written(final)
    return final
