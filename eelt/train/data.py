"""Training data: labeled extxyz frames as precomputed FrameGraphs plus targets, the
train/validation split, and per-batch collation into tensors.

Units: energy eV, forces eV/Angstrom, virial eV (virial = -stress * volume, ASE stress).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress

from eelt.model import Batch, FrameGraph, build_graph, collate
from eelt.model.member_batch import FrameLayout, MemberBatch, collate_members


@dataclass(frozen=True)
class LabeledFrame:
    """One frame's neighbor graph (computed once) and its reference labels."""

    graph: FrameGraph
    energy_eV: float
    forces_eV_per_A: np.ndarray  # (n, 3)
    virial_eV: np.ndarray | None  # (3, 3); None without stress or without a periodic cell

    @property
    def n_atoms(self) -> int:
        return len(self.forces_eV_per_A)


@dataclass
class LabeledBatch:
    """Several frames collated for the model, with their targets as tensors."""

    batch: Batch
    energy_eV: torch.Tensor  # (F,)
    forces_eV_per_A: torch.Tensor  # (N, 3)
    virial_eV: torch.Tensor  # (F, 3, 3); zeros where has_virial is False
    has_virial: torch.Tensor  # (F,) bool
    n_atoms: torch.Tensor  # (F,) model dtype

    @property
    def n_frames(self) -> int:
        return len(self.energy_eV)


@dataclass
class LabeledMemberBatch:
    """K lists of F frames, one per member, collated into one MemberBatch, with their targets
    in the batch's layout (member k's atoms at ``batch.atom_order[k]``; ghost atoms zero)."""

    batch: MemberBatch
    energy_eV: torch.Tensor  # (K, F)
    forces_eV_per_A: torch.Tensor  # (K, N, 3)
    virial_eV: torch.Tensor  # (K, F, 3, 3); zeros where has_virial is False
    has_virial: torch.Tensor  # (K, F) bool
    n_atoms: torch.Tensor  # (K, F) model dtype, real atoms per frame
    n_real_atoms: torch.Tensor  # (K,) model dtype, real atoms per member


def read_frames(files: Sequence[str | Path], type_map: list[str] | None = None) -> list[Atoms]:
    """Every frame of every file (any ase.io format, extxyz in practice), in order.

    Checks that each frame has a finite reference energy and forces and, given ``type_map``,
    only elements in it; errors name the file and the frame's index in it.
    """
    frames: list[Atoms] = []
    known = None if type_map is None else set(type_map)
    for f in files:
        if not Path(f).is_file():
            raise FileNotFoundError(f"{f}: no such data file")
        for i, atoms in enumerate(ase.io.read(f, ":")):
            frame_labels(atoms, f"{f} frame {i}")
            if known is not None:
                unknown = sorted(set(atoms.get_chemical_symbols()) - known)
                if unknown:
                    raise ValueError(
                        f"{f} frame {i}: element {', '.join(unknown)} is not in type_map {type_map}"
                    )
            frames.append(atoms)
    if not frames:
        raise ValueError(f"no frames in data files {[str(f) for f in files]}")
    return frames


def frame_labels(atoms: Atoms, where: str = "frame") -> tuple[float, np.ndarray, np.ndarray | None]:
    """(energy eV, forces eV/Angstrom (n,3), virial eV (3,3) or None) from a frame's calculator."""
    results = atoms.calc.results if atoms.calc is not None else {}
    if "energy" not in results and "free_energy" not in results:
        raise ValueError(f"{where}: no reference energy (expected 'energy' in the frame's labels)")
    if "forces" not in results:
        raise ValueError(f"{where}: no reference forces (expected 'forces' in the frame's labels)")
    energy = float(results["energy"] if "energy" in results else results["free_energy"])
    forces = np.asarray(results["forces"], dtype=np.float64).reshape(len(atoms), 3)
    virial = None
    stress = results.get("stress")
    if stress is not None and atoms.pbc.all():
        stress = np.asarray(stress, dtype=np.float64)
        full = voigt_6_to_full_3x3_stress(stress) if stress.shape == (6,) else stress.reshape(3, 3)
        virial = -full * atoms.get_volume()
    if not np.isfinite(energy) or not np.isfinite(forces).all():
        raise ValueError(f"{where}: reference energy or forces are not finite")
    return energy, forces, virial


def label_frames(
    frames: Sequence[Atoms], type_map: list[str], rcut_A: float, source: str = "frame"
) -> list[LabeledFrame]:
    """Build each frame's neighbor graph once and attach its labels."""
    out = []
    for i, atoms in enumerate(frames):
        where = f"{source} {i}"
        energy, forces, virial = frame_labels(atoms, where)
        try:
            graph = build_graph(atoms, type_map, rcut_A)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        out.append(LabeledFrame(graph, energy, forces, virial))
    return out


def split_train_validation(
    n_frames: int, validation_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation): a seeded permutation, validation = its first
    round(fraction * n) frames (at least 1 when n > 1 and fraction > 0).

    The permutation sorts per-frame random keys drawn in frame order, so appending frames
    (the next iteration's data) leaves most earlier frames on the same side of the split.
    """
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    n_val = int(round(validation_fraction * n_frames))
    if n_frames > 1 and validation_fraction > 0:
        n_val = min(max(n_val, 1), n_frames - 1)
    else:
        n_val = 0
    keys = np.random.default_rng(seed).random(n_frames)
    order = np.argsort(keys, kind="stable")
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def collate_labeled(
    frames: Sequence[LabeledFrame], dtype: torch.dtype, device: torch.device | str = "cpu"
) -> LabeledBatch:
    """Concatenate frames into one Batch plus target tensors."""
    batch = collate([f.graph for f in frames], dtype, device)
    energy = torch.tensor([f.energy_eV for f in frames], dtype=dtype, device=device)
    forces = torch.from_numpy(np.concatenate([f.forces_eV_per_A for f in frames])).to(device, dtype)
    virial = np.zeros((len(frames), 3, 3))
    has_virial = np.zeros(len(frames), dtype=bool)
    for k, f in enumerate(frames):
        if f.virial_eV is not None:
            virial[k] = f.virial_eV
            has_virial[k] = True
    n_atoms = torch.tensor([f.n_atoms for f in frames], dtype=dtype, device=device)
    return LabeledBatch(
        batch=batch,
        energy_eV=energy,
        forces_eV_per_A=forces,
        virial_eV=torch.from_numpy(virial).to(device, dtype),
        has_virial=torch.from_numpy(has_virial).to(device),
        n_atoms=n_atoms,
    )


def chunks(frames: Sequence[LabeledFrame], max_atoms: int = 4096) -> list[list[LabeledFrame]]:
    """Split frames into consecutive groups of at most ``max_atoms`` atoms (>= 1 frame each)."""
    groups: list[list[LabeledFrame]] = []
    current: list[LabeledFrame] = []
    n = 0
    for f in frames:
        if current and n + f.n_atoms > max_atoms:
            groups.append(current)
            current, n = [], 0
        current.append(f)
        n += f.n_atoms
    if current:
        groups.append(current)
    return groups


def collate_labeled_members(
    frames: Sequence[Sequence[LabeledFrame]],
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    layouts: Sequence[Sequence[FrameLayout]] | None = None,
) -> LabeledMemberBatch:
    """Member k's frames ``frames[k]`` (equal counts) into one MemberBatch plus targets;
    ``layouts``: the frames' FrameLayouts, where prepared once for many batches."""
    graphs = layouts if layouts is not None else [[f.graph for f in group] for group in frames]
    batch = collate_members(graphs, dtype, device)
    flat = [f for group in frames for f in group]
    n_members, n_frames = len(frames), len(frames[0])
    where = np.concatenate([k * batch.n_atoms + o for k, o in enumerate(batch.atom_order)])
    forces = np.zeros((n_members * batch.n_atoms, 3))
    forces[where] = np.concatenate([f.forces_eV_per_A for f in flat])
    virial = np.zeros((len(flat), 3, 3))
    has_virial = np.array([f.virial_eV is not None for f in flat])
    if has_virial.any():
        virial[has_virial] = np.stack([f.virial_eV for f in flat if f.virial_eV is not None])
    n_atoms = np.array([f.n_atoms for f in flat], dtype=float).reshape(n_members, n_frames)

    def tensor(array: np.ndarray, kind: torch.dtype = dtype) -> torch.Tensor:
        as_numpy = np.ascontiguousarray(array, dtype=str(kind).removeprefix("torch."))
        return torch.from_numpy(as_numpy).to(device)

    return LabeledMemberBatch(
        batch=batch,
        energy_eV=tensor(np.array([f.energy_eV for f in flat]).reshape(n_members, n_frames)),
        forces_eV_per_A=tensor(forces.reshape(n_members, batch.n_atoms, 3)),
        virial_eV=tensor(virial.reshape(n_members, n_frames, 3, 3)),
        has_virial=tensor(has_virial.reshape(n_members, n_frames), torch.bool),
        n_atoms=tensor(n_atoms),
        n_real_atoms=tensor(n_atoms.sum(axis=1)),
    )
