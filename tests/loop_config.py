"""A tiny but complete run config (EMT labels, small model, thread pool) for loop tests."""

from pathlib import Path

from ase.build import bulk

from eelt.config import RunConfig, parse_config


def cu_start(directory: Path) -> Path:
    path = directory / "cu4.extxyz"
    bulk("Cu", "fcc", a=3.6, cubic=True).write(path)
    return path


def labeled_cu(n: int, seed: int = 0, rattle_A: float = 0.05) -> list:
    """``n`` Cu cells rattled by ``rattle_A`` (std, A), labeled with EMT (energy, forces, stress)."""
    from ase.calculators.emt import EMT

    frames = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(rattle_A, seed=seed + k)
        atoms.calc = EMT()
        atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        frames.append(atoms)
    return frames


def tiny_config(structure: Path, **overrides) -> RunConfig:
    data = {
        "name": "cu-test",
        "system": {"structures": [str(structure)]},
        "init": {"n_perturbed": 6, "position_sigma_A": 0.08, "cell_strain": 0.02, "seed": 1},
        "explore": {
            "stages": [
                {
                    "temperatures_K": [300, 900],
                    "n_steps": 30,
                    "timestep_fs": 2.0,
                    "dump_interval": 5,
                    "max_iterations": 3,
                }
            ],
        },
        "examine": {"trust_lo_eV_per_A": 0.01, "trust_hi_eV_per_A": 5.0, "max_candidates": 3},
        "label": {"kind": "emt"},
        "train": {
            "ensemble_size": 2,
            "model": {
                "rcut_A": 4.0,
                "rcut_smth_A": 1.0,
                "embedding_widths": [4, 8],
                "axis_neuron": 2,
                "fitting_widths": [16],
            },
            "steps": 30,
            "warm_steps": 20,
            "batch_size": 2,
            "validation_fraction": 0.2,
        },
        "execution": {"kind": "threads", "n_workers": 2},
        "loop": {"max_iterations": 2},
    }
    for key, value in overrides.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    return parse_config(data)
