"""Exploration: molecular dynamics driven by the model ensemble, recording its force deviation.

Names are imported on first use, so ``eelt.config`` can read ``eelt.explore.dynamics`` (ASE
only) without loading the models (torch)."""

from importlib import import_module

_WHERE = {
    "MDSettings": "dynamics",
    "make_dynamics": "dynamics",
    "cell_volume_change": "guards",
    "closest_contact": "guards",
    "isolated_atoms": "guards",
    "walker_job": "job",
    "perturbed_copies": "perturb",
    "COMPLETED": "walker",
    "KINETIC_TEMPERATURE_K": "walker",
    "MODEL_ENERGY": "walker",
    "WalkerSummary": "walker",
    "read_trajectory": "walker",
    "run_walker": "walker",
    "Walker": "walkers",
    "choose_starts": "walkers",
    "stage_walkers": "walkers",
    "walker_job_kwargs": "walkers",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'eelt.explore' has no attribute {name!r}")
    return getattr(import_module(f"eelt.explore.{_WHERE[name]}"), name)
