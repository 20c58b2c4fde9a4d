"""A walker stopped by a guard starts again from its last good frame, up to max_restarts."""

import numpy as np
import pytest

from eelt import keys
from eelt.explore import COMPLETED, read_trajectory, run_walker

from .conftest import WrappingCalculator


class NaNOnce(WrappingCalculator):
    """The committee's results, with NaN forces on exactly the ``bad``-th evaluation."""

    def __init__(self, inner, bad: int, **kwargs):
        super().__init__(inner, **kwargs)
        self.bad, self.n_calls = bad, 0

    def adjust(self) -> None:
        if self.n_calls == self.bad:
            self.results["forces"] = np.full_like(self.results["forces"], np.nan)
        self.n_calls += 1


def _run(atoms, calc, tmp_path, name="w", **kw):
    kw = {
        "temperature_K": 300.0, "timestep_fs": 2.0, "n_steps": 40, "dump_interval": 4,
        "seed": 11, **kw,
    }  # fmt: skip
    return run_walker(atoms, calc, out_path=tmp_path / f"{name}.xyz", walker=name, **kw)


def test_a_blown_up_walker_restarts_from_its_last_good_frame(cu_small, committee, tmp_path):
    # evaluation 14 is at step 14 (one per step from step 0): the last good dump is step 12
    summary = _run(cu_small, NaNOnce(committee, bad=14), tmp_path, max_restarts=2)
    assert summary.stop_reason == COMPLETED
    assert summary.restarts == 1
    (stop,) = summary.stops
    assert stop["reason"] == "NaN in forces at step 14"
    assert stop["restart_from_step"] == 12 and stop["segment"] == 0
    assert summary.last_step == 40
    assert summary.n_steps_run == 14 + (40 - 12)
    frames = read_trajectory(summary.trajectory)
    steps = [f.info[keys.STEP] for f in frames]
    segments = [f.info[keys.SEGMENT] for f in frames]
    # the good frame is kept once; the new segment goes on from it to the end
    assert steps == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40]
    assert segments == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]

    # a new seed: new velocities from the good frame, so a different path than the walker
    # that never blew up
    plain = read_trajectory(_run(cu_small, committee, tmp_path, name="plain").trajectory)
    np.testing.assert_allclose(frames[3].positions, plain[3].positions, atol=1e-8)
    assert np.abs(frames[4].positions - plain[4].positions).max() > 1e-3


def test_without_restarts_the_walker_stops(cu_small, committee, tmp_path):
    summary = _run(cu_small, NaNOnce(committee, bad=14), tmp_path)
    assert summary.stop_reason == "NaN in forces at step 14"
    assert summary.restarts == 0 and len(summary.stops) == 1
    assert "restart_from_step" not in summary.stops[0]


def test_the_restart_cap_holds_and_every_stop_is_recorded(cu_small, committee, tmp_path):
    # NaN forces from evaluation 10 on, for ever: every segment blows up from the step-8 frame
    from .conftest import NaNAfterCalculator

    calc = NaNAfterCalculator(committee, n_good=10)
    summary = _run(
        cu_small, calc, tmp_path, max_restarts=3, restart_timestep_factor=0.5, n_steps=100
    )
    assert summary.stop_reason.startswith("NaN in forces")
    assert summary.restarts == 3 and len(summary.stops) == 4
    assert [s["segment"] for s in summary.stops] == [0, 1, 2, 3]
    assert all(s["restart_from_step"] == 8 for s in summary.stops[:3])
    assert [s["timestep_fs"] for s in summary.stops[:3]] == pytest.approx([1.0, 0.5, 0.25])
    assert "restart_from_step" not in summary.stops[3]


class LoudWindow(WrappingCalculator):
    """The committee's results, with a max_devi_f of 10 eV/A on evaluations first..last-1."""

    def __init__(self, inner, first: int, last: int, **kwargs):
        super().__init__(inner, **kwargs)
        self.window, self.n_calls = range(first, last), 0

    def adjust(self) -> None:
        if self.n_calls in self.window:
            self.results[keys.MAX_DEVI_F] = 10.0
        self.n_calls += 1


def test_a_deviation_stop_restarts_from_the_last_frame_below_trust_hi(
    cu_small, committee, tmp_path
):
    # loud on evaluations 17-25: the dumps at steps 20 and 24 are above trust_hi, the segment
    # stops at 24 and starts again from step 16, the last frame below trust_hi
    calc = LoudWindow(committee, 17, 26)
    summary = _run(
        cu_small, calc, tmp_path, max_restarts=1, trust_hi_eV_per_A=1.0,
        stop_after_failed_dumps=2,
    )  # fmt: skip
    assert summary.stop_reason == COMPLETED and summary.restarts == 1
    assert summary.stops[0]["step"] == 24 and summary.stops[0]["restart_from_step"] == 16
    assert summary.stops[0]["reason"].startswith("deviation above trust_hi for 2 dumps")
    frames = read_trajectory(summary.trajectory)
    # the failed frames stay in the trajectory (they are explored frames like any other)
    assert [(f.info[keys.STEP], f.info[keys.SEGMENT]) for f in frames] == [
        (0, 0), (4, 0), (8, 0), (12, 0), (16, 0), (20, 0), (24, 0),
        (20, 1), (24, 1), (28, 1), (32, 1), (36, 1), (40, 1),
    ]  # fmt: skip
    assert [f.info[keys.MAX_DEVI_F] for f in frames[5:7]] == [10.0, 10.0]
    assert max(f.info[keys.MAX_DEVI_F] for f in frames[7:]) < 1.0


def test_bad_restart_settings_are_named(cu_small, committee, tmp_path):
    with pytest.raises(ValueError, match="max_restarts"):
        _run(cu_small, committee, tmp_path, max_restarts=-1)
    with pytest.raises(ValueError, match="restart_timestep_factor"):
        _run(cu_small, committee, tmp_path, restart_timestep_factor=1.5)
