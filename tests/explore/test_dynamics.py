"""The walker's integrators as physics: NVE conserves energy, thermostats hold the temperature,
barostats move the volume the right way with pressure, ramps move the target."""

import numpy as np
import pytest
from ase import units
from ase.calculators.emt import EMT

from eelt import keys
from eelt.explore import COMPLETED, KINETIC_TEMPERATURE_K, MDSettings, read_trajectory, run_walker
from eelt.explore.dynamics import make_dynamics


def _walk(atoms, calc, tmp_path, md, name="w", n_steps=200, dump_interval=5, **kw):
    kw = {"temperature_K": 600.0, "timestep_fs": 2.0, **kw}
    summary = run_walker(
        atoms,
        calc,
        md=md,
        n_steps=n_steps,
        dump_interval=dump_interval,
        seed=kw.pop("seed", 5),
        out_path=tmp_path / f"{name}.xyz",
        walker=name,
        **kw,
    )
    assert summary.stop_reason == COMPLETED, summary.stop_reason
    return read_trajectory(summary.trajectory)


def test_nve_conserves_total_energy(cu32):
    # velocity Verlet at 1 fs on EMT Cu: total energy drifts by < 1e-4 eV/atom over 0.4 ps,
    # while the potential energy itself swings by ~100x that
    atoms = cu32.copy()
    atoms.rattle(0.05, seed=2)
    atoms.calc = EMT()
    rng = np.random.default_rng(0)
    sigma = np.sqrt(atoms.get_masses() * units.kB * 600.0)[:, None]
    atoms.set_momenta(sigma * rng.standard_normal((len(atoms), 3)))
    dyn = make_dynamics(atoms, MDSettings(ensemble="nve", timestep_fs=1.0), rng)
    total, potential = [], []
    dyn.attach(lambda: total.append(atoms.get_total_energy()), interval=10)
    dyn.attach(lambda: potential.append(atoms.get_potential_energy()), interval=10)
    dyn.run(400)
    n = len(atoms)
    assert np.ptp(total) / n < 1e-4
    assert np.ptp(potential) / n > 1e-2


def test_nve_walker_keeps_total_energy(cu32, committee, tmp_path):
    frames = _walk(cu32, committee, tmp_path, MDSettings(ensemble="nve"), timestep_fs=1.0)
    n = len(cu32)
    dof = 3 * n - 3  # the walker fixes the centre of mass
    total = [
        f.info[keys.MODEL_ENERGY] + 0.5 * dof * units.kB * f.info[KINETIC_TEMPERATURE_K]
        for f in frames
    ]
    assert np.ptp(total) / n < 2e-4


@pytest.mark.parametrize("thermostat", ["langevin", "bussi", "nose-hoover"])
def test_nvt_holds_the_kinetic_temperature(cu32, committee, tmp_path, thermostat):
    md = MDSettings(ensemble="nvt", thermostat=thermostat, thermostat_time_fs=50.0)
    frames = _walk(
        cu32, committee, tmp_path, md, n_steps=500, friction_per_fs=0.02, temperature_K=600.0
    )
    temps = np.array([f.info[KINETIC_TEMPERATURE_K] for f in frames])
    # 32 atoms: the instantaneous temperature fluctuates by ~600 * sqrt(2/96) ~ 90 K
    assert temps[len(temps) // 2 :].mean() == pytest.approx(600.0, abs=80.0)


class QuietEMT(EMT):
    """EMT reporting a zero ensemble deviation: a walker's calculator at a third of the cost of
    the committee (the barostat tests need many stress evaluations)."""

    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        n = len(self.atoms)
        self.results.update(
            {keys.MAX_DEVI_F: 0.0, keys.AVG_DEVI_F: 0.0, keys.DEVI_E: 0.0,
             keys.FORCES_STD: np.zeros(n)}
        )  # fmt: skip


def _mean_volume(frames):
    volumes = np.array([abs(f.cell.volume) for f in frames])
    return volumes[len(volumes) // 2 :].mean()


@pytest.mark.parametrize(
    "barostat, cell", [("mtk", "isotropic"), ("mtk", "anisotropic"), ("langevin", "isotropic")]
)
def test_npt_volume_follows_pressure(cu32, tmp_path, barostat, cell):
    # Cu's bulk modulus is ~140 GPa: +50 kbar shrinks the cell by ~3.5%, -30 kbar swells it ~2%
    volumes = {}
    for p in (-30000.0, 0.0, 50000.0):
        md = MDSettings(
            ensemble="npt", barostat=barostat, cell_fluctuation=cell, pressure_bar=p,
            thermostat_time_fs=50.0, barostat_time_fs=200.0,
        )  # fmt: skip
        frames = _walk(
            cu32, QuietEMT(), tmp_path, md, name=f"p{p:g}", n_steps=500, temperature_K=300.0,
            friction_per_fs=0.02,
        )  # fmt: skip
        assert frames[-1].info[keys.PRESSURE_BAR] == p
        volumes[p] = _mean_volume(frames)
    assert volumes[50000.0] < volumes[0.0] * 0.985
    assert volumes[-30000.0] > volumes[0.0] * 1.008
    if cell == "isotropic":  # the cell keeps its cubic shape
        lengths = frames[-1].cell.lengths()
        assert np.ptp(lengths) < 1e-8 * lengths.mean() + 1e-10


def test_npt_needs_a_periodic_cell_and_a_pressure(committee, tmp_path):
    from ase.build import molecule

    with pytest.raises(ValueError, match="pressure_bar"):
        MDSettings(ensemble="npt").check(molecule("H2O"))
    with pytest.raises(ValueError, match="periodic in all three"):
        MDSettings(ensemble="npt", pressure_bar=1.0).check(molecule("H2O"))


@pytest.mark.parametrize("thermostat", ["langevin", "bussi"])
def test_temperature_ramp(cu32, committee, tmp_path, thermostat):
    md = MDSettings(thermostat=thermostat, temperature_end_K=1200.0, thermostat_time_fs=20.0)
    frames = _walk(
        cu32, committee, tmp_path, md, n_steps=600, friction_per_fs=0.05, temperature_K=200.0
    )
    targets = np.array([f.info[keys.TEMPERATURE_K] for f in frames])
    steps = np.array([f.info[keys.STEP] for f in frames])
    np.testing.assert_allclose(targets, 200.0 + 1000.0 * steps / 600, rtol=1e-9)
    temps = np.array([f.info[KINETIC_TEMPERATURE_K] for f in frames])
    q = len(temps) // 4
    assert temps[:q].mean() < 500.0 < 900.0 < temps[-q:].mean()


def test_nose_hoover_cannot_ramp(cu32):
    with pytest.raises(ValueError, match="temperature ramp"):
        MDSettings(thermostat="nose-hoover", temperature_end_K=900.0).check(cu32)
