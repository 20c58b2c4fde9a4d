"""Exploration: molecular dynamics driven by the model ensemble, recording its force deviation."""

from eelt.explore.dynamics import MDSettings, make_dynamics
from eelt.explore.guards import cell_volume_change, closest_contact, isolated_atoms
from eelt.explore.job import walker_job
from eelt.explore.perturb import perturbed_copies
from eelt.explore.walker import (
    COMPLETED,
    KINETIC_TEMPERATURE_K,
    MODEL_ENERGY,
    WalkerSummary,
    read_trajectory,
    run_walker,
)

__all__ = [
    "COMPLETED",
    "KINETIC_TEMPERATURE_K",
    "MODEL_ENERGY",
    "MDSettings",
    "WalkerSummary",
    "cell_volume_change",
    "closest_contact",
    "isolated_atoms",
    "make_dynamics",
    "perturbed_copies",
    "read_trajectory",
    "run_walker",
    "walker_job",
]
