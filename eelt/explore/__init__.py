"""Exploration: molecular dynamics driven by the model ensemble, recording its force deviation."""

from eelt.explore.perturb import perturbed_copies
from eelt.explore.walker import (
    COMPLETED,
    KINETIC_TEMPERATURE_K,
    MODEL_ENERGY,
    WalkerSummary,
    closest_contact,
    isolated_atoms,
    read_trajectory,
    run_walker,
    walker_job,
)

__all__ = [
    "COMPLETED",
    "KINETIC_TEMPERATURE_K",
    "MODEL_ENERGY",
    "WalkerSummary",
    "closest_contact",
    "isolated_atoms",
    "perturbed_copies",
    "read_trajectory",
    "run_walker",
    "walker_job",
]
