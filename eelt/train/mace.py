"""Train an ensemble of MACE members (train.model.kind: mace): one job per member through an
Executor, each from its own seed with its own data order, as mace-torch trains one model
(Adam with AMSGrad, gradient clipping, an exponential moving average of the weights,
mace-torch's per-atom energy and force loss); resumable, warm-started (fine-tuned) from the
previous ensemble's members or from a user's MACE model file, with metrics.json, learning
curves and family.json.

Units: energy eV, forces eV/Angstrom; errors in meV/atom and meV/Angstrom.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import torch
from torch_ema import ExponentialMovingAverage

from eelt.atomic import write_json
from eelt.config import TrainConfig
from eelt.model.mace import FAMILY, FAMILY_FILE, MaceMember, data_statistics
from eelt.model.mace.graphs import collate
from eelt.train.curves import plot_curves, read_curve, write_curve
from eelt.train.data import frame_labels, read_frames, split_train_validation
from eelt.train.members import member_seed
from eelt.train.records import known_results, previous_result, write_metrics
from eelt.train.result import MemberResult, TrainingDiverged
from eelt.train.schedule import DIVERGENCE_FACTOR, BatchOrder
from eelt.train.stacked import pick_device, torch_threads_set

CLIP_GRAD_NORM = 10.0  # mace-torch's default gradient clipping (--clip_grad)
EVAL_FRAMES = 16  # frames per batch when errors are taken over a whole set
VALIDATION_SHARE = 0.05  # validation is taken no more often than it costs this share of steps


def _errors(member: MaceMember, data: list) -> tuple[float, float]:
    """(energy RMSE meV/atom, force RMSE meV/A) of ``member`` over labeled graphs (of any
    float dtype: each batch is cast to the member's); NaN for none."""
    if not data:
        return math.nan, math.nan
    sum_e = sum_f = 0.0
    n_components = 0
    for start in range(0, len(data), EVAL_FRAMES):
        batch = collate(data[start : start + EVAL_FRAMES], member.device)
        batch.apply(lambda x: x.to(member.dtype) if torch.is_floating_point(x) else x)
        out = member.evaluate(batch)
        n_atoms = (batch.ptr[1:] - batch.ptr[:-1]).to(out["energy"].dtype)
        sum_e += float(((out["energy"].detach() - batch.energy) / n_atoms).square().sum())
        sum_f += float((out["forces"].detach() - batch.forces).square().sum())
        n_components += batch.forces.numel()
    return 1e3 * math.sqrt(sum_e / len(data)), 1e3 * math.sqrt(sum_f / n_components)


def _batch_errors(batch, out: dict) -> tuple[float, float]:
    """(energy RMSE meV/atom, force RMSE meV/A) of one training batch's predictions."""
    n_atoms = (batch.ptr[1:] - batch.ptr[:-1]).to(out["energy"].dtype)
    de = ((out["energy"].detach() - batch.energy) / n_atoms).square().mean()
    df = (out["forces"].detach() - batch.forces).square().mean()
    return 1e3 * math.sqrt(float(de)), 1e3 * math.sqrt(float(df))


def initial_member(
    train: TrainConfig,
    type_map: list[str],
    seed: int,
    frames: list,
    labels: list,
    init_from: str | None,
    base_model: str | None,
) -> MaceMember:
    """The member before training, in train.precision: ``init_from`` (a previous member), or
    ``base_model`` (a user's MACE file, its E0s replaced as train.model.E0s says), or new from
    ``seed`` with the statistics of the training ``frames`` and their ``labels``."""
    section = train.model
    if init_from is not None:
        return MaceMember.warm_start(init_from, type_map, train.precision)
    energies = [e for e, _, _ in labels]
    forces = [f for _, f, _ in labels]
    if base_model is not None:
        member = MaceMember.from_base_model(base_model, type_map, train.precision)
        stats = data_statistics(frames, energies, forces, type_map, member.rcut_A, section.E0s)
        member.set_E0s(stats.E0s_eV, "average" if section.E0s == "average" else "config")
        return member
    stats = data_statistics(frames, energies, forces, type_map, section.r_max_A, section.E0s)
    return MaceMember.from_config(section, type_map, seed, train.precision, stats)


def train_mace_member(
    data_files: list[str],
    out_path: str | Path,
    train: TrainConfig,
    type_map: list[str],
    seed: int,
    member: int,
    init_from: str | Path | None = None,
    base_model: str | Path | None = None,
    *,
    device: str | None = "auto",
    torch_threads: int | None = None,
) -> MemberResult:
    """Train one MACE member on the extxyz files into ``out_path`` (curve: same name, .csv),
    from ``seed``, or fine-tuned from ``init_from`` (a previous member) or ``base_model`` (a
    MACE file) for train.model.warm_steps at warm_lr. Trains in train.precision, validates and
    saves the moving average of the weights in train.model.precision. Raises
    TrainingDiverged when the loss turns NaN/inf or the validation error blows up."""
    with torch_threads_set(torch_threads):
        return _train_member(
            [str(f) for f in data_files],
            Path(out_path),
            train,
            list(type_map),
            int(seed),
            int(member),
            None if init_from is None else str(init_from),
            None if base_model is None else str(base_model),
            device,
        )


def _train_member(
    data_files: list[str],
    out_path: Path,
    train: TrainConfig,
    type_map: list[str],
    seed: int,
    m: int,
    init_from: str | None,
    base_model: str | None,
    device: str | None,
) -> MemberResult:
    t_start = time.perf_counter()
    section = train.model
    who = f"member {m} (seed {seed})"
    frames = read_frames(data_files, type_map)
    labels = [frame_labels(a, f"frame {i}") for i, a in enumerate(frames)]
    train_idx, val_idx = split_train_validation(len(frames), train.validation_fraction, train.seed)
    warm = init_from is not None or base_model is not None
    steps, lr = (section.warm_steps, section.warm_lr) if warm else (section.steps, section.lr)

    train_frames = [frames[i] for i in train_idx]
    train_labels = [labels[i] for i in train_idx]
    model = initial_member(train, type_map, seed, train_frames, train_labels, init_from, base_model)
    model.to(pick_device(device))
    module = model.module
    module.train()

    def graphs(idx: np.ndarray) -> list:
        chosen = [frames[i] for i in idx]
        return model.graphs(chosen, [labels[i][0] for i in idx], [labels[i][1] for i in idx])

    train_data, val_data = graphs(train_idx), graphs(val_idx)

    from mace.modules import WeightedEnergyForcesLoss  # after eelt.model.mace's quiet import

    loss_fn = WeightedEnergyForcesLoss(section.energy_weight, section.forces_weight)
    loss_fn = loss_fn.to(model.device, model.dtype)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr, amsgrad=True)
    ema = (
        ExponentialMovingAverage(module.parameters(), decay=section.ema_decay)
        if section.ema_decay > 0
        else None
    )
    order = BatchOrder(np.arange(len(train_data)), section.batch_size, seed)
    per_validation = math.ceil(len(val_data) / order.batch_size)
    log_every = max(1, steps // 100, math.ceil(per_validation / VALIDATION_SHARE))
    curve_path = out_path.with_suffix(".csv")
    rows: list[dict[str, float]] = []
    lowest = math.inf

    def diverged(message: str) -> TrainingDiverged:
        write_curve(curve_path, rows)
        return TrainingDiverged(f"{who}: {message}")

    for step in range(steps):
        batch = collate([train_data[i] for i in order.next()], model.device)
        out = module(batch.to_dict(), training=True, compute_force=True)
        loss = loss_fn(batch, out)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            kind = "NaN" if math.isnan(loss_value) else "infinite"
            raise diverged(f"loss became {kind} at step {step}")
        if step % log_every == 0:
            train_e, train_f = _batch_errors(batch, out)
            if ema is not None:
                with ema.average_parameters():
                    val_e, val_f = _errors(model, val_data)
            else:
                val_e, val_f = _errors(model, val_data)
            if val_data:
                mse = (val_e / 1e3) ** 2 + (val_f / 1e3) ** 2
                lowest = min(lowest, mse)
                if not math.isfinite(mse) or mse > DIVERGENCE_FACTOR * lowest:
                    raise diverged(
                        f"validation error grew {DIVERGENCE_FACTOR:g}x over its minimum by "
                        f"step {step} (energy+force MSE {mse:.3g}, minimum {lowest:.3g})"
                    )
            rows.append(
                {
                    "step": step,
                    "lr": lr,
                    "loss": loss_value,
                    "train_energy_rmse_meV_per_atom": train_e,
                    "train_force_rmse_meV_per_A": train_f,
                    "val_energy_rmse_meV_per_atom": val_e,
                    "val_force_rmse_meV_per_A": val_f,
                    "wall_s": time.perf_counter() - t_start,
                }
            )
            if len(rows) % 10 == 0:  # progress visible during long runs
                write_curve(curve_path, rows)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm=CLIP_GRAD_NORM)
        optimizer.step()
        if ema is not None:
            ema.update()

    if ema is not None:
        ema.copy_to()
    if not all(bool(torch.isfinite(p).all()) for p in module.parameters()):
        raise diverged(f"weights became NaN by step {steps}")
    final = model.with_precision(section.precision)
    final.module.eval()
    train_e, train_f = _errors(final, train_data)
    val_e, val_f = _errors(final, val_data)
    rows.append(
        {
            "step": steps,
            "lr": lr,
            "loss": section.energy_weight * (train_e / 1e3) ** 2
            + section.forces_weight * (train_f / 1e3) ** 2,
            "train_energy_rmse_meV_per_atom": train_e,
            "train_force_rmse_meV_per_A": train_f,
            "val_energy_rmse_meV_per_atom": val_e,
            "val_force_rmse_meV_per_A": val_f,
            "wall_s": time.perf_counter() - t_start,
        }
    )
    write_curve(curve_path, rows)
    final.save(out_path)  # atomic
    return MemberResult(
        member=m,
        checkpoint=str(out_path),
        steps=steps,
        wall_s=time.perf_counter() - t_start,
        train_energy_rmse_meV_per_atom=train_e,
        train_force_rmse_meV_per_A=train_f,
        val_energy_rmse_meV_per_atom=val_e,
        val_force_rmse_meV_per_A=val_f,
        seed=seed,
        n_train_frames=len(train_data),
        n_val_frames=len(val_data),
        init_from=init_from or base_model,
    )


def _family_record(out_dir: Path, train: TrainConfig, type_map: list[str], done: list[int]) -> None:
    """family.json beside the members: the family, and once a member exists its elements,
    cutoff, precision and E0s (with their source)."""
    record: dict = {"family": FAMILY, "type_map": list(type_map)}
    if done:
        member = MaceMember.load(out_dir / f"model-{done[0]}.pt")
        record |= {
            "rcut_A": member.rcut_A,
            "precision": member.precision,
            "E0s_eV": member.E0s_eV,
            "E0s_source": member.E0s_source,
            "members": [f"model-{m}.pt" for m in done],
        }
    elif train.model.base_model is not None:
        record["base_model"] = str(train.model.base_model)
    write_json(out_dir / FAMILY_FILE, record)


def train_mace_ensemble(
    data_files: list[str],
    out_dir: Path,
    train_cfg: TrainConfig,
    type_map: list[str],
    executor: Executor,
    init_dir: Path | None = None,
    warm: bool = False,
    torch_threads: int | None = None,
) -> list[MemberResult]:
    """Train train_cfg.ensemble_size MACE members into out_dir/model-<m>.pt, one job per member
    on ``executor``; member m from seed train_cfg.seed + m, or warm (with init_dir) fine-tuned
    from init_dir/model-<m>.pt, or without init_dir from train_cfg.model.base_model when set.
    Members whose checkpoint exists are skipped (resume). Writes out_dir/metrics.json,
    learning curves and family.json; raises TrainingDiverged naming the members that diverged
    after the others finished. ``torch_threads`` per job; None: on a thread pool, its cores
    shared among the concurrent jobs (else the worker's setting)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_files = [str(f) for f in data_files]
    if warm and init_dir is None:
        raise ValueError("train_mace_ensemble: warm=True needs init_dir (the previous ensemble)")
    section = train_cfg.model
    metrics_path = out_dir / "metrics.json"
    known = known_results(metrics_path)
    results: dict[int, MemberResult] = {}
    to_train = []
    for m in range(train_cfg.ensemble_size):
        if (out_dir / f"model-{m}.pt").is_file():
            results[m] = previous_result(out_dir, m, member_seed(train_cfg.seed, m), known)
        else:
            to_train.append(m)
    if torch_threads is None and isinstance(executor, ThreadPoolExecutor) and to_train:
        # jobs in threads of one process: OpenMP teams per thread oversubscribe the cores
        concurrent = min(len(to_train), getattr(executor, "_max_workers", len(to_train)))
        torch_threads = max(1, (os.cpu_count() or 1) // concurrent)
    init_from = {m: None for m in to_train}
    if warm:
        init_from = {m: str(Path(init_dir) / f"model-{m}.pt") for m in to_train}
        missing = [p for p in init_from.values() if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"warm start checkpoints do not exist: {', '.join(missing)}")
    base_model = None if warm else section.base_model
    _family_record(out_dir, train_cfg, type_map, sorted(results))

    futures: dict[Future, int] = {}
    for m in to_train:
        future = executor.submit(
            train_mace_member,
            data_files,
            str(out_dir / f"model-{m}.pt"),
            train_cfg,
            list(type_map),
            member_seed(train_cfg.seed, m),
            m,
            init_from[m],
            base_model,
            torch_threads=torch_threads,
        )
        futures[future] = m

    failed: dict[int, str] = {}
    other_error: BaseException | None = None
    pending = set(futures)
    while pending:
        done, pending = wait(pending, return_when="FIRST_COMPLETED")
        for future in done:
            m = futures[future]
            try:
                results[m] = future.result()
            except TrainingDiverged as err:
                failed[m] = str(err)
                continue
            except Exception as err:  # finish the other members, then re-raise
                other_error = other_error or err
                failed[m] = f"member {m}: {type(err).__name__}: {err}"
                continue
            write_metrics(metrics_path, results)

    if results:
        write_metrics(metrics_path, results)
        _family_record(out_dir, train_cfg, type_map, sorted(results))
        curves = {
            f"model-{m}": read_curve(out_dir / f"model-{m}.csv")
            for m in sorted(results)
            if (out_dir / f"model-{m}.csv").is_file()
        }
        if curves:
            plot_curves(curves, out_dir / "learning_curves.png")
    if other_error is not None:
        raise other_error
    if failed:
        detail = "; ".join(failed[m] for m in sorted(failed))
        raise TrainingDiverged(
            f"{len(failed)} of {train_cfg.ensemble_size} members diverged "
            f"(members {sorted(failed)}): {detail}"
        )
    return [results[m] for m in sorted(results)]
