"""Does metadynamics on ethanol's rotors find what plain MD misses, and does the potential gain?

    python benchmarks/bench_metad_coverage.py [--runs-dir runs] [--workers 2]

1. ``eelt run examples/ethanol-metad/eelt.yaml --plain``: one stage of well-tempered
   metadynamics on the H-O-C-C and H-C-C-O dihedrals (PySCF PBE/def2-SVP labels).
2. The same config without the bias (same steps, walkers, labels per iteration).
3. Coverage: of all frames each run explored, the share of 10-degree bins visited along each
   rotor, and of the 36 x 36 bins of both.
4. A rigid torsion scan of both rotors from the start geometry (24 steps of 15 degrees each,
   labeled here with the same PySCF settings, cached in RUNS/torsion-scan/) and each run's final
   ensemble's energy and force errors on it.
Both runs and the scan resume: a rerun computes no label and trains no finished member.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import ase.io
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "ethanol-metad"
# ethanol.xyz: 0 C (methyl), 1 C, 2 O, 3 H (hydroxyl), 6-8 H on C0
HOCC, HCCO, METHYL_H = (3, 2, 1, 0), (6, 0, 1, 2), [6, 7, 8]


def plain_config(out: Path) -> Path:
    """The example's config without its bias, structure path made absolute."""
    cfg = yaml.safe_load((EXAMPLE / "eelt.yaml").read_text())
    cfg["name"] = "ethanol-plain"
    cfg["system"]["structures"] = [str(EXAMPLE / "ethanol.xyz")]
    for stage in cfg["explore"]["stages"]:
        stage.pop("biases", None)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "eelt.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def coverage(run_dir: Path) -> dict[str, float]:
    frames = [
        f for p in sorted(run_dir.glob("iter-*/explore/w*.extxyz")) for f in ase.io.read(p, ":")
    ]
    hocc = np.array([f.get_dihedral(*HOCC) for f in frames])
    hcco = np.array([f.get_dihedral(*HCCO) for f in frames])
    bins = np.linspace(0.0, 360.0, 37)
    one = {
        name: len(np.unique(np.digitize(a % 360.0, bins))) / 36
        for name, a in (("H-O-C-C", hocc), ("H-C-C-O", hcco))
    }
    pairs = {(int(a // 10), int(b // 10)) for a, b in zip(hocc % 360.0, hcco % 360.0, strict=True)}
    return {**one, "both (36 x 36)": len(pairs) / 36**2, "frames": len(frames)}


def torsion_scan(out: Path, workers: int) -> list:
    """The rigid scan of both rotors, labeled with the example's PySCF settings (cached)."""
    from eelt.config import load_config
    from eelt.label import label_frames, make_labeler

    path = out / "scan.extxyz"
    if path.is_file():
        return ase.io.read(path, ":")
    start = ase.io.read(EXAMPLE / "ethanol.xyz")
    frames = []
    for angle in range(0, 360, 15):
        a = start.copy()
        a.set_dihedral(*HOCC, a.get_dihedral(*HOCC) + angle, indices=[3])
        a.info["rotor"] = "H-O-C-C"
        frames.append(a)
    for angle in range(0, 360, 15):
        a = start.copy()
        a.set_dihedral(*HCCO, a.get_dihedral(*HCCO) + angle, indices=METHYL_H)
        a.info["rotor"] = "H-C-C-O"
        frames.append(a)
    cfg, _ = load_config(EXAMPLE / "eelt.yaml")
    with ProcessPoolExecutor(workers) as pool:
        report = label_frames(frames, make_labeler(cfg.label), pool, out / "labels")
    if report.failed:
        raise SystemExit(f"torsion scan: {len(report.failed)} labels failed: {report.failed[0]}")
    for frame, rotor in zip(report.labeled, [f.info["rotor"] for f in frames], strict=True):
        frame.info["rotor"] = rotor
    ase.io.write(path, report.labeled)
    return report.labeled


def scan_errors(models_dir: Path, scan: list) -> dict[str, dict]:
    from eelt.model import Ensemble
    from eelt.train import ErrorSums, predict_frames

    pred = predict_frames(Ensemble.load(models_dir), scan)
    rotors = np.array([f.info.get("rotor", "") for f in scan])
    return {
        rotor: ErrorSums.of(pred.subset(np.flatnonzero(rotors == rotor))).metrics()
        for rotor in ("H-O-C-C", "H-C-C-O")
        if (rotors == rotor).any()
    } | {"all": ErrorSums.of(pred).metrics()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    runs = {
        "metadynamics": (EXAMPLE / "eelt.yaml", args.runs_dir / "ethanol-metad"),
        "plain MD": (
            plain_config(args.runs_dir / "ethanol-plain-config"),
            args.runs_dir / "ethanol-plain",
        ),
    }
    for config, run_dir in runs.values():
        cmd = ["eelt", "run", str(config), "--plain", "--run-dir", str(run_dir)]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    scan = torsion_scan(args.runs_dir / "torsion-scan", args.workers)
    # both runs' held-out test frames together: thermal frames near trans and metadynamics ones
    tests = [f for _, d in runs.values() for p in sorted(d.glob("data/test/*.extxyz"))
             for f in ase.io.read(p, ":")]  # fmt: skip
    print(
        "\n| exploration | frames | H-O-C-C bins | H-C-C-O bins | both | labels | scan F RMSE "
        "H-O-C-C | scan F RMSE H-C-C-O | scan E RMSE (meV/atom) | both runs' test frames F RMSE |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, (_, run_dir) in runs.items():
        state = json.loads((run_dir / "state.json").read_text())
        cov = coverage(run_dir)
        models = run_dir / state["models_dir"]
        err = scan_errors(models, scan)
        test = scan_errors(models, tests)["all"] if tests else {"force_rmse_meV_per_A": np.nan}
        print(
            f"| {name} | {cov['frames']} | {cov['H-O-C-C']:.0%} | {cov['H-C-C-O']:.0%} | "
            f"{cov['both (36 x 36)']:.1%} | {state['n_labels']} | "
            f"{err['H-O-C-C']['force_rmse_meV_per_A']:.1f} | "
            f"{err['H-C-C-O']['force_rmse_meV_per_A']:.1f} | "
            f"{err['all']['energy_rmse_meV_per_atom']:.2f} | "
            f"{test['force_rmse_meV_per_A']:.1f} ({len(tests)}) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
