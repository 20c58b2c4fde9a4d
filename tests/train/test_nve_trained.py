"""A model trained on EMT copper conserves energy in NVE molecular dynamics."""

import numpy as np
from ase import units
from ase.build import bulk
from ase.md.velocitydistribution import Stationary
from ase.md.verlet import VelocityVerlet

from eelt.model import DeepPot, Ensemble, EnsembleCalculator
from eelt.train import train_member
from tests.train.conftest import TYPE_MAP, tiny_train


def test_nve_with_a_trained_model_conserves_energy(cu_data, tmp_path):
    result = train_member(
        [cu_data], str(tmp_path / "m.pt"), tiny_train(steps=200), TYPE_MAP, seed=0
    )
    assert result.val_force_rmse_meV_per_A < 400  # it learned something (EMT forces ~1 eV/A rms)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    rng = np.random.default_rng(0)
    atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
    atoms.set_momenta(
        rng.normal(0.0, 1.0, (len(atoms), 3))
        * np.sqrt(atoms.get_masses()[:, None] * units.kB * 300)
    )
    Stationary(atoms)
    atoms.calc = EnsembleCalculator(Ensemble([DeepPot.load(tmp_path / "m.pt")]))
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    totals, potentials = [], []

    def record():
        potentials.append(atoms.get_potential_energy() / len(atoms))
        totals.append(potentials[-1] + atoms.get_kinetic_energy() / len(atoms))

    dyn.attach(record, interval=5)
    dyn.run(500)  # 0.5 ps
    drift = np.abs(np.array(totals) - totals[0]).max()
    print(f"NVE drift over 0.5 ps at 1 fs: {drift:.2e} eV/atom")
    assert np.ptp(potentials) > 0.01  # the atoms move on the learned surface
    assert drift < 1e-4  # eV/atom (measured 4.7e-6)
