"""The EELT loop: explore -> examine -> label -> train, until the examiner says converged.

``Loop`` holds one method per stage; each reads its inputs from the run directory,
writes its outputs there and finishes by writing the stage's ``report.json``. A stage
whose report exists is skipped, so a run resumes after any crash without redoing
finished work. ``run_loop`` drives the stages through a ``StageRunner``: the direct one
here, a Prefect one in ``flows/``; the loop logic is the same for both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import ase.io
import numpy as np
from ase import Atoms

from eelt import atomic, keys
from eelt.config import RunConfig, StageConfig
from eelt.errors import EeltError
from eelt.rundir import RunDir, read_structures, resolve_type_map

log = logging.getLogger(__name__)
T = TypeVar("T")

TEST_FRAMES_FILE = "test_frames.extxyz"  # in examine/: the frames drawn as held-out tests
CALIBRATION_FILE = "calibration.json"  # in examine/: written after labeling


class StageRunner(Protocol):
    """How stages and iterations are run: directly, or as Prefect tasks and subflows."""

    def iteration(self, index: int, body: Callable[[], T]) -> T: ...

    def stage(self, name: str, body: Callable[[], T]) -> T: ...


class DirectRunner:
    def iteration(self, index: int, body: Callable[[], T]) -> T:
        return body()

    def stage(self, name: str, body: Callable[[], T]) -> T:
        return body()


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


def prepare_run(config: RunConfig, base_dir: Path, root: Path) -> RunDir:
    """Create the run directory, or check that ``config`` may resume the one there."""
    run = RunDir(root)
    starts = read_structures(config.system, base_dir)
    config = config.model_copy(
        update={
            "system": config.system.model_copy(
                update={"type_map": resolve_type_map(config, starts)}
            )
        }
    )
    if run.exists():
        run.check_compatible(config, starts)
        run.update_resumable(config)
        log.info("resuming run in %s", root)
    else:
        run.create(config, starts)
        log.info("new run in %s", root)
    return run


class Loop:
    """The stages of one run, bound to its run directory and an Executor."""

    def __init__(self, run: RunDir, executor: Executor):
        self.run = run
        self.config = run.load_config()
        self.executor = executor
        self.type_map: list[str] = list(self.config.system.type_map or [])

    # --- helpers --------------------------------------------------------------------
    def _done(self, directory: Path) -> dict[str, Any] | None:
        report = self.run.read_report(directory)
        if report is not None:
            log.info("%s: finished earlier, skipped", directory.relative_to(self.run.root))
        return report

    def _labeler(self):
        from eelt.label import make_labeler

        return make_labeler(self.config.label)

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
        report = label_frames(jobs, self._labeler(), self.executor, self.run.labels_dir)
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
            "failed": report.failed,
            "data_file": str(data_file.relative_to(self.run.root)) if train else None,
            "test_file": str(test_file.relative_to(self.run.root)) if test else None,
            "wall_s": time.perf_counter() - t0,
        }
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
        from eelt.train import TrainingDiverged, train_ensemble

        cfg = self.config.train
        data_files = self.run.data_files()
        n_old = sum(len(ase.io.read(f, ":")) for f in data_files) - n_new
        warm = init_dir is not None and (
            cfg.warm_start == "always" or (cfg.warm_start == "auto" and n_new <= n_old)
        )
        t0 = time.perf_counter()
        files = [str(f) for f in data_files]
        try:
            results = train_ensemble(
                files, out_dir, cfg, self.type_map, self.executor, init_dir=init_dir, warm=warm
            )
        except TrainingDiverged as err:
            if not warm:
                raise EeltError(
                    f"training diverged: {err}; lower train.start_lr or check the data"
                ) from None
            # finished members are kept; the diverged ones start again from scratch
            log.warning("warm start diverged (%s); training those members from scratch", err)
            results = train_ensemble(files, out_dir, cfg, self.type_map, self.executor)
        members = [r.to_dict() for r in results]
        summary = {
            "models_dir": str(out_dir.relative_to(self.run.root)),
            "warm_start": warm,
            "n_frames": n_old + n_new,
            "members": members,
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
        for atoms in self.run.starts():
            frames.append(atoms)
            frames += perturbed_copies(
                atoms, cfg.n_perturbed, cfg.position_sigma_A, cfg.cell_strain, rng
            )
        summary = self._label(frames, out, self.run.data_dir / "init.extxyz")
        if summary["n_labeled"] < 2:
            raise EeltError(
                f"init: only {summary['n_labeled']} of {len(frames)} initial frames could be labeled "
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

    def explore(self, slot: Slot) -> dict[str, Any]:
        """Run every walker of the stage (start x temperature x repeat) through the executor."""
        out = self.run.stage_dir(slot.iteration, "explore")
        if (done := self._done(out)) is not None:
            return done
        from eelt.explore import walker_job

        stage = self.config.explore.stages[slot.stage]
        models = str(self.models_dir(slot.iteration))
        seeds = np.random.SeedSequence([self.config.explore.seed, slot.iteration])
        levels = self.trust_levels(slot)
        jobs = {}
        starts = self.run.starts()
        n_walkers = len(starts) * len(stage.temperatures_K) * stage.walkers_per_condition
        for w, seed in zip(range(n_walkers), seeds.generate_state(n_walkers), strict=False):
            s, rest = divmod(w, len(stage.temperatures_K) * stage.walkers_per_condition)
            t = rest // stage.walkers_per_condition
            name = f"w{w:03d}-s{s}-T{stage.temperatures_K[t]:g}"
            future = self.executor.submit(
                walker_job,
                models,
                starts[s],
                str(out / f"{name}.extxyz"),
                name,
                temperature_K=stage.temperatures_K[t],
                timestep_fs=stage.timestep_fs,
                n_steps=stage.n_steps,
                dump_interval=stage.dump_interval,
                friction_per_fs=stage.friction_per_fs,
                seed=int(seed),
                forces_from=self.config.explore.forces_from,
                trust_hi_eV_per_A=levels["trust_hi_eV_per_A"],
                trust_hi_relative=levels.get("trust_hi_relative"),
                relative_eps_eV_per_A=self.config.examine.relative_eps_eV_per_A,
                stop_after_failed_dumps=self.config.explore.stop_after_failed_dumps,
                min_distance_fraction=self.config.explore.min_distance_fraction,
                max_bond_fraction=self.config.explore.max_bond_fraction,
            )
            jobs[future] = name
        walkers, failed = [], []
        for future in as_completed(jobs):
            try:
                summary = future.result()
            except Exception as err:  # a dead worker or a crashed walker: record, go on
                failed.append({"walker": jobs[future], "reason": f"{type(err).__name__}: {err}"})
                log.warning("walker %s failed: %s", jobs[future], failed[-1]["reason"])
                continue
            record = summary.to_dict()
            record["trajectory"] = str(Path(summary.trajectory).relative_to(self.run.root))
            if not np.isfinite(record["max_devi_f_max"]):
                record["max_devi_f_max"] = None
            walkers.append(record)
        if not walkers:
            raise EeltError(
                f"explore: every walker of iteration {slot.iteration} failed: {failed[0]['reason']}"
            )
        walkers.sort(key=lambda w: w["walker"])
        report = {
            "stage": slot.stage,
            "stage_iteration": slot.stage_iteration,
            "models_dir": str(Path(models).relative_to(self.run.root)),
            "walkers": walkers,
            "failed": failed,
            "n_frames": sum(w["n_frames"] for w in walkers),
        }
        self.run.write_report(out, report)
        return report

    # --- trust levels and budgets ----------------------------------------------------------
    def calibration_report(self, iteration: int) -> dict[str, Any] | None:
        path = self.run.stage_dir(iteration, "examine") / CALIBRATION_FILE
        return atomic.read_json(path) if path.is_file() else None

    def trust_levels(self, slot: Slot) -> dict[str, Any]:
        """The iteration's trust levels (eV/A) and where they come from: the stage's or the
        examine section's, or (calibrated) from the latest calibration that found a crossing.
        With ``trust_levels: adaptive`` the examination replaces trust_lo."""
        from eelt.examine import calibrated_trust_levels

        cfg = self.config.examine
        if cfg.deviation == "relative":
            return {
                "deviation": "relative",
                "trust_lo_eV_per_A": None,
                "trust_hi_eV_per_A": None,
                "trust_lo_relative": cfg.trust_lo_relative,
                "trust_hi_relative": cfg.trust_hi_relative,
                "trust_source": "config",
            }
        stage = self.config.explore.stages[slot.stage]
        lo = stage.trust_lo_eV_per_A or cfg.trust_lo_eV_per_A
        hi = stage.trust_hi_eV_per_A or cfg.trust_hi_eV_per_A
        source = "stage" if stage.trust_lo_eV_per_A or stage.trust_hi_eV_per_A else "config"
        if cfg.trust_levels == "calibrated":
            for it in range(slot.iteration - 1, -1, -1):
                report = self.calibration_report(it) or {}
                crossing = report.get("calibration", {}).get("crossing_eV_per_A")
                if crossing is not None:
                    lo, hi = calibrated_trust_levels(
                        crossing, tuple(cfg.trust_lo_bounds_eV_per_A), cfg.trust_hi_factor
                    )
                    source = f"calibrated in iteration {it}"
                    break
        return {
            "deviation": "absolute",
            "trust_lo_eV_per_A": float(lo),
            "trust_hi_eV_per_A": float(hi),
            "trust_source": source,
        }

    def labels_used(self, iterations: list[int] | None = None) -> tuple[int, float]:
        """(labels, DFT core-hours) held by the label reports of ``iterations`` (None: the whole
        run, initial labels included); test frames count."""
        reports = []
        if iterations is None:
            reports.append(self.run.read_report(self.run.init_dir("label")))
            it = 0
            while (self.run.stage_dir(it, "examine")).is_dir():
                reports.append(self.run.read_report(self.run.stage_dir(it, "label")))
                it += 1
        else:
            reports = [self.run.read_report(self.run.stage_dir(i, "label")) for i in iterations]
        n = sum(r["n_labeled"] + r.get("n_test_labeled", 0) for r in reports if r)
        hours = sum(r.get("dft_core_hours", 0.0) for r in reports if r)
        return n, hours

    def _stage_iterations(self, stage: int, before: int) -> list[int]:
        out = []
        for it in range(before):
            exam = self.run.read_report(self.run.stage_dir(it, "examine"))
            if exam is not None and exam["stage"] == stage:
                out.append(it)
        return out

    def label_budget_left(self, slot: Slot) -> int | None:
        """Labels the run and the stage may still spend (None: no label budget)."""
        left = []
        if self.config.loop.max_labels is not None:
            left.append(self.config.loop.max_labels - self.labels_used()[0])
        stage_budget = self.config.explore.stages[slot.stage].max_labels
        if stage_budget is not None:
            used = self.labels_used(self._stage_iterations(slot.stage, slot.iteration))[0]
            left.append(stage_budget - used)
        return max(min(left), 0) if left else None

    def _frame_hashes(self, frames: list[Atoms]) -> list[str]:
        from eelt.label import frame_hash

        settings = self._labeler().settings()
        return [frame_hash(f, settings) for f in frames]

    def _training_hashes(self) -> set[str]:
        """Label hashes of every frame in the training data so far."""
        from eelt.label import LABEL_HASH

        return {
            a.info[LABEL_HASH]
            for f in self.run.data_files()
            for a in ase.io.read(f, ":")
            if LABEL_HASH in a.info
        }

    # --- the examination --------------------------------------------------------------------
    def examine(self, slot: Slot) -> dict[str, Any]:
        """Split explored frames by trust level; draw the held-out test frames uniformly from
        all of them; select at most max_candidates (diverse) candidates among the others."""
        out = self.run.stage_dir(slot.iteration, "examine")
        if (done := self._done(out)) is not None:
            return done
        from eelt.examine import (
            CANDIDATE,
            TRUST_CLASSES,
            TrustCounts,
            adaptive_trust_lo,
            classify,
            deviation_histogram,
            draw_test_frames,
            ratio_converged,
            select_candidates,
        )
        from eelt.explore import read_trajectory

        cfg = self.config.examine
        stage = self.config.explore.stages[slot.stage]
        frames: list[Atoms] = []
        for path in self.run.explored_files(slot.iteration):
            frames += read_trajectory(path)
        levels = self.trust_levels(slot)
        unit = "_relative" if cfg.deviation == "relative" else "_eV_per_A"
        key = keys.MAX_DEVI_F_REL if cfg.deviation == "relative" else keys.MAX_DEVI_F
        devi = np.array([a.info.get(key, np.nan) for a in frames], dtype=float)
        if cfg.trust_levels == "adaptive":
            bounds = tuple(cfg.trust_lo_bounds_eV_per_A) if unit == "_eV_per_A" else (0.0, np.inf)
            levels["trust_lo" + unit] = adaptive_trust_lo(
                devi,
                levels["trust_hi" + unit],
                n_candidates=cfg.adaptive_n_candidates,
                fraction=cfg.adaptive_fraction,
                lo_bounds_eV_per_A=bounds,
            )
            levels["trust_source"] = "adaptive"
        lo, hi = levels["trust_lo" + unit], levels["trust_hi" + unit]
        classes = classify(devi, lo, hi)
        counts = TrustCounts.from_labels(classes)
        earlier = [
            self.run.read_report(self.run.stage_dir(it, "examine"))["accurate_ratio"]
            for it in self._stage_iterations(slot.stage, slot.iteration)
        ]
        converged = ratio_converged(
            [*earlier, counts.accurate_ratio],
            cfg.converged_accurate_ratio,
            cfg.converged_n_iterations,
        )
        budget = self.label_budget_left(slot)
        n_test = cfg.test_frames if budget is None else min(cfg.test_frames, budget)
        # test frames: uniform over the distinct explored frames not already in the training
        # data (a walker's first frame is its start structure, labeled in init)
        hashes = self._frame_hashes(frames)
        trained = self._training_hashes()
        fresh = np.array(
            [i for i, h in enumerate(hashes) if h not in trained and hashes.index(h) == i],
            dtype=int,
        )
        drawn = draw_test_frames(
            len(fresh), n_test, np.random.default_rng([cfg.seed, slot.iteration, 1])
        )
        test_idx = fresh[drawn]
        held_out = {hashes[i] for i in test_idx}
        pool = np.array(
            [i for i in np.flatnonzero(classes == CANDIDATE) if hashes[i] not in held_out],
            dtype=int,
        )
        cap = stage.max_candidates or cfg.max_candidates
        if converged and slot.stage == len(self.config.explore.stages) - 1:
            cap = 0  # the run ends here: only the test frames are labeled, to measure it
        if budget is not None:
            cap = min(cap, max(budget - len(test_idx), 0))
        rng = np.random.default_rng([cfg.seed, slot.iteration])
        chosen = select_candidates(frames, pool, cap, cfg.selection, rng)
        for frame, c in zip(frames, classes, strict=True):
            frame.info[keys.TRUST_CLASS] = TRUST_CLASSES[int(c)]
        candidates = [frames[i] for i in chosen]
        atomic.write_frames(out / "candidates.extxyz", candidates)
        atomic.write_frames(out / TEST_FRAMES_FILE, [frames[i] for i in test_idx])
        deviation_histogram(devi, lo, hi, out / "deviation.png")
        report = {
            "stage": slot.stage,
            "stage_iteration": slot.stage_iteration,
            **levels,
            **counts.to_dict(),
            "candidate_cap": int(cap),
            "n_selected": len(candidates),
            "n_test_frames": len(test_idx),
            "test_frame_index": [int(i) for i in test_idx],
            "converged": bool(converged),
            "max_devi_f_max": float(np.nanmax(devi)) if np.isfinite(devi).any() else None,
        }
        log.info(
            "iteration %d: trust levels %.3g / %.3g %s (%s); accurate %.3f, candidate %.3f, "
            "failed %.3f; %d candidates and %d test frames to label",
            slot.iteration,
            lo,
            hi,
            "(relative)" if cfg.deviation == "relative" else "eV/A",
            levels["trust_source"],
            counts.accurate_ratio,
            counts.candidate_ratio,
            counts.failed_ratio,
            len(candidates),
            len(test_idx),
        )
        self.run.write_report(out, report)
        return report

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

    def calibrate(self, slot: Slot) -> dict[str, Any]:
        """The exploring ensemble against DFT on this iteration's labeled frames: its error on
        the test frames (overall and per trust class) and how its max force deviation tracks its
        true max atomic force error (examine/calibration.json and calibration.png)."""
        exam_dir = self.run.stage_dir(slot.iteration, "examine")
        if (done := self.calibration_report(slot.iteration)) is not None:
            log.info("iter-%03d calibration: finished earlier, skipped", slot.iteration)
            return done
        from eelt.examine import TRUST_CLASSES, calibrate, calibration_plot, classify
        from eelt.model import Ensemble
        from eelt.train import ErrorSums, predict_frames

        cfg = self.config.examine
        exam = self.run.read_report(exam_dir)
        labeled = self.run.read_report(self.run.stage_dir(slot.iteration, "label"))
        cands = (
            ase.io.read(self.run.root / labeled["data_file"], ":") if labeled["data_file"] else []
        )
        tests = (
            ase.io.read(self.run.root / labeled["test_file"], ":")
            if labeled.get("test_file")
            else []
        )
        frames = cands + tests
        models = self.models_dir(slot.iteration)
        devi = np.array([f.info[keys.MAX_DEVI_F] for f in frames], dtype=float)
        if exam.get("deviation") == "relative":
            rel = np.array([f.info.get(keys.MAX_DEVI_F_REL, np.nan) for f in frames], dtype=float)
            classes = classify(rel, exam["trust_lo_relative"], exam["trust_hi_relative"])
            lo = hi = 0.0  # the plot's axis is the absolute deviation: no level lines
        else:
            lo, hi = exam["trust_lo_eV_per_A"], exam["trust_hi_eV_per_A"]
            classes = classify(devi, lo, hi)
        pred = predict_frames(Ensemble.load(models), frames) if frames else None
        error = pred.max_force_error_eV_per_A if pred is not None else np.zeros(0)
        kinds = ["candidate"] * len(cands) + ["test"] * len(tests)
        cal = calibrate(devi, error, cfg.target_force_error_eV_per_A)
        test_idx = np.arange(len(cands), len(frames))
        test_sums = ErrorSums.of(pred.subset(test_idx)) if len(test_idx) else ErrorSums()
        by_class = {}
        for code, name in enumerate(TRUST_CLASSES):
            idx = test_idx[classes[test_idx] == code]
            by_class[name] = (ErrorSums.of(pred.subset(idx)) if len(idx) else ErrorSums()).metrics()
        calibration_plot(
            devi,
            error,
            kinds,
            lo,
            hi,
            exam_dir / "calibration.png",
            calibration=cal,
            title=f"iteration {slot.iteration}: exploring ensemble {models.relative_to(self.run.root)}",
        )
        report = {
            "models_dir": str(models.relative_to(self.run.root)),
            "calibration": cal.to_dict(),
            "explorer_test": test_sums.metrics(),
            "explorer_test_sums": test_sums.to_dict(),
            "explorer_test_by_class": by_class,
            "frames": [
                {
                    "kind": kind,
                    "trust_class": TRUST_CLASSES[int(c)],
                    "max_devi_f": float(d),
                    "max_force_error_eV_per_A": float(e),
                }
                for kind, c, d, e in zip(kinds, classes, devi, error, strict=True)
            ],
        }
        atomic.write_json(exam_dir / CALIBRATION_FILE, report)
        return report

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
    def finished_iterations(self) -> list[dict[str, Any]]:
        """One record per finished iteration (every stage done), oldest first: the examination
        report plus what the later stages found, and whether the iteration ended its stage."""
        from eelt.examine import error_converged, over_budget

        records, it = [], 0
        while (exam := self.run.read_report(self.run.stage_dir(it, "examine"))) is not None:
            train = self.run.read_report(self.run.stage_dir(it, "train"))
            if train is None:
                break
            stage = self.config.explore.stages[exam["stage"]]
            test = train.get("test", {})
            converged = exam["converged"] or error_converged(
                test.get("force_rmse_meV_per_A"), self.config.examine.target_force_error_eV_per_A
            )
            n, hours = self.labels_used(self._stage_iterations(exam["stage"], it + 1))
            budget = over_budget(n, stage.max_labels) or over_budget(
                hours, stage.max_dft_core_hours
            )
            records.append(
                {
                    "iteration": it,
                    **exam,
                    "converged": bool(converged),
                    "stage_budget_spent": bool(budget),
                    "ends_stage": bool(converged or budget),
                }
            )
            it += 1
        return records

    def _stalled(self, records: list[dict[str, Any]]) -> bool:
        """The newest ensemble's test force RMSE improved by no more than
        loop.stall_min_improvement on that of the ensemble loop.stall_iterations earlier,
        both on the test frames both were measured on."""
        from eelt.examine import stalled
        from eelt.train import ErrorSums

        k = self.config.loop.stall_iterations
        if k is None or not records or records[-1]["iteration"] - k < -1:
            return False
        i = records[-1]["iteration"]
        ref = i - k  # the older ensemble: trained in iteration ref (init for -1)
        newest = self.run.read_report(self.run.stage_dir(i, "train"))
        cal = self.calibration_report(ref + 1) or {}
        old_parts = [ErrorSums.from_dict(cal["explorer_test_sums"])] if cal else []
        if ref >= 0:
            older = self.run.read_report(self.run.stage_dir(ref, "train"))
            old_parts += [ErrorSums.from_dict(v) for v in older["test_sums_by_iteration"].values()]
        new_parts = [
            ErrorSums.from_dict(v)
            for key, v in newest["test_sums_by_iteration"].items()
            if int(key) <= ref + 1
        ]
        old = ErrorSums.total(old_parts).metrics()["force_rmse_meV_per_A"]
        new = ErrorSums.total(new_parts).metrics()["force_rmse_meV_per_A"]
        return stalled(new, old, self.config.loop.stall_min_improvement)

    def outcome(self, records: list[dict[str, Any]] | None = None) -> tuple[str, str, int, int]:
        """(status, why, next stage, its iteration) from the finished iterations."""
        from eelt.examine import (
            BUDGET_EXHAUSTED,
            CONVERGED,
            MAX_ITERATIONS,
            RUNNING,
            STALLED,
            over_budget,
        )

        records = self.finished_iterations() if records is None else records
        stages = self.config.explore.stages
        loop_cfg = self.config.loop
        stage, count = schedule(stages, [(r["stage"], r["ends_stage"]) for r in records])
        n, hours = self.labels_used()
        last = records[-1] if records else None
        if last and last["converged"] and last["stage"] == len(stages) - 1:
            return CONVERGED, f"stage {last['stage']} converged", stage, count
        if over_budget(n, loop_cfg.max_labels):
            return (
                BUDGET_EXHAUSTED,
                f"{n} labels of loop.max_labels {loop_cfg.max_labels}",
                stage,
                count,
            )
        if over_budget(hours, loop_cfg.max_dft_core_hours):
            why = f"{hours:.3g} DFT core-hours of loop.max_dft_core_hours {loop_cfg.max_dft_core_hours}"
            return BUDGET_EXHAUSTED, why, stage, count
        if self._stalled(records):
            why = (
                f"test force RMSE improved by <= {loop_cfg.stall_min_improvement:.0%} over "
                f"{loop_cfg.stall_iterations} iterations"
            )
            return STALLED, why, stage, count
        if stage >= len(stages):
            if last and last["stage_budget_spent"]:
                return BUDGET_EXHAUSTED, f"stage {last['stage']} spent its budget", stage, count
            return MAX_ITERATIONS, "every stage reached its max_iterations", stage, count
        if len(records) >= loop_cfg.max_iterations:
            return MAX_ITERATIONS, f"loop.max_iterations {loop_cfg.max_iterations}", stage, count
        return RUNNING, "", stage, count

    def next_slot(self) -> Slot | None:
        records = self.finished_iterations()
        status, _, stage, count = self.outcome(records)
        if status != "running":
            return None
        return Slot(len(records), stage, count)

    def iterate(self, slot: Slot, runner: StageRunner) -> dict[str, Any]:
        explored = runner.stage("explore", lambda: self.explore(slot))
        exam = runner.stage("examine", lambda: self.examine(slot))
        labeled = runner.stage("label", lambda: self.label(slot))
        calibration = runner.stage("calibrate", lambda: self.calibrate(slot))
        trained = runner.stage("train", lambda: self.train(slot))
        return {
            "iteration": slot.iteration,
            "explore": {"n_frames": explored["n_frames"]},
            "examine": exam,
            "label": labeled,
            "calibrate": calibration,
            "train": trained,
        }

    def state(self) -> dict[str, Any]:
        """The run's summary, derived from the stage reports (state.json is a view of them)."""
        records = self.finished_iterations()
        status, why, _, _ = self.outcome(records)
        init = self.run.read_report(self.run.init_dir("label")) or {}
        n_total = init.get("n_labeled", 0)
        hours_total = init.get("dft_core_hours", 0.0)
        history = []
        for r in records:
            it = r["iteration"]
            lab = self.run.read_report(self.run.stage_dir(it, "label")) or {}
            trn = self.run.read_report(self.run.stage_dir(it, "train")) or {}
            cal = self.calibration_report(it) or {}
            n_total += lab.get("n_labeled", 0) + lab.get("n_test_labeled", 0)
            hours_total += lab.get("dft_core_hours", 0.0)
            explorer = cal.get("explorer_test", {})
            test = trn.get("test", {})
            calibration = cal.get("calibration", {})
            history.append(
                {
                    "iteration": it,
                    "stage": r["stage"],
                    "n_explored": r["n_total"],
                    "trust_lo_eV_per_A": r.get("trust_lo_eV_per_A"),
                    "trust_hi_eV_per_A": r.get("trust_hi_eV_per_A"),
                    "trust_source": r.get("trust_source"),
                    "accurate_ratio": r["accurate_ratio"],
                    "candidate_ratio": r["candidate_ratio"],
                    "failed_ratio": r["failed_ratio"],
                    "n_selected": r["n_selected"],
                    "n_labeled": lab.get("n_labeled", 0),
                    "n_test_labeled": lab.get("n_test_labeled", 0),
                    "n_label_failed": lab.get("n_failed", 0) + lab.get("n_test_failed", 0),
                    "labels_total": n_total,
                    "dft_core_hours_total": hours_total,
                    "converged": r["converged"],
                    "ends_stage": r["ends_stage"],
                    "val_force_rmse_meV_per_A": trn.get("val_force_rmse_meV_per_A"),
                    "explorer_test_force_rmse_meV_per_A": explorer.get("force_rmse_meV_per_A"),
                    "explorer_test_force_mae_meV_per_A": explorer.get("force_mae_meV_per_A"),
                    "explorer_test_energy_rmse_meV_per_atom": explorer.get(
                        "energy_rmse_meV_per_atom"
                    ),
                    "explorer_test_force_rmse_by_class_meV_per_A": {
                        k: v.get("force_rmse_meV_per_A")
                        for k, v in cal.get("explorer_test_by_class", {}).items()
                    },
                    "n_test_frames_total": test.get("n_frames", 0),
                    "test_force_rmse_meV_per_A": test.get("force_rmse_meV_per_A"),
                    "test_force_mae_meV_per_A": test.get("force_mae_meV_per_A"),
                    "test_energy_rmse_meV_per_atom": test.get("energy_rmse_meV_per_atom"),
                    "calibration_spearman": calibration.get("spearman"),
                    "calibration_crossing_eV_per_A": calibration.get("crossing_eV_per_A"),
                }
            )
        n_train = init.get("n_labeled", 0) + sum(h["n_labeled"] for h in history)
        n_test = sum(h["n_test_labeled"] for h in history)
        n_explored = sum(h["n_explored"] for h in history)
        return {
            "name": self.config.name,
            "status": status,
            "status_detail": why,
            "iterations": history,
            "n_init_labeled": init.get("n_labeled", 0),
            "n_train_labels": n_train,
            "n_test_labels": n_test,
            "n_labels": n_total,
            "n_explored": n_explored,
            # candidates and test frames labeled, as a share of the frames explored
            "explored_labeled_fraction": (n_train + n_test - init.get("n_labeled", 0)) / n_explored
            if n_explored
            else None,
            "dft_core_hours": hours_total,
            "models_dir": str(self.models_dir(len(records)).relative_to(self.run.root)),
        }


def run_loop(loop: Loop, runner: StageRunner | None = None) -> dict[str, Any]:
    """Run (or resume) the loop to the end; return the final state."""
    runner = runner or DirectRunner()
    runner.stage("init-label", loop.init_label)
    runner.stage("init-train", loop.init_train)
    loop.run.write_state(loop.state())
    while (slot := loop.next_slot()) is not None:
        runner.iteration(slot.iteration, lambda s=slot: loop.iterate(s, runner))
        loop.run.write_state(loop.state())
    state = loop.state()
    loop.run.write_state(state)
    log.info(
        "run %s: %s (%s); models in %s",
        state["name"],
        state["status"],
        state["status_detail"],
        state["models_dir"],
    )
    return state
