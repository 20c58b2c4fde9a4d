"""Train one DeepPot-SE member (Adam, exponential lr decay, DeePMD loss) and an ensemble of them
through an Executor (a Dask client's executor or a thread pool)."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from eelt.atomic import read_json, write_json
from eelt.config import ModelConfig, TrainConfig
from eelt.model import DeepPot
from eelt.train.curves import plot_curves, read_curve, write_curve
from eelt.train.data import (
    LabeledFrame,
    chunks,
    collate_labeled,
    label_frames,
    read_frames,
    split_train_validation,
)
from eelt.train.loss import LossPrefactors, PrefactorSchedule, deepmd_loss, learning_rate
from eelt.train.metrics import rmse_of_labeled

DIVERGENCE_FACTOR = 1000  # smoothed MSE this many times above its minimum means divergence
_LOSS_SMOOTHING = 0.1  # weight of the newest step in the moving average of the MSE
WARMUP_STEPS = 100  # linear learning-rate warm-up of a cold start
PATIENCE_MIN_GAIN = 0.01  # a validation error this much (relative) below the best resets patience

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf or grew DIVERGENCE_FACTOR-fold over its minimum."""


@dataclass
class MemberResult:
    """Outcome of training one member; RMSE in meV/atom and meV/Angstrom (NaN: no frames)."""

    member: int
    checkpoint: str
    steps: int
    wall_s: float
    train_energy_rmse_meV_per_atom: float
    train_force_rmse_meV_per_A: float
    val_energy_rmse_meV_per_atom: float
    val_force_rmse_meV_per_A: float
    seed: int = 0
    n_train_frames: int = 0
    n_val_frames: int = 0
    init_from: str | None = None

    def to_dict(self) -> dict:
        """JSON-able dict (NaN written as None)."""
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, d: dict) -> MemberResult:
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        for k, v in kwargs.items():
            if v is None and k != "init_from":
                kwargs[k] = math.nan
        return cls(**kwargs)


def model_kwargs(model: ModelConfig) -> dict:
    """DeepPot constructor arguments from the model section of the config."""
    return {
        "rcut_A": model.rcut_A,
        "rcut_smth_A": model.rcut_smth_A,
        "embedding_widths": tuple(model.embedding_widths),
        "axis_neuron": model.axis_neuron,
        "fitting_widths": tuple(model.fitting_widths),
        "precision": model.precision,
    }


@contextmanager
def torch_threads_set(n_threads: int | None) -> Iterator[None]:
    """Run with ``n_threads`` intra-op threads, then restore the previous number (None: as is)."""
    if n_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n_threads)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _adam(params, lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel (on CPU the per-tensor one took ~16 ms of a 40 ms step of a
    default-size model; fused ~2 ms); the default implementation where fused is unsupported."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def frames_per_batch(batch_size: int | str, mean_atoms: float) -> int:
    """Frames per training step: ``batch_size`` itself, or for DeePMD's "auto:N" ("auto" =
    "auto:32") the fewest frames holding at least N atoms (frames of ``mean_atoms`` atoms)."""
    if isinstance(batch_size, int):
        return batch_size
    target = int(batch_size.partition(":")[2] or 32)
    return max(1, math.ceil(target / max(mean_atoms, 1.0)))


def _pick_device(device: str | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class _BatchOrder:
    """Frame indices in batches, reshuffled every epoch from a seeded generator."""

    def __init__(self, indices: np.ndarray, batch_size: int, seed: int):
        self.indices = np.asarray(indices)
        self.batch_size = min(batch_size, len(self.indices))
        self.rng = np.random.default_rng(seed)
        self.order = np.empty(0, dtype=int)
        self.pos = 0

    def next(self) -> np.ndarray:
        if self.pos + self.batch_size > len(self.order):
            self.order = self.rng.permutation(self.indices)
            self.pos = 0
        out = self.order[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return out


def load_warm_start(path: str | Path, train: TrainConfig, type_map: list[str], who: str) -> DeepPot:
    """The checkpoint a warm start begins from, in the training precision; an error naming
    ``who`` when it is missing or has another type_map."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{who}: init_from checkpoint {path} does not exist")
    model = DeepPot.load(path).with_precision(train.precision)
    if list(model.type_map) != list(type_map):
        raise ValueError(
            f"{who}: init_from {path} has type_map {list(model.type_map)}, "
            f"expected {list(type_map)}"
        )
    return model


def training_budget(
    train: TrainConfig, steps: int | None, start_lr: float | None, who: str
) -> tuple[int, float, float]:
    """(steps, start_lr, stop_lr) of a training: the config's unless given; ValueError naming
    ``who`` for a non-positive one. stop_lr never exceeds start_lr."""
    steps = train.steps if steps is None else int(steps)
    start_lr = train.start_lr if start_lr is None else float(start_lr)
    if steps <= 0:
        raise ValueError(f"{who}: steps must be positive, got {steps}")
    if start_lr <= 0:
        raise ValueError(f"{who}: start_lr must be positive, got {start_lr}")
    return steps, start_lr, min(train.stop_lr, start_lr)


@dataclass(frozen=True)
class StepPlan:
    """What a training's step loop follows, the same for one member and for a stack: loss
    prefactors, whether the virial term is on, frames per batch, and every how many steps it
    logs, starts watching for blow-ups, refits the energy shift, and ramps up the rate."""

    schedule: PrefactorSchedule
    use_virial: bool
    batch_size: int
    log_every: int
    settle_steps: int
    refit_every: int
    warmup_steps: int

    @classmethod
    def of(cls, train: TrainConfig, steps: int, train_frames: list, warm: bool) -> StepPlan:
        schedule = PrefactorSchedule(
            train.start_pref_e,
            train.limit_pref_e,
            train.start_pref_f,
            train.limit_pref_f,
            train.start_pref_v,
            train.limit_pref_v,
        )
        mean_atoms = float(np.mean([f.n_atoms for f in train_frames])) if train_frames else 1.0
        batch_size = frames_per_batch(train.batch_size, mean_atoms)
        log_every = max(1, steps // 100)
        # warm starts ramp up too: fresh Adam moments on a trained net jumped the validation
        # error 279 -> 393 meV/A in 10 steps on ethanol without it
        warmup_steps = WARMUP_STEPS // 2 if warm else WARMUP_STEPS
        return cls(
            schedule=schedule,
            use_virial=schedule.uses_virial and any(f.virial_eV is not None for f in train_frames),
            batch_size=batch_size,
            log_every=log_every,
            settle_steps=min(
                steps // 10, max(2 * int(1 / _LOSS_SMOOTHING), len(train_frames) // batch_size)
            ),
            refit_every=max(log_every, steps // 10),
            warmup_steps=min(warmup_steps, steps // 10),
        )


class Patience:
    """Says when a member's training ends before its ``steps``: once the validation force RMSE
    has not improved by PATIENCE_MIN_GAIN (relative) over its best for ``steps`` steps (0:
    never; errors come at logged steps), the member anneals: its learning rate goes from where
    it is to ``stop_lr`` over ``anneal_steps`` steps (as the full schedule would have ended),
    and then it stops. ``anneal_steps`` 0: it stops at once."""

    def __init__(self, steps: int, anneal_steps: int = 0, stop_lr: float = 0.0):
        self.steps = int(steps)
        self.anneal_steps = int(anneal_steps)
        self.stop_lr = float(stop_lr)
        self.best = math.inf
        self.best_step = 0
        self.anneal_from: tuple[int, float] | None = None  # (step, lr) where annealing began

    def lr(self, step: int, scheduled_lr: float) -> float:
        """The learning rate at ``step``: the schedule's, or the anneal's once it began."""
        if self.anneal_from is None:
            return scheduled_lr
        first, lr0 = self.anneal_from
        return learning_rate(step - first, self.anneal_steps, lr0, min(self.stop_lr, lr0))

    def annealed(self, step: int) -> bool:
        """The anneal is over: stop before ``step``."""
        return self.anneal_from is not None and step - self.anneal_from[0] >= self.anneal_steps

    def stop(self, step: int, error: float, lr: float = 0.0) -> bool:
        """Seen at a logged step: whether to stop now (a plateau without an anneal)."""
        if self.anneal_from is not None:
            return False
        if error < (1 - PATIENCE_MIN_GAIN) * self.best or self.best == math.inf:
            self.best, self.best_step = error, step
            return False
        if self.steps > 0 and step - self.best_step >= self.steps:
            if self.anneal_steps <= 0:
                return True
            self.anneal_from = (step, lr)
        return False


def anneal_steps(train: TrainConfig, steps: int) -> int:
    """Steps of the anneal that ends a member stopped by patience."""
    return int(round(train.patience_anneal_fraction * steps))


def train_member(
    data_files: list[str],
    out_path: str | Path,
    train: TrainConfig,
    type_map: list[str],
    seed: int,
    init_from: str | Path | None = None,
    steps: int | None = None,
    start_lr: float | None = None,
    *,
    member: int | None = None,
    device: str | None = "auto",
    torch_threads: int | None = None,
) -> MemberResult:
    """Train one member on the extxyz files and save it to ``out_path`` (curve: same name, .csv).

    Cold start: a new DeepPot(seed) with statistics from the training split; warm start
    (``init_from``): that checkpoint's weights and statistics. Trains in ``train.precision``
    and saves in ``train.model.precision``. ``steps``/``start_lr`` override
    the config's. Raises TrainingDiverged when the loss turns NaN/inf or blows up.
    ``torch_threads``: intra-op threads while training (None: leave the caller's setting).
    """
    with torch_threads_set(torch_threads):
        return _train_member(
            data_files,
            Path(out_path),
            train,
            type_map,
            seed,
            init_from,
            steps,
            start_lr,
            member=seed if member is None else member,
            device=device,
        )


def _train_member(
    data_files: list[str],
    out_path: Path,
    train: TrainConfig,
    type_map: list[str],
    seed: int,
    init_from: str | Path | None,
    steps: int | None,
    start_lr: float | None,
    *,
    member: int,
    device: str | None,
) -> MemberResult:
    t_start = time.perf_counter()
    who = f"member {member} (seed {seed})"
    steps, start_lr, stop_lr = training_budget(train, steps, start_lr, who)
    torch.manual_seed(seed)
    dev = _pick_device(device)

    frames = read_frames(data_files, list(type_map))
    train_idx, val_idx = split_train_validation(len(frames), train.validation_fraction, train.seed)

    if init_from is not None:
        model = load_warm_start(init_from, train, type_map, who)
    else:
        kwargs = model_kwargs(train.model) | {"precision": train.precision}
        model = DeepPot(list(type_map), **kwargs, seed=seed)
        model.set_statistics([frames[i] for i in train_idx])
    model = model.to(dev)
    dtype = model.dtype

    labeled = label_frames(frames, list(model.type_map), float(model.rcut_A))
    train_frames = [labeled[i] for i in train_idx]
    val_frames = [labeled[i] for i in val_idx]
    del frames

    plan = StepPlan.of(train, steps, train_frames, warm=init_from is not None)
    schedule, use_virial = plan.schedule, plan.use_virial
    log_every, settle_steps, refit_every = plan.log_every, plan.settle_steps, plan.refit_every
    warmup_steps = plan.warmup_steps
    optimizer = _adam(model.parameters(), start_lr)
    order = _BatchOrder(np.arange(len(train_frames)), plan.batch_size, seed)
    rows: list[dict[str, float]] = []
    ema = math.nan
    curve_path = out_path.with_suffix(".csv")

    def diverged(message: str) -> TrainingDiverged:
        write_curve(curve_path, rows)
        return TrainingDiverged(f"{who}: {message}")

    lowest = [math.inf]
    patience = Patience(
        train.patience_steps if val_frames else 0, anneal_steps(train, steps), stop_lr
    )
    steps_done, last_lr = steps, stop_lr

    def check_blow_up(mse: float, step: int, what: str) -> None:
        lowest[0] = min(lowest[0], mse)
        if mse > DIVERGENCE_FACTOR * lowest[0]:
            raise diverged(
                f"loss grew {DIVERGENCE_FACTOR:g}x over its minimum by step {step} "
                f"({what} energy+force MSE {mse:.3g}, minimum {lowest[0]:.3g})"
            )

    model.train()
    for step in range(steps):
        if patience.annealed(step):
            steps_done, last_lr = step, patience.lr(step, stop_lr)
            break
        lr = learning_rate(step, steps, start_lr, stop_lr)
        if step < warmup_steps:  # Adam's first steps move every weight by ~lr: ramp up
            lr *= (step + 1) / warmup_steps
        lr = patience.lr(step, lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        prefs = schedule.at(lr, start_lr)
        target = collate_labeled([train_frames[i] for i in order.next()], dtype, dev)
        pred = model(target.batch, forces=True, virial=use_virial, create_graph=True)
        loss, parts = deepmd_loss(pred, target, prefs)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            kind = "NaN" if math.isnan(loss_value) else "infinite"
            raise diverged(f"loss became {kind} at step {step}")
        # Blow-up test on errors without prefactors (those move by design: pref_e grows 50x),
        # on the fixed validation set where there is one: batch errors vary too much in a warm
        # start, where new frames have errors 100x those of the old ones.
        if not val_frames:
            error = parts.mse_forces * (schedule.start_f + schedule.limit_f > 0)
            error += parts.mse_energy_per_atom * (schedule.start_e + schedule.limit_e > 0)
            ema = error if math.isnan(ema) else ema + _LOSS_SMOOTHING * (error - ema)
            if step >= settle_steps:
                check_blow_up(ema, step, "smoothed batch")
        if step % log_every == 0:
            val_e, val_f = rmse_of_labeled(model, val_frames)
            if val_frames:
                check_blow_up((val_e / 1e3) ** 2 + (val_f / 1e3) ** 2, step, "validation")
            rows.append(
                {
                    "step": step,
                    "lr": lr,
                    "loss": loss_value,
                    "train_energy_rmse_meV_per_atom": 1e3 * math.sqrt(parts.mse_energy_per_atom),
                    "train_force_rmse_meV_per_A": 1e3 * math.sqrt(parts.mse_forces),
                    "val_energy_rmse_meV_per_atom": val_e,
                    "val_force_rmse_meV_per_A": val_f,
                    "wall_s": time.perf_counter() - t_start,
                }
            )
            if len(rows) % 10 == 0:  # progress visible during long runs
                write_curve(curve_path, rows)
            if patience.stop(step, val_f, lr):
                steps_done, last_lr = step, lr
                break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % refit_every == 0:
            refit_energy_shift(model, train_frames)

    return finish_member(
        model,
        out_path,
        train,
        train_frames,
        val_frames,
        rows,
        steps_done,
        schedule.at(last_lr, start_lr),
        last_lr,
        who,
        t_start,
        MemberResult(
            member=member,
            checkpoint=str(out_path),
            steps=steps_done,
            wall_s=math.nan,
            train_energy_rmse_meV_per_atom=math.nan,
            train_force_rmse_meV_per_A=math.nan,
            val_energy_rmse_meV_per_atom=math.nan,
            val_force_rmse_meV_per_A=math.nan,
            seed=seed,
            n_train_frames=len(train_frames),
            n_val_frames=len(val_frames),
            init_from=None if init_from is None else str(init_from),
        ),
    )


def finish_member(
    model: DeepPot,
    out_path: Path,
    train: TrainConfig,
    train_frames: list[LabeledFrame],
    val_frames: list[LabeledFrame],
    rows: list[dict[str, float]],
    steps_done: int,
    final_prefs: LossPrefactors,
    last_lr: float,
    who: str,
    t_start: float,
    result: MemberResult,
) -> MemberResult:
    """A trained member (in training precision) to its checkpoint: cast to the model precision,
    refit the energy shift, errors on the full training and validation sets as the curve's
    last row, save. ``result``: the member's MemberResult, errors and wall time filled here."""
    model = model.with_precision(train.model.precision)
    model.eval()
    refit_energy_shift(model, train_frames)
    train_e, train_f = rmse_of_labeled(model, train_frames)
    val_e, val_f = rmse_of_labeled(model, val_frames)
    curve_path = out_path.with_suffix(".csv")
    for p in model.parameters():
        if not torch.isfinite(p).all():
            write_curve(curve_path, rows)
            raise TrainingDiverged(f"{who}: weights became NaN by step {steps_done}")
    rows.append(
        {
            "step": steps_done,
            "lr": last_lr,
            "loss": final_prefs.energy * (train_e / 1e3) ** 2
            + final_prefs.forces * (train_f / 1e3) ** 2,
            "train_energy_rmse_meV_per_atom": train_e,
            "train_force_rmse_meV_per_A": train_f,
            "val_energy_rmse_meV_per_atom": val_e,
            "val_force_rmse_meV_per_A": val_f,
            "wall_s": time.perf_counter() - t_start,
        }
    )
    write_curve(curve_path, rows)
    model.save(out_path)  # atomic
    result.wall_s = time.perf_counter() - t_start
    result.train_energy_rmse_meV_per_atom = train_e
    result.train_force_rmse_meV_per_A = train_f
    result.val_energy_rmse_meV_per_atom = val_e
    result.val_force_rmse_meV_per_A = val_f
    return result


def refit_energy_shift(model: DeepPot, frames: list) -> None:
    """Absorb the energy residual into the per-element energy shift (least squares on element
    counts, eV). Forces cannot fix a constant offset and the energy term weighs little while
    the loss is force-dominated, so without this the offset drifts during training."""
    if not frames:
        return
    n_types = len(model.type_map)
    counts, residual = [], []
    with torch.no_grad():
        for group in chunks(frames):
            target = collate_labeled(group, model.dtype, model.device)
            energy = model(target.batch, forces=False)["energy"]
            residual += (target.energy_eV - energy).tolist()
            counts += [np.bincount(f.graph.types, minlength=n_types) for f in group]
    delta, *_ = np.linalg.lstsq(np.array(counts, dtype=float), np.array(residual), rcond=None)
    with torch.no_grad():
        model.energy_shift += torch.as_tensor(delta, dtype=model.dtype, device=model.device)


def member_seed(base_seed: int, member: int) -> int:
    """Seed of ensemble member ``member``: distinct per member."""
    return base_seed + member


def _summary(results: list[MemberResult]) -> dict:
    def stats(name: str) -> dict:
        values = [getattr(r, name) for r in results if math.isfinite(getattr(r, name))]
        if not values:
            return {"mean": None, "max": None}
        return {"mean": float(np.mean(values)), "max": float(np.max(values))}

    return {
        "n_members": len(results),
        "members": [r.member for r in results],
        "train_energy_rmse_meV_per_atom": stats("train_energy_rmse_meV_per_atom"),
        "train_force_rmse_meV_per_A": stats("train_force_rmse_meV_per_A"),
        "val_energy_rmse_meV_per_atom": stats("val_energy_rmse_meV_per_atom"),
        "val_force_rmse_meV_per_A": stats("val_force_rmse_meV_per_A"),
    }


def _write_metrics(path: Path, results: dict[int, MemberResult]) -> None:
    ordered = [results[m] for m in sorted(results)]
    write_json(path, {"members": [r.to_dict() for r in ordered], "ensemble": _summary(ordered)})


def _previous_result(
    out_dir: Path, m: int, seed: int, known: dict[int, MemberResult]
) -> MemberResult:
    """Result of a member trained by an earlier call: from metrics.json, else from the last
    row of its learning curve (a crash between checkpoint and metrics.json)."""
    if m in known:
        return known[m]
    checkpoint = out_dir / f"model-{m}.pt"
    curve = checkpoint.with_suffix(".csv")
    rows = read_curve(curve) if curve.is_file() else []
    last = rows[-1] if rows else {}
    return MemberResult(
        member=m,
        checkpoint=str(checkpoint),
        steps=int(last.get("step", 0)),
        wall_s=float(last.get("wall_s", math.nan)),
        train_energy_rmse_meV_per_atom=last.get("train_energy_rmse_meV_per_atom", math.nan),
        train_force_rmse_meV_per_A=last.get("train_force_rmse_meV_per_A", math.nan),
        val_energy_rmse_meV_per_atom=last.get("val_energy_rmse_meV_per_atom", math.nan),
        val_force_rmse_meV_per_A=last.get("val_force_rmse_meV_per_A", math.nan),
        seed=seed,
    )


def stack_groups(members: list[int], stacks: int | str, executor: Executor) -> list[list[int]]:
    """The members in consecutive groups, one stacked job each: ``stacks`` of them, or for
    "auto" one per worker thread of a Dask cluster (one where the jobs ask for a GPU: all
    members on one device; one on a thread pool, whose threads would contend for the
    interpreter), never more than the members."""
    if not members:
        return []
    if stacks == "auto":
        client = getattr(executor, "_client", None)  # a Dask client's executor
        resources = getattr(executor, "_kwargs", {}).get("resources") or {}
        if client is not None and "GPU" in resources:
            stacks = 1
        elif client is not None:
            stacks = sum(client.nthreads().values())
        elif isinstance(executor, ThreadPoolExecutor):
            stacks = 1
        else:  # e.g. a process pool
            stacks = getattr(executor, "_max_workers", 1)
    n = max(1, min(int(stacks), len(members)))
    return [[int(m) for m in part] for part in np.array_split(members, n)]


def train_ensemble(
    data_files: list[str],
    out_dir: Path,
    train: TrainConfig,
    type_map: list[str],
    executor: Executor,
    init_dir: Path | None = None,
    warm: bool = False,
    torch_threads: int | None = None,
) -> list[MemberResult]:
    """Train train.ensemble_size members on the executor into out_dir/model-<m>.pt.

    train.mode "stacked": the members train together as stacks (eelt.train.stacked), one job
    per stack (see stack_groups; on a GPU worker a stack trains on its device); "members":
    one job per member, concurrently.
    warm (with init_dir): member m starts from init_dir/model-<m>.pt for train.warm_steps at
    train.warm_start_lr. Members whose checkpoint exists are skipped (resume; stacked: the
    missing members train as a smaller stack, each as it would have in the full one). Writes
    out_dir/metrics.json and out_dir/learning_curves.png; raises TrainingDiverged naming the
    members that diverged after the others finished. ``torch_threads`` per job; None: on a
    thread pool, its cores shared among the concurrent jobs (else the worker's setting).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_files = [str(f) for f in data_files]
    if warm and init_dir is None:
        raise ValueError("train_ensemble: warm=True needs init_dir (the previous ensemble)")
    metrics_path = out_dir / "metrics.json"
    known: dict[int, MemberResult] = {}
    if metrics_path.is_file():
        for d in read_json(metrics_path).get("members", []):
            r = MemberResult.from_dict(d)
            if Path(r.checkpoint).name == f"model-{r.member}.pt":
                known[r.member] = r

    results: dict[int, MemberResult] = {}
    to_train = []
    for m in range(train.ensemble_size):
        if (out_dir / f"model-{m}.pt").is_file():
            results[m] = _previous_result(out_dir, m, member_seed(train.seed, m), known)
        else:
            to_train.append(m)
    stacked = train.mode == "stacked"
    stacks = stack_groups(to_train, train.stacks, executor) if stacked else []
    if torch_threads is None and isinstance(executor, ThreadPoolExecutor) and to_train:
        # jobs in threads of one process: OpenMP teams per thread oversubscribe the cores
        jobs = len(stacks) if stacked else len(to_train)
        concurrent = min(jobs, getattr(executor, "_max_workers", jobs))
        torch_threads = max(1, (os.cpu_count() or 1) // concurrent)

    if warm:
        missing = [str(Path(init_dir) / f"model-{m}.pt") for m in to_train]
        missing = [p for p in missing if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"warm start checkpoints do not exist: {', '.join(missing)}")

    futures: dict[Future, list[int]] = {}
    warm_kwargs = {"steps": train.warm_steps, "start_lr": train.warm_start_lr} if warm else {}
    from eelt.train.stacked import train_stacked  # it builds on this module

    for group in stacks:
        kwargs: dict = {"members": group, "torch_threads": torch_threads, **warm_kwargs}
        if warm:
            kwargs["init_from"] = [str(Path(init_dir) / f"model-{m}.pt") for m in group]
        future = executor.submit(
            train_stacked,
            data_files,
            [str(out_dir / f"model-{m}.pt") for m in group],
            train,
            list(type_map),
            [member_seed(train.seed, m) for m in group],
            **kwargs,
        )
        futures[future] = group
    for m in [] if stacked else to_train:
        seed = member_seed(train.seed, m)
        checkpoint = out_dir / f"model-{m}.pt"
        kwargs = {"member": m, "torch_threads": torch_threads, **warm_kwargs}
        if warm:
            kwargs["init_from"] = str(Path(init_dir) / f"model-{m}.pt")
        future = executor.submit(
            train_member, data_files, str(checkpoint), train, list(type_map), seed, **kwargs
        )
        futures[future] = [m]

    failed: dict[int, str] = {}
    other_error: BaseException | None = None
    pending = set(futures)
    while pending:
        done, pending = wait(pending, return_when="FIRST_COMPLETED")
        for future in done:
            ms = futures[future]
            try:
                outcome = future.result()
            except TrainingDiverged as err:
                failed.update((m, str(err)) for m in ms)
                continue
            except Exception as err:  # finish the other members, then re-raise
                other_error = other_error or err
                for m in ms:
                    failed[m] = f"member {m}: {type(err).__name__}: {err}"
                continue
            for m, r in zip(ms, outcome if stacked else [outcome], strict=True):
                if isinstance(r, TrainingDiverged):
                    failed[m] = str(r)
                else:
                    results[m] = r
            if results:
                _write_metrics(metrics_path, results)

    if results:
        _write_metrics(metrics_path, results)
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
            f"{len(failed)} of {train.ensemble_size} members diverged "
            f"(members {sorted(failed)}): {detail}"
        )
    return [results[m] for m in sorted(results)]


def train_warm_or_fresh(
    data_files: list[str],
    out_dir: Path,
    train: TrainConfig,
    type_map: list[str],
    executor: Executor,
    init_dir: Path | None,
    warm: bool,
    what: str,
) -> list[MemberResult]:
    """:func:`train_ensemble`, warm from ``init_dir`` when ``warm``; members whose warm start
    diverged train again from scratch (finished members are kept). A cold training that
    diverges is a user error naming ``what`` (one line)."""
    from eelt.errors import EeltError

    try:
        return train_ensemble(
            data_files, out_dir, train, type_map, executor, init_dir=init_dir, warm=warm
        )
    except TrainingDiverged as err:
        if not warm:
            raise EeltError(
                f"{what}: training diverged: {err}; lower train.start_lr or check the data"
            ) from None
        log.warning("%s: warm start diverged (%s); training those members from scratch", what, err)
        return train_ensemble(data_files, out_dir, train, type_map, executor)


def training_busy_s(members: list[dict], cfg: TrainConfig, executor: Executor) -> float:
    """Worker seconds a training took: one job per member, or (stacked) one job per stack, whose
    members each report the stack's wall time (counted once)."""
    walls = {m["member"]: m.get("wall_s") or 0.0 for m in members}
    walls = {k: (0.0 if v != v else v) for k, v in walls.items()}  # NaN: trained earlier
    if cfg.mode != "stacked":
        return float(sum(walls.values()))
    groups = stack_groups(sorted(walls), cfg.stacks, executor)
    return float(sum(max(walls[m] for m in group) for group in groups))
