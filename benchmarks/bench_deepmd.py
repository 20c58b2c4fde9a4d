"""Our DeepPot beside DeePMD-kit's PyTorch se_e2_a: same frames, sizes, sel, threads.

Energy + forces per step in microseconds per atom (best of repeats after warm-up), for the
systems of bench_model.py, float64 and float32. Both models: se_e2_a, rcut 6 A, rcut_smth
0.5 A, embedding [25, 50, 100], axis_neuron 16, one embedding net per (center, neighbor)
element pair (DeePMD type_one_side false), fitting [240, 240, 240] without resnet_dt,
random weights, sel = the frame's largest neighbor count per element (our dense layout).

Columns: "ours" and "DP" are the model alone given a neighbor list (ours: DeepPot on a
collated Batch; DeePMD: forward_lower on extended coordinates and a raw neighbor list, as
LAMMPS calls it, plus folding ghost forces back; DeePMD computes the virial as well);
"TS" the same through TorchScript (ours: export_torchscript, from pair lists, virial
included; DeePMD: torch.jit.script, as `dp --pt freeze` does); "tot" adds each side's own
neighbor search (ours: vesin + collate; DeePMD: forward, which builds ghosts and its list in
torch). DP/ours > 1 means ours is faster.

Runs in a separate venv holding deepmd-kit 3.x beside the project's torch; where its compiled
op library was built for another torch, move libdeepmd_op_pt.so aside (se_e2_a uncompressed
needs none of its ops):

    python3 -m venv dp-venv && dp-venv/bin/pip install torch==2.13.0 && \
        dp-venv/bin/pip install torch==2.13.0 deepmd-kit mpich e3nn ase vesin
    dp-venv/bin/python benchmarks/bench_deepmd.py [--seconds S] [--clock cpu|wall]

The default clock is this thread's CPU time (one thread), which other load on a shared
machine does not inflate; the wall clock needs an idle machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # bench_model and eelt without installing

import torch  # noqa: E402
from bench_model import best_seconds, systems  # noqa: E402

from eelt.model import DeepPot, build_graph, collate  # noqa: E402
from eelt.model.export import export_torchscript  # noqa: E402

RCUT_A, RCUT_SMTH_A = 6.0, 0.5
EMBEDDING, AXIS_NEURON, FITTING = [25, 50, 100], 16, [240, 240, 240]


def deepmd_model(type_map: list[str], sel: list[int], precision: str):
    """A DeePMD-kit PyTorch EnergyModel (se_e2_a) with random weights, via get_model."""
    from deepmd.pt.model.model import get_model

    params = {
        "type_map": list(type_map),
        "descriptor": {
            "type": "se_e2_a",
            "sel": list(sel),
            "rcut": RCUT_A,
            "rcut_smth": RCUT_SMTH_A,
            "neuron": list(EMBEDDING),
            "axis_neuron": AXIS_NEURON,
            "type_one_side": False,
            "resnet_dt": False,
            "precision": precision,
            "seed": 1,
        },
        "fitting_net": {
            "type": "ener",
            "neuron": list(FITTING),
            "resnet_dt": False,
            "precision": precision,
            "seed": 1,
        },
    }
    return get_model(params).eval()


def deepmd_calls(model, atoms, type_map: list[str]):
    """Callables (forward_lower + ghost-force folding, full forward) and the energy (eV)."""
    from deepmd.pt.utils.nlist import extend_input_and_build_neighbor_list

    dtype = torch.float64  # DeePMD's global precision; networks cast to their own
    types = [type_map.index(s) for s in atoms.get_chemical_symbols()]
    coord = torch.tensor(atoms.positions, dtype=dtype).view(1, -1)
    atype = torch.tensor([types], dtype=torch.long)
    box = torch.tensor(atoms.cell.array, dtype=dtype).view(1, 9) if atoms.pbc.any() else None
    ext_coord, ext_atype, mapping, nlist = extend_input_and_build_neighbor_list(
        coord, atype, model.get_rcut(), model.get_sel(), mixed_types=True, box=box
    )
    n_atoms = len(atoms)

    def lower():
        out = model.forward_lower(ext_coord, ext_atype, nlist, mapping)
        ghost = out["extended_force"]
        forces = ghost.new_zeros(1, n_atoms, 3).index_add(1, mapping[0], ghost)
        return out["energy"], forces

    def full():
        out = model(coord, atype, box)
        return out["energy"], out["force"]

    energy, forces = lower()
    energy_full, forces_full = full()
    gap = (forces - forces_full).abs().max().item()
    if not gap <= 1e-6 * max(1.0, forces_full.abs().max().item()):
        raise RuntimeError(f"DeePMD forward_lower and forward disagree by {gap} eV/A")
    return lower, full, energy.item()


def ours_calls(atoms, type_map: list[str], precision: str, workdir: Path):
    """Callables (DeepPot on a Batch, TorchScript export on pairs, neighbor list) and sel."""
    model = DeepPot(
        type_map,
        rcut_A=RCUT_A,
        rcut_smth_A=RCUT_SMTH_A,
        embedding_widths=EMBEDDING,
        axis_neuron=AXIS_NEURON,
        fitting_widths=FITTING,
        precision=precision,
    )
    model.set_statistics([atoms])
    graph = build_graph(atoms, type_map, RCUT_A)
    batch = collate([graph], model.dtype)
    scripted = torch.jit.load(str(export_torchscript(model, workdir / f"{precision}.pt")))
    plain = [
        torch.tensor(graph.positions, dtype=model.dtype),
        torch.tensor(graph.types),
        torch.tensor(graph.cell, dtype=model.dtype),
        torch.tensor(graph.pair_i),
        torch.tensor(graph.pair_j),
        torch.tensor(graph.shift),
    ]

    def neighbors():
        return collate([build_graph(atoms, type_map, RCUT_A)], model.dtype)

    return (lambda: model(batch)), (lambda: scripted(*plain)), neighbors, batch.sel


def compare(atoms, type_map, precision, seconds, clock, script, workdir) -> list[float]:
    """One row: ours, ours TS, DP, DP TS, DP/ours, ours total, DP total, DP/ours (total)."""
    ours, ours_ts, neighbors, sel = ours_calls(atoms, type_map, precision, workdir)
    dp = deepmd_model(type_map, sel, precision)
    dp_lower, dp_full, _ = deepmd_calls(dp, atoms, type_map)
    dp_ts_lower = deepmd_calls(torch.jit.script(dp), atoms, type_map)[0] if script else None

    def us(call) -> float:
        return 1e6 * best_seconds(call, seconds, "cpu", clock) / len(atoms)

    t_ours, t_ours_ts, t_nl = us(ours), us(ours_ts), us(neighbors)
    t_dp, t_dp_full = us(dp_lower), us(dp_full)
    t_dp_ts = us(dp_ts_lower) if dp_ts_lower is not None else float("nan")
    t_total = t_ours + t_nl
    return [
        t_ours,
        t_ours_ts,
        t_dp,
        t_dp_ts,
        t_dp / t_ours,
        t_total,
        t_dp_full,
        t_dp_full / t_total,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=0.7, help="time per measurement")
    parser.add_argument("--no-script", action="store_true", help="skip DeePMD TorchScript")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = parser.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu measures one CPU thread: use it with --threads 1")
    torch.set_num_threads(args.threads)
    import deepmd

    print(
        f"torch {torch.__version__}, deepmd-kit {deepmd.__version__}, {args.threads} thread(s),"
        f" CPU, {args.clock} clock, us/atom/step (energy + forces)"
    )
    head = ("ours", "ours TS", "DP", "DP TS", "DP/ours", "ours tot", "DP tot", "DP/ours")
    print(f"{'system':<11} {'precision':<9} {'sel':<10}" + "".join(f"{h:>9}" for h in head))
    with tempfile.TemporaryDirectory() as tmp:
        for name, (atoms, type_map) in systems().items():
            for precision in ("float64", "float32"):
                row = compare(
                    atoms,
                    type_map,
                    precision,
                    args.seconds,
                    args.clock,
                    not args.no_script,
                    Path(tmp),
                )
                sel = str(build_graph_sel(atoms, type_map))
                cells = [f"{v:>9.2f}" if k in (4, 7) else f"{v:>9.1f}" for k, v in enumerate(row)]
                print(f"{name:<11} {precision:<9} {sel:<10}" + "".join(cells), flush=True)


def build_graph_sel(atoms, type_map: list[str]) -> list[int]:
    """Largest neighbor count per element within rcut: the sel both models use."""
    return collate([build_graph(atoms, type_map, RCUT_A)]).sel


if __name__ == "__main__":
    main()
