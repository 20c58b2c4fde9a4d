"""MD steps per second of one walker with the ensemble: plain, metadynamics, uncertainty-biased.

An ensemble of 4 DeepPot-SE members (default sizes, rcut 6 A, float32 as trained, random
weights with the systems' statistics) drives a Langevin walker the way the loop runs it
(``forces_from: first``: member 0 every step, all members at every 10th, dumped, step), for
ethanol (9 atoms; metadynamics on its two rotor dihedrals) and periodic Cu fcc 64 (metadynamics
on the coordination number of atom 0), with a hill every 50 steps. The uncertainty bias needs
every member at every step of its stride (1, or 5 as an impulse every 5th step). Prints
steps/s (median of repeats) and the cost over plain; the guards are off (random weights) and
the files a biased walker writes once at its end (hills, free-energy estimate and its plot)
are not timed.

    python benchmarks/bench_explore.py [--steps 400] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from ase import Atoms
from ase.build import bulk, molecule

from eelt.explore import run_walker
from eelt.explore.bias import BiasedCalculator, Metadynamics, UncertaintyBias
from eelt.explore.cv import Coordination, Dihedral
from eelt.model import DeepPot, Ensemble, EnsembleCalculator


def systems() -> dict[str, tuple[Atoms, list[str], list]]:
    ethanol = molecule("CH3CH2OH")
    sym = ethanol.get_chemical_symbols()
    o = sym.index("O")
    d = ethanol.get_all_distances()
    c1, c0 = sorted((i for i, s in enumerate(sym) if s == "C"), key=lambda c: d[o, c])
    h_o = min((i for i, s in enumerate(sym) if s == "H"), key=lambda i: d[o, i])
    h_c = min((i for i, s in enumerate(sym) if s == "H"), key=lambda i: d[c0, i])
    cu = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 4))
    return {
        "ethanol 9": (
            ethanol,
            ["C", "H", "O"],
            [Dihedral(h_o, o, c1, c0), Dihedral(h_c, c0, c1, o)],
        ),
        "Cu fcc 64": (cu, ["Cu"], [Coordination([0], list(range(1, len(cu))), r0_A=2.9)]),
    }


def calculators(ensemble: Ensemble, cvs: list, temperature_K: float) -> dict:
    def base():
        return EnsembleCalculator(ensemble, forces_from="first")

    return {
        "plain": base,
        "metadynamics": lambda: BiasedCalculator(
            base(),
            [
                Metadynamics(
                    cvs,
                    height_eV=0.02,
                    sigma=[0.3] * len(cvs),
                    pace_steps=50,
                    biasfactor=10.0,
                    temperature_K=temperature_K,
                )
            ],
        ),  # fmt: skip
        "uncertainty": lambda: BiasedCalculator(base(), [UncertaintyBias(1.0)]),
        "uncertainty, stride 5": lambda: BiasedCalculator(
            base(), [UncertaintyBias(1.0, stride_steps=5)]
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| system | walker | steps/s | cost over plain |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (atoms, type_map, cvs) in systems().items():
            members = [DeepPot(type_map, precision="float32", seed=k) for k in range(4)]
            for m in members:
                m.set_statistics([atoms])
            ensemble = Ensemble(members)
            rates = {}
            for kind, make in calculators(ensemble, cvs, 300.0).items():
                times = []
                for r in range(args.repeats):
                    calc = make()
                    calc.write_outputs = lambda prefix: []  # hills and FES files: once per walker
                    t0 = time.perf_counter()
                    summary = run_walker(
                        atoms, calc, temperature_K=300.0, timestep_fs=0.5, n_steps=args.steps,
                        dump_interval=10, seed=r, out_path=Path(tmp) / "w.xyz", walker="w",
                        min_distance_fraction=0.0, max_bond_fraction=0.0,
                    )  # fmt: skip
                    if summary.n_steps_run != args.steps:
                        raise SystemExit(f"{name} {kind}: walker stopped: {summary.stop_reason}")
                    times.append(time.perf_counter() - t0)
                rates[kind] = args.steps / statistics.median(times)
                over = rates["plain"] / rates[kind] - 1.0
                print(f"| {name} | {kind} | {rates[kind]:.0f} | {over:+.0%} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
