"""A streaming run's state.json, from its records alone: one row per finished generation in the
spirit of :func:`eelt.orchestration.progress.state` (``iteration`` is the generation), so ``eelt
status``, ``eelt report`` and the Prefect artifacts show a streaming run as they show any.

A generation's row covers the rounds whose labels it was the first to train on: what those
segments explored, chose and labeled, and the generation's own training and test errors.
"""

from __future__ import annotations

from typing import Any

from eelt.orchestration import timing
from eelt.orchestration.progress import init_labels, state_row, yardstick_summary
from eelt.orchestration.streaming.layout import StreamDir


def _rounds(stream: StreamDir) -> list[dict[str, Any]]:
    out, r = [], 0
    while (record := stream.round_record(r)) is not None:
        out.append(record)
        r += 1
    return out


def _walkers_by_round(stream: StreamDir) -> dict[int, list[int]]:
    """The walkers of each round that have a selection folder (r0003-w001)."""
    by_round: dict[int, list[int]] = {}
    for d in _dirs(stream):
        by_round.setdefault(int(d.name[1:5]), []).append(int(d.name[7:10]))
    return by_round


def _selections(stream: StreamDir, rounds: range, by_round: dict[int, list[int]]):
    """(selection report, labels record or None) of every examined segment in ``rounds``."""
    for r in rounds:
        for w in sorted(by_round.get(r, [])):
            if (sel := stream.selection(w, r)) is not None:
                yield sel, stream.labels(w, r)


LABEL_COUNTS = ("n_labeled", "n_test_labeled", "n_failed", "n_test_failed")


def _sum(rows, key: str) -> float:
    return sum(row.get(key) or 0 for row in rows)


def state(ctx, stream: StreamDir) -> dict[str, Any]:
    """The run's summary (see the module docstring); ``status`` stays running until the end
    decided at a round's close has every label and generation it waits for."""
    run = ctx.run
    init = run.read_report(run.init_dir("label")) or {}
    init_train = run.read_report(run.init_dir("train")) or {}
    rounds = _rounds(stream)
    triggers = [rec["round"] for rec in rounds if rec["trigger"] is not None]
    end = next((rec["end"] for rec in rounds if rec["end"] is not None), None)
    generations = {}
    for g in range(1, len(triggers) + 1):
        if (report := stream.generation(g)) is None:
            break
        generations[g] = report
    by_round = _walkers_by_round(stream)
    last_round = max(len(rounds), max(by_round, default=-1) + 1)
    every = list(_selections(stream, range(last_round), by_round))
    labeled = [lab for _, lab in every if lab is not None]
    n_init = int(init.get("n_labeled", 0))
    n_train = n_init + int(_sum(labeled, "n_labeled"))
    n_test = int(_sum(labeled, "n_test_labeled"))
    hours = float(init.get("dft_core_hours", 0.0)) + float(_sum(labeled, "dft_core_hours"))
    history, labels_total, hours_total = (
        [],
        init_labels(init),
        float(init.get("dft_core_hours", 0.0)),
    )
    for g, report in generations.items():
        first = triggers[g - 2] + 1 if g >= 2 else 0
        pairs = list(_selections(stream, range(first, triggers[g - 1] + 1), by_round))
        sels = [s for s, _ in pairs]
        labs = [lab for _, lab in pairs if lab is not None]
        n_total = int(_sum(sels, "n_total"))
        labels_total += int(_sum(labs, "n_labeled") + _sum(labs, "n_test_labeled"))
        hours_total += float(_sum(labs, "dft_core_hours"))

        def share(key: str, sels=sels, n_total=n_total) -> float | None:
            return _sum(sels, key) / n_total if n_total else None

        levels = ("trust_lo_eV_per_A", "trust_hi_eV_per_A", "trust_source")
        selection = {
            **({k: sels[0].get(k) for k in levels} if sels else {}),
            "accurate_ratio": share("n_accurate"),
            "candidate_ratio": share("n_candidate"),
            "failed_ratio": share("n_failed"),
            "n_selected": int(_sum(sels, "n_selected")),
            "n_edge_frames": int(_sum(sels, "n_edge_frames")),
        }
        labeled_sums = {k: _sum(labs, k) for k in LABEL_COUNTS}
        history.append(
            {
                "iteration": g,
                "generation": g,
                "stage": rounds[triggers[g - 1]].get("stage", 0),
                "rounds": [first, triggers[g - 1]],
                "explored_by": sorted({s["generation"] for s in sels}),
                "n_segments": len(sels),
                "n_explored": n_total,
                **state_row(selection, labeled_sums, report, stream.calibration(g) or {}),
                "labels_total": labels_total,
                "dft_core_hours_total": hours_total,
                "n_walker_restarts": int(_sum(sels, "restarts")),
                "train_wall_s": report.get("wall_s"),
                "wall_s": report.get("wall_s"),
                "models_dir": report["models_dir"],
            }
        )
    finished = end is not None and len(generations) == len(triggers)
    newest = generations[max(generations)]["models_dir"] if generations else None
    n_explored = int(_sum([s for s, _ in every], "n_total"))
    busy = {
        "md": float(_sum([s for s, _ in every], "segment_wall_s")),
        "dft": float(init.get("busy_s", 0.0)) + float(_sum(labeled, "busy_s")),
        "training": timing.busy_s("train", init_train)
        + sum(timing.busy_s("train", r) for r in generations.values()),
    }
    return {
        "name": ctx.config.name,
        "mode": "streaming",
        "status": end["status"] if finished else "running",
        "status_detail": (end["detail"] if finished else f"ending: {end['detail']}") if end else "",
        "iterations": history,
        "n_init_labeled": n_init,
        "n_user_frames": init.get("n_user_frames", 0),
        "n_init_labels": init_labels(init),  # the sampler's yardstick included
        **yardstick_summary(run),
        "n_train_labels": n_train,
        "n_test_labels": n_test,
        "n_labels": n_train + n_test + init_labels(init) - n_init,
        "n_explored": n_explored,
        "explored_labeled_fraction": (n_train + n_test - n_init) / n_explored
        if n_explored
        else None,
        "dft_core_hours": hours,
        "models_dir": newest or str(run.init_dir("train").relative_to(run.root)),
        "stream": {
            "stage": rounds[-1].get("stage", 0) if rounds else 0,
            "stages_ended": [
                {"stage": rec.get("stage", 0), "round": rec["round"], **rec["stage_end"]}
                for rec in rounds
                if rec.get("stage_end")
            ],
            "rounds_closed": len(rounds),
            "segments_examined": len(every),
            "generations_started": len(triggers),
            "generations_finished": len(generations),
        },
        "time": _times(ctx, busy),
    }


def _dirs(stream: StreamDir):
    root = stream.root / "selections"
    return sorted(root.iterdir()) if root.is_dir() else []


def _times(ctx, busy: dict[str, float]) -> dict[str, Any]:
    """The run's wall time (its sessions, the one under way included), the workers' busy time by
    kind of job, and their idle time (worker slots x run wall - busy)."""
    record = timing.read(ctx.run.root) or {"sessions": []}
    session = ctx.session
    run_wall = sum(s["wall_s"] for s in record["sessions"]) + (
        session.elapsed_s() if session else 0.0
    )
    worker_s = ctx.worker_slots * run_wall
    total = sum(busy.values())
    return {
        "run_wall_s": run_wall,
        "n_sessions": len(record["sessions"]) + (session is not None),  # with the one under way
        "busy_s": busy,
        "worker_s": worker_s,
        "idle_s": max(worker_s - total, 0.0),
        "busy_share": total / worker_s if worker_s else None,
        "wall_over_label_wall": None,  # no labeling stage: labels run beside everything else
        **timing.dft_figures(run_wall, busy["dft"], ctx.worker_slots),
    }
