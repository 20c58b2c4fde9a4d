"""The streaming scheduler: one event loop over the futures of walker segments, label batches and
training generations, all on the run's Executor (see :mod:`eelt.streaming` for the design).

Segments are jobs on the executor (:func:`eelt.explore.job.walker_job`). Label batches and
generations are driver calls in threads of this process (:func:`eelt.label.label_frames`,
:func:`eelt.train.train_ensemble` each submit their own jobs to the executor and wait), so the
executor's workers only ever run leaf jobs and never wait on each other.

Every decision is taken in a canonical order, whatever order the futures finish in: segment
(round r, walker w) is examined after every segment before it in (r, w) order and after round
r - 1 has closed; round r closes once its segments are examined and the generation started at
round r - 1 (if any) has finished; round r's segments explore with the newest generation started
at a round <= r - 2. So what a resumed run decides is what the uninterrupted one decided, and a
decision found on disk is read instead of taken again.
"""

from __future__ import annotations

import logging
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from eelt import atomic, tracking
from eelt.errors import EeltError
from eelt.explore.job import finished_walker, summary_path, walker_job
from eelt.progress import Slot
from eelt.streaming import summary
from eelt.streaming.examine import Allowance, examine_segment, walker_test_frames
from eelt.streaming.generation import generation_models, train_generation
from eelt.streaming.labels import label_selection
from eelt.streaming.layout import CANDIDATES, StreamDir
from eelt.streaming.rounds import RoundNumbers, close_round
from eelt.streaming.walkers import (
    deviation_key,
    read_segment,
    segment_job_kwargs,
    segment_start,
    trust_hi,
    walkers,
)

log = logging.getLogger(__name__)
LAG_ROUNDS = 2  # round r explores with the newest generation started at a round <= r - 2
SETTINGS = ("segment_steps", "generation_labels", "window_segments")


class Scheduler:
    """Run (or resume) the streaming part of a run: after the initial data and ensemble."""

    def __init__(self, loop, on_state=None):
        from eelt.execution import gpu_executor

        self.loop, self.run, self.config = loop, loop.run, loop.config
        self.on_state = on_state or (lambda state: None)
        self.stream = StreamDir(self.run.root / "stream")
        self.executor = loop.executor
        gpus = self.config.execution.gpus_per_worker
        self.train_executor = gpu_executor(self.executor) if gpus else self.executor
        self.labeler = loop._labeler()
        self.settings = self.labeler.settings()
        self.levels = loop.trust_levels(Slot(0, 0, 0))
        stage = self.config.explore.stages[0]
        starts = self.run.stage_starts(0) if isinstance(stage.starts, list) else self.run.starts()
        self.walkers = walkers(self.config, starts)
        self.n_walkers = len(self.walkers)
        self.cap = stage.max_candidates or self.config.examine.max_candidates
        budgets = [b for b in (self.config.loop.max_labels, stage.max_labels) if b is not None]
        self.max_labels = min(budgets) if budgets else None
        init = self.run.read_report(self.run.init_dir("label")) or {}
        self.init_core_hours = float(init.get("dft_core_hours", 0.0))
        # the canonical record, rebuilt on resume from the files as the loop replays it
        self.committed: set[str] = self._training_hashes()
        self.n_labels = int(init.get("n_labeled", 0))
        self.cursor = 0  # segments examined, in (round, walker) order
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
        self.next_round = [0] * self.n_walkers
        self.round_tasks: dict[int, tracking.Task] = {}
        self.drivers = ThreadPoolExecutor(2 * self.n_walkers + 2, thread_name_prefix="eelt-stream")

    # --- the canonical schedule --------------------------------------------------------------
    def generation_for_round(self, round_: int) -> int:
        """The generation round ``round_``'s segments explore with."""
        return sum(1 for t in self.triggers if t <= round_ - LAG_ROUNDS)

    def _generation_done(self, generation: int) -> bool:
        return generation == 0 or generation in self.generations

    def _training_hashes(self) -> set[str]:
        """Label hashes of the initial training data (the user's and init's)."""
        import ase.io

        from eelt.label import LABEL_HASH

        files = [f for f in self.run.data_files() if not f.name.startswith("iter-")]
        return {
            a.info[LABEL_HASH] for f in files for a in ase.io.read(f, ":") if LABEL_HASH in a.info
        }

    # --- segments ----------------------------------------------------------------------------
    def _segment_done_on_disk(self, w: int, r: int) -> bool:
        path = self.stream.segment_path(w, r)
        return finished_walker(path) is not None or self.stream.segment_failure_path(w, r).is_file()

    def _segment_ready(self, w: int) -> int | None:
        """Walker ``w``'s next segment (its round) if it may run now: its previous segment has
        ended, round r - 2 has closed and the generation it explores with has finished."""
        while self.end is None:
            r = self.next_round[w]
            if (w, r) in self.finished:
                self.next_round[w] += 1
                continue
            if (w, r) in self.segments.values() or self.closed < r - 1:
                return None
            return r if self._generation_done(self.generation_for_round(r)) else None
        return None

    def _collect_segments(self) -> bool:
        """Count the segments that ended in an earlier session (their files are there)."""
        progressed = False
        for w in range(self.n_walkers):
            while (r := self._segment_ready(w)) is not None and self._segment_done_on_disk(w, r):
                self._round_task(r)
                self._segment_finished(w, r)
                progressed = True
        return progressed

    def _submit_segments(self) -> bool:
        progressed = False
        for w in range(self.n_walkers):
            if (r := self._segment_ready(w)) is None:
                continue
            self._round_task(r)
            walker = self.walkers[w]
            previous = read_segment(self.stream.segment_path(w, r - 1)) if r else []
            key = deviation_key(self.config)
            start = segment_start(previous, walker.start, trust_hi(self.levels, self.config), key)
            models = generation_models(self.run.root, self.stream, self.generation_for_round(r))
            path = self.stream.segment_path(w, r)
            path.parent.mkdir(parents=True, exist_ok=True)
            future = self.executor.submit(
                walker_job,
                str(models),
                start,
                str(path),
                **segment_job_kwargs(self.config, walker, r, self.levels),
            )
            self.segments[future] = (w, r)
            progressed = True
        return progressed

    def _round_task(self, r: int) -> None:
        if r not in self.round_tasks:
            what = f"round {r}: explore, {self.n_walkers} walker segments"
            self.round_tasks[r] = tracking.task(f"stream-r{r:04d}-explore", what, self.n_walkers)
            self.round_tasks[r].__enter__()

    def _segment_finished(self, w: int, r: int) -> None:
        self.finished.add((w, r))
        task = self.round_tasks.get(r)
        if task is not None:
            task.advance()
            if task.done >= self.n_walkers:
                task.__exit__(None, None, None)
                del self.round_tasks[r]

    def _on_segment(self, future: Future, w: int, r: int) -> None:
        try:
            future.result()
        except Exception as err:  # a dead worker or a crashed walker: a segment without frames
            reason = f"{type(err).__name__}: {err}"
            log.warning("segment %s round %d failed: %s", self.walkers[w].name, r, reason)
            atomic.write_json(self.stream.segment_failure_path(w, r), {"reason": reason})
        self._segment_finished(w, r)

    # --- examination ---------------------------------------------------------------------------
    def _examine_ready(self) -> bool:
        progressed = False
        while self.end is None:
            r, w = divmod(self.cursor, self.n_walkers)
            if self.closed < r or (w, r) not in self.finished:
                break
            report = self.stream.selection(w, r) or self._examine(w, r)
            self.selections[(w, r)] = report
            self.committed.update(report["candidate_hashes"], report["test_hashes"])
            self.n_labels += report["n_selected"] + report["n_test_frames"]
            if (record := self.stream.labels(w, r)) is not None:
                self.labeled[(w, r)] = record
            else:
                args = (self.stream.selection_dir(w, r), self.labeler, self.executor)
                future = self.drivers.submit(label_selection, *args, self.run.labels_dir)
                self.labeling[future] = (w, r)
            self.cursor += 1
            progressed = True
        return progressed

    def _examine(self, w: int, r: int) -> dict[str, Any]:
        from eelt.label import frame_hash

        path = self.stream.segment_path(w, r)
        failure = self.stream.segment_failure_path(w, r)
        frames = [] if failure.is_file() else read_segment(path)
        summary_file = summary_path(path)
        walker_summary = atomic.read_json(summary_file) if summary_file.is_file() else {}
        window = self._window(self.cursor)
        earlier = [f for s in window for f in _frames(self._selection_dir(s) / CANDIDATES)]
        budget = None if self.max_labels is None else max(self.max_labels - self.n_labels, 0)
        allowance = Allowance(
            candidates=max(self.cap - sum(s["n_selected"] for s in window), 0),
            budget=budget,
            tests=walker_test_frames(self.config.examine.test_frames, self.n_walkers, w),
            earlier=earlier,
        )
        context = {
            "walker": w,
            "walker_name": self.walkers[w].name,
            "round": r,
            "generation": self.generation_for_round(r),
            "n_frames": len(frames),
            "restarts": walker_summary.get("restarts", 0),
            "stop_reason": walker_summary.get("stop_reason"),
            "segment_wall_s": walker_summary.get("wall_s", 0.0),
            "failed": atomic.read_json(failure)["reason"] if failure.is_file() else None,
        }
        out = self.stream.selection_dir(w, r)
        hashes = [frame_hash(f, self.settings) for f in frames]
        report = examine_segment(
            frames, hashes, self.committed, self.levels, self.config.examine, allowance,
            (r, w), out, context,
        )  # fmt: skip
        log.info(
            "round %d %s: %d frames, accurate %.3f; %d candidates, %d test frames",
            r, self.walkers[w].name, len(frames), report["accurate_ratio"],
            report["n_selected"], report["n_test_frames"],
        )  # fmt: skip
        return report

    def _window(self, index: int) -> list[dict[str, Any]]:
        """Selection reports of the segments before canonical ``index`` in its window."""
        first = max(index - self.config.loop.window_segments + 1, 0)
        return [self.selections[self._key(i)] for i in range(first, index)]

    def _key(self, index: int) -> tuple[int, int]:
        r, w = divmod(index, self.n_walkers)
        return w, r

    def _selection_dir(self, report: dict[str, Any]):
        return self.stream.selection_dir(report["walker"], report["round"])

    # --- rounds --------------------------------------------------------------------------------
    def _close_rounds(self) -> bool:
        progressed = False
        while self.end is None:
            r = self.closed
            if self.cursor < (r + 1) * self.n_walkers:
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
            if record["end"] is not None:
                self.end = {**record["end"], "round": r}
            self.closed += 1
            progressed = True
        return progressed

    def _round_numbers(self, r: int, visible: int) -> RoundNumbers:
        last = (r + 1) * self.n_walkers
        size = self.config.loop.window_segments
        window = [self.selections[self._key(i)] for i in range(max(last - size, 0), last)]
        since = self.triggers[-1] if self.triggers else -1
        recent = [s for (_, rr), s in self.selections.items() if rr > since]
        pending = sum(s["n_selected"] for s in recent)
        hours = self.init_core_hours + sum(rec["dft_core_hours"] for rec in self.labeled.values())
        newest = self.generations.get(visible, {}).get("test") if visible else None
        return RoundNumbers(
            window=window,
            exploring=self.generation_for_round(r),
            newest_test=newest,
            labels=self.n_labels,
            core_hours=hours,
            pending=pending,
            unseen=pending + sum(s["n_test_frames"] for s in recent),
            generations=len(self.triggers),
        )

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
        keys = [(w, r) for r in range(since + 1, cutoff + 1) for w in range(self.n_walkers)]
        if any(k not in self.labeled for k in keys):
            return False  # its labels have not all arrived
        dirs = [self.stream.selection_dir(w, r) for w, r in keys]
        failed = {f["hash"] for k in keys for f in self.labeled[k]["failed"]}
        n_new = sum(self.selections[k]["n_selected"] for k in keys)
        task = tracking.task(
            f"stream-gen-{g:03d}-train",
            f"generation {g}: train {self.config.train.ensemble_size} members, {n_new} new labels",
            self.config.train.ensemble_size,
        ).__enter__()
        future = self.drivers.submit(
            train_generation, self.loop, self.stream, g, dirs, failed, self.labeler,
            self.train_executor,
        )  # fmt: skip
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
        state = summary.state(self.loop, self.stream, self.n_walkers)
        self.run.write_state(state)
        self.on_state(state)
        return state

    def _write_stream_state(self) -> None:
        atomic.write_json(
            self.stream.state_path,
            {
                "segments_examined": self.cursor,
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
        finally:
            for future in self.segments:  # segments past the end, or a failure: not needed
                future.cancel()
            self.drivers.shutdown(wait=True, cancel_futures=True)
            wait(list(self.segments))
            for task in self.round_tasks.values():
                task.__exit__(None, None, None)
            self._write_stream_state()


def _frames(path) -> list:
    import ase.io

    return ase.io.read(path, ":") if path.is_file() and path.stat().st_size else []
