"""ASE frames as mace-torch graphs (its Configuration, AtomicData and Batch), with or without
reference labels: what a MACE member evaluates and trains on.

Units: energy eV, forces eV/Angstrom, lengths Angstrom.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols
from mace import data as mdata
from mace.tools import AtomicNumberTable
from mace.tools.torch_geometric import Batch

from eelt.model.mace.architecture import float64_default

# where a frame's reference labels go for mace-torch's Configuration
LABEL_KEYS = mdata.KeySpecification(
    info_keys={"energy": "eelt_energy"}, arrays_keys={"forces": "eelt_forces"}
)


def atomic_data(
    atoms: Atoms,
    zs: Sequence[int],
    r_max_A: float,
    dtype: torch.dtype,
    energy_eV: float | None = None,
    forces_eV_per_A: np.ndarray | None = None,
) -> mdata.AtomicData:
    """One frame as mace-torch's AtomicData: its graph within ``r_max_A`` over the element
    table ``zs`` (atomic numbers in the model's order), floats in ``dtype``, and reference
    energy and forces where given (mace-torch gives unlabeled frames zero weights)."""
    unknown = sorted(set(atoms.numbers.tolist()) - set(int(z) for z in zs))
    if unknown:
        raise ValueError(
            f"element {', '.join(chemical_symbols[z] for z in unknown)} is not among the "
            f"model's elements {[chemical_symbols[z] for z in zs]}"
        )
    frame = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    if energy_eV is not None:
        frame.info["eelt_energy"] = float(energy_eV)
    if forces_eV_per_A is not None:
        frame.arrays["eelt_forces"] = np.asarray(forces_eV_per_A, dtype=np.float64)
    config = mdata.config_from_atoms(frame, key_specification=LABEL_KEYS)
    with float64_default():  # positions and shifts exact, then cast
        data = mdata.AtomicData.from_config(
            config, z_table=AtomicNumberTable([int(z) for z in zs]), cutoff=float(r_max_A)
        )
    return data.apply(lambda x: x.to(dtype) if torch.is_floating_point(x) else x)


def collate(data: Sequence[mdata.AtomicData], device: torch.device | str) -> Batch:
    """Frames' AtomicData as one mace-torch Batch on ``device``."""
    return Batch.from_data_list(list(data)).to(device)
