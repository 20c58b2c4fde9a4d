"""What a run's status shows, in one place for ``eelt status`` (a terminal table) and ``eelt
report`` (HTML): the per-iteration columns of state.json, their captions, and the labels line.

A column is (header, key in ``state["iterations"][i]``, format spec).
"""

from __future__ import annotations

from typing import Any

EXPLORE_TITLE = "eelt run {name}: {status}"
EXPLORE_COLUMNS = (
    ("iter", "iteration", "d"),
    ("stage", "stage", "d"),
    ("frames", "n_explored", "d"),
    ("lo", "trust_lo_eV_per_A", ".3g"),
    ("hi", "trust_hi_eV_per_A", ".3g"),
    ("accur.", "accurate_ratio", ".3f"),
    ("cand.", "candidate_ratio", ".3f"),
    ("failed", "failed_ratio", ".3f"),
    ("cands", "n_labeled", "d"),
    ("test", "n_test_labeled", "d"),
    ("labels", "labels_total", "d"),
    ("restarts", "n_walker_restarts", "d"),
)
EXPLORE_CAPTION = (
    "frames: explored; lo/hi: trust levels (eV/A); accur./cand./failed: shares of the "
    "frames; cands: candidates labeled; test: held-out frames; labels: cumulative, initial "
    "ones included; restarts: walkers started again from a good frame after a guard"
)
ACCURACY_TITLE = "true error against DFT (held-out frames) and calibration"
ACCURACY_COLUMNS = (
    ("iter", "iteration", "d"),
    ("expl. F", "explorer_test_force_rmse_meV_per_A", ".1f"),
    ("expl. E", "explorer_test_energy_rmse_meV_per_atom", ".2f"),
    ("new F", "test_force_rmse_meV_per_A", ".1f"),
    ("new E", "test_energy_rmse_meV_per_atom", ".2f"),
    ("tests", "n_test_frames_total", "d"),
    ("yard. F", "yardstick_force_rmse_meV_per_A", ".1f"),
    ("yard. E", "yardstick_energy_rmse_meV_per_atom", ".2f"),
    ("val F", "val_force_rmse_meV_per_A", ".1f"),
    ("Spearman", "calibration_spearman", ".2f"),
    ("cross", "calibration_crossing_eV_per_A", ".3g"),
)
ACCURACY_CAPTION = (
    "F: force RMSE (meV/A), E: energy RMSE (meV/atom). explorer: the ensemble that "
    "explored (expl.), on that iteration's held-out frames; new: the ensemble trained in it, on "
    "all held-out frames so far (tests); yard.: the same ensemble on the yardstick, frames no "
    "model chose (examine.yardstick_data; - without one); val: its members' validation frames. "
    "Spearman: "
    "rank correlation of max force deviation and true max atomic force error on the "
    "labeled frames; cross: the deviation (eV/A) where the fitted true error reaches "
    "examine.target_force_error_eV_per_A"
)

TIME_TITLE = "where the time went (s)"
TIME_COLUMNS = (
    ("iter", "iteration", "d"),
    ("explore", "explore_wall_s", ".1f"),
    ("examine", "examine_wall_s", ".1f"),
    ("label", "label_wall_s", ".1f"),
    ("calibrate", "calibrate_wall_s", ".1f"),
    ("train", "train_wall_s", ".1f"),
    ("wall", "wall_s", ".1f"),
    ("busy", "busy_share", ".0%"),
)
TIME_CAPTION = (
    "wall time of each stage as it ran (a stage finished before a resume keeps its first "
    "record); busy: the share of the worker slots' time spent in jobs (walkers, DFT, training)"
)


def fmt(value: Any, spec: str = ".1f") -> str:
    """A table cell: ``-`` for a missing value."""
    return "-" if value is None else format(value, spec)


def run_title(state: dict[str, Any]) -> str:
    """``eelt run NAME: STATUS (detail)``."""
    detail = state.get("status_detail")
    return EXPLORE_TITLE.format(**state) + (f" ({detail})" if detail else "")


def _labeled_yardstick(state: dict[str, Any]) -> int:
    """Yardstick frames the run labeled itself (the thermal sampler's, in the initial step)."""
    return max(int(state.get("n_init_labels", 0)) - int(state.get("n_init_labeled", 0)), 0)


def labels_line(state: dict[str, Any]) -> str:
    """Labels (initial, training, test, the user's), DFT core-hours, share of explored frames
    labeled, and where the latest models are."""
    return (
        f"labels: {state.get('n_labels', state['n_init_labeled'])} "
        f"({state['n_init_labeled']} initial, {state.get('n_train_labels', 0)} for training, "
        f"{state.get('n_test_labels', 0)} held-out test frames"
        + (f", {n_yard} yardstick frames" if (n_yard := _labeled_yardstick(state)) else "")
        + (
            f"; besides {state['n_user_frames']} of the user's own"
            if state.get("n_user_frames")
            else ""
        )
        + f"), DFT {state.get('dft_core_hours', 0.0):.2f} core-hours; "
        + (
            f"{state['explored_labeled_fraction']:.1%} of {state['n_explored']} explored frames "
            "labeled; "
            if state.get("explored_labeled_fraction") is not None
            else ""
        )
        + f"latest models: {state['models_dir']}"
        + (
            f"; yardstick: {state['n_yardstick_frames']} frames no model chose, the initial "
            f"ensemble at {fmt(state.get('init_yardstick_force_rmse_meV_per_A'))} meV/A"
            if state.get("n_yardstick_frames")
            else ""
        )
    )


def time_line(state: dict[str, Any]) -> str:
    """The run's wall time, the workers' busy time by kind of job, and the loop's wall time over
    the DFT's own wall time (its jobs' seconds over the worker slots) and over the wall time of
    its labeling stages (synchronous)."""
    t = state.get("time")
    if not t:
        return ""
    busy = ", ".join(f"{kind} {seconds:.0f} s" for kind, seconds in t["busy_s"].items())
    share = f"{t['busy_share']:.0%}" if t.get("busy_share") is not None else "-"
    ratio = f"{t['wall_over_label_wall']:.1f}" if t.get("wall_over_label_wall") else "-"
    dft = f"{t['wall_over_dft_wall']:.1f}" if t.get("wall_over_dft_wall") else "-"
    return (
        f"time: run {t['run_wall_s']:.0f} s in {t['n_sessions']} session(s); workers busy "
        f"{share} ({busy}; idle {t['idle_s']:.0f} s); loop wall / DFT wall {dft}, "
        f"/ labeling wall {ratio}"
    )


def stream_line(state: dict[str, Any]) -> str:
    """A streaming run's schedule: rounds, segments, generations, the stage and how earlier
    stages ended ("" for a synchronous run)."""
    stream = state.get("stream")
    if not stream:
        return ""
    ended = "; ".join(
        f"stage {e['stage']} ended at round {e['round']}: {e['status']} ({e['detail']})"
        for e in stream.get("stages_ended", [])
    )
    return (
        f"stream: {stream['rounds_closed']} rounds closed, {stream['segments_examined']} "
        f"segments examined, generations {stream['generations_finished']} of "
        f"{stream['generations_started']} finished; stage {stream.get('stage', 0)}"
        + (f"; {ended}" if ended else "")
    )
