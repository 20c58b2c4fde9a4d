"""The examination stage of an iteration, as the loop runs it: which trust levels apply, which
explored frames become candidates and which held-out test frames, and (after labeling) how the
exploring ensemble fared against DFT on them (examine/report.json, examine/calibration.json).

A mixin of :class:`eelt.orchestration.synchronous.Loop`: it reads and writes the run directory through ``self.run``
and uses ``self.config``, ``self.models_dir`` and the budgets of :class:`eelt.orchestration.progress.Progress`.
"""

from __future__ import annotations

import logging
from typing import Any

import ase.io
import numpy as np
from ase import Atoms

from eelt import atomic, keys
from eelt.orchestration.progress import Slot

log = logging.getLogger(__name__)

TEST_FRAMES_FILE = "test_frames.extxyz"  # in examine/: the frames drawn as held-out tests
CALIBRATION_FILE = "calibration.json"  # in examine/: written after labeling


class Examination:
    """Examine and calibrate one iteration (see the module docstring)."""

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
            classify_frames,
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
        devi, levels, classes, unit = classify_frames(frames, self.trust_levels(slot), cfg)
        lo, hi = levels["trust_lo" + unit], levels["trust_hi" + unit]
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
