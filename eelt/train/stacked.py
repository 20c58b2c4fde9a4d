"""Train ensemble members as one MemberStack: one forward, one backward and one Adam step for
all of them per training step; a single member is a stack of one.

Each member keeps what it would have alone: its seed (initial weights), its own shuffled data
order (member k evaluates its own batch, ``MemberStack.evaluate_members``), its validation
errors, learning curve, patience and divergence checks, and its checkpoint. The loss is the
sum of the members' losses, so the gradient of member k's weights is that of its own loss,
and Adam, elementwise and without gradient clipping, steps each member as K separate Adams
would: a member trained in a stack of K equals it trained in a stack of one, whichever
members share its stack (tests/train/test_stacked.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from eelt.config import TrainConfig
from eelt.model import DeepPot
from eelt.model.member_batch import frame_layout
from eelt.model.stack import MemberStack, stack_members
from eelt.train.curves import write_curve
from eelt.train.data import (
    collate_labeled_members,
    label_frames,
    read_frames,
    split_train_validation,
)
from eelt.train.frame_set import FrameSet
from eelt.train.loss import LossPrefactors, PrefactorSchedule, member_losses
from eelt.train.members import finish_member, initial_models
from eelt.train.result import MemberResult, TrainingDiverged
from eelt.train.schedule import (
    DIVERGENCE_FACTOR,
    LOSS_SMOOTHING,
    BatchOrder,
    Patience,
    StepPlan,
    adam,
    anneal_steps,
    training_budget,
)

# Statistics of a member taken out of training (its weights are zeroed too), so that NaN
# weights of a diverged member do not keep producing NaN in its slice of the stack.
_NEUTRAL = {"s_mean": 0.0, "s_std": 1.0, "s_rms": 1.0, "a_std": 1.0, "n_norm": 1.0}


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


def pick_device(device: str | None) -> torch.device:
    """``device``, or for None/"auto" CUDA where there is one, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
    """Train one member on the extxyz files and save it to ``out_path`` (curve: same name, .csv):
    :func:`train_stacked` with a stack of one. Raises TrainingDiverged when it diverges."""
    (result,) = train_stacked(
        data_files,
        [out_path],
        train,
        type_map,
        [seed],
        None if init_from is None else [init_from],
        steps,
        start_lr,
        members=[seed if member is None else member],
        device=device,
        torch_threads=torch_threads,
    )
    if isinstance(result, TrainingDiverged):
        raise result
    return result


def train_stacked(
    data_files: list[str],
    out_paths: list[str | Path],
    train: TrainConfig,
    type_map: list[str],
    seeds: list[int],
    init_from: list[str | Path] | None = None,
    steps: int | None = None,
    start_lr: float | None = None,
    *,
    members: list[int] | None = None,
    device: str | None = "auto",
    torch_threads: int | None = None,
    packed: bool | None = None,
) -> list[MemberResult | TrainingDiverged]:
    """Train len(seeds) members together on the extxyz files; member k into ``out_paths[k]``
    (curve: same name, .csv) from seed ``seeds[k]`` or, warm, from checkpoint
    ``init_from[k]``.

    Cold start: a new DeepPot per seed with statistics from the training split; warm start:
    the checkpoints' weights and statistics. Trains in ``train.precision`` and saves in
    ``train.model.precision``; ``steps``/``start_lr`` override the config's. Returns, in
    order, each member's MemberResult or, for a member whose loss turned NaN/inf or blew up,
    its TrainingDiverged (the others finish). ``members``: the members' numbers in messages
    and results (default: their seeds). ``torch_threads``: intra-op threads while training
    (None: leave the caller's setting). ``packed``: how the nets run (model.packing).
    """
    with torch_threads_set(torch_threads):
        return _train_stacked(
            data_files,
            [Path(p) for p in out_paths],
            train,
            list(type_map),
            [int(s) for s in seeds],
            None if init_from is None else [str(p) for p in init_from],
            steps,
            start_lr,
            members=list(seeds) if members is None else list(members),
            device=device,
            packed=packed,
        )


def _member_prefactors(
    schedule: PrefactorSchedule, lrs: list[float], start_lr: float, dtype, device
) -> LossPrefactors:
    """Each member's loss prefactors at its own learning rate, as (K,) tensors."""
    each = [schedule.at(lr, start_lr) for lr in lrs]
    return LossPrefactors(
        **{
            name: torch.tensor([getattr(p, name) for p in each], dtype=dtype, device=device)
            for name in ("energy", "forces", "virial")
        }
    )


def _scale_update(
    stack: MemberStack, members: list[int], factors: list[float], before: list[torch.Tensor]
) -> None:
    """Members ``members`` of the stack moved by ``factors`` times the optimizer's step from
    their weights ``before`` it (one tensor per parameter, those members' rows)."""
    with torch.no_grad():
        rows = torch.tensor(members, device=stack.device)
        for p, old in zip(stack.parameters(), before, strict=True):
            scale = torch.tensor(factors, dtype=p.dtype, device=p.device)
            scale = scale.view(-1, *([1] * (p.dim() - 1)))
            p[rows] = old + scale * (p[rows] - old)


def _retire(stack: MemberStack, optimizer: torch.optim.Optimizer, k: int) -> None:
    """Zero member k's weights, Adam moments and statistics: it no longer trains (stopped,
    its weights kept aside, or diverged), and its slice of the stack stays finite whatever
    its weights were."""
    n = stack.n_members
    with torch.no_grad():
        for p in stack.parameters():
            p[k].zero_()
            for value in optimizer.state.get(p, {}).values():
                if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == n:
                    value[k].zero_()
        for name, value in _NEUTRAL.items():
            getattr(stack, name)[k] = value
        stack.energy_shift[k] = 0.0


def _train_stacked(
    data_files: list[str],
    out_paths: list[Path],
    train: TrainConfig,
    type_map: list[str],
    seeds: list[int],
    init_from: list[str] | None,
    steps: int | None,
    start_lr: float | None,
    *,
    members: list[int],
    device: str | None,
    packed: bool | None,
) -> list[MemberResult | TrainingDiverged]:
    t_start = time.perf_counter()
    n = len(seeds)
    if not n or len(out_paths) != n or len(members) != n:
        raise ValueError(f"need one out_path and member per seed; got {n} seeds")
    if init_from is not None and len(init_from) != n:
        raise ValueError(f"need one init_from per seed; got {len(init_from)} for {n} seeds")
    whos = [f"member {m} (seed {s})" for m, s in zip(members, seeds, strict=True)]
    steps, start_lr, stop_lr = training_budget(train, steps, start_lr, ", ".join(whos))
    dev = pick_device(device)

    frames = read_frames(data_files, type_map)
    train_idx, val_idx = split_train_validation(len(frames), train.validation_fraction, train.seed)
    models = initial_models(train, type_map, seeds, init_from, whos, [frames[i] for i in train_idx])
    hparams = [dict(model.hparams) for model in models]
    stack = stack_members(models).to(dev)
    del models
    dtype = stack.dtype

    labeled = label_frames(frames, list(stack.type_map), float(stack.rcut_A))
    train_frames = [labeled[i] for i in train_idx]
    val_frames = [labeled[i] for i in val_idx]
    del frames

    plan = StepPlan.of(train, steps, train_frames, warm=init_from is not None)
    schedule, use_virial = plan.schedule, plan.use_virial
    log_every, settle_steps, refit_every = plan.log_every, plan.settle_steps, plan.refit_every
    optimizer = adam(stack.parameters(), start_lr)
    orders = [BatchOrder(np.arange(len(train_frames)), plan.batch_size, seed) for seed in seeds]
    layouts = [frame_layout(f.graph) for f in train_frames]
    curve_paths = [p.with_suffix(".csv") for p in out_paths]

    validation, training_set = FrameSet(val_frames, stack), FrameSet(train_frames, stack)
    rows: list[list[dict[str, float]]] = [[] for _ in range(n)]
    ema = [math.nan] * n
    lowest = [math.inf] * n
    patience = [
        Patience(train.patience_steps if val_frames else 0, anneal_steps(train, steps), stop_lr)
        for _ in range(n)
    ]
    active = [True] * n
    diverged: dict[int, str] = {}
    retired: set[int] = set()
    stopped: dict[int, tuple[int, float, dict[str, torch.Tensor]]] = {}  # step, lr, weights

    def diverge(k: int, message: str) -> None:
        diverged[k] = f"{whos[k]}: {message}"
        active[k] = False
        write_curve(curve_paths[k], rows[k])

    def blew_up(k: int, mse: float, step: int, what: str) -> bool:
        lowest[k] = min(lowest[k], mse)
        if mse > DIVERGENCE_FACTOR * lowest[k]:
            diverge(
                k,
                f"loss grew {DIVERGENCE_FACTOR:g}x over its minimum by step {step} "
                f"({what} energy+force MSE {mse:.3g}, minimum {lowest[k]:.3g})",
            )
            return True
        return False

    stack.train()
    for step in range(steps):
        for k in range(n):
            if active[k] and patience[k].annealed(step):
                stopped[k] = (step, patience[k].lr(step, stop_lr), stack.member_state(k))
                active[k] = False
        if not any(active):
            break
        lr = plan.learning_rate(step, steps, start_lr, stop_lr)
        # a member that patience stopped anneals on its own learning rate (and prefactors)
        lrs = [patience[k].lr(step, lr) for k in range(n)]
        lr = max(lrs[k] for k in range(n) if active[k])
        for group in optimizer.param_groups:
            group["lr"] = lr
        slow = [k for k in range(n) if active[k] and lrs[k] != lr]
        prefs = (
            schedule.at(lr, start_lr)
            if not slow
            else _member_prefactors(schedule, lrs, start_lr, dtype, dev)
        )
        drawn = [order.next() for order in orders]
        target = collate_labeled_members(
            [[train_frames[i] for i in idx] for idx in drawn],
            dtype,
            dev,
            [[layouts[i] for i in idx] for idx in drawn],
        )
        pred = stack.evaluate_members(
            target.batch, forces=True, virial=use_virial, create_graph=True, packed=packed
        )
        losses = member_losses(pred, target, prefs)
        values = torch.stack([losses.loss.detach(), losses.mse_energy_per_atom, losses.mse_forces])
        loss_values, mse_e, mse_f = values.tolist()  # one device sync
        for k in range(n):
            if active[k] and not math.isfinite(loss_values[k]):
                kind = "NaN" if math.isnan(loss_values[k]) else "infinite"
                diverge(k, f"loss became {kind} at step {step}")
        # Blow-up test on errors without prefactors (those move by design: pref_e grows 50x),
        # on the fixed validation set where there is one: batch errors vary too much in a warm
        # start, where new frames have errors 100x those of the old ones.
        if not val_frames:
            for k in (k for k in range(n) if active[k]):
                error = mse_f[k] * (schedule.start_f + schedule.limit_f > 0)
                error += mse_e[k] * (schedule.start_e + schedule.limit_e > 0)
                ema[k] = error if math.isnan(ema[k]) else ema[k] + LOSS_SMOOTHING * (error - ema[k])
                if step >= settle_steps:
                    blew_up(k, ema[k], step, "smoothed batch")
        if step % log_every == 0 and any(active):
            val_e, val_f = validation.errors(stack)
            wall = time.perf_counter() - t_start
            for k in (k for k in range(n) if active[k]):
                mse = (val_e[k] / 1e3) ** 2 + (val_f[k] / 1e3) ** 2
                if val_frames and blew_up(k, mse, step, "validation"):
                    continue
                rows[k].append(
                    {
                        "step": step,
                        "lr": lrs[k],
                        "loss": loss_values[k],
                        "train_energy_rmse_meV_per_atom": 1e3 * math.sqrt(mse_e[k]),
                        "train_force_rmse_meV_per_A": 1e3 * math.sqrt(mse_f[k]),
                        "val_energy_rmse_meV_per_atom": float(val_e[k]),
                        "val_force_rmse_meV_per_A": float(val_f[k]),
                        "wall_s": wall,
                    }
                )
                if len(rows[k]) % 10 == 0:  # progress visible during long runs
                    write_curve(curve_paths[k], rows[k])
                if patience[k].stop(step, float(val_f[k]), lrs[k]):
                    stopped[k] = (step, lrs[k], stack.member_state(k))
                    active[k] = False
        training = [k for k in range(n) if active[k]]
        if not training:
            break
        total = losses.loss[training].sum() if len(training) < n else losses.loss.sum()
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        slow = [k for k in training if lrs[k] != lr]
        before = [p.detach()[slow].clone() for p in stack.parameters()] if slow else []
        optimizer.step()
        if slow:  # Adam's update is lr x a function of the moments: scale it to their lr
            _scale_update(stack, slow, [lrs[k] / lr for k in slow], before)
        for k in (k for k in range(n) if not active[k] and k not in retired):
            _retire(stack, optimizer, k)  # after the step: the graph held their weights
            retired.add(k)
        if (step + 1) % refit_every == 0:
            training_set.refit_energy_shifts(stack, training)

    stack.eval()
    out: list[MemberResult | TrainingDiverged] = []
    for k in range(n):
        if k in diverged:
            out.append(TrainingDiverged(diverged[k]))
            continue
        steps_done, last_lr, state = stopped.get(k, (steps, stop_lr, None))
        model = DeepPot(**hparams[k])
        model.load_state_dict(stack.member_state(k) if state is None else state)
        result = MemberResult(
            member=members[k],
            checkpoint=str(out_paths[k]),
            steps=steps_done,
            wall_s=math.nan,
            train_energy_rmse_meV_per_atom=math.nan,
            train_force_rmse_meV_per_A=math.nan,
            val_energy_rmse_meV_per_atom=math.nan,
            val_force_rmse_meV_per_A=math.nan,
            seed=seeds[k],
            n_train_frames=len(train_frames),
            n_val_frames=len(val_frames),
            init_from=None if init_from is None else init_from[k],
        )
        try:
            out.append(
                finish_member(
                    model.to(dev),
                    out_paths[k],
                    train,
                    train_frames,
                    val_frames,
                    rows[k],
                    steps_done,
                    schedule.at(last_lr, start_lr),
                    last_lr,
                    whos[k],
                    t_start,
                    result,
                )
            )
        except TrainingDiverged as err:
            out.append(err)
    return out
