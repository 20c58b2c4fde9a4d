"""PLUMED as a walker's bias, where a PLUMED kernel is installed (PyPI has only the wrapper)."""

import numpy as np
import pytest

from eelt.explore import read_trajectory, run_walker
from eelt.explore.plumed import plumed_kernel_error

WHY = plumed_kernel_error()


def test_without_the_wrapper_the_reason_is_named(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "plumed", None)  # as if `pip install plumed` never ran
    assert (
        plumed_kernel_error() == "the plumed Python package is not installed (pip install plumed)"
    )


def test_a_plumed_stage_without_a_kernel_is_a_user_error_before_the_run(tmp_path, monkeypatch):
    from eelt.errors import EeltError
    from eelt.explore import plumed
    from eelt.orchestration.preflight import preflight
    from tests.loop_config import cu_start, tiny_config

    monkeypatch.setattr(plumed, "plumed_kernel_error", lambda: "no PLUMED kernel (test)")
    stage = {
        "temperatures_K": [300],
        "biases": [{"kind": "plumed", "script": "d: DISTANCE ATOMS=1,2"}],
    }
    cfg = tiny_config(cu_start(tmp_path), explore={"stages": [stage]})
    with pytest.raises(EeltError, match="a stage has a plumed bias, but no PLUMED kernel"):
        preflight(cfg, tmp_path, tmp_path / "run")
    assert not (tmp_path / "run").exists()


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
