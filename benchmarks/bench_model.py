"""Cost of one MD step (energy + forces) for one DeepPot-SE and for an ensemble of 4.

Prints microseconds per atom per step after warm-up (best of repeats) for periodic Cu
fcc (64 and 512 atoms) and ethanol (9 atoms), default model sizes, rcut 6 A, float64 and
float32; the neighbor list (vesin + collate) is timed separately. Ensemble columns: every
member at every step (``forces_from: mean``), and member 0 at every step with all members
every DUMP_INTERVAL-th step (``forces_from: first``, the walkers' default, DeePMD's way).

    python benchmarks/bench_model.py [--threads N] [--seconds S] [--device cpu|cuda]
                                     [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import time

import torch
from ase import Atoms
from ase.build import bulk, molecule

from eelt.model import DeepPot, Ensemble, build_graph, collate

N_MEMBERS = 4
DUMP_INTERVAL = 10


def systems() -> dict[str, tuple[Atoms, list[str]]]:
    cu = bulk("Cu", "fcc", a=3.61, cubic=True)
    return {
        "Cu fcc 64": (cu.repeat((2, 2, 4)), ["Cu"]),
        "Cu fcc 512": (cu.repeat((4, 4, 8)), ["Cu"]),
        "ethanol 9": (molecule("CH3CH2OH"), ["C", "H", "O"]),
    }


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def best_seconds(call, seconds: float, device: str, clock: str) -> float:
    """Shortest time of ``call`` after two warm-up calls, repeated for about ``seconds``.

    The minimum, as timeit advises: on a shared machine the other samples measure the load.
    ``clock="cpu"`` counts this thread's CPU time (1 thread, CPU only): robust to other load.
    """
    now = CLOCKS[clock]

    def timed() -> float:
        start = now()
        call()
        if device == "cuda":
            torch.cuda.synchronize()
        return now() - start

    for _ in range(2):
        timed()
    times = [timed()]
    while sum(times) < seconds and len(times) < 1000:
        times.append(timed())
    return min(times)


def measure(
    atoms: Atoms, type_map: list[str], precision: str, seconds: float, device: str, clock: str
):
    """Seconds per step: neighbor list, one model (energy + forces), ensemble of N_MEMBERS
    (all members every step; all members every DUMP_INTERVAL steps, member 0 otherwise)."""
    members = [DeepPot(type_map, precision=precision, seed=k) for k in range(N_MEMBERS)]
    for member in members:
        member.set_statistics([atoms])
    members = [member.to(device) for member in members]
    ensemble = Ensemble(members)
    dtype = members[0].dtype

    def neighbors():
        return collate([build_graph(atoms, type_map, members[0].rcut_A)], dtype, device)

    batch = neighbors()

    def dump_cycle():
        ensemble(batch)
        for _ in range(DUMP_INTERVAL - 1):
            ensemble(batch, n_members=1)

    return (
        best_seconds(neighbors, seconds, device, clock),
        best_seconds(lambda: members[0](batch), seconds, device, clock),
        best_seconds(lambda: ensemble(batch), seconds, device, clock),
        best_seconds(dump_cycle, seconds, device, clock) / DUMP_INTERVAL,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    args = parser.parse_args()
    if args.clock == "cpu" and (args.threads != 1 or args.device != "cpu"):
        parser.error("--clock cpu measures one CPU thread: use it with --threads 1 --device cpu")
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads, device {args.device}, "
        f"{args.clock} clock"
    )
    every, dumps = f"{N_MEMBERS} every step", f"{N_MEMBERS} at dumps/{DUMP_INTERVAL}"
    print(
        f"{'system':<12} {'precision':<9} {'neighbors':>10} {'1 model':>10} "
        f"{every:>13} {'ratio':>6} {dumps:>16} {'ratio':>6}   (us/atom/step)"
    )
    for name, (atoms, type_map) in systems().items():
        for precision in ("float64", "float32"):
            t_nl, t_one, t_ens, t_dump = measure(
                atoms, type_map, precision, args.seconds, args.device, args.clock
            )
            us = [1e6 * t / len(atoms) for t in (t_nl, t_one, t_ens, t_dump)]
            print(
                f"{name:<12} {precision:<9} {us[0]:>10.1f} {us[1]:>10.1f} {us[2]:>13.1f} "
                f"{t_ens / t_one:>6.2f} {us[3]:>16.1f} {t_dump / t_one:>6.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
