"""MD cost of the two model families: steps/s of one member and of a 4-member ensemble.

For ethanol (9 atoms) and periodic Cu fcc 64, each family's default architecture (DeepPot-SE:
eelt's ``train.model`` defaults, rcut 6 A; MACE: 32 channels, max_L 1, correlation 3, r_max
5 A), members with random weights saved at their default precision (float32 both), evaluated
through eelt's ASE calculator (``EnsembleCalculator``) on a new geometry at every step (small
random displacements from the start), the way a walker calls it:

- *one member*: member 0 alone;
- *ensemble, first*: member 0 at every step and every member at every 10th (dumped) step,
  the walkers' default (``explore.forces_from: first``, DeePMD's way);
- *ensemble, mean*: every member at every step (``forces_from: mean``, or an uncertainty
  bias at stride 1).

A step's cost is the calculator's (graph or neighbor list, members, autograd forces); the
integrator adds some microseconds. Prints steps/s from the best of repeated blocks of 10 steps
on one thread; ``--clock cpu`` counts this thread's CPU time (robust to other load on the
machine), ``--clock wall`` elapsed time.

    python benchmarks/bench_family_md.py [--seconds 5] [--clock cpu|wall] [--threads 1]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from ase import Atoms
from bench_model import best_seconds, systems

from eelt.config import MaceModelConfig, ModelConfig
from eelt.model import DeepPot, Ensemble, EnsembleCalculator
from eelt.model.mace import MaceEnsemble, MaceMember

N_MEMBERS = 4
DUMP_INTERVAL = 10
SYSTEMS = ("ethanol 9", "Cu fcc 64")


def ensemble(family: str, atoms: Atoms, type_map: list[str], k: int):
    """``k`` members of ``family`` with random weights (seeds 0..k-1), float32."""
    if family == "deeppot":
        members = [DeepPot.from_config(ModelConfig(), type_map, seed=s) for s in range(k)]
        for member in members:
            member.set_statistics([atoms])
        return Ensemble(members)
    members = [MaceMember.from_config(MaceModelConfig(), type_map, seed=s) for s in range(k)]
    return MaceEnsemble(members)


def block(calc: EnsembleCalculator, atoms: Atoms, rng: np.random.Generator, every: int | None):
    """Ten steps: a new geometry each, every member on the ``every``-th (None: never asked)."""
    start = atoms.positions.copy()

    def call() -> None:
        for step in range(DUMP_INTERVAL):
            if every is not None and step % every == 0:
                calc.request_deviation()
            atoms.positions = start + rng.normal(0.0, 0.02, start.shape)
            calc.get_forces(atoms)

    return call


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(
        f"| system | family | one member | ensemble of {N_MEMBERS}, first | "
        f"ensemble of {N_MEMBERS}, mean |\n|---|---|---|---|---|"
    )
    all_systems = systems()
    for name in SYSTEMS:
        atoms, type_map = all_systems[name]
        for family in ("deeppot", "mace"):
            ens = ensemble(family, atoms, type_map, N_MEMBERS)
            one = ensemble(family, atoms, type_map, 1)
            cases = (
                (EnsembleCalculator(one, forces_from="first"), None),
                (EnsembleCalculator(ens, forces_from="first"), DUMP_INTERVAL),
                (EnsembleCalculator(ens, forces_from="mean"), None),
            )
            rates = []
            for calc, every in cases:
                work = atoms.copy()
                seconds = best_seconds(
                    block(calc, work, rng, every), args.seconds, "cpu", args.clock
                )
                rates.append(DUMP_INTERVAL / seconds)
            print(
                f"| {name} | {family} | " + " | ".join(f"{r:.0f}" for r in rates) + " |", flush=True
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
