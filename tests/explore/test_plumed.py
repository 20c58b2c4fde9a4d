"""PLUMED as a walker's bias, where a PLUMED kernel is installed (PyPI has only the wrapper)."""

import numpy as np
import pytest

from eelt.explore import read_trajectory, run_walker
from eelt.explore.plumed import plumed_kernel_error

WHY = plumed_kernel_error()


def test_without_a_kernel_the_reason_is_named():
    if WHY is None:
        pytest.skip("a PLUMED kernel is installed here")
    assert "plumed" in WHY.lower() or "PLUMED" in WHY


@pytest.mark.skipif(WHY is not None, reason=f"PLUMED cannot run here: {WHY}")
def test_plumed_metadynamics_biases_the_walker(cu_small, committee, tmp_path):
    from eelt.explore.bias import BiasedCalculator
    from eelt.explore.plumed import PlumedBias

    script = "\n".join(
        [
            "d: DISTANCE ATOMS=1,2",
            f"METAD ARG=d SIGMA=0.005 HEIGHT=5.0 PACE=5 FILE={tmp_path / 'HILLS'}",
        ]
    )
    calc = BiasedCalculator(committee, [PlumedBias(script, cu_small, 2.0, 300.0)])
    summary = run_walker(
        cu_small, calc, temperature_K=300.0, timestep_fs=2.0, n_steps=40, dump_interval=5,
        seed=0, out_path=tmp_path / "w.xyz", walker="w",
    )  # fmt: skip
    frames = read_trajectory(summary.trajectory)
    bias = np.array([f.info["bias_energy"] for f in frames])
    assert bias[0] == 0.0 and bias[1:].max() > 0.0
    assert (tmp_path / "HILLS").is_file()
