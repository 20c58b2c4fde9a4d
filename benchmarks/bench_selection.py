"""Selection rules compared on one exploration: the same explored frames, the same ensemble,
the same number of labels, different choices, scored on held-out sets made apart from the run.

    nice -n 19 python benchmarks/bench_selection.py RUN_DIR --heldout A.extxyz [B.extxyz ...]
        [--iteration 0] [--k N] [--members 2] [--strategies default window-random ...]
        [--out-dir RUN_DIR/selection-bench]

From a finished iteration of a run (its explored frames carry the deviations of the ensemble
that explored them), each strategy chooses k frames (default: the run's max_candidates) among
the frames that are new to the training data; they are labeled with the run's labeler, and an
ensemble of ``--members`` members is trained warm from the explorer's first members on the
run's initial data plus those frames, with the run's own train settings (its warm_steps), as
the loop's next iteration would. Strategies:

- default: the run's examine config (trust window, farthest-point from the most deviant);
- window-random: the same trust window, uniform choice inside it (DP-GEN);
- window-representative: the same trust window, k-means on the structure fingerprint, the
  frame nearest each centre (examine.selection: representative);
- relative: DeePMD's relative deviation window (0.03-0.15), farthest-point;
- adaptive: trust_lo set so that 4k frames below trust_hi are candidates, farthest-point;
- weighted: drawn without replacement with probability proportional to the deviation, from
  every frame below trust_hi (no window);
- explored-representative: k-means over every explored frame below trust_hi (no window), the
  frame nearest each centre;
- explored-random: uniform over every explored frame (eelt baseline's random);
- thermal-random: uniform over the run's thermal sampler trajectory (no model at all);
- thermal-representative: k-means over that trajectory's fresh frames, the frame nearest each
  centre (no model);
- thermal-uncertain: the explorer ensemble's deviation on that trajectory's fresh frames, the
  most deviant quarter, farthest-point from the most deviant (pool-based active learning on
  frames of a physical cheap MD rather than of the model's own MD).

Prints one row per strategy: force RMSE on each held-out set (file at temperature), the worst,
and the worst energy RMSE; plus how many chosen frames were above trust_hi.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import ase.io
import numpy as np
from score_heldout import scores

from eelt import atomic
from eelt.examine.examination import Allowance, Classified, examine_frames
from eelt.examine.select import select_candidates
from eelt.examine.trust import classify_frames, stage_trust_levels
from eelt.label import frame_hash, label_frames, make_labeler
from eelt.label.batch import training_hashes
from eelt.orchestration.execution import open_executor
from eelt.orchestration.rundir import RunDir
from eelt.train.generation import train_generation

STRATEGIES = (
    "default", "window-random", "window-representative", "relative", "adaptive", "weighted",
    "explored-representative", "explored-random", "thermal-random", "thermal-representative",
    "thermal-uncertain",
)  # fmt: skip
EXAMINE = {
    "default": {},
    "window-random": {"selection": "random"},
    "window-representative": {"selection": "representative"},
    "relative": {"deviation": "relative"},
    "adaptive": {"trust_levels": "adaptive"},
}


def thermal_pool(run: RunDir, settings, committed, explorers: Path | None) -> list:
    """The sampler trajectory's frames not in the training data, each with the explorer
    ensemble's max force deviation (max_devi_f) when ``explorers`` is given."""
    pool = [a for a in ase.io.read(run.sampler_trajectory_file, ":")
            if frame_hash(a, settings) not in committed]  # fmt: skip
    if explorers is not None:
        from eelt.model.families import load_ensemble

        ensemble = load_ensemble(explorers)
        for start in range(0, len(pool), 100):
            chunk = pool[start : start + 100]
            for atoms, d in zip(chunk, ensemble.deviation(chunk, 1.0), strict=True):
                atoms.info["max_devi_f"] = d.max_devi_f_eV_per_A
    return pool


def choose(strategy: str, run: RunDir, config, frames, hashes, committed, k, seed, out, pool_args):
    """The frames ``strategy`` labels, among ``frames`` (fresh ones only)."""
    rng = np.random.default_rng(seed)
    if strategy in ("thermal-representative", "thermal-uncertain"):
        uncertain = strategy == "thermal-uncertain"
        settings, previous = pool_args
        pool = thermal_pool(run, settings, committed, previous if uncertain else None)
        idx = np.arange(len(pool))
        if uncertain:
            devi = np.array([a.info["max_devi_f"] for a in pool])
            idx = np.argsort(-devi)[: max(len(pool) // 4, k)]
        method = "diverse" if uncertain else "representative"
        return [pool[i] for i in select_candidates(pool, idx, k, method, rng)]
    fresh = [i for i, h in enumerate(hashes) if h not in committed and hashes.index(h) == i]
    if strategy in EXAMINE:
        update = dict(EXAMINE[strategy])
        if strategy == "adaptive":
            update["adaptive_n_candidates"] = 4 * k
        cfg = config.examine.model_copy(update={**update, "edge_frames": True})
        stage = config.explore.stages[0]
        devi, levels, classes, unit = classify_frames(frames, stage_trust_levels(cfg, stage), cfg)
        report = examine_frames(
            frames, hashes, committed, Classified(devi, levels, classes, unit), cfg,
            Allowance(k, None, 0), (seed,), out,
        )  # fmt: skip
        return ase.io.read(out / "candidates.extxyz", ":") if report["n_selected"] else []
    devi = np.array([frames[i].info.get("max_devi_f", np.nan) for i in fresh])
    keep = np.isfinite(devi) & (devi < config.examine.trust_hi_eV_per_A)
    pool, weights = np.array(fresh)[keep], devi[keep]
    if strategy == "explored-representative":
        return [frames[i] for i in select_candidates(frames, pool, k, "representative", rng)]
    if strategy == "weighted":
        picked = rng.choice(pool, size=min(k, pool.size), replace=False, p=weights / weights.sum())
        return [frames[i] for i in picked]
    if strategy == "explored-random":
        return [frames[i] for i in rng.choice(fresh, size=min(k, len(fresh)), replace=False)]
    if strategy == "thermal-random":
        pool = ase.io.read(run.sampler_trajectory_file, ":")
        return [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]
    raise SystemExit(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--heldout", type=Path, nargs="+", required=True)
    parser.add_argument("--iteration", type=int, default=0)
    parser.add_argument("--k", type=int, default=None)
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args()
    run = RunDir(args.run_dir)
    config = run.load_config()
    k = args.k or config.examine.max_candidates
    out_dir = args.out_dir or run.root / "selection-bench"
    labeler = make_labeler(config.label)
    settings = labeler.settings()
    frames = [a for f in run.explored_files(args.iteration) for a in ase.io.read(f, ":")]
    hashes = [frame_hash(a, settings) for a in frames]
    init_files = [f for f in (run.user_data_file, run.data_dir / "init.extxyz") if f.is_file()]
    committed = training_hashes(init_files)
    previous = run.init_dir("train") if args.iteration == 0 else None
    if previous is None:
        report = run.read_report(run.stage_dir(args.iteration - 1, "train"))
        previous = run.root / report["models_dir"]
    train_cfg = config.train.model_copy(update={"ensemble_size": args.members})
    hi = config.examine.trust_hi_eV_per_A
    print(f"{run.root} iteration {args.iteration}: {len(frames)} explored frames, k = {k}")
    print("| strategy | above trust_hi | " + "held-out force RMSE per set | worst F | worst E |")
    with open_executor(config.execution) as executor:
        for strategy in args.strategies:
            out = out_dir / strategy
            out.mkdir(parents=True, exist_ok=True)
            chosen = choose(
                strategy,
                run,
                config,
                frames,
                hashes,
                committed,
                k,
                args.seed,
                out,
                (settings, previous),
            )
            labeled = label_frames(chosen, labeler, executor, out_dir / "labels").labeled
            atomic.write_frames(out / "chosen.extxyz", labeled)
            models = out / "models"
            if not (models / "report.json").is_file():
                report = train_generation(
                    [*init_files, out / "chosen.extxyz"], len(labeled), models, previous,
                    train_cfg, list(config.system.type_map), executor,
                    [], out_dir, strategy,
                )  # fmt: skip
                atomic.write_json(models / "report.json", report)
            per_set, worst_f, worst_e = scores(models, args.heldout)
            n_hi = sum(a.info.get("max_devi_f", 0.0) > hi for a in chosen)
            cells = " / ".join(f"{v:.0f}" for v in per_set.values())
            print(f"| {strategy} | {n_hi}/{len(labeled)} | {cells} | {worst_f:.1f} | "
                  f"{worst_e:.2f} |", flush=True)  # fmt: skip
            atomic.write_json(
                out / "scores.json",
                {"n_labels": len(labeled), "n_above_trust_hi": int(n_hi), "by_set": per_set,
                 "worst_force_rmse_meV_per_A": worst_f, "worst_energy_rmse_meV_per_atom": worst_e},
            )  # fmt: skip
    print(json.dumps({"sets": list(per_set)}))


if __name__ == "__main__":
    main()
