"""What a new MACE member takes from its training frames before the first step (mace-torch's
own estimators): isolated-atom energies E0s, the mean neighbor count, and the scale and shift
of the interaction energy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols
from mace import data as mdata
from mace import modules
from mace.tools import AtomicNumberTable
from mace.tools.torch_geometric.dataloader import DataLoader

from eelt.model.mace.architecture import float64_default
from eelt.model.mace.graphs import LABEL_KEYS, atomic_data

STATISTICS_BATCH = 32  # frames per batch while the statistics are taken


@dataclass(frozen=True)
class MaceStatistics:
    """E0s (eV per element symbol), mean neighbors within r_max, and the interaction energy's
    shift (eV per atom, after E0s) and scale (RMS force component, eV/A)."""

    E0s_eV: dict[str, float]
    avg_num_neighbors: float
    shift_eV: float
    scale_eV: float

    @classmethod
    def neutral(cls, type_map: Sequence[str], E0s: str | Mapping[str, float]) -> MaceStatistics:
        """No data seen: E0s from the mapping (zero for 'average'), one neighbor, unit scale."""
        e0s = {s: 0.0 for s in type_map} if E0s == "average" else given_E0s(E0s, type_map)
        return cls(e0s, 1.0, 0.0, 1.0)


def given_E0s(E0s: Mapping[str, float], type_map: Sequence[str]) -> dict[str, float]:
    """The configured E0s of the type_map's elements; ValueError naming a missing element."""
    missing = [s for s in type_map if s not in E0s]
    if missing:
        raise ValueError(f"E0s has no energy for {', '.join(missing)} (elements {list(type_map)})")
    unknown = [s for s in E0s if s not in atomic_numbers]
    if unknown:
        raise ValueError(f"E0s: {', '.join(unknown)} is not an element symbol")
    return {s: float(E0s[s]) for s in type_map}


def data_statistics(
    frames: Sequence[Atoms],
    energies_eV: Sequence[float],
    forces_eV_per_A: Sequence[np.ndarray],
    type_map: Sequence[str],
    r_max_A: float,
    E0s: str | Mapping[str, float],
) -> MaceStatistics:
    """The statistics of labeled frames: E0s as configured ('average': mace-torch's least
    squares fit of the frames' energies on their element counts), the rest as mace-torch's
    rms_forces_scaling and compute_avg_num_neighbors take them."""
    if not frames:
        raise ValueError("MACE statistics need at least one labeled frame")
    zs = [atomic_numbers[s] for s in type_map]
    if E0s == "average":
        configs = []
        for atoms, energy in zip(frames, energies_eV, strict=True):
            frame = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
            frame.info["eelt_energy"] = float(energy)
            configs.append(mdata.config_from_atoms(frame, key_specification=LABEL_KEYS))
        fitted = mdata.compute_average_E0s(configs, AtomicNumberTable(zs))
        e0s = {chemical_symbols[z]: float(fitted[z]) for z in zs}
    else:
        e0s = given_E0s(E0s, type_map)
    data = [
        atomic_data(atoms, zs, r_max_A, torch.float64, energy, forces)
        for atoms, energy, forces in zip(frames, energies_eV, forces_eV_per_A, strict=True)
    ]
    loader = DataLoader(data, batch_size=STATISTICS_BATCH, shuffle=False)
    with float64_default():
        avg_num_neighbors = modules.compute_avg_num_neighbors(loader)
        mean, rms = modules.scaling_classes["rms_forces_scaling"](
            loader, np.array([e0s[s] for s in type_map])
        )
    return MaceStatistics(
        E0s_eV=e0s,
        avg_num_neighbors=float(avg_num_neighbors),
        shift_eV=float(np.asarray(mean).reshape(-1)[0]),
        scale_eV=float(np.asarray(rms).reshape(-1)[0]),
    )
