"""DeePMD-style loss: energy per atom, forces and virial per atom, with prefactors that move
from their start to their limit values as the learning rate decays exponentially.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eelt.train.data import LabeledBatch, LabeledMemberBatch


def learning_rate(step: int, steps: int, start_lr: float, stop_lr: float) -> float:
    """lr_t = start_lr * (stop_lr / start_lr) ** (t / steps): start_lr at t=0, stop_lr at steps."""
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    return start_lr * (stop_lr / start_lr) ** (step / steps)


def prefactor(start: float, limit: float, lr: float, start_lr: float) -> float:
    """DeePMD's prefactor: limit + (start - limit) * lr / start_lr."""
    return limit + (start - limit) * lr / start_lr


@dataclass(frozen=True)
class LossPrefactors:
    energy: float
    forces: float
    virial: float


@dataclass(frozen=True)
class PrefactorSchedule:
    """Start and limit prefactors of the energy, force and virial terms."""

    start_e: float
    limit_e: float
    start_f: float
    limit_f: float
    start_v: float = 0.0
    limit_v: float = 0.0

    def at(self, lr: float, start_lr: float) -> LossPrefactors:
        return LossPrefactors(
            energy=prefactor(self.start_e, self.limit_e, lr, start_lr),
            forces=prefactor(self.start_f, self.limit_f, lr, start_lr),
            virial=prefactor(self.start_v, self.limit_v, lr, start_lr),
        )

    @property
    def uses_virial(self) -> bool:
        return self.start_v > 0 or self.limit_v > 0


@dataclass(frozen=True)
class LossParts:
    """Mean-square errors (floats): energy (eV/atom)^2, forces (eV/A)^2, virial (eV/atom)^2."""

    mse_energy_per_atom: float
    mse_forces: float
    mse_virial_per_atom: float  # NaN when the batch has no virial labels


def deepmd_loss(
    pred: dict[str, torch.Tensor], target: LabeledBatch, prefs: LossPrefactors
) -> tuple[torch.Tensor, LossParts]:
    """pref_e * mean((dE/N)^2) + pref_f * mean(dF^2) + pref_v * mean((dW/N)^2).

    The virial term averages over the frames that have a stress label."""
    de = (pred["energy"] - target.energy_eV) / target.n_atoms
    mse_e = de.square().mean()
    mse_f = (pred["forces"] - target.forces_eV_per_A).square().mean()
    loss = prefs.energy * mse_e + prefs.forces * mse_f
    mse_v_value = float("nan")
    if "virial" in pred and bool(target.has_virial.any()):
        mask = target.has_virial
        dw = (pred["virial"][mask] - target.virial_eV[mask]) / target.n_atoms[mask, None, None]
        mse_v = dw.square().mean()
        loss = loss + prefs.virial * mse_v
        mse_v_value = float(mse_v.detach())
    parts = LossParts(float(mse_e.detach()), float(mse_f.detach()), mse_v_value)
    return loss, parts


@dataclass(frozen=True)
class MemberLosses:
    """Per member (K,) tensors: its loss and mean-square errors, units as LossParts (virial
    NaN for a member whose batch has no virial labels)."""

    loss: torch.Tensor
    mse_energy_per_atom: torch.Tensor
    mse_forces: torch.Tensor
    mse_virial_per_atom: torch.Tensor


def member_losses(
    pred: dict[str, torch.Tensor], target: LabeledMemberBatch, prefs: LossPrefactors
) -> MemberLosses:
    """``deepmd_loss`` of each member on its own batch: members sum to a loss whose gradient
    with respect to member k's weights is that of member k's own loss."""
    de = (pred["energy"] - target.energy_eV) / target.n_atoms
    mse_e = de.square().mean(1)
    df = (pred["forces"] - target.forces_eV_per_A).square()
    if target.batch.has_ghosts:  # ghost atoms predict and target zero: sum, not mean
        mse_f = df.sum((1, 2)) / (3 * target.n_real_atoms)
    else:
        mse_f = df.mean((1, 2))
    loss = prefs.energy * mse_e + prefs.forces * mse_f
    mse_v = torch.full_like(mse_e, float("nan"))
    if "virial" in pred and bool(target.has_virial.any()):
        mask = target.has_virial
        dw = (pred["virial"] - target.virial_eV) / target.n_atoms[..., None, None]
        n_v = mask.sum(1)
        sq = torch.where(mask[..., None, None], dw.square(), 0.0).sum((1, 2, 3))
        mse_v = torch.where(n_v > 0, sq / (9 * n_v.clamp(min=1)), mse_v)
        loss = loss + prefs.virial * torch.where(n_v > 0, mse_v, 0.0)
    return MemberLosses(loss, mse_e.detach(), mse_f.detach(), mse_v.detach())
