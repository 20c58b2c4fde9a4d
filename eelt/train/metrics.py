"""Energy and force RMSE of a model, or of an ensemble's mean, against labeled frames."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from ase import Atoms

from eelt.model import DeepPot, Ensemble
from eelt.train.data import LabeledFrame, chunks, collate_labeled, label_frames


def _device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _dtype(model: torch.nn.Module) -> torch.dtype:
    dtype = getattr(model, "dtype", None)
    if dtype is not None:
        return dtype
    for p in model.parameters():
        return p.dtype
    return torch.float64


def squared_errors(
    model: DeepPot | Ensemble, frames: Sequence[LabeledFrame]
) -> tuple[float, float]:
    """Sums of ((dE/N)^2 over frames, dF^2 over components), eV^2; ensemble: of the member mean."""
    dtype, device = _dtype(model), _device(model)
    sum_e = sum_f = 0.0
    for group in chunks(frames):
        target = collate_labeled(group, dtype, device)
        if isinstance(model, Ensemble):
            out = model(target.batch)
            energy, forces = out["energy"].mean(0), out["forces"].mean(0)
        else:
            out = model(target.batch, forces=True, create_graph=False)
            energy, forces = out["energy"], out["forces"]
        de = (energy.detach() - target.energy_eV) / target.n_atoms
        sum_e += float(de.square().sum())
        sum_f += float((forces.detach() - target.forces_eV_per_A).square().sum())
    return sum_e, sum_f


def rmse_of_labeled(
    model: DeepPot | Ensemble, frames: Sequence[LabeledFrame]
) -> tuple[float, float]:
    """(energy RMSE meV/atom, force RMSE meV/Angstrom); NaN for no frames."""
    if not frames:
        return math.nan, math.nan
    sum_e, sum_f = squared_errors(model, frames)
    n_components = 3 * sum(f.n_atoms for f in frames)
    return 1e3 * math.sqrt(sum_e / len(frames)), 1e3 * math.sqrt(sum_f / n_components)


def evaluate_rmse(ensemble_or_model: DeepPot | Ensemble, frames: Sequence[Atoms]) -> dict:
    """Energy RMSE (meV/atom) and force RMSE (meV/Angstrom) of the model (ensemble: member
    mean) against the frames' reference labels (their calculator's energy and forces)."""
    model = ensemble_or_model
    labeled = label_frames(frames, list(model.type_map), float(model.rcut_A))
    e, f = rmse_of_labeled(model, labeled)
    return {
        "energy_rmse_meV_per_atom": e,
        "force_rmse_meV_per_A": f,
        "n_frames": len(labeled),
    }
