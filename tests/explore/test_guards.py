"""The kinetic-temperature guard: a pure function, and a walker that a non-conservative model
heats up (stopped with the reason) beside a normal NVT walker (not stopped)."""

import numpy as np
import pytest
from ase import units

from eelt.explore import COMPLETED, KINETIC_TEMPERATURE_K, read_trajectory, run_walker
from eelt.explore.guards import KINETIC_WINDOW_STEPS, MIN_KINETIC_DOF, overheated

from .conftest import WrappingCalculator


def test_overheated_judges_the_running_mean_over_a_full_window():
    hot = [700.0] * KINETIC_WINDOW_STEPS
    assert "above 2 x the target 300 K" in overheated(hot, 300.0, 2.0, dof=93)
    assert overheated(hot[:-1], 300.0, 2.0, dof=93) is None  # not yet a full window
    assert overheated(hot, 300.0, 2.5, dof=93) is None  # 700 K < 2.5 x 300 K
    assert overheated(hot, 300.0, None, dof=93) is None  # off
    assert overheated(hot, 300.0, 2.0, dof=MIN_KINETIC_DOF - 1) is None  # too few dof to judge
    # only the last window counts: an early hot spell that cooled down is fine
    assert overheated([5000.0] * 50 + [300.0] * KINETIC_WINDOW_STEPS, 300.0, 2.0, 93) is None


class AntiFriction(WrappingCalculator):
    """The committee's forces plus gamma x m x v: a negative friction that pumps energy into the
    MD, as a model with non-conservative forces does."""

    def __init__(self, inner, gamma_per_fs: float, **kwargs):
        super().__init__(inner, **kwargs)
        self.gamma = gamma_per_fs / units.fs

    def adjust(self) -> None:
        self.results["forces"] += self.gamma * self.atoms.get_momenta()


def _walk(atoms, calc, tmp_path, name, **kw):
    return run_walker(
        atoms, calc, temperature_K=300.0, timestep_fs=2.0, friction_per_fs=0.01, n_steps=400,
        dump_interval=10, seed=1, out_path=tmp_path / f"{name}.xyz", walker=name, **kw,
    )  # fmt: skip


def test_a_walker_that_heats_up_is_stopped_and_a_normal_one_is_not(cu32, committee, tmp_path):
    normal = _walk(cu32, committee, tmp_path, "normal")
    temps = [f.info[KINETIC_TEMPERATURE_K] for f in read_trajectory(normal.trajectory)]
    assert normal.stop_reason == COMPLETED, normal.stop_reason
    assert np.mean(temps[10:]) == pytest.approx(300.0, rel=0.35)

    hot = _walk(cu32, AntiFriction(committee, gamma_per_fs=0.03), tmp_path, "hot")
    assert hot.stop_reason.startswith("kinetic temperature"), hot.stop_reason
    assert "above 2 x the target 300 K" in hot.stop_reason
    assert hot.stops[0]["reason"] == hot.stop_reason
    assert KINETIC_WINDOW_STEPS <= hot.n_steps_run < 400
    # off: the same model runs on until the hot crystal breaks another guard
    off = _walk(cu32, AntiFriction(committee, gamma_per_fs=0.03), tmp_path, "off",
                max_temperature_factor=None)  # fmt: skip
    temps = [f.info[KINETIC_TEMPERATURE_K] for f in read_trajectory(off.trajectory)]
    assert not off.stop_reason.startswith("kinetic") and off.n_steps_run > hot.n_steps_run
    assert max(temps) > 1000.0
