"""A streaming generation's calibration: how the ensembles that explored its rounds did on the
frames those rounds labeled (their test error, per trust class, and how their max force deviation
tracked their true max force error), as the synchronous loop's calibrate stage does per
iteration (:meth:`eelt.examine.stage.Examination.calibrate`).

Each labeled frame is predicted by the generation that explored its segment (a round's segments
may have been explored by different generations, see :mod:`eelt.orchestration.streaming`); its deviation is
the one that generation recorded during the MD. With ``trust_levels: calibrated`` the crossing of
the fit with examine.target_force_error_eV_per_A sets the trust levels of later rounds.
Written into the generation's folder (``calibration.json``, ``calibration.png``) before its
report, so a finished generation always has it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from eelt import atomic, keys

CALIBRATION_FILE = "calibration.json"
CALIBRATION_PLOT = "calibration.png"


def calibrate_generation(
    root: Path,
    generation: int,
    groups: list[tuple[dict[str, Any], list[Atoms], list[Atoms]]],
    explorer_models: dict[int, Path],
    target_force_error_eV_per_A: float | None,
    out: Path,
) -> dict[str, Any]:
    """``groups``: per selection of the generation's rounds, (its report, its labeled
    candidates, its labeled test frames); ``explorer_models``: the models of every generation
    that explored one of them. Writes ``out``/calibration.json and calibration.png; returns the
    record (the layout of the synchronous loop's calibration.json)."""
    from eelt.examine import TRUST_CLASSES, calibrate, calibration_plot, classify
    from eelt.model import Ensemble
    from eelt.train import ErrorSums, predict_frames

    devi, error, kinds, classes, rows = [], [], [], [], []
    test_sums = ErrorSums()
    by_class = {name: ErrorSums() for name in TRUST_CLASSES}
    ensembles: dict[int, Ensemble] = {}
    for report, cands, tests in groups:
        frames = cands + tests
        if not frames:
            continue
        g = int(report["generation"])
        if g not in ensembles:
            ensembles[g] = Ensemble.load(explorer_models[g])
        pred = predict_frames(ensembles[g], frames)
        d = np.array([f.info.get(keys.MAX_DEVI_F, np.nan) for f in frames], dtype=float)
        if report.get("deviation") == "relative":
            rel = [f.info.get(keys.MAX_DEVI_F_REL, np.nan) for f in frames]
            c = classify(np.array(rel, dtype=float), report["trust_lo_relative"],
                         report["trust_hi_relative"])  # fmt: skip
        else:
            c = classify(d, report["trust_lo_eV_per_A"], report["trust_hi_eV_per_A"])
        e = pred.max_force_error_eV_per_A
        test_idx = np.arange(len(cands), len(frames))
        if len(test_idx):
            test_sums = test_sums + ErrorSums.of(pred.subset(test_idx))
            for code, name in enumerate(TRUST_CLASSES):
                idx = test_idx[c[test_idx] == code]
                if len(idx):
                    by_class[name] = by_class[name] + ErrorSums.of(pred.subset(idx))
        k = ["candidate"] * len(cands) + ["test"] * len(tests)
        devi.append(d)
        error.append(e)
        kinds += k
        classes.append(c)
        rows += [
            {
                "kind": kind,
                "round": report["round"],
                "walker": report["walker"],
                "explored_by": g,
                "trust_class": TRUST_CLASSES[int(code)],
                "max_devi_f": float(dv),
                "max_force_error_eV_per_A": float(er),
            }
            for kind, code, dv, er in zip(k, c, d, e, strict=True)
        ]
    devi_all = np.concatenate(devi) if devi else np.zeros(0)
    error_all = np.concatenate(error) if error else np.zeros(0)
    cal = calibrate(devi_all, error_all, target_force_error_eV_per_A)
    last = groups[-1][0] if groups else {}
    absolute = last.get("deviation") != "relative" and last.get("trust_lo_eV_per_A") is not None
    lo, hi = (last["trust_lo_eV_per_A"], last["trust_hi_eV_per_A"]) if absolute else (0.0, 0.0)
    explorers = ", ".join(str(g) for g in sorted(ensembles)) or "none"
    calibration_plot(
        devi_all,
        error_all,
        kinds,
        lo,
        hi,
        out / CALIBRATION_PLOT,
        calibration=cal,
        title=f"generation {generation}: frames explored by generation(s) {explorers}",
    )
    record = {
        "generation": generation,
        "explored_by": sorted(ensembles),
        "models_dirs": {str(g): str(Path(p).relative_to(root)) for g, p in explorer_models.items()},
        "calibration": cal.to_dict(),
        "explorer_test": test_sums.metrics(),
        "explorer_test_sums": test_sums.to_dict(),
        "explorer_test_by_class": {k: v.metrics() for k, v in by_class.items()},
        "frames": rows,
    }
    atomic.write_json(out / CALIBRATION_FILE, record)
    return record


def read_calibration(generation_dir: Path) -> dict[str, Any] | None:
    path = Path(generation_dir) / CALIBRATION_FILE
    return atomic.read_json(path) if path.is_file() else None
