"""What "the same end state" of a streaming run means in the tests: everything a run decided and
computed, without the clock (wall times, core-hours, sessions)."""

from __future__ import annotations

import json
from pathlib import Path

CLOCK = {"train_wall_s", "wall_s", "dft_core_hours_total", "time", "dft_core_hours"}


def end_state(root: Path) -> dict:
    """Status, counts, per-generation rows, every selection's choices, every generation's test
    errors, the label store's hashes and the training data's frame counts."""
    state = json.loads((root / "state.json").read_text())
    stream = root / "stream"
    selections = {}
    for d in sorted((stream / "selections").iterdir()):
        report = json.loads((d / "report.json").read_text())
        selections[d.name] = (report["candidate_hashes"], report["test_hashes"])
    generations = {
        d.name: json.loads((d / "report.json").read_text()).get("test")
        for d in sorted((stream / "generations").iterdir())
    }
    rounds = [json.loads(p.read_text()) for p in sorted((stream / "rounds").glob("*.json"))]
    for r in rounds:
        r.pop("window_accurate_ratio", None)
    return {
        "state": {k: v for k, v in state.items() if k not in CLOCK | {"iterations"}},
        "rows": [{k: v for k, v in row.items() if k not in CLOCK} for row in state["iterations"]],
        "selections": selections,
        "generations": generations,
        "rounds": rounds,
        "labels": sorted(p.stem for p in (root / "labels").glob("*.extxyz")),
        "data": {
            p.name: len(p.read_text().splitlines()) for p in sorted(root.glob("data/**/*.extxyz"))
        },
    }
