import math

import pytest
import torch

from eelt.train.data import LabeledBatch
from eelt.train.loss import (
    LossPrefactors,
    PrefactorSchedule,
    deepmd_loss,
    learning_rate,
    prefactor,
)


def test_learning_rate_start_middle_end():
    assert learning_rate(0, 1000, 1e-3, 1e-5) == pytest.approx(1e-3, rel=1e-12)
    assert learning_rate(500, 1000, 1e-3, 1e-5) == pytest.approx(1e-4, rel=1e-12)
    assert learning_rate(1000, 1000, 1e-3, 1e-5) == pytest.approx(1e-5, rel=1e-12)
    assert learning_rate(250, 1000, 1e-3, 1e-5) == pytest.approx(1e-3 * 10 ** (-0.5), rel=1e-12)


def test_learning_rate_refuses_no_steps():
    with pytest.raises(ValueError, match="steps"):
        learning_rate(0, 0, 1e-3, 1e-5)


def test_prefactors_start_middle_end():
    sched = PrefactorSchedule(
        start_e=0.02, limit_e=1.0, start_f=1000.0, limit_f=1.0, start_v=0.0, limit_v=2.0
    )
    start_lr, stop_lr, steps = 1e-3, 1e-5, 1000
    p0 = sched.at(learning_rate(0, steps, start_lr, stop_lr), start_lr)
    assert (p0.energy, p0.forces, p0.virial) == pytest.approx((0.02, 1000.0, 0.0), rel=1e-12)
    pm = sched.at(learning_rate(500, steps, start_lr, stop_lr), start_lr)  # lr/start_lr = 0.1
    assert pm.energy == pytest.approx(1.0 + (0.02 - 1.0) * 0.1, rel=1e-12)
    assert pm.forces == pytest.approx(1.0 + 999.0 * 0.1, rel=1e-12)
    assert pm.virial == pytest.approx(2.0 - 2.0 * 0.1, rel=1e-12)
    p1 = sched.at(learning_rate(steps, steps, start_lr, stop_lr), start_lr)  # ratio 0.01
    assert p1.energy == pytest.approx(1.0 - 0.98 * 0.01, rel=1e-12)
    assert p1.forces == pytest.approx(1.0 + 999.0 * 0.01, rel=1e-12)
    assert prefactor(5.0, 1.0, 1e-3, 1e-3) == 5.0
    assert sched.uses_virial
    assert not PrefactorSchedule(1, 1, 1, 1).uses_virial


def _target(has_virial):
    d = torch.float64
    return LabeledBatch(
        batch=None,
        energy_eV=torch.tensor([1.0, -2.0], dtype=d),
        forces_eV_per_A=torch.arange(15, dtype=d).reshape(5, 3) / 10,
        virial_eV=torch.ones(2, 3, 3, dtype=d),
        has_virial=torch.tensor(has_virial),
        n_atoms=torch.tensor([2.0, 3.0], dtype=d),
    )


def test_deepmd_loss_matches_hand_computation():
    target = _target([False, True])
    pred = {
        "energy": torch.tensor([1.4, -2.6], dtype=torch.float64),  # dE/N = 0.2, -0.2
        "forces": target.forces_eV_per_A + 0.1,  # every component off by 0.1
        "virial": torch.full((2, 3, 3), 4.0, dtype=torch.float64),  # frame 1: dW/N = 1.0
    }
    prefs = LossPrefactors(energy=2.0, forces=3.0, virial=5.0)
    loss, parts = deepmd_loss(pred, target, prefs)
    assert parts.mse_energy_per_atom == pytest.approx(0.04, rel=1e-12)
    assert parts.mse_forces == pytest.approx(0.01, rel=1e-12)
    assert parts.mse_virial_per_atom == pytest.approx(1.0, rel=1e-12)  # frame 0 excluded
    assert float(loss) == pytest.approx(2.0 * 0.04 + 3.0 * 0.01 + 5.0 * 1.0, rel=1e-12)

    no_virial = _target([False, False])
    loss, parts = deepmd_loss(pred, no_virial, prefs)
    assert math.isnan(parts.mse_virial_per_atom)
    assert float(loss) == pytest.approx(2.0 * 0.04 + 3.0 * 0.01, rel=1e-12)
