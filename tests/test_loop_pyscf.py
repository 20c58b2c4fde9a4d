"""The loop with its production parts: PySCF labels on a local Dask cluster of processes."""

import json

import ase.io
import numpy as np
import pytest
from ase.build import molecule

from eelt.config import parse_config
from eelt.execution import open_executor
from eelt.loop import Loop, prepare_run, run_loop

pytestmark = pytest.mark.slow


def test_water_loop_with_pyscf_on_dask(tmp_path):
    start = tmp_path / "h2o.xyz"
    molecule("H2O").write(start)
    cfg = parse_config(
        {
            "name": "water-ci",
            "system": {"structures": [str(start)]},
            "init": {"n_perturbed": 8, "position_sigma_A": 0.05},
            "explore": {
                "stages": [
                    {
                        "temperatures_K": [400],
                        "walkers_per_condition": 2,
                        "n_steps": 100,
                        "timestep_fs": 0.5,
                        "dump_interval": 10,
                        "max_iterations": 2,
                    }
                ]
            },
            "examine": {"trust_lo_eV_per_A": 0.02, "trust_hi_eV_per_A": 2.0, "max_candidates": 4},
            "label": {"kind": "pyscf", "xc": "lda,vwn", "basis": "sto-3g"},
            "train": {
                "ensemble_size": 2,
                "steps": 200,
                "warm_steps": 100,
                "batch_size": 2,
                "model": {
                    "rcut_A": 4.0,
                    "embedding_widths": [8, 16],
                    "axis_neuron": 4,
                    "fitting_widths": [32, 32],
                },
            },
            "execution": {"kind": "local", "n_workers": 2, "dashboard_address": None},
            "loop": {"max_iterations": 1},
        }
    )
    run = prepare_run(cfg, tmp_path, tmp_path / "run")
    with open_executor(cfg.execution, tmp_path / "run" / "logs") as executor:
        state = run_loop(Loop(run, executor))
    assert state["status"] == "max iterations"
    assert state["n_init_labeled"] == 9
    labeled = ase.io.read(tmp_path / "run/data/iter-000.extxyz", ":")
    assert 0 < len(labeled) <= 4
    # labels are PySCF's: water at LDA/STO-3G has E ~ -75.2 Ha
    energies_eV = np.array([a.get_potential_energy() for a in labeled])
    assert np.all(np.abs(energies_eV / 27.211386 + 75.2) < 0.5)
    report = json.loads((tmp_path / "run/iter-000/label/report.json").read_text())
    assert report["n_failed"] == 0 and report["n_computed"] == len(labeled)
