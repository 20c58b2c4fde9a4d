"""What a training follows step by step: its budget (steps, learning rates), frames per batch
and their order, the loss prefactors, when it logs, watches for blow-ups and refits, and when
patience ends a member early; and the optimizer."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from eelt.config import TrainConfig
from eelt.train.loss import PrefactorSchedule, learning_rate

DIVERGENCE_FACTOR = 1000  # smoothed MSE this many times above its minimum means divergence
LOSS_SMOOTHING = 0.1  # weight of the newest step in the moving average of the MSE
WARMUP_STEPS = 100  # linear learning-rate warm-up of a cold start
PATIENCE_MIN_GAIN = 0.01  # a validation error this much (relative) below the best resets patience


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


def frames_per_batch(batch_size: int | str, mean_atoms: float) -> int:
    """Frames per training step: ``batch_size`` itself, or for DeePMD's "auto:N" ("auto" =
    "auto:32") the fewest frames holding at least N atoms (frames of ``mean_atoms`` atoms)."""
    if isinstance(batch_size, int):
        return batch_size
    target = int(batch_size.partition(":")[2] or 32)
    return max(1, math.ceil(target / max(mean_atoms, 1.0)))


@dataclass(frozen=True)
class StepPlan:
    """What a training's step loop follows: loss prefactors, whether the virial term is on,
    frames per batch, and every how many steps it logs, starts watching for blow-ups, refits
    the energy shift, and ramps up the rate."""

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
                steps // 10, max(2 * int(1 / LOSS_SMOOTHING), len(train_frames) // batch_size)
            ),
            refit_every=max(log_every, steps // 10),
            warmup_steps=min(warmup_steps, steps // 10),
        )

    def learning_rate(self, step: int, steps: int, start_lr: float, stop_lr: float) -> float:
        """The scheduled rate at ``step``: exponential decay, ramped up linearly over the
        first ``warmup_steps`` (Adam's first steps move every weight by ~lr)."""
        lr = learning_rate(step, steps, start_lr, stop_lr)
        if step < self.warmup_steps:
            lr *= (step + 1) / self.warmup_steps
        return lr


class BatchOrder:
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


def adam(params, lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel (on CPU the per-tensor one took ~16 ms of a 40 ms step of a
    default-size model; fused ~2 ms); the default implementation where fused is unsupported."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)
