"""The EELT loop: explore -> examine -> label -> train, until the examiner says converged.

``Loop`` holds one method per stage (the exploration in ``eelt.explore.stage``, the
examination in ``eelt.examine.stage``, budgets,
end states and the summary in ``eelt.orchestration.progress``); each reads its inputs from the run directory,
writes its outputs there and finishes by writing the stage's ``report.json``. A stage
whose report exists is skipped, so a run resumes after any crash without redoing
finished work. ``run_loop`` drives the stages through a ``StageRunner``: the direct one
here, a Prefect one in ``flows/``; the loop logic is the same for both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import ase.io
import numpy as np
from ase import Atoms

from eelt import atomic
from eelt.config import RunConfig
from eelt.errors import EeltError
from eelt.examine.stage import CALIBRATION_FILE, TEST_FRAMES_FILE, Examination
from eelt.explore.stage import Exploration
from eelt.orchestration import timing, tracking
from eelt.orchestration.progress import Progress, Slot
from eelt.orchestration.rundir import RunDir

log = logging.getLogger(__name__)
T = TypeVar("T")


class StageRunner(Protocol):
    """How stages and iterations are run: directly, or as Prefect tasks and subflows."""

    def iteration(self, index: int, body: Callable[[], T]) -> T: ...

    def stage(self, name: str, body: Callable[[], T]) -> T: ...

    def state_written(self, state: dict[str, Any]) -> None:
        """The run's state after an iteration (or at the start and end), as in state.json."""


class DirectRunner:
    def iteration(self, index: int, body: Callable[[], T]) -> T:
        return body()

    def stage(self, name: str, body: Callable[[], T]) -> T:
        return body()

    def state_written(self, state: dict[str, Any]) -> None:
        pass


def prepare_run(config: RunConfig, base_dir: Path, root: Path) -> RunDir:
    """Create the run directory, or check that ``config`` may resume the one there (every
    check of :func:`eelt.orchestration.preflight.preflight` first: nothing is written when one fails)."""
    from eelt.orchestration.preflight import preflight

    run = RunDir(root)
    inputs = preflight(config, base_dir, root)
    config, starts = inputs.config, inputs.starts
    user_data, stage_starts = inputs.user_data, inputs.stage_starts
    if run.exists():
        run.update_resumable(config)
        log.info("resuming run in %s", root)
    else:
        run.create(config, starts, user_data, stage_starts)
        log.info("new run in %s", root)
    return run


class Loop(Exploration, Examination, Progress):
    """The stages of one run, bound to its run directory and an Executor; the exploration
    lives in :mod:`eelt.explore.stage`, the examination in :mod:`eelt.examine.stage`, budgets
    and end states in :mod:`eelt.orchestration.progress`."""

    def __init__(self, run: RunDir, executor: Executor):
        self.run = run
        self.config = run.load_config()
        self.executor = executor
        self.type_map: list[str] = list(self.config.system.type_map or [])
        self.session: timing.Session | None = None  # the run_loop call under way

    # --- helpers --------------------------------------------------------------------
    def _done(self, directory: Path) -> dict[str, Any] | None:
        report = self.run.read_report(directory)
        if report is not None:
            log.info("%s: finished earlier, skipped", directory.relative_to(self.run.root))
        return report

    def _labeler(self):
        """The run's labeler, with each DFT job's threads and memory cap from ``execution``."""
        import dataclasses

        from dask.utils import parse_bytes

        from eelt.label import PySCFLabeler, make_labeler

        labeler = make_labeler(self.config.label)
        if isinstance(labeler, PySCFLabeler):
            ex = self.config.execution
            per_job_MB = parse_bytes(ex.memory_per_worker) / ex.threads_per_worker / 2**20
            labeler = dataclasses.replace(
                labeler, threads=ex.threads_per_job, max_memory_MB=0.8 * per_job_MB
            )
        return labeler

    def _label(
        self,
        frames: list[Atoms],
        out_dir: Path,
        data_file: Path,
        test_frames: list[Atoms] = (),
        test_file: Path | None = None,
    ) -> dict[str, Any]:
        """Label ``frames`` (training data, written to ``data_file``) and ``test_frames``
        (held out, written to ``test_file``) in one batch of jobs through the executor."""
        from eelt.label import label_frames

        t0 = time.perf_counter()
        jobs = list(frames) + list(test_frames)
        labeler = self._labeler()
        executor = self.executor
        if self.config.execution.gpus_per_worker and getattr(labeler, "device", "cpu") != "cpu":
            from eelt.orchestration.execution import gpu_executor

            executor = gpu_executor(executor)  # DFT on the GPU workers only
        where = out_dir.relative_to(self.run.root).parts[0]  # init or iter-NNN
        key, what = f"{where}-label", f"{where}: label {len(jobs)} frames"
        with tracking.task(key, what, len(jobs)) as progress:
            report = label_frames(
                jobs,
                labeler,
                executor,
                self.run.labels_dir,
                lambda done, total: progress.update(
                    done + len(jobs) - total
                ),  # duplicates count done
            )
        failed_index = {f["index"] for f in report.failed}
        done = [i for i in range(len(jobs)) if i not in failed_index]
        train = [a for i, a in zip(done, report.labeled, strict=True) if i < len(frames)]
        test = [a for i, a in zip(done, report.labeled, strict=True) if i >= len(frames)]
        if train:
            atomic.write_frames(data_file, train)
        if test and test_file is not None:
            atomic.write_frames(test_file, test)
        for failure in report.failed:
            failure["test_frame"] = failure["index"] >= len(frames)
            log.warning("label failed for frame %s: %s", failure["index"], failure["reason"])
        n_test_failed = sum(f["test_frame"] for f in report.failed)
        by_kind: dict[str, int] = {}
        for failure in report.failed:
            by_kind[failure.get("kind", "error")] = by_kind.get(failure.get("kind", "error"), 0) + 1
        summary = {
            "n_requested": len(frames),
            "n_labeled": len(train),
            "n_failed": len(report.failed) - n_test_failed,
            "n_test_requested": len(test_frames),
            "n_test_labeled": len(test),
            "n_test_failed": n_test_failed,
            "n_cached": report.n_cached,
            "n_computed": report.n_computed,
            "dft_core_hours": report.core_hours,
            "dft_core_hours_computed": report.core_hours_computed,
            "busy_s": report.busy_s_computed,
            "failed": report.failed,
            "failed_by_kind": by_kind,
            "data_file": str(data_file.relative_to(self.run.root)) if train else None,
            "test_file": str(test_file.relative_to(self.run.root)) if test else None,
            "wall_s": time.perf_counter() - t0,
        }
        share = len(report.failed) / len(jobs) if jobs else 0.0
        limit = self.config.label.max_failed_fraction
        if share > limit:
            first = report.failed[0]
            # the finished labels stay in labels/; the stage's report is not written, so a
            # run started again (after the cause is fixed) labels only what failed
            raise EeltError(
                f"label: {len(report.failed)} of {len(jobs)} labels failed in "
                f"{out_dir.relative_to(self.run.root)} ({share:.0%} > label.max_failed_fraction "
                f"{limit:g}; {', '.join(f'{k} {n}' for k, n in sorted(by_kind.items()))}); "
                f"first: {first['reason']}"
            )
        self.run.write_report(out_dir, summary)
        return summary

    def _test_errors(self, models_dir: Path, iteration: int) -> dict[str, Any]:
        """Errors of the ensemble in ``models_dir`` on the test frames of iterations <= ``iteration``:
        summed per iteration (so any union of them combines exactly) and over all of them."""
        from eelt.model import Ensemble
        from eelt.train import ErrorSums, predict_frames

        files = self.run.test_data_files(before=iteration + 1)
        if not files:
            return {"test": ErrorSums().metrics(), "test_sums_by_iteration": {}}
        ensemble = Ensemble.load(models_dir)
        by_iteration = {
            f.stem.removeprefix("iter-"): ErrorSums.of(
                predict_frames(ensemble, ase.io.read(f, ":"))
            )
            for f in files
        }
        total = ErrorSums.total(by_iteration.values())
        return {
            "test": total.metrics(),
            "test_sums_by_iteration": {k: v.to_dict() for k, v in by_iteration.items()},
        }

    def _train(
        self, out_dir: Path, init_dir: Path | None, n_new: int, iteration: int = -1
    ) -> dict[str, Any]:
        from eelt.train import train_warm_or_fresh

        cfg = self.config.train
        data_files = self.run.data_files()
        n_old = sum(len(ase.io.read(f, ":")) for f in data_files) - n_new
        warm = init_dir is not None and (
            cfg.warm_start == "always" or (cfg.warm_start == "auto" and n_new <= n_old)
        )
        t0 = time.perf_counter()
        files = [str(f) for f in data_files]
        where = out_dir.relative_to(self.run.root).parts[0]  # init or iter-NNN
        what = f"{where}: train {cfg.ensemble_size} members on {n_old + n_new} frames"
        executor = self.executor
        if self.config.execution.gpus_per_worker:
            from eelt.orchestration.execution import gpu_executor

            executor = gpu_executor(executor)  # training on the GPU workers: one device per stack
        with tracking.task(f"{where}-train", what, cfg.ensemble_size) as progress:
            results = train_warm_or_fresh(
                files, out_dir, cfg, self.type_map, executor, init_dir, warm, where
            )
            progress.update(len(results))
        from eelt.train.trainer import training_busy_s

        members = [r.to_dict() for r in results]
        summary = {
            "models_dir": str(out_dir.relative_to(self.run.root)),
            "warm_start": warm,
            "n_frames": n_old + n_new,
            "members": members,
            "busy_s": training_busy_s(members, cfg, executor),
            "val_energy_rmse_meV_per_atom": float(
                np.mean([m["val_energy_rmse_meV_per_atom"] for m in members])
            ),
            "val_force_rmse_meV_per_A": float(
                np.mean([m["val_force_rmse_meV_per_A"] for m in members])
            ),
            **self._test_errors(out_dir, iteration),
            "wall_s": time.perf_counter() - t0,
        }
        self.run.write_report(out_dir, summary)
        return summary

    # --- the initial data and ensemble -----------------------------------------------
    def init_label(self) -> dict[str, Any]:
        """Label the start structures and randomly perturbed copies (DP-GEN's init step)."""
        out = self.run.init_dir("label")
        if (done := self._done(out)) is not None:
            return done
        from eelt.explore import perturbed_copies

        cfg = self.config.init
        rng = np.random.default_rng(cfg.seed)
        frames: list[Atoms] = []
        # with only the user's data (n_perturbed 0), nothing is labeled here
        for atoms in self.run.starts() if cfg.n_perturbed else []:
            frames.append(atoms)
            frames += perturbed_copies(
                atoms, cfg.n_perturbed, cfg.position_sigma_A, cfg.cell_strain, rng
            )
        n_user = len(self.run.user_data())
        summary = self._label(frames, out, self.run.data_dir / "init.extxyz")
        summary["n_user_frames"] = n_user
        self.run.write_report(out, summary)
        if summary["n_labeled"] + n_user < 2:
            raise EeltError(
                f"init: only {summary['n_labeled']} of {len(frames)} initial frames could be labeled "
                f"and init.data holds {n_user} "
                f"(first reason: {summary['failed'][0]['reason'] if summary['failed'] else 'none'})"
            )
        return summary

    def init_train(self) -> dict[str, Any]:
        out = self.run.init_dir("train")
        if (done := self._done(out)) is not None:
            return done
        return self._train(out, init_dir=None, n_new=0)

    # --- one iteration ----------------------------------------------------------------
    def models_dir(self, iteration: int) -> Path:
        """The ensemble that explores in ``iteration``: the latest one trained before it."""
        for it in range(iteration - 1, -1, -1):
            report = self.run.read_report(self.run.stage_dir(it, "train"))
            if report is not None and report.get("models_dir"):
                return self.run.root / report["models_dir"]
        return self.run.init_dir("train")

    def label(self, slot: Slot) -> dict[str, Any]:
        """Label the candidates (training data) and the test frames (held out)."""
        out = self.run.stage_dir(slot.iteration, "label")
        if (done := self._done(out)) is not None:
            return done
        from eelt.explore import read_trajectory

        exam_dir = self.run.stage_dir(slot.iteration, "examine")
        frames = read_trajectory(exam_dir / "candidates.extxyz")
        test_path = exam_dir / TEST_FRAMES_FILE
        tests = read_trajectory(test_path) if test_path.is_file() else []
        return self._label(
            frames,
            out,
            self.run.data_dir / f"iter-{slot.iteration:03d}.extxyz",
            tests,
            self.run.test_data_file(slot.iteration),
        )

    def train(self, slot: Slot) -> dict[str, Any]:
        out = self.run.stage_dir(slot.iteration, "train")
        if (done := self._done(out)) is not None:
            return done
        labeled = self.run.read_report(self.run.stage_dir(slot.iteration, "label"))
        previous = self.models_dir(slot.iteration)
        if labeled["n_labeled"] == 0:
            report = {
                "models_dir": str(previous.relative_to(self.run.root)),
                "skipped": "no new labels",
                **self._test_errors(previous, slot.iteration),
            }
            self.run.write_report(out, report)
            return report
        return self._train(
            out, init_dir=previous, n_new=labeled["n_labeled"], iteration=slot.iteration
        )

    # --- the schedule ---------------------------------------------------------------------
    def next_slot(self) -> Slot | None:
        records = self.finished_iterations()
        status, _, stage, count = self.outcome(records)
        if status != "running":
            return None
        return Slot(len(records), stage, count)

    @property
    def worker_slots(self) -> int:
        """Jobs the executor runs at once (for the idle-time accounting)."""
        ex = self.config.execution
        workers = (
            ex.max_jobs if ex.kind not in ("local", "threads") and ex.max_jobs else ex.n_workers
        )
        return int(workers * ex.threads_per_worker)

    def run_init(self, runner: StageRunner) -> None:
        """The initial labels and ensemble, as timed stages of ``runner`` (either loop mode)."""
        init = self.run.root / "init"
        for stage, body in (("label", self.init_label), ("train", self.init_train)):
            output = self.run.report_path(self.run.init_dir(stage))
            self.timed_stage(runner, init, stage, output, body)

    def timed_stage(self, runner: StageRunner, where: Path, stage: str, output: Path, body):
        """``runner.stage`` with the stage's wall time recorded (eelt.orchestration.timing)."""
        return runner.stage(
            stage if where.name.startswith("iter-") else f"init-{stage}",
            lambda: timing.timed(where, stage, output, self.worker_slots, body),
        )

    def iterate(self, slot: Slot, runner: StageRunner) -> dict[str, Any]:
        it = slot.iteration
        where = self.run.root / f"iter-{it:03d}"

        def report(stage: str) -> Path:
            return self.run.report_path(self.run.stage_dir(it, stage))

        calibration_file = self.run.stage_dir(it, "examine") / CALIBRATION_FILE
        explored = self.timed_stage(runner, where, "explore", report("explore"),
                                    lambda: self.explore(slot))  # fmt: skip
        exam = self.timed_stage(runner, where, "examine", report("examine"),
                                lambda: self.examine(slot))  # fmt: skip
        labeled = self.timed_stage(runner, where, "label", report("label"),
                                   lambda: self.label(slot))  # fmt: skip
        calibration = self.timed_stage(runner, where, "calibrate", calibration_file,
                                       lambda: self.calibrate(slot))  # fmt: skip
        trained = self.timed_stage(runner, where, "train", report("train"),
                                   lambda: self.train(slot))  # fmt: skip
        return {
            "iteration": slot.iteration,
            "explore": {"n_frames": explored["n_frames"]},
            "examine": exam,
            "label": labeled,
            "calibrate": calibration,
            "train": trained,
        }


def run_loop(loop: Loop, runner: StageRunner | None = None) -> dict[str, Any]:
    """Run (or resume) the loop to the end; return the final state. With ``loop.mode:
    streaming`` the stages overlap instead (:mod:`eelt.orchestration.streaming`)."""
    runner = runner or DirectRunner()
    if loop.config.loop.mode == "streaming":
        from eelt.orchestration.streaming import run_streaming

        return run_streaming(loop, runner)
    if (loop.run.root / "stream").is_dir():
        raise EeltError(f"{loop.run.root}: a streaming run; resume it with loop.mode streaming")
    with timing.Session(loop.run.root) as loop.session:
        loop.run_init(runner)
        loop.run.write_state(loop.state())
        while (slot := loop.next_slot()) is not None:
            runner.iteration(slot.iteration, lambda s=slot: loop.iterate(s, runner))
            loop.run.write_state(state := loop.state())
            runner.state_written(state)
    loop.session = None
    state = loop.state()  # after the session: the run's wall time counts it
    loop.run.write_state(state)
    runner.state_written(state)
    log_end(state)
    return state


def log_end(state: dict[str, Any]) -> None:
    """The run's last log line: how it ended and where its models are."""
    log.info(
        "run %s: %s (%s); models in %s",
        state["name"],
        state["status"],
        state["status_detail"],
        state["models_dir"],
    )
