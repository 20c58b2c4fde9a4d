import pickle

import numpy as np
import pytest
from ase.calculators.emt import EMT

from eelt import keys
from eelt.explore import COMPLETED, read_trajectory, run_walker, walker_job
from eelt.model import DeepPot, Ensemble, EnsembleCalculator

SMALL = dict(
    rcut_A=4.0, rcut_smth_A=1.0, embedding_widths=(6, 12), axis_neuron=4, fitting_widths=(16, 16)
)


@pytest.fixture
def ensemble_dir(cu_small, tmp_path):
    frames = []
    for k in range(4):
        f = cu_small.copy()
        f.rattle(0.05, seed=k)
        f.calc = EMT()
        f.get_potential_energy()
        frames.append(f)
    directory = tmp_path / "models"
    directory.mkdir()
    for m in range(2):
        model = DeepPot(["Cu"], seed=m, **SMALL)
        model.set_statistics(frames)
        model.save(directory / f"model-{m}.pt")
    return directory


def test_walker_job_runs_the_saved_ensemble(ensemble_dir, cu_small, tmp_path):
    args = (str(ensemble_dir), cu_small, str(tmp_path / "w.xyz"), "w0")
    kwargs = dict(
        temperature_K=300.0, timestep_fs=1.0, n_steps=10, dump_interval=5,
        friction_per_fs=0.01, seed=4,
    )  # fmt: skip
    job, args, kwargs = pickle.loads(pickle.dumps((walker_job, args, kwargs)))  # as Dask ships it
    summary = job(*args, **kwargs)
    frames = read_trajectory(summary.trajectory)
    assert summary.stop_reason == COMPLETED and len(frames) == 3

    probe = cu_small.copy()
    probe.calc = EnsembleCalculator(Ensemble.load(ensemble_dir))
    probe.get_forces()
    expected = probe.calc.results[keys.MAX_DEVI_F]
    assert expected > 1e-6  # two differently seeded members disagree
    assert frames[0].info[keys.MAX_DEVI_F] == pytest.approx(expected, rel=1e-9)
    assert np.isfinite([f.info[keys.AVG_DEVI_F] for f in frames]).all()


class CountingCalculator(EnsembleCalculator):
    """Counts the calculations that evaluate every member."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.n_full = 0

    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        self.n_full += keys.MAX_DEVI_F in self.results


def test_member_0_drives_and_the_ensemble_runs_once_per_dump(ensemble_dir, cu_small, tmp_path):
    md = dict(
        temperature_K=300.0, timestep_fs=1.0, n_steps=12, dump_interval=4, friction_per_fs=0.01,
        seed=3,
    )  # fmt: skip
    ensemble = Ensemble.load(ensemble_dir)
    calc = CountingCalculator(ensemble, forces_from="first")
    summary = run_walker(cu_small, calc, out_path=tmp_path / "first.xyz", walker="a", **md)
    frames = read_trajectory(summary.trajectory)
    assert summary.stop_reason == COMPLETED and len(frames) == 4  # steps 0, 4, 8, 12
    assert calc.n_full == 4
    # the same dynamics as member 0 alone
    member_0 = Ensemble([DeepPot.load(ensemble_dir / "model-0.pt")])
    alone = run_walker(
        cu_small, EnsembleCalculator(member_0), out_path=tmp_path / "alone.xyz", walker="b", **md
    )
    for a, b in zip(frames, read_trajectory(alone.trajectory), strict=True):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-10)
    # each frame's deviation is the whole ensemble's at that frame
    probe = EnsembleCalculator(ensemble)
    for frame in frames:
        frame.calc = probe
        frame.get_forces()
        # (positions come back from extxyz rounded: 1e-6, where a stale value is off by ~1e-2)
        assert frame.info[keys.MAX_DEVI_F] == pytest.approx(probe.results[keys.MAX_DEVI_F], 1e-6)
    assert frames[-1].info[keys.MAX_DEVI_F] > 1e-6
