"""The initial data and ensemble, before the first exploration, the same for both schedules:
the start structures and randomly perturbed copies labeled (DP-GEN's init step), beside the
user's own labeled data, then the first ensemble trained on them (``init/label``,
``init/train``)."""

from __future__ import annotations

import logging
from typing import Any

import ase.io
import numpy as np
from ase import Atoms

from eelt import atomic
from eelt.errors import EeltError
from eelt.orchestration import tracking
from eelt.orchestration.context import RunContext, StageRunner

log = logging.getLogger(__name__)


def finished(ctx: RunContext, directory) -> dict[str, Any] | None:
    """The report of a stage that finished earlier (then it is skipped), or None."""
    report = ctx.run.read_report(directory)
    if report is not None:
        log.info("%s: finished earlier, skipped", directory.relative_to(ctx.root))
    return report


def label_into(ctx: RunContext, frames, tests, out_dir, data_file, test_file=None, extra=None):
    """Label ``frames`` (training data, appended as ``data_file``) and ``tests`` (held out,
    ``test_file``) in one batch with the run's labeler and label store; stop on
    label.max_failed_fraction; write and return the stage report (with ``extra``'s fields:
    the report is written once, since its presence marks the stage finished)."""
    from eelt.label.batch import check_failed_fraction, label_batch

    where = str(out_dir.relative_to(ctx.root))
    n = len(frames) + len(tests)
    key, what = f"{where.split('/')[0]}-label", f"{where.split('/')[0]}: label {n} frames"
    with tracking.task(key, what, n) as progress:
        batch = label_batch(
            frames, tests, ctx.labeler, ctx.label_executor, ctx.run.labels_dir,
            lambda done, total: progress.update(done + n - total),  # duplicates count done
        )  # fmt: skip
    record = batch.record
    if batch.candidates:
        atomic.write_frames(data_file, batch.candidates)
    if batch.tests and test_file is not None:
        atomic.write_frames(test_file, batch.tests)
    for failure in record["failed"]:
        log.warning("label failed for frame %s: %s", failure["index"], failure["reason"])
    n_failed = record["n_failed"] + record["n_test_failed"]
    check_failed_fraction(
        n_failed, n, ctx.config.label.max_failed_fraction, where, record["failed"]
    )
    record["data_file"] = str(data_file.relative_to(ctx.root)) if batch.candidates else None
    record["test_file"] = str(test_file.relative_to(ctx.root)) if batch.tests else None
    record.update(extra or {})
    ctx.run.write_report(out_dir, record)
    return record


def sampler_temperatures_K(config) -> list[float]:
    """init.sampler.temperatures_K, else every temperature of the explore stages, sorted."""
    given = config.init.sampler.temperatures_K
    if given:
        return [float(t) for t in given]
    return sorted({float(t) for stage in config.explore.stages for t in stage.temperatures_K})


def init_sample(ctx: RunContext) -> tuple[list[Atoms], list[Atoms]]:
    """The sampler's frames to label (init.sampler) and its yardstick frames, a resumable
    step: the whole trajectory in ``init/sample/trajectory.extxyz``, the chosen frames in
    ``chosen.extxyz`` and the yardstick's (drawn at random from the rest) in
    ``yardstick.extxyz``, skipped when its report exists. Nothing when the sampler is off."""
    cfg = ctx.config.init.sampler
    if cfg.kind == "none":
        return [], []
    out = ctx.run.init_dir("sample")
    chosen_file, yardstick_file = ctx.run.sampler_chosen_file, out / "yardstick.extxyz"
    if finished(ctx, out) is None:
        _sample(ctx, out, chosen_file, yardstick_file)
    # as written, so a resume labels the same frames
    yardstick = ase.io.read(yardstick_file, ":") if yardstick_file.is_file() else []
    return ctx.run.sampler_frames(), yardstick


def _sample(ctx: RunContext, out, chosen_file, yardstick_file) -> None:
    """Run the sampler MD and write its trajectory, choices and report into ``out``."""
    from eelt.explore import sampler

    cfg = ctx.config.init.sampler
    temperatures = sampler_temperatures_K(ctx.config)
    starts = ctx.run.starts()
    dt = cfg.timestep_fs
    dt_ref = dt or min(sampler.default_timestep_fs(a) for a in starts)
    label = ctx.config.label
    calculator = sampler.calculator_factory(
        cfg.kind, getattr(label, "charge", 0), getattr(label, "spin", 0)
    )
    failures: list[str] = []
    with tracking.task("init-sample", "init: sampler MD", 1) as progress:
        frames = sampler.sample_frames(
            starts, calculator, temperatures, cfg.n_steps, dt, max(1, round(cfg.dump_fs / dt_ref)),
            round(cfg.equilibrate_fs / dt_ref), cfg.conformers, cfg.seed, ctx.executor,
            failures.append,
        )  # fmt: skip
        progress.update(1)
    for failure in failures:
        log.warning("init.sampler: MD failed (%s); going on without it", failure)
    if not frames:
        raise EeltError(
            f"init.sampler: every sampler MD failed (first: {failures[0]}); "
            "set init.sampler.kind: none or use perturbed copies (init.n_perturbed)"
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_frames(ctx.run.sampler_trajectory_file, frames)
    picked = sampler.diverse_choice(frames, cfg.n_frames)
    chosen = [frames[k] for k in picked]
    yardstick = [
        frames[k] for k in sampler.yardstick_choice(len(frames), picked, cfg.n_yardstick, cfg.seed)
    ]
    atomic.write_frames(chosen_file, chosen)
    if yardstick:
        atomic.write_frames(yardstick_file, yardstick)
    ctx.run.write_report(
        out,
        {
            "kind": cfg.kind,
            "temperatures_K": temperatures,
            "n_trajectory_frames": len(frames),
            "n_chosen": len(chosen),
            "n_yardstick": len(yardstick),
            "failed_runs": failures,
            "n_runs": len(
                {
                    (f.info["start_index"], f.info["conformer"], f.info["temperature_K"])
                    for f in frames
                }
            ),
        },
    )


def init_label(ctx: RunContext) -> dict[str, Any]:
    """Label the start structures and randomly perturbed copies (DP-GEN's init step) and the
    thermal sampler's chosen frames (:func:`init_sample`)."""
    out = ctx.run.init_dir("label")
    if (done := finished(ctx, out)) is not None:
        return done
    from eelt.explore.perturb import perturbed_copies

    cfg = ctx.config.init
    rng = np.random.default_rng(cfg.seed)
    frames: list[Atoms] = []
    # with only the user's data (n_perturbed 0), nothing is labeled here
    for atoms in ctx.run.starts() if cfg.n_perturbed else []:
        frames.append(atoms)
        frames += perturbed_copies(
            atoms, cfg.n_perturbed, cfg.position_sigma_A, cfg.cell_strain, rng
        )
    chosen, yardstick = init_sample(ctx)
    frames += chosen
    n_user = len(ctx.run.user_data())
    summary = label_into(
        ctx, frames, yardstick, out, ctx.run.data_dir / "init.extxyz",
        ctx.run.sampler_yardstick_file, {"n_user_frames": n_user},
    )  # fmt: skip
    if summary["n_labeled"] + n_user < 2:
        raise EeltError(
            f"init: only {summary['n_labeled']} of {len(frames)} initial frames could be labeled "
            f"and init.data holds {n_user} "
            f"(first reason: {summary['failed'][0]['reason'] if summary['failed'] else 'none'})"
        )
    return summary


def train_into(ctx: RunContext, out_dir, previous, data_files, n_new, test_files, where: str):
    """Train a generation into ``out_dir`` (:func:`eelt.train.generation.train_generation`),
    with a progress task named after ``where`` (init or iter-NNN); return its report."""
    from eelt.train.generation import train_generation

    k = ctx.config.train.ensemble_size
    with tracking.task(f"{where}-train", f"{where}: train {k} members", k) as progress:
        report = train_generation(
            data_files, n_new, out_dir, previous, ctx.config.train, ctx.type_map,
            ctx.train_executor, test_files, ctx.root, where, ctx.run.yardstick_files(),
        )  # fmt: skip
        progress.update(k)
    return report


def init_train(ctx: RunContext) -> dict[str, Any]:
    """The first ensemble, on the initial data."""
    out = ctx.run.init_dir("train")
    if (done := finished(ctx, out)) is not None:
        return done
    report = train_into(ctx, out, None, ctx.run.data_files(), 0, [], "init")
    ctx.run.write_report(out, report)
    return report


def run_init(ctx: RunContext, runner: StageRunner) -> None:
    """The initial labels and ensemble, as timed stages of ``runner`` (either schedule)."""
    init = ctx.root / "init"
    for stage, body in (("label", init_label), ("train", init_train)):
        output = ctx.run.report_path(ctx.run.init_dir(stage))
        ctx.timed_stage(runner, init, stage, output, lambda body=body: body(ctx))
