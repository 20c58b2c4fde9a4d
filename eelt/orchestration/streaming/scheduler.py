"""The streaming scheduler: one event loop over the futures of walker segments, label batches and
training generations, all on the run's Executor (see :mod:`eelt.orchestration.streaming` for the design).

Segments are jobs on the executor (:func:`eelt.explore.job.walker_job`). Label batches and
generations are driver calls in threads of this process (:func:`eelt.label.label_frames`,
:func:`eelt.train.train_ensemble` each submit their own jobs to the executor and wait), so the
executor's workers only ever run leaf jobs and never wait on each other.

Every decision is taken in a canonical order, whatever order the futures finish in: segment
(round r, walker w) is examined after every segment before it in (r, w) order and after round
r - 1 has closed; round r closes once its segments are examined and the generation started at
round r - 1 (if any) has finished; round r's segments explore with the newest generation started
at a round <= r - 2, in the stage that rounds <= r - 2 left running (a stage ended at round c's
close gives way to the next at round c + 2). So what a resumed run decides is what the
uninterrupted one decided, and a decision found on disk is read instead of taken again.
"""

from __future__ import annotations

import logging
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from eelt import atomic
from eelt.errors import EeltError
from eelt.examine.calibration import calibrated_levels
from eelt.examine.convergence import checked_metrics
from eelt.examine.examination import Allowance, Classified, examine_frames
from eelt.examine.trust import classify_frames, deviation_key, stage_trust_levels
from eelt.explore.job import finished_walker, summary_path, walker_job
from eelt.explore.walkers import Walker, choose_starts, stage_walkers, walker_job_kwargs
from eelt.label.batch import check_failed_fraction, label_batch, training_hashes
from eelt.orchestration import tracking
from eelt.orchestration.context import RunContext
from eelt.orchestration.interrupt import check as check_stop
from eelt.orchestration.progress import init_labels
from eelt.orchestration.streaming.examine import walker_test_frames
from eelt.orchestration.streaming.generation import generation_models, train_generation
from eelt.orchestration.streaming.layout import CANDIDATES, LABELS, REPORT, TEST_FRAMES, StreamDir
from eelt.orchestration.streaming.rounds import RoundNumbers, close_round
from eelt.orchestration.streaming.summary import state as run_state
from eelt.orchestration.streaming.walkers import (
    read_segment,
    segment_seed,
    segment_start,
    trust_hi,
)

log = logging.getLogger(__name__)
LAG_ROUNDS = 2  # round r explores with the newest generation started at a round <= r - 2
SETTINGS = ("segment_steps", "generation_labels", "window_segments")


class Scheduler:
    """Run (or resume) the streaming part of a run: after the initial data and ensemble."""

    def __init__(self, ctx: RunContext, on_state=None):
        self.ctx, self.run, self.config = ctx, ctx.run, ctx.config
        self.on_state = on_state or (lambda state: None)
        self.stream = StreamDir(self.run.root / "stream")
        self.executor = ctx.executor
        self.labeler = ctx.labeler
        self.settings = self.labeler.settings()
        self.stages = self.config.explore.stages
        self.levels = [stage_trust_levels(self.config.examine, st) for st in self.stages]
        first = self.stages[0]
        starts, _ = choose_starts(
            first, self.run.starts(), self.run.stage_starts(0), None, None,
            deviation_key(self.config.examine), "",
            self.run.sampler_frames() if first.starts == "sampler" else [], 0,
        )  # fmt: skip
        self.stage_walkers: dict[int, list[Walker]] = {0: stage_walkers(first, starts)}
        self.stage_begins = [0]  # stage_begins[s]: the first round of stage s
        self.stages_ended: set[int] = set()  # stages a close has ended
        self.stage_labels = [0] * len(self.stages)  # labels chosen in each stage's rounds
        self.calibrations: dict[int, dict[str, Any]] = {}  # finished generations' calibration
        init = self.run.read_report(self.run.init_dir("label")) or {}
        self.init_core_hours = float(init.get("dft_core_hours", 0.0))
        # the canonical record, rebuilt on resume from the files as the loop replays it
        self.committed: set[str] = training_hashes(
            f for f in self.run.data_files() if not f.name.startswith("iter-")
        )
        self.n_labels = init_labels(init)
        self.examined: list[tuple[int, int]] = []  # (walker, round) in (round, walker) order
        self.next_exam = (0, 0)  # (round, walker) of the next segment to examine
        self.closed = 0  # rounds closed
        self.triggers: list[int] = []  # triggers[g - 1]: the round that started generation g
        self.end: dict[str, Any] | None = None
        self.selections: dict[tuple[int, int], dict[str, Any]] = {}
        self.labeled: dict[tuple[int, int], dict[str, Any]] = {}
        self.generations: dict[int, dict[str, Any]] = {}
        # work in flight
        self.finished: set[tuple[int, int]] = set()
        self.segments: dict[Future, tuple[int, int]] = {}
        self.labeling: dict[Future, tuple[int, int]] = {}
        self.training: tuple[Future, int, tracking.Task] | None = None
        self.round_tasks: dict[int, tracking.Task] = {}
        # a thread per label batch in flight and one for training (made as they are needed)
        self.drivers = ThreadPoolExecutor(256, thread_name_prefix="eelt-stream")

    # --- the canonical schedule --------------------------------------------------------------
    def generation_for_round(self, round_: int) -> int:
        """The generation round ``round_``'s segments explore with."""
        return sum(1 for t in self.triggers if t <= round_ - LAG_ROUNDS)

    def stage_of(self, round_: int) -> int:
        """The stage of round ``round_`` (known once rounds <= round_ - 2 have closed)."""
        return max(s for s, first in enumerate(self.stage_begins) if first <= round_)

    def round_walkers(self, round_: int) -> list[Walker] | None:
        """The walkers of round ``round_``'s stage; None while they cannot be known yet (a
        stage's first round waits for the previous round's segments: its starts may be their
        frames)."""
        s = self.stage_of(round_)
        if s not in self.stage_walkers and (found := self._new_stage_walkers(s, round_)):
            self.stage_walkers[s] = found
        return self.stage_walkers.get(s)

    def _new_stage_walkers(self, s: int, first: int) -> list[Walker] | None:
        before = self.stage_walkers[self.stage_of(first - 1)]
        if any((w, first - 1) not in self.finished for w in range(len(before))):
            return None
        path = self.stream.stage_starts_path(s)
        if path.is_file():
            starts = read_segment(path)
        else:
            previous = [
                read_segment(self.stream.segment_path(w, first - 1)) for w in range(len(before))
            ]
            lo_key = (
                "trust_lo_relative"
                if self.config.examine.deviation == "relative"
                else "trust_lo_eV_per_A"
            )
            starts, source = choose_starts(
                self.stages[s], self.run.starts(), self.run.stage_starts(s), previous,
                self.round_levels(first - 1)[lo_key], deviation_key(self.config.examine),
                "the previous stage",
                self.run.sampler_frames() if self.stages[s].starts == "sampler" else [], s,
            )  # fmt: skip
            if not starts:
                raise EeltError(f"explore.stages.{s}: no structure to start its walkers from")
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_frames(path, starts)
            log.info("stage %d begins at round %d: %d starts (%s)", s, first, len(starts), source)
        return stage_walkers(self.stages[s], starts)

    def round_levels(self, round_: int) -> dict[str, Any]:
        """Round ``round_``'s trust levels: its stage's, or (``trust_levels: calibrated``) from
        the calibration of the newest generation up to the one it explores with whose fit
        crossed the target, as the synchronous loop takes them from the latest iteration's."""
        levels = self.levels[self.stage_of(round_)]
        earlier = (
            (f"generation {g}", self._calibration(g))
            for g in range(self.generation_for_round(round_), 0, -1)
        )
        return calibrated_levels(levels, earlier, self.config.examine)

    def _calibration(self, generation: int) -> dict[str, Any]:
        if generation not in self.calibrations:
            self.calibrations[generation] = self.stream.calibration(generation) or {}
        return self.calibrations[generation]

    def _generation_done(self, generation: int) -> bool:
        return generation == 0 or generation in self.generations

    # --- segments ----------------------------------------------------------------------------
    def _segment_done_on_disk(self, w: int, r: int) -> bool:
        path = self.stream.segment_path(w, r)
        return finished_walker(path) is not None or self.stream.segment_failure_path(w, r).is_file()

    def _ready_segments(self) -> list[tuple[int, int]]:
        """Segments (walker, round) that may run now: round r - 2 has closed, the walker's
        previous segment in the stage has ended and the generation it explores with has
        finished. Only rounds ``closed`` and ``closed + 1`` can hold such segments."""
        ready = []
        running = set(self.segments.values())
        for r in (self.closed, self.closed + 1):
            if self.end is not None or (ws := self.round_walkers(r)) is None:
                continue
            if not self._generation_done(self.generation_for_round(r)):
                continue
            first = r == self.stage_begins[self.stage_of(r)]
            for w in range(len(ws)):
                if (w, r) in self.finished or (w, r) in running:
                    continue
                if first or (w, r - 1) in self.finished:
                    ready.append((w, r))
        return ready

    def _collect_segments(self) -> bool:
        """Count the segments that ended in an earlier session (their files are there)."""
        progressed = False
        while True:
            found = [(w, r) for w, r in self._ready_segments() if self._segment_done_on_disk(w, r)]
            if not found:
                return progressed
            for w, r in found:
                self._round_task(r)
                self._segment_finished(w, r)
            progressed = True

    def _submit_segments(self) -> bool:
        progressed = False
        key = deviation_key(self.config.examine)
        for w, r in self._ready_segments():
            self._round_task(r)
            s = self.stage_of(r)
            walker = self.stage_walkers[s][w]
            if r == self.stage_begins[s]:
                start = segment_start([], walker.start, None, key)
            else:
                previous = read_segment(self.stream.segment_path(w, r - 1))
                hi = trust_hi(self.round_levels(r), self.config)
                end_path = self.stream.segment_end_path(w, r - 1)
                end = read_segment(end_path)[0] if end_path.is_file() else None
                start = segment_start(previous, walker.start, hi, key, end)
            models = generation_models(self.run.root, self.stream, self.generation_for_round(r))
            path = self.stream.segment_path(w, r)
            path.parent.mkdir(parents=True, exist_ok=True)
            future = self.executor.submit(
                walker_job,
                str(models),
                start,
                str(path),
                end_state_path=str(self.stream.segment_end_path(w, r)),
                keep_momenta=True,  # a start with momenta is the previous segment's end: go on
                **walker_job_kwargs(
                    self.config.explore, self.stages[s], walker,
                    n_steps=self.config.loop.segment_steps,
                    seed=segment_seed(self.config.explore.seed, walker.index, r),
                    levels=self.round_levels(r),
                    relative_eps_eV_per_A=self.config.examine.relative_eps_eV_per_A,
                    plot=False,  # a plot per segment costs more than the segment
                ),
            )  # fmt: skip
            self.segments[future] = (w, r)
            progressed = True
        return progressed

    def _round_task(self, r: int) -> None:
        if r not in self.round_tasks:
            n = len(self.round_walkers(r))
            what = f"round {r}: explore, {n} walker segments (stage {self.stage_of(r)})"
            self.round_tasks[r] = tracking.task(f"stream-r{r:04d}-explore", what, n)
            self.round_tasks[r].__enter__()

    def _segment_finished(self, w: int, r: int) -> None:
        self.finished.add((w, r))
        task = self.round_tasks.get(r)
        if task is not None:
            task.advance()
            if task.done >= task.total:
                task.__exit__(None, None, None)
                del self.round_tasks[r]

    def _on_segment(self, future: Future, w: int, r: int) -> None:
        try:
            future.result()
        except Exception as err:  # a dead worker or a crashed walker: a segment without frames
            reason = f"{type(err).__name__}: {err}"
            name = self.stage_walkers[self.stage_of(r)][w].name
            log.warning("segment %s round %d failed: %s", name, r, reason)
            atomic.write_json(self.stream.segment_failure_path(w, r), {"reason": reason})
        self._segment_finished(w, r)

    # --- examination ---------------------------------------------------------------------------
    def _examine_ready(self) -> bool:
        progressed = False
        while self.end is None:
            r, w = self.next_exam
            if self.closed < r:
                break
            if w >= len(self.round_walkers(r)):
                self.next_exam = (r + 1, 0)
                continue
            if (w, r) not in self.finished:
                break
            report = self.stream.selection(w, r) or self._examine(w, r)
            self.selections[(w, r)] = report
            self.committed.update(report["candidate_hashes"], report["test_hashes"])
            spent = report["n_selected"] + report["n_test_frames"]
            self.n_labels += spent
            self.stage_labels[self.stage_of(r)] += spent
            if (record := self.stream.labels(w, r)) is not None:
                self.labeled[(w, r)] = record
            else:
                future = self.drivers.submit(
                    label_selection, self.ctx, self.stream.selection_dir(w, r)
                )
                self.labeling[future] = (w, r)
            self.examined.append((w, r))
            self.next_exam = (r, w + 1)
            progressed = True
        return progressed

    def _examine(self, w: int, r: int) -> dict[str, Any]:
        from eelt.label import frame_hash

        path = self.stream.segment_path(w, r)
        failure = self.stream.segment_failure_path(w, r)
        frames = [] if failure.is_file() else read_segment(path)
        summary_file = summary_path(path)
        walker_summary = atomic.read_json(summary_file) if summary_file.is_file() else {}
        s = self.stage_of(r)
        stage = self.stages[s]
        window = self._window()
        earlier = [f for sel in window for f in _frames(self._selection_dir(sel) / CANDIDATES)]
        budgets = [
            budget - used
            for budget, used in (
                (self.config.loop.max_labels, self.n_labels),
                (stage.max_labels, self.stage_labels[s]),
            )
            if budget is not None
        ]
        cap = stage.max_candidates or self.config.examine.max_candidates
        n_walkers = len(self.stage_walkers[s])
        allowance = Allowance(
            candidates=max(cap - sum(sel["n_selected"] for sel in window), 0),
            budget=max(min(budgets), 0) if budgets else None,
            # the round's test frames go to walkers in turn, one round to the next
            tests=walker_test_frames(
                self.config.examine.test_frames, n_walkers, (w - r) % n_walkers
            ),
            earlier=earlier,
        )
        context = {
            "walker": w,
            "walker_name": self.stage_walkers[s][w].name,
            "round": r,
            "stage": s,
            "generation": self.generation_for_round(r),
            "n_frames": len(frames),
            "restarts": walker_summary.get("restarts", 0),
            "stop_reason": walker_summary.get("stop_reason"),
            "segment_wall_s": walker_summary.get("wall_s", 0.0),
            "failed": atomic.read_json(failure)["reason"] if failure.is_file() else None,
        }
        out = self.stream.selection_dir(w, r)
        out.mkdir(parents=True, exist_ok=True)
        hashes = [frame_hash(f, self.settings) for f in frames]
        cfg = self.config.examine
        classified = Classified(*classify_frames(frames, self.round_levels(r), cfg))
        chosen = examine_frames(
            frames, hashes, self.committed, classified, cfg, allowance, (r, w), out
        )
        report = {**context, **chosen}
        atomic.write_json(out / REPORT, report)
        log.info(
            "round %d %s: %d frames, accurate %.3f; %d candidates, %d test frames",
            r, context["walker_name"], len(frames), report["accurate_ratio"],
            report["n_selected"], report["n_test_frames"],
        )  # fmt: skip
        return report

    def _window(self) -> list[dict[str, Any]]:
        """Selection reports of the segments examined last, in the next one's window."""
        size = self.config.loop.window_segments - 1
        return [self.selections[k] for k in self.examined[-size:]] if size else []

    def _selection_dir(self, report: dict[str, Any]):
        return self.stream.selection_dir(report["walker"], report["round"])

    # --- rounds --------------------------------------------------------------------------------
    def _close_rounds(self) -> bool:
        progressed = False
        while self.end is None:
            r = self.closed
            ws = self.round_walkers(r)
            if ws is None or (self.next_exam[0] <= r and self.next_exam[1] < len(ws)):
                break
            visible = sum(1 for t in self.triggers if t <= r - 1)
            if not self._generation_done(visible):
                break
            record = self.stream.round_record(r)
            if record is None:
                record = close_round(r, self._round_numbers(r, visible), self.config)
                atomic.write_json(self.stream.round_path(r), record)
                log.info(
                    "round %d closed: generation %s, end %s", r, record["trigger"], record["end"]
                )
            if record["trigger"] is not None:
                self.triggers.append(r)
                if record["trigger"] != len(self.triggers):
                    raise EeltError(f"stream/rounds: round {r} starts a generation out of order")
            if record.get("stage_end") is not None:
                self.stages_ended.add(self.stage_of(r))
            if record.get("next_stage") is not None:
                self.stage_begins.append(r + LAG_ROUNDS)
            if record["end"] is not None:
                self.end = {**record["end"], "round": r}
            self.closed += 1
            progressed = True
        return progressed

    def _round_numbers(self, r: int, visible: int) -> RoundNumbers:
        size = self.config.loop.window_segments
        window = [self.selections[k] for k in self.examined[-size:]]
        since = self.triggers[-1] if self.triggers else -1
        s = self.stage_of(r)
        in_stage = [k for k in self.labeled if self.stage_of(k[1]) == s]
        recent = [s for (_, rr), s in self.selections.items() if rr > since]
        pending = sum(s["n_selected"] for s in recent)
        hours = self.init_core_hours + sum(rec["dft_core_hours"] for rec in self.labeled.values())
        newest = checked_metrics(self.generations.get(visible, {})) if visible else None
        return RoundNumbers(
            window=window,
            exploring=self.generation_for_round(r),
            newest_test=newest,
            labels=self.n_labels,
            core_hours=hours,
            pending=pending,
            unseen=pending + sum(s["n_test_frames"] for s in recent),
            generations=len(self.triggers),
            stage=s,
            stage_generations=sum(1 for t in self.triggers if self.stage_of(t) == s),
            stage_labels=self.stage_labels[s],
            stage_core_hours=sum(self.labeled[k]["dft_core_hours"] for k in in_stage),
            stage_ending=s in self.stages_ended,
            newest_covers_stage=visible > 0 and self.triggers[visible - 1] >= self.stage_begins[s],
            stall=self._stall_pair(visible),
            stall_ratios=self._stall_ratios(visible),
        )

    def _stall_ratios(self, newest: int) -> tuple[float, ...]:
        """The accurate ratio of each generation from newest - loop.stall_iterations to newest - 1
        over the segments it explored (those with frames), for loop.stall_accurate_ratio."""
        k = self.config.loop.stall_iterations
        if k is None:
            return ()
        ratios = []
        for g in range(max(newest - k, 0), newest):
            mine = [s for s in self.selections.values() if s.get("generation") == g]
            total = sum(s["n_total"] for s in mine)
            if total:
                ratios.append(sum(s["n_accurate"] for s in mine) / total)
        return tuple(ratios)

    def _stall_pair(self, newest: int) -> tuple[float | None, float | None]:
        """(newest, older) test force RMSE for loop.stall_iterations: generation ``newest``
        against generation newest - k, both on the test frames the older one was measured on
        (generation 0, the initial ensemble, has none)."""
        from eelt.train import ErrorSums

        k = self.config.loop.stall_iterations
        if k is None or newest - k < 1:
            return None, None
        sums = self.generations[newest].get("test_sums_by_iteration", {})
        older = self.generations[newest - k].get("test_sums_by_iteration", {})
        new_parts = [ErrorSums.from_dict(v) for key, v in sums.items() if key in older]
        if not new_parts:
            return None, None
        old = ErrorSums.total(ErrorSums.from_dict(v) for v in older.values()).metrics()
        new = ErrorSums.total(new_parts).metrics()
        return new["force_rmse_meV_per_A"], old["force_rmse_meV_per_A"]

    # --- generations ---------------------------------------------------------------------------
    def _start_generation(self) -> bool:
        if self.training is not None:
            return False
        g = next((g for g in range(1, len(self.triggers) + 1) if g not in self.generations), None)
        if g is None:
            return False
        if (report := self.stream.generation(g)) is not None:
            self.generations[g] = report
            return True
        cutoff = self.triggers[g - 1]
        since = self.triggers[g - 2] if g >= 2 else -1
        keys = [
            (w, r) for r in range(since + 1, cutoff + 1) for w in range(len(self.round_walkers(r)))
        ]
        if any(k not in self.labeled for k in keys):
            return False  # its labels have not all arrived
        dirs = [self.stream.selection_dir(w, r) for w, r in keys]
        failures = [f for k in keys for f in self.labeled[k]["failed"]]
        n = sum(
            self.selections[k]["n_selected"] + self.selections[k]["n_test_frames"] for k in keys
        )
        # label.max_failed_fraction over a generation's labels: one line, labels kept
        check_failed_fraction(
            len(failures), n, self.config.label.max_failed_fraction, f"generation {g}",
            failures, "; see stream/selections/*/labels.json",
        )  # fmt: skip
        failed = {f["hash"] for f in failures}
        n_new = sum(self.selections[k]["n_selected"] for k in keys)
        task = tracking.task(
            f"stream-gen-{g:03d}-train",
            f"generation {g}: train {self.config.train.ensemble_size} members, {n_new} new labels",
            self.config.train.ensemble_size,
        ).__enter__()
        future = self.drivers.submit(train_generation, self.ctx, self.stream, g, dirs, failed)
        self.training = (future, g, task)
        log.info("generation %d: training on labels up to round %d", g, cutoff)
        return True

    def _on_generation(self, future: Future, g: int, task: tracking.Task) -> None:
        self.training = None
        report = future.result()  # a failed training ends the run (EeltError says why)
        task.update(self.config.train.ensemble_size)
        task.__exit__(None, None, None)
        self.generations[g] = report
        log.info(
            "generation %d landed: test force RMSE %s meV/A",
            g,
            report.get("test", {}).get("force_rmse_meV_per_A"),
        )
        self.publish()

    # --- the event loop --------------------------------------------------------------------------
    def done(self) -> bool:
        return (
            self.end is not None
            and not self.labeling
            and self.training is None
            and all(g in self.generations for g in range(1, len(self.triggers) + 1))
        )

    def publish(self) -> dict[str, Any]:
        """Write state.json (the run's summary) and hand it to ``on_state`` (the UI)."""
        state = run_state(self.ctx, self.stream)
        self.run.write_state(state)
        self.on_state(state)
        return state

    def _write_stream_state(self) -> None:
        atomic.write_json(
            self.stream.state_path,
            {
                "segments_examined": len(self.examined),
                "stage": self.stage_of(self.closed + 1),
                "rounds_closed": self.closed,
                "labels_chosen": self.n_labels,
                "generations_started": len(self.triggers),
                "generations_finished": sorted(self.generations),
                "training": self.training[1] if self.training else None,
                "segments_running": sorted(self.segments.values()),
                "label_batches_running": sorted(self.labeling.values()),
                "end": self.end,
            },
        )

    def _check_settings(self) -> None:
        now = {k: getattr(self.config.loop, k) for k in SETTINGS}
        path = self.stream.settings_path
        if path.is_file():
            before = atomic.read_json(path)
            changed = [k for k in SETTINGS if before.get(k) != now[k]]
            if changed:
                raise EeltError(
                    f"{self.run.root}: loop.{', loop.'.join(changed)} changed since the stream "
                    f"started ({', '.join(f'{before.get(k)}' for k in changed)}); a streaming run "
                    "resumes with the settings it started with"
                )
        else:
            atomic.write_json(path, now)

    def run_to_end(self) -> None:
        """Schedule until the run ends; every finished piece of work is on disk as it lands."""
        self._check_settings()
        stopped = False
        try:
            while True:
                # everything found on disk is replayed before new work is submitted, so a
                # resume never starts a segment that the records already rule out
                while (
                    self._examine_ready()
                    or self._close_rounds()
                    or self._start_generation()
                    or self._collect_segments()
                    or self._submit_segments()
                ):
                    pass
                self._write_stream_state()
                if self.done():
                    break
                check_stop()  # a stop that some code swallowed
                futures = {*self.segments, *self.labeling}
                if self.training is not None:
                    futures.add(self.training[0])
                if not futures:
                    raise EeltError("streaming: nothing to run and the run has not ended")
                finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in finished:
                    if future in self.segments:
                        self._on_segment(future, *self.segments.pop(future))
                    elif future in self.labeling:
                        self.labeled[self.labeling.pop(future)] = future.result()
                    else:
                        self._on_generation(future, *self.training[1:])
        except KeyboardInterrupt:  # a signal: stop now, jobs in flight are lost (rerun on resume)
            stopped = True
            raise
        finally:
            for future in self.segments:  # segments past the end, or a failure: not needed
                future.cancel()
            self.drivers.shutdown(wait=not stopped, cancel_futures=True)
            if not stopped:
                wait(list(self.segments))
            for task in self.round_tasks.values():
                task.__exit__(None, None, None)
            self._write_stream_state()


def _frames(path) -> list:
    import ase.io

    return ase.io.read(path, ":") if path.is_file() and path.stat().st_size else []


def label_selection(ctx: RunContext, selection_dir) -> dict[str, Any]:
    """Label one selection's candidates and test frames with the run's label store; write and
    return its labels.json (a selection without it is labeled again on resume, which computes
    only the labels still missing: each is stored under its hash as it returns)."""
    batch = label_batch(
        _frames(selection_dir / CANDIDATES), _frames(selection_dir / TEST_FRAMES),
        ctx.labeler, ctx.label_executor, ctx.run.labels_dir,
    )  # fmt: skip
    atomic.write_json(selection_dir / LABELS, batch.record)
    return batch.record
