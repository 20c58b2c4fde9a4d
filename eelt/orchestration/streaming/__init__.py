"""The streaming loop (``loop.mode: streaming``): walkers, DFT jobs and training overlap.

The synchronous loop waits at every stage: every walker ends before the examination, every
label before training, training before the next walker. Here walkers run in short *segments*
(``loop.segment_steps`` MD steps); a segment is examined as soon as it ends and its candidates
go to labeling at once; a *generation* (an ensemble trained warm from the previous one) starts
when ``loop.generation_labels`` new labels are chosen, on its own worker, while exploration goes
on with the latest finished generation, which walkers take at their next segment.

Design, and why:

- **One event loop over futures** (:mod:`eelt.orchestration.streaming.scheduler`), on the run's one Executor
  (Dask's in production, a thread pool in tests): ``concurrent.futures.wait(FIRST_COMPLETED)``
  on segment jobs, label batches and the training generation (at most one at a time). Label
  batches and training are driver calls in threads of this process that submit their own jobs
  (:func:`eelt.label.batch.label_batch`, :func:`eelt.train.generation.train_generation`), so
  the executor's workers only run leaf jobs and never wait on each other. Every rule of a stage
  is the synchronous schedule's own function: the walkers and their job's arguments
  (:mod:`eelt.explore.walkers`), the examination (:func:`eelt.examine.examination.examine_frames`
  on one segment's frames), trust levels and calibration (:mod:`eelt.examine`), labeling and the
  failed-label stop (:mod:`eelt.label.batch`), training (:mod:`eelt.train.generation`), the run's
  budgets and stall (:mod:`eelt.examine.convergence`) and the rows of state.json
  (:func:`eelt.orchestration.progress.state_row`); it never imports Prefect.
- **Deterministic, not first-come**: a run killed and resumed must end in the very state an
  uninterrupted one does, and with concurrency the order of events varies. So every decision
  is taken in a canonical order while the work still overlaps. A *round* is one segment of every
  walker. Segment (round r, walker w) is examined after all segments before it in (r, w) order;
  round r *closes* once its segments are examined and the generation started at round r - 1 has
  finished; the close decides, from the round's numbers only, whether a generation starts
  (trained on every label chosen up to round r) and whether the run ends. Round r explores with
  the newest generation started at a round <= r - 2 (one round of staleness): so generation g
  trains (and round r's labels are computed) while round r + 1's segments run, and round r + 2
  waits for g only if training is slower than a round. The price: a walker never runs more than
  two rounds ahead of the examination, and a slow generation can hold walkers; the gain: a
  schedule that is a pure function of the config, so "the same end state" means the same
  labels (hash for hash), generations, test errors and status, and a test can check it.
  (Label and training wall times still vary, so an end on ``max_dft_core_hours`` is as
  deterministic as the clock: it is the one exception.)
- **Persistence under runs/NAME/stream/** (:mod:`eelt.orchestration.streaming.layout`), every file atomic,
  a record's report last: each segment (trajectory + summary, by walker_job), each selection
  (candidates, test frames, report), each selection's labeling outcome (the labels themselves
  are in the run's label store, stored under their content hash as each job returns), each
  round's close, each generation (models, report with test errors), and a small state file.
  Resume replays the canonical schedule, reading every decision found on disk instead of taking
  it again: a segment that was running is rerun from its start (same start frame, same seed,
  same models: the same trajectory); a label in flight is recomputed only if its hash file does
  not exist; a generation in training restarts from a cleared folder.
- **Test frames and end states per generation**: each round holds ``examine.test_frames`` test
  frames, spread over its segments (the walker that gets a remainder turns round by round),
  drawn uniformly from the fresh frames; a generation's test frames are those of the rounds it
  is the first to train on (``data/test/iter-NNN.extxyz``, with NNN = generation - 1), and its
  report has the errors on every test frame so far.
- **Stages, as in the synchronous loop**: the config's explore stages run one after the other.
  A stage ends at a round's close when it converges (accurate ratio >=
  examine.converged_accurate_ratio over the last ``loop.window_segments`` segments, all of this
  stage and explored by the newest generation; or the newest finished generation, tested on
  this stage's frames, at examine.target_force_error_eV_per_A), spends its ``max_labels`` or
  ``max_dft_core_hours`` (labels chosen in its rounds), stalls (a whole window of its segments
  without a candidate), or starts its ``max_iterations``-th generation. The next stage begins
  two rounds after that close (the round in between was already running): its walkers start
  from its ``starts`` (its files, the system, or the last or most uncertain accurate frames of
  the previous stage's last round, ``stream/stages/stage-NNN.extxyz``), and from then on each
  walker goes on from its own last frame. Its trust levels and candidate cap are its own.
- **The end**: the last stage's end ends the run (``converged``, ``budget_exhausted``,
  ``stalled``, or ``max_iterations``: every stage reached its max_iterations), as do
  ``loop.max_labels`` (exactly: a selection never goes past the budget) or
  ``max_dft_core_hours``, ``loop.max_iterations`` (generations started), and
  ``loop.stall_iterations`` (the newest generation's test force RMSE improved by no more than
  stall_min_improvement on that of the generation stall_iterations before, on the older one's
  test frames, while the generations in between explored with an accurate ratio below
  stall_accurate_ratio). An end still starts one last generation for what no generation has seen yet
  (trained if there are new candidates, else only measured on the new test frames), then
  waits for it. ``label.max_failed_fraction`` is checked over each generation's labels before
  it trains: above it the run stops with one line (labels kept; a resume with a higher limit
  goes on).
- **Caps and diversity over a window**: a segment may choose at most max_candidates minus what
  the previous ``loop.window_segments - 1`` segments chose, diverse (farthest-point) against
  those choices too (:func:`eelt.examine.select.select_candidates` with the earlier ones).
- **The UI**: progress through :mod:`eelt.orchestration.tracking` (a task per round's segments and per
  generation), and state.json rewritten as each generation lands (``iteration`` = generation),
  handed to the runner's ``state_written`` (the Prefect artifacts).

What it does not do (yet): per-segment walker plots, and reopening an ended run when a budget
is raised (its end is a persisted decision; start a new run). Within a stage, walkers go on from
their own last frames whatever ``starts`` says (it chooses where the stage's walkers begin); a
segment that completed with a good last frame hands on its velocities too (the MD goes on),
while thermostat and barostat states other than the velocities and the cell start afresh each
segment. The loop's knobs ``segment_steps``, ``generation_labels`` and ``window_segments`` may
not change on resume (the schedule depends on them).

Each generation also calibrates the generations that explored its rounds on their labels
(:func:`eelt.examine.calibration.calibrate_explorers`: explorer test errors, Spearman, the calibration plot in the
generation's folder and its Prefect artifact); with ``trust_levels: calibrated`` a round's
levels come from the newest calibration up to the generation it explores with.
"""

from __future__ import annotations

from typing import Any

from eelt.orchestration.streaming.scheduler import Scheduler

__all__ = ["Scheduler", "run_streaming"]


def run_streaming(ctx, runner) -> dict[str, Any]:
    """Run (or resume) a streaming run to its end: the initial data and ensemble as the
    synchronous schedule makes them (:mod:`eelt.orchestration.initial`), then
    :class:`Scheduler`. ``ctx`` is the run's :class:`eelt.orchestration.context.RunContext`.
    Returns the final state."""
    from eelt.errors import EeltError
    from eelt.orchestration import timing
    from eelt.orchestration.initial import run_init

    if (ctx.root / "iter-000").is_dir():
        raise EeltError(
            f"{ctx.root}: a synchronous run (iter-000/ exists); loop.mode streaming cannot resume it"
        )
    with timing.Session(ctx.root) as ctx.session:
        with timing.entered("init"):  # where a stop between stages leaves the run
            run_init(ctx, runner)
        scheduler = Scheduler(ctx, on_state=runner.state_written)
        scheduler.publish()
        with timing.entered(lambda: f"streaming round {scheduler.closed}"):
            scheduler.run_to_end()
    ctx.session = None
    return scheduler.publish()  # after the session: the run's wall time counts it
