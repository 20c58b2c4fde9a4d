"""Energy and force RMSE of a model, or of an ensemble's mean, against labeled frames."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
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
    if not isinstance(model, (DeepPot, Ensemble)):
        metrics = _predict_family(model, frames).metrics() if frames else {}
        return {
            "energy_rmse_meV_per_atom": metrics.get("energy_rmse_meV_per_atom", math.nan),
            "force_rmse_meV_per_A": metrics.get("force_rmse_meV_per_A", math.nan),
            "n_frames": len(frames),
        }
    labeled = label_frames(frames, list(model.type_map), float(model.rcut_A))
    e, f = rmse_of_labeled(model, labeled)
    return {
        "energy_rmse_meV_per_atom": e,
        "force_rmse_meV_per_A": f,
        "n_frames": len(labeled),
    }


@dataclass(frozen=True)
class FramePredictions:
    """A model's (ensemble: member mean) predictions beside the reference labels, per frame.

    Energies eV, forces eV/Angstrom; ``max_devi_f`` (eV/Angstrom) is the members' max force
    deviation (0 for a single model)."""

    n_atoms: np.ndarray  # (F,)
    energy_eV: np.ndarray  # (F,) predicted
    ref_energy_eV: np.ndarray  # (F,)
    forces_eV_per_A: list[np.ndarray]  # F x (n, 3) predicted
    ref_forces_eV_per_A: list[np.ndarray]  # F x (n, 3)
    max_devi_f: np.ndarray  # (F,)

    def __len__(self) -> int:
        return len(self.n_atoms)

    @property
    def max_force_error_eV_per_A(self) -> np.ndarray:
        """Per frame: the largest atomic force error max_i |F_i - F_ref,i| (eV/Angstrom)."""
        return np.array(
            [
                float(np.linalg.norm(f - r, axis=1).max()) if len(f) else 0.0
                for f, r in zip(self.forces_eV_per_A, self.ref_forces_eV_per_A, strict=True)
            ]
        )

    def subset(self, index: Sequence[int] | np.ndarray) -> FramePredictions:
        idx = np.asarray(index, dtype=int)
        return FramePredictions(
            n_atoms=self.n_atoms[idx],
            energy_eV=self.energy_eV[idx],
            ref_energy_eV=self.ref_energy_eV[idx],
            forces_eV_per_A=[self.forces_eV_per_A[i] for i in idx],
            ref_forces_eV_per_A=[self.ref_forces_eV_per_A[i] for i in idx],
            max_devi_f=self.max_devi_f[idx],
        )

    def metrics(self) -> dict:
        """Energy RMSE (meV/atom), force RMSE and MAE over components (meV/Angstrom); None
        for no frames."""
        return ErrorSums.of(self).metrics()


@dataclass(frozen=True)
class ErrorSums:
    """Sums of squared (and absolute) errors of a model on labeled frames.

    Energy per atom in eV (squared: eV^2), forces per Cartesian component in eV/Angstrom.
    Sums add, so the RMSE over the union of two sets is that of their ``+``.
    """

    n_frames: int = 0
    n_force_components: int = 0
    sse_energy_per_atom_eV2: float = 0.0
    sse_force_eV2_per_A2: float = 0.0
    sae_force_eV_per_A: float = 0.0

    @classmethod
    def of(cls, pred: FramePredictions) -> ErrorSums:
        if len(pred) == 0:
            return cls()
        de = (pred.energy_eV - pred.ref_energy_eV) / pred.n_atoms
        df = np.concatenate(
            [
                (f - r).ravel()
                for f, r in zip(pred.forces_eV_per_A, pred.ref_forces_eV_per_A, strict=True)
            ]
        )
        return cls(
            n_frames=len(pred),
            n_force_components=int(df.size),
            sse_energy_per_atom_eV2=float(np.sum(de**2)),
            sse_force_eV2_per_A2=float(np.sum(df**2)),
            sae_force_eV_per_A=float(np.sum(np.abs(df))),
        )

    @classmethod
    def from_dict(cls, d: dict) -> ErrorSums:
        return cls(**{k: d[k] for k in asdict(cls())})

    @classmethod
    def total(cls, parts: Iterable[ErrorSums]) -> ErrorSums:
        out = cls()
        for p in parts:
            out = out + p
        return out

    def __add__(self, other: ErrorSums) -> ErrorSums:
        return ErrorSums(
            *(a + b for a, b in zip(asdict(self).values(), asdict(other).values(), strict=True))
        )

    def to_dict(self) -> dict:
        return asdict(self)

    def metrics(self) -> dict:
        """Energy RMSE (meV/atom), force RMSE and MAE (meV/Angstrom); None without frames."""
        if self.n_frames == 0:
            return {
                "n_frames": 0,
                "energy_rmse_meV_per_atom": None,
                "force_rmse_meV_per_A": None,
                "force_mae_meV_per_A": None,
            }
        n_f = max(self.n_force_components, 1)
        return {
            "n_frames": self.n_frames,
            "energy_rmse_meV_per_atom": 1e3
            * float(np.sqrt(self.sse_energy_per_atom_eV2 / self.n_frames)),
            "force_rmse_meV_per_A": 1e3 * float(np.sqrt(self.sse_force_eV2_per_A2 / n_f)),
            "force_mae_meV_per_A": 1e3 * self.sae_force_eV_per_A / n_f,
        }


def predict_frames(
    ensemble_or_model: DeepPot | Ensemble, frames: Sequence[Atoms]
) -> FramePredictions:
    """Predictions of the model (ensemble: the member mean, plus the members' max force
    deviation) on labeled frames, beside their reference energy and forces."""
    from eelt.model.deviation import force_deviation

    model = ensemble_or_model
    if not isinstance(model, (DeepPot, Ensemble)):
        return _predict_family(model, frames)
    labeled = label_frames(frames, list(model.type_map), float(model.rcut_A))
    dtype, device = _dtype(model), _device(model)
    energies, forces, devi = [], [], []
    for group in chunks(labeled):
        target = collate_labeled(group, dtype, device)
        if isinstance(model, Ensemble):
            out = model(target.batch)
            member_f = out["forces"].detach().double().cpu()
            energy, force = out["energy"].detach().double().cpu().mean(0), member_f.mean(0)
            atom_devi = force_deviation(member_f)
        else:
            out = model(target.batch, forces=True, create_graph=False)
            energy, force = (
                out["energy"].detach().double().cpu(),
                out["forces"].detach().double().cpu(),
            )
            atom_devi = torch.zeros(len(force), dtype=torch.float64)
        start = 0
        for k, f in enumerate(group):
            stop = start + f.n_atoms
            energies.append(float(energy[k]))
            forces.append(force[start:stop].numpy())
            devi.append(float(atom_devi[start:stop].max()) if f.n_atoms else 0.0)
            start = stop
    return FramePredictions(
        n_atoms=np.array([f.n_atoms for f in labeled], dtype=float),
        energy_eV=np.array(energies, dtype=float),
        ref_energy_eV=np.array([f.energy_eV for f in labeled], dtype=float),
        forces_eV_per_A=forces,
        ref_forces_eV_per_A=[f.forces_eV_per_A for f in labeled],
        max_devi_f=np.array(devi, dtype=float),
    )


def _predict_family(ensemble, frames: Sequence[Atoms], chunk: int = 16) -> FramePredictions:
    """:func:`predict_frames` for an ensemble of another model family, through its ``predict``
    (eelt.model.family.FamilyEnsemble)."""
    from eelt.model.deviation import force_deviation
    from eelt.train.data import frame_labels

    refs = [frame_labels(atoms, f"frame {i}") for i, atoms in enumerate(frames)]
    energies, forces, devi = [], [], []
    for first in range(0, len(frames), chunk):
        group = list(frames[first : first + chunk])
        out = ensemble.predict(group)
        member_f = out["forces"].detach().double().cpu()
        energy, force = out["energy"].detach().double().cpu().mean(0), member_f.mean(0)
        atom_devi = force_deviation(member_f)
        start = 0
        for k, atoms in enumerate(group):
            stop = start + len(atoms)
            energies.append(float(energy[k]))
            forces.append(force[start:stop].numpy())
            devi.append(float(atom_devi[start:stop].max()) if len(atoms) else 0.0)
            start = stop
    return FramePredictions(
        n_atoms=np.array([len(a) for a in frames], dtype=float),
        energy_eV=np.array(energies, dtype=float),
        ref_energy_eV=np.array([e for e, _, _ in refs], dtype=float),
        forces_eV_per_A=forces,
        ref_forces_eV_per_A=[np.asarray(f, dtype=float) for _, f, _ in refs],
        max_devi_f=np.array(devi, dtype=float),
    )


def error_metrics(ensemble_or_model: DeepPot | Ensemble, frames: Sequence[Atoms]) -> dict:
    """Energy RMSE (meV/atom), force RMSE and MAE (meV/Angstrom) of the model (ensemble: member
    mean) on labeled frames; values None for no frames."""
    if not frames:
        return ErrorSums().metrics()
    return predict_frames(ensemble_or_model, frames).metrics()
