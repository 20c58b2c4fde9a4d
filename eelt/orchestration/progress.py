"""Where a run stands, from its reports alone: the stage schedule, labels and DFT core-hours
spent against the budgets, convergence and the run's end state, and the summary that
state.json and ``eelt status`` show.

A mixin of :class:`eelt.orchestration.synchronous.Loop`: it only reads the run directory (``self.run``) and the
config (``self.config``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eelt.config import StageConfig
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


class Progress:
    """Budgets, end states and the run's summary (see the module docstring)."""

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
            exp = self.run.read_report(self.run.stage_dir(it, "explore")) or {}
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
                    "starts": exp.get("starts"),
                    "n_walkers": len(exp.get("walkers", [])),
                    "n_walkers_failed": len(exp.get("failed", [])),
                    "n_walker_restarts": exp.get("n_restarts", 0),
                    "n_walker_stops": exp.get("n_stops", 0),
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
        times = self._times(len(records))
        for h, t in zip(history, times[1:], strict=True):
            h["time"] = t
            h["wall_s"] = t["wall_s"]
            h["busy_share"] = t["busy_share"]
            for stage in ("explore", "examine", "label", "calibrate", "train"):
                h[f"{stage}_wall_s"] = t["stage_wall_s"].get(stage)
        n_train = init.get("n_labeled", 0) + sum(h["n_labeled"] for h in history)
        n_test = sum(h["n_test_labeled"] for h in history)
        n_explored = sum(h["n_explored"] for h in history)
        return {
            "name": self.config.name,
            "status": status,
            "status_detail": why,
            "iterations": history,
            "n_init_labeled": init.get("n_labeled", 0),
            "n_user_frames": init.get("n_user_frames", 0),
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
            "init_time": times[0],
            "time": run_times(
                self.run.root,
                times,
                self.session.elapsed_s() if getattr(self, "session", None) else 0.0,
                self.worker_slots,
            ),
        }

    def _times(self, n_iterations: int) -> list[dict[str, Any]]:
        """eelt.orchestration.timing's accounting of the initial stages, then of each finished iteration."""
        parts = []
        for it in range(-1, n_iterations):
            stage_dir = self.run.init_dir if it < 0 else lambda s, i=it: self.run.stage_dir(i, s)
            reports = {
                s: self.run.read_report(stage_dir(s)) for s in KINDS if s != "explore" or it >= 0
            }
            where = self.run.root / ("init" if it < 0 else f"iter-{it:03d}")
            parts.append(iteration_times(where, reports))
        return parts
