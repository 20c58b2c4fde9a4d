"""Tiny EMT-labeled Cu dataset and a tiny model config shared by the training tests."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from eelt.atomic import write_frames
from eelt.config import ModelConfig, TrainConfig

TYPE_MAP = ["Cu"]


def emt_frames(n_frames: int, seed: int) -> list:
    """Perturbed fcc Cu cells (4 or 8 atoms) labeled with EMT energy, forces and stress."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_frames):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
        if i % 2:
            atoms = atoms.repeat((2, 1, 1))
        strain = np.eye(3) + rng.normal(0, 0.02, (3, 3))
        atoms.set_cell(atoms.cell[:] @ strain, scale_atoms=True)
        atoms.positions += rng.normal(0, 0.08, atoms.positions.shape)
        atoms.calc = EMT()
        results = {
            "energy": atoms.get_potential_energy(),
            "forces": atoms.get_forces(),
            "stress": atoms.get_stress(),
        }
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    return frames


@pytest.fixture(scope="session")
def cu_data(tmp_path_factory) -> str:
    """40 EMT-labeled Cu frames in one extxyz file."""
    path = tmp_path_factory.mktemp("data") / "cu.extxyz"
    write_frames(path, emt_frames(40, seed=1))
    return str(path)


def tiny_train(**overrides) -> TrainConfig:
    """A tiny model and short schedule so that training runs in seconds."""
    model = ModelConfig(
        rcut_A=4.5,
        rcut_smth_A=2.0,
        embedding_widths=[8, 16],
        axis_neuron=4,
        fitting_widths=[32, 32],
        precision="float64",
    )
    settings = dict(
        ensemble_size=2,
        model=model,
        steps=300,
        batch_size=4,
        precision="float64",
        start_lr=1e-2,
        stop_lr=3e-4,
        validation_fraction=0.2,
        warm_steps=50,
        warm_start_lr=3e-4,
        seed=0,
    )
    settings.update(overrides)
    return TrainConfig(**settings)
