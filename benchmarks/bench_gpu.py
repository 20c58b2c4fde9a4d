"""The same work on a CUDA GPU and on the CPU: ensemble training, MD, DFT labels, MACE.

    python benchmarks/bench_gpu.py [--parts a b d c] [--quick] [--cpu-threads 16]
        [--data-dir benchmarks/data] [--work-dir /tmp/bench-gpu]

Data: ethanol at PBE/def2-SVP (benchmarks/data, made by make_ethanol_data.py), the 398-frame
train pool and the 82 held-out frames. Arithmetic in float32 unless a part says otherwise;
CPU runs use ``--cpu-threads`` torch threads (default: all cores).

- ``a``: the default DeepPot-SE ensemble (4 members, se_e2_a 25-50-100 / 240-240-240, rcut 6 A,
  ``auto:256`` = 29 frames per step, float32) trained stacked with ``train_stacked`` (the
  trainer's ``device`` argument) on the first ``--n-train`` frames of the train pool (10%
  validation, checked every steps/100 steps): ``--steps-a-short`` steps on the GPU, then
  ``--steps-a`` on the GPU (fewer when the short run's rate says they would not fit), then
  the short run on the CPU. Each run is a child process stopped at its share of the part's
  time: wall s of the ``train_stacked`` call (data, neighbor lists, statistics, validation,
  final full-set errors and checkpoints included), steps/s of that wall and between the
  first and last logged rows of member 0's learning curve (what a stopped run still gives),
  held-out force RMSE of the ensemble mean (meV/A; for GPU runs evaluated on both devices).
- ``b``: MD with ``EnsembleCalculator`` (4 members, float32, forces the members' mean, every
  member every step): Langevin at 300 K, ``--md-steps`` timed steps after 20 warm-up
  steps, for ethanol (part a's GPU ensemble, or an untrained one when a did not run) and a
  64-atom fcc Cu cell (untrained members, statistics from rattled EMT frames).
- ``d``: MACE (mace-torch's ScaleShiftMACE: 32 channels, max_L 1, correlation 3, r_max 5 A,
  2 interactions, float32) trained with Adam for ``--steps-d`` steps on 50 train frames,
  batch 5 (mace-torch's AtomicData and DataLoader), held-out force RMSE; the model saved
  with torch.save and run as ``MACECalculator`` for Langevin MD of ethanol as in b.
- ``c``: PySCF PBE/def2-SVP energy and forces (eelt's ``PySCFLabeler``) for 3 held-out frames
  with ``--cpu-threads`` threads, against the stored labels; on the GPU with gpu4pyscf when
  it imports.

Parts run in the order given, each under its own time cap (``CAPS_S``, checked between
steps and runs); an error in one part is reported and the next part runs. One JSON line per
result on stdout; all of them in ``$OUT/gpu.json`` when OUT is set (rewritten after each).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase import Atoms, units
from ase.md.langevin import Langevin

NAME = "ethanol_pbe_def2svp"
TYPE_MAP = ["H", "C", "O"]
ROOT = Path(__file__).resolve().parent.parent
CAPS_S = {"a": 180.0, "b": 45.0, "d": 85.0, "c": 35.0}  # full run; --quick divides by 4
RESULTS: list[dict] = []


def record(part: str, **fields) -> dict:
    """Print one result as a JSON line and rewrite $OUT/gpu.json with all of them."""
    row = {"part": part, **fields}
    RESULTS.append(row)
    print(json.dumps(row), flush=True)
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu.json").write_text(json.dumps(RESULTS, indent=1))
    return row


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def devices() -> list[str]:
    """cuda first (when there is one), then cpu."""
    return (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]


class Deadline:
    """A part's time cap: ``left_s()`` seconds remain of ``cap_s`` from construction."""

    def __init__(self, cap_s: float):
        self.end = time.perf_counter() + cap_s

    def left_s(self) -> float:
        return self.end - time.perf_counter()


# ---------------------------------------------------------------- a: DeepPot-SE training


def curve_progress(csv_path: Path) -> tuple[int, float, float]:
    """From a learning curve: the last logged training step, its wall s (from the trainer's
    start), and steps/s between the first and the last logged training rows (the final
    full-set row left out when the run finished)."""
    from eelt.train.curves import read_curve

    if not csv_path.is_file():
        return 0, math.nan, math.nan
    rows = read_curve(csv_path)
    if len(rows) > 2 and rows[-1]["step"] == rows[-2]["step"]:
        rows = rows[:-1]
    if not rows:
        return 0, math.nan, math.nan
    first, last = rows[0], rows[-1]
    span = last["wall_s"] - first["wall_s"]
    rate = (last["step"] - first["step"]) / span if span > 0 else math.nan
    return int(last["step"]), float(last["wall_s"]), rate


def _train_child(queue, device: str, steps: int, data: str, out: str, threads: int) -> None:
    """In a child process: the default ensemble, stacked, ``steps`` steps on ``device``."""
    try:
        from eelt.config import TrainConfig
        from eelt.train import train_stacked
        from eelt.train.trainer import member_seed

        cfg = TrainConfig(steps=steps)
        n = cfg.ensemble_size
        if device == "cuda":
            torch.zeros(1, device="cuda")  # the CUDA context, before the clock
        t0 = time.perf_counter()
        results = train_stacked(
            [data],
            [Path(out, f"model-{m}.pt") for m in range(n)],
            cfg,
            TYPE_MAP,
            [member_seed(cfg.seed, m) for m in range(n)],
            members=list(range(n)),
            device=device,
            torch_threads=threads,
        )
        sync(device)
        wall = time.perf_counter() - t0
        failed = [one_line(r) for r in results if isinstance(r, Exception)]
        queue.put({"wall_s": wall, "error": "; ".join(failed) or None})
    except Exception as err:
        queue.put({"error": one_line(err), "where": where(err)})


def train_once(
    device: str, steps: int, data: str, test: list, out: Path, threads: int, limit_s: float
) -> dict:
    """``_train_child`` in a fresh process, stopped after ``limit_s``; wall s of the
    ``train_stacked`` call, steps/s, held-out RMSE of the ensemble mean (float64, CPU)."""
    import multiprocessing
    import queue as queue_module

    from eelt.model import Ensemble
    from eelt.train import evaluate_rmse

    out.mkdir(parents=True, exist_ok=True)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    child = ctx.Process(target=_train_child, args=(results, device, steps, data, str(out), threads))
    child.start()
    try:
        answer = results.get(timeout=max(limit_s, 1.0))
    except queue_module.Empty:
        answer = {"error": f"stopped at the time limit ({limit_s:.0f} s)"}
    child.join(timeout=5)
    if child.is_alive():
        child.kill()
        child.join()
    reached, reached_wall_s, rate = curve_progress(out / "model-0.csv")
    row = {
        "device": device,
        "steps": steps,
        "steps_per_s_steady": round(rate, 2),
        "steps_logged": reached,
        "wall_s_at_last_log": round(reached_wall_s, 2),
    }
    if answer.get("error"):
        return row | {"error": answer["error"], "where": answer.get("where")}
    wall = answer["wall_s"]
    mean = evaluate_rmse(Ensemble.load(out), test)
    row |= {
        "wall_s": round(wall, 2),
        "steps_per_s_wall": round(steps / wall, 2),
        "test_force_rmse_meV_per_A": round(mean["force_rmse_meV_per_A"], 1),
        "test_energy_rmse_meV_per_atom": round(mean["energy_rmse_meV_per_atom"], 2),
    }
    if device == "cuda":  # the same saved models evaluated on the GPU (float64)
        on_gpu = evaluate_rmse(Ensemble.load(out, map_location="cuda"), test)
        row["test_force_rmse_on_cuda_meV_per_A"] = round(on_gpu["force_rmse_meV_per_A"], 4)
        row["test_force_rmse_on_cpu_meV_per_A"] = round(mean["force_rmse_meV_per_A"], 4)
    return row


def part_a(args, deadline: Deadline) -> Path | None:
    """The short run on the GPU, the long one on the GPU (fewer steps when the short run's
    rate says the full count would not fit a half of the time left), the short one on the
    CPU; the directory of the longest run that finished."""
    pool = ase.io.read(args.data_dir / f"{NAME}_train.extxyz", ":")
    test = ase.io.read(args.data_dir / f"{NAME}_test.extxyz", ":")
    data = str(args.work_dir / f"train_first_{args.n_train}.extxyz")
    ase.io.write(data, pool[: args.n_train])
    short, long_ = args.steps_a_short, args.steps_a
    runs = [("cuda", short, 0.2), ("cuda", long_, 0.55), ("cpu", short, 1.0)]
    runs = [run for run in runs if run[0] in devices()]
    finished: dict[int, Path] = {}
    gpu_rate = math.nan
    for device, steps, share in runs:
        limit = deadline.left_s() * share
        if limit < 5:
            record("a", device=device, steps=steps, skipped="part a's time cap reached")
            continue
        if device == "cuda" and steps == long_ and gpu_rate > 0:
            steps = min(long_, max(short, int((limit - 10) * gpu_rate) // 100 * 100))
        out = args.work_dir / f"a-{device}-{steps}"
        try:
            row = train_once(device, steps, data, test, out, args.cpu_threads, limit)
        except Exception as err:
            row = {"device": device, "steps": steps, "error": one_line(err), "where": where(err)}
        record(
            "a",
            what="DeepPot-SE default nets, 4 members stacked, float32",
            frames=min(args.n_train, len(pool)),
            threads=args.cpu_threads,
            limit_s=round(limit, 1),
            **row,
        )
        if device == "cuda" and steps == short:
            gpu_rate = row.get("steps_per_s_steady", math.nan)
        if "wall_s" in row:
            finished[steps] = out
    return finished[max(finished)] if finished else None


# ---------------------------------------------------------------- b: MD with the ensemble


def cu_cell() -> Atoms:
    """64-atom fcc Cu (2x2x4 cubic cells, a = 3.6 A)."""
    from ase.build import bulk

    return bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 4)


def cu_members(n: int = 4) -> list:
    """Untrained default-size members for Cu, float32, statistics from rattled EMT frames."""
    from ase.calculators.emt import EMT

    from eelt.config import ModelConfig
    from eelt.model import DeepPot
    from eelt.train.trainer import model_kwargs

    frames = []
    for k in range(4):
        atoms = cu_cell()
        atoms.rattle(0.05, seed=k)
        atoms.calc = EMT()
        atoms.get_potential_energy()
        frames.append(atoms)
    kwargs = model_kwargs(ModelConfig()) | {"precision": "float32"}
    members = []
    for seed in range(n):
        model = DeepPot(["Cu"], **kwargs, seed=seed)
        model.set_statistics(frames)
        members.append(model)
    return members


def ethanol_members(models: Path | None, train_frames: list) -> list:
    """Part a's members cast to float32, or untrained ones with the train frames' statistics."""
    from eelt.config import ModelConfig
    from eelt.model import DeepPot
    from eelt.model.ensemble import checkpoint_paths
    from eelt.train.trainer import model_kwargs

    if models is not None and checkpoint_paths(models):
        return [DeepPot.load(p).with_precision("float32") for p in checkpoint_paths(models)]
    kwargs = model_kwargs(ModelConfig()) | {"precision": "float32"}
    members = []
    for seed in range(4):
        model = DeepPot(TYPE_MAP, **kwargs, seed=seed)
        model.set_statistics(train_frames[:50])
        members.append(model)
    return members


def md_rate(atoms: Atoms, calc, timestep_fs: float, steps: int, deadline: Deadline) -> dict:
    """Langevin at 300 K: 20 warm-up steps, then ``steps`` timed ones (fewer if the part's cap
    comes first); steps/s and the final temperature."""
    atoms = atoms.copy()
    atoms.calc = calc
    dyn = Langevin(
        atoms,
        timestep_fs * units.fs,
        temperature_K=300.0,
        friction=0.01 / units.fs,
        rng=np.random.default_rng(0),
    )
    dyn.run(20)
    done = 0
    t0 = time.perf_counter()
    while done < steps and (done == 0 or deadline.left_s() > 0):
        chunk = min(10, steps - done)
        dyn.run(chunk)
        done += chunk
    wall = time.perf_counter() - t0
    return {
        "steps": done,
        "wall_s": round(wall, 3),
        "steps_per_s": round(done / wall, 1),
        "ms_per_step": round(1e3 * wall / done, 2),
        "final_T_K": round(float(atoms.get_temperature()), 1),
        "capped": done < steps,
    }


def part_b(args, deadline: Deadline, models: Path | None) -> None:
    from eelt.model import Ensemble, EnsembleCalculator

    train = ase.io.read(args.data_dir / f"{NAME}_train.extxyz", ":")
    systems = [
        ("ethanol", train[0], 0.5, lambda: ethanol_members(models, train)),
        ("Cu64 fcc", cu_cell(), 1.0, cu_members),
    ]
    for system, atoms, dt, make in systems:
        try:
            members = make()
        except Exception as err:
            record("b", system=system, error=one_line(err))
            continue
        trained = system == "ethanol" and models is not None
        for device in devices():
            if deadline.left_s() <= 0:
                record("b", system=system, device=device, skipped="part b's time cap reached")
                continue
            try:
                torch.set_num_threads(args.cpu_threads)
                ensemble = Ensemble([m.to(device) for m in members])
                calc = EnsembleCalculator(ensemble)
                row = md_rate(atoms, calc, dt, args.md_steps, deadline)
                record(
                    "b",
                    what="Langevin MD, EnsembleCalculator (4 members, mean forces, float32)",
                    system=system,
                    n_atoms=len(atoms),
                    trained=trained,
                    timestep_fs=dt,
                    device=device,
                    threads=args.cpu_threads,
                    **row,
                )
            except Exception as err:
                record("b", system=system, device=device, error=one_line(err))


# ---------------------------------------------------------------- d: MACE


def mace_configs(frames: list) -> list:
    """mace-torch Configurations of ASE frames whose calculators hold energy and forces."""
    from mace import data as mdata

    keyspec = mdata.KeySpecification(
        info_keys={"energy": "REF_energy"}, arrays_keys={"forces": "REF_forces"}
    )
    configs = []
    for atoms in frames:
        a = atoms.copy()
        a.info["REF_energy"] = atoms.get_potential_energy()
        a.arrays["REF_forces"] = atoms.get_forces()
        configs.append(mdata.config_from_atoms(a, key_specification=keyspec))
    return configs


def build_mace(configs: list, loader, z_table, r_max_A: float):
    """ScaleShiftMACE: 32 channels, max_L 1, correlation 3, 2 interactions, mace-torch's
    defaults otherwise (8 Bessel functions, cutoff polynomial 5, spherical harmonics to l=3,
    radial MLP 64-64-64, readout MLP 16x0e); E0s by least squares, scale and shift from the
    forces' RMS (mace-torch's default scaling)."""
    from e3nn import o3
    from mace import data as mdata
    from mace import modules

    e0s = mdata.compute_average_E0s(configs, z_table)
    atomic_energies = np.array([e0s[z] for z in z_table.zs])
    avg_num_neighbors = modules.compute_avg_num_neighbors(loader)
    mean, std = modules.scaling_classes["rms_forces_scaling"](loader, atomic_energies)
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    return modules.ScaleShiftMACE(
        r_max=r_max_A,
        num_bessel=8,
        num_polynomial_cutoff=5,
        max_ell=3,
        interaction_cls=block,
        interaction_cls_first=block,
        num_interactions=2,
        num_elements=len(z_table),
        hidden_irreps=o3.Irreps("32x0e + 32x1o"),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=atomic_energies,
        avg_num_neighbors=avg_num_neighbors,
        atomic_numbers=z_table.zs,
        correlation=3,
        gate=torch.nn.functional.silu,
        radial_MLP=[64, 64, 64],
        atomic_inter_scale=float(np.asarray(std).reshape(-1)[0]),
        atomic_inter_shift=float(np.asarray(mean).reshape(-1)[0]),
    )


def mace_force_rmse_meV_per_A(model, loader, device: str) -> float:
    """Force RMSE (meV/A) of ``model`` over the loader's frames."""
    sq, n = 0.0, 0
    for batch in loader:
        batch = batch.to(device)
        out = model(batch.to_dict(), training=False, compute_force=True)
        diff = (out["forces"].detach() - batch.forces).double()
        sq += float((diff**2).sum())
        n += diff.numel()
    return 1e3 * math.sqrt(sq / max(n, 1))


def part_d(args, deadline: Deadline) -> None:
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # MACECalculator's torch.load
    try:
        from mace import data as mdata
        from mace import modules, tools
        from mace.calculators import MACECalculator
        from mace.tools import torch_geometric
    except Exception as err:
        record("d", error=f"mace-torch does not import: {one_line(err)}")
        return
    import mace

    torch.set_default_dtype(torch.float32)
    r_max = 5.0
    pool = ase.io.read(args.data_dir / f"{NAME}_train.extxyz", ":")
    test = ase.io.read(args.data_dir / f"{NAME}_test.extxyz", ":")
    frames = pool[: args.mace_frames]
    z_table = tools.AtomicNumberTable([1, 6, 8])
    configs = mace_configs(frames)
    train_data = [mdata.AtomicData.from_config(c, z_table=z_table, cutoff=r_max) for c in configs]
    test_data = [
        mdata.AtomicData.from_config(c, z_table=z_table, cutoff=r_max) for c in mace_configs(test)
    ]
    stats_loader = torch_geometric.dataloader.DataLoader(train_data, batch_size=5, shuffle=False)
    test_loader = torch_geometric.dataloader.DataLoader(test_data, batch_size=10, shuffle=False)
    loss_fn = modules.WeightedEnergyForcesLoss(energy_weight=1.0, forces_weight=100.0)
    version = getattr(mace, "__version__", "?")
    for device in devices():
        if deadline.left_s() <= 0:
            record("d", device=device, skipped="part d's time cap reached")
            continue
        try:
            torch.set_num_threads(args.cpu_threads)
            torch.manual_seed(0)
            model = build_mace(configs, stats_loader, z_table, r_max).to(device)
            n_params = sum(p.numel() for p in model.parameters())
            loader = torch_geometric.dataloader.DataLoader(
                train_data, batch_size=5, shuffle=True, drop_last=True
            )
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, amsgrad=True)
            loss_dev = loss_fn.to(device)
            train_deadline = Deadline(deadline.left_s() * (0.4 if device == "cuda" else 0.7))
            step, t_warm, t0 = 0, None, time.perf_counter()
            warm = min(10, args.steps_d // 3)
            while step < args.steps_d and train_deadline.left_s() > 0:
                for batch in loader:
                    batch = batch.to(device)
                    optimizer.zero_grad(set_to_none=True)
                    out = model(batch.to_dict(), training=True, compute_force=True)
                    loss = loss_dev(batch, out)
                    loss.backward()
                    optimizer.step()
                    step += 1
                    if step == warm:
                        sync(device)
                        t_warm = time.perf_counter()
                    if step >= args.steps_d or train_deadline.left_s() <= 0:
                        break
            sync(device)
            t1 = time.perf_counter()
            steady = (step - warm) / (t1 - t_warm) if t_warm and step > warm else math.nan
            model.eval()
            test_rmse = mace_force_rmse_meV_per_A(model, test_loader, device)
            record(
                "d",
                what="MACE training (32x0e+32x1o, correlation 3, 2 interactions, r_max 5 A)",
                mace_version=version,
                device=device,
                threads=args.cpu_threads,
                frames=len(frames),
                batch=5,
                steps=step,
                params=n_params,
                wall_s=round(t1 - t0, 2),
                steps_per_s_wall=round(step / (t1 - t0), 2),
                steps_per_s_after_warmup=round(steady, 2),
                final_loss=round(loss.item(), 4),
                test_force_rmse_meV_per_A=round(test_rmse, 1),
                capped=step < args.steps_d,
            )
            path = args.work_dir / f"mace-{device}.model"
            torch.save(model.to("cpu"), path)
            calc = MACECalculator(model_paths=str(path), device=device, default_dtype="float32")
            row = md_rate(pool[0], calc, 0.5, args.md_steps, deadline)
            record("d", what="Langevin MD, MACECalculator", system="ethanol", device=device, **row)
        except Exception as err:
            record("d", device=device, error=one_line(err), where=where(err))


# ---------------------------------------------------------------- c: DFT labels


def part_c(args, deadline: Deadline) -> None:
    from eelt.label import PySCFLabeler
    from eelt.label.pyscf_labeler import gpu_available

    test = ase.io.read(args.data_dir / f"{NAME}_test.extxyz", ":")[: args.dft_frames]
    targets = [("cpu", args.cpu_threads)]
    try:
        gpu = gpu_available()
    except Exception as err:
        gpu = False
        record("c", device="gpu", error=f"gpu4pyscf check failed: {one_line(err)}")
    if gpu:
        targets.insert(0, ("gpu", None))
    else:
        record("c", device="gpu", skipped="gpu4pyscf does not import (not installed)")
    labels: dict[str, list] = {}
    for device, threads in targets:
        labeler = PySCFLabeler(basis=args.dft_basis, device=device, threads=threads)
        done, walls = [], []
        for atoms in test:
            if deadline.left_s() <= 0:
                break
            try:
                t0 = time.perf_counter()
                done.append(labeler(atoms))
                walls.append(time.perf_counter() - t0)
            except Exception as err:
                record("c", device=device, error=one_line(err))
                break
        labels[device] = done
        if not done:
            continue
        df = max(
            float(np.abs(lab.get_forces() - ref.get_forces()).max())
            for lab, ref in zip(done, test, strict=False)
        )
        de = max(
            abs(lab.get_potential_energy() - ref.get_potential_energy())
            for lab, ref in zip(done, test, strict=False)
        )
        record(
            "c",
            what=f"PySCF RKS PBE/{args.dft_basis} energy + forces (eelt PySCFLabeler)",
            device=device,
            threads=threads,
            frames=len(done),
            s_per_frame=[round(w, 2) for w in walls],
            mean_s_per_frame=round(float(np.mean(walls)), 2),
            max_abs_dF_vs_stored_eV_per_A=float(f"{df:.2e}"),
            max_abs_dE_vs_stored_eV=float(f"{de:.2e}"),
        )
    if labels.get("gpu") and labels.get("cpu"):
        df = max(
            float(np.abs(g.get_forces() - c.get_forces()).max())
            for g, c in zip(labels["gpu"], labels["cpu"], strict=False)
        )
        record("c", what="gpu4pyscf vs PySCF", max_abs_dF_eV_per_A=float(f"{df:.2e}"))


# ---------------------------------------------------------------- driver


def one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"[:600]


def where(err: BaseException) -> str:
    """The innermost frame of the traceback (file:line), for error reports."""
    tb = traceback.extract_tb(err.__traceback__)
    return f"{tb[-1].filename}:{tb[-1].lineno}" if tb else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", default=["a", "b", "d", "c"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a CPU smoke test")
    parser.add_argument("--cpu-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--steps-a", type=int, default=2000)
    parser.add_argument("--steps-a-short", type=int, default=100)
    parser.add_argument("--n-train", type=int, default=398, help="a: frames of the train pool")
    parser.add_argument("--dft-basis", default="def2-svp")
    parser.add_argument("--md-steps", type=int, default=200)
    parser.add_argument("--steps-d", type=int, default=300)
    parser.add_argument("--mace-frames", type=int, default=50)
    parser.add_argument("--dft-frames", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "benchmarks" / "data")
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.steps_a, args.steps_a_short, args.md_steps, args.n_train = 10, 4, 20, 30
        args.steps_d, args.mace_frames, args.dft_frames = 6, 10, 1
        args.dft_basis = "sto-3g"
    args.work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-gpu-"))
    args.work_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.cpu_threads)
    import eelt

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    record(
        "env",
        eelt=str(Path(eelt.__file__).parent),
        python=sys.version.split()[0],
        torch=torch.__version__,
        cuda=torch.version.cuda,
        gpu=gpu,
        cpu_threads=args.cpu_threads,
        cpu_count=os.cpu_count(),
        quick=args.quick,
    )
    models = None
    for part in args.parts:
        cap = CAPS_S[part] / (4 if args.quick else 1)
        deadline = Deadline(cap)
        t0 = time.perf_counter()
        try:
            if part == "a":
                models = part_a(args, deadline)
            elif part == "b":
                part_b(args, deadline, models)
            elif part == "d":
                part_d(args, deadline)
            elif part == "c":
                part_c(args, deadline)
        except Exception as err:
            record(part, error=one_line(err), where=where(err))
        record(part, part_wall_s=round(time.perf_counter() - t0, 1), cap_s=cap)


if __name__ == "__main__":
    main()
