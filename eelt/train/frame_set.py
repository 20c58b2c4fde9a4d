"""Labeled frames that every member of a stack evaluates: validation errors, the energy-shift
refit, the final errors of a member."""

from __future__ import annotations

import math

import numpy as np
import torch

from eelt.model.stack import MemberStack
from eelt.train.data import LabeledFrame, chunks, collate_labeled_members


class FrameSet:
    """``frames`` for each member of a stack of ``stack``'s size, dtype and device: collated in
    chunks of at most CHUNK_ATOMS atoms for all members together, once when they hold at most
    CACHE_ATOMS atoms (all members)."""

    CHUNK_ATOMS = 4096
    CACHE_ATOMS = 50_000

    def __init__(self, frames: list[LabeledFrame], stack: MemberStack):
        n = stack.n_members
        self.frames, self.n_members = frames, n
        self.dtype, self.device = stack.dtype, stack.device
        self.groups = chunks(frames, max(64, self.CHUNK_ATOMS // n)) if frames else []
        small = n * sum(f.n_atoms for f in frames) <= self.CACHE_ATOMS
        self.cached = [self._collate(g) for g in self.groups] if small else None

    def _collate(self, group: list[LabeledFrame]):
        return collate_labeled_members([group] * self.n_members, self.dtype, self.device)

    def batches(self):
        return self.cached if self.cached is not None else map(self._collate, self.groups)

    def errors(self, stack: MemberStack) -> tuple[np.ndarray, np.ndarray]:
        """Each member's (energy RMSE meV/atom, force RMSE meV/Angstrom); NaN for no frames."""
        n = self.n_members
        if not self.frames:
            return np.full(n, math.nan), np.full(n, math.nan)
        sum_e, sum_f = np.zeros(n), np.zeros(n)
        with torch.no_grad():
            for target in self.batches():
                out = stack.evaluate_members(target.batch, forces=True)
                de = (out["energy"] - target.energy_eV) / target.n_atoms
                sum_e += de.square().sum(1).double().cpu().numpy()
                df = out["forces"] - target.forces_eV_per_A
                sum_f += df.square().sum((1, 2)).double().cpu().numpy()
        n_components = 3 * sum(f.n_atoms for f in self.frames)
        return 1e3 * np.sqrt(sum_e / len(self.frames)), 1e3 * np.sqrt(sum_f / n_components)

    def refit_energy_shifts(self, stack: MemberStack, which: list[int]) -> None:
        """Absorb members ``which``'s energy residuals into their per-element energy shifts
        (least squares on element counts, eV). Forces cannot fix a constant offset and the
        energy term weighs little while the loss is force-dominated, so without this the
        offset drifts during training."""
        if not self.frames or not which:
            return
        n_types = len(stack.type_map)
        counts = np.array([np.bincount(f.graph.types, minlength=n_types) for f in self.frames])
        residual = []
        with torch.no_grad():
            for target in self.batches():
                out = stack.evaluate_members(target.batch, forces=False)
                residual.append((target.energy_eV - out["energy"]).double().cpu().numpy())
        residual = np.concatenate(residual, axis=1)
        with torch.no_grad():
            for k in which:
                delta, *_ = np.linalg.lstsq(counts.astype(float), residual[k], rcond=None)
                stack.energy_shift[k] += torch.as_tensor(
                    delta, dtype=stack.dtype, device=stack.device
                )
