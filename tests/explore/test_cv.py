"""Collective variables: values against ASE and hand values, autograd gradients against central
finite differences, the dihedral across +-pi, and building CVs from dicts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms

from eelt.explore.cv import (
    PERIOD,
    Angle,
    Coordination,
    Dihedral,
    Distance,
    TorchCV,
    cv_from_spec,
)

NO_CELL = torch.zeros(3, 3, dtype=torch.float64)


def x_of_atom0(positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """A torch CV for the dotted-path tests: the x coordinate of atom 0."""
    return positions[0, 0]


def _smooth_cv(positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    return (positions[1] - positions[0]).pow(2).sum().sqrt() * torch.sin(positions[2, 1])


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """On one torch thread (see tests/conftest.py)."""


@pytest.fixture
def five() -> Atoms:
    """Five atoms in a generic (non-planar, no collinear triple) arrangement, no cell."""
    positions = [
        [0.0, 0.0, 0.0],
        [1.1, 0.3, -0.2],
        [1.6, 1.4, 0.5],
        [2.9, 1.2, 1.3],
        [0.4, 1.9, -0.9],
    ]
    return Atoms("C2OHN", positions=positions)


def _value(cv, positions: np.ndarray) -> float:
    return float(cv(torch.tensor(positions), NO_CELL))


def _autograd(cv, positions: np.ndarray) -> np.ndarray:
    pos = torch.tensor(positions, requires_grad=True)
    (grad,) = torch.autograd.grad(cv(pos, NO_CELL), pos)
    return grad.numpy()


def _finite_differences(cv, positions: np.ndarray, h: float = 1e-5) -> np.ndarray:
    grad = np.zeros_like(positions)
    for index in np.ndindex(positions.shape):
        plus, minus = positions.copy(), positions.copy()
        plus[index] += h
        minus[index] -= h
        grad[index] = (_value(cv, plus) - _value(cv, minus)) / (2 * h)
    return grad


CVS = {
    "distance": Distance(0, 3),
    "angle": Angle(0, 1, 2),
    "dihedral": Dihedral(0, 1, 2, 3),
    "coordination": Coordination([0, 1], [2, 3, 4], r0_A=1.5),
    "coordination_within": Coordination([0, 1, 2, 4], None, r0_A=1.3, nn=8, mm=14),
    "torch": TorchCV(_smooth_cv, "smooth"),
}


@pytest.mark.parametrize("kind", list(CVS))
def test_gradient_matches_finite_differences(kind, five):
    cv = CVS[kind]
    auto = _autograd(cv, five.positions)
    numeric = _finite_differences(cv, five.positions)
    assert np.abs(auto).max() > 1e-3
    np.testing.assert_allclose(auto, numeric, rtol=1e-6, atol=1e-8 * np.abs(numeric).max())


def test_values_match_ase(five):
    pos = five.positions
    assert _value(Distance(0, 3), pos) == pytest.approx(five.get_distance(0, 3), rel=1e-12)
    angle = math.degrees(_value(Angle(0, 1, 2), pos))
    assert angle == pytest.approx(five.get_angle(0, 1, 2), rel=1e-12)
    for atoms in [(0, 1, 2, 3), (3, 2, 1, 0), (4, 0, 1, 2), (2, 1, 0, 4)]:
        phi = _value(Dihedral(*atoms), pos)
        assert -math.pi < phi <= math.pi
        assert math.degrees(phi) % 360 == pytest.approx(five.get_dihedral(*atoms), abs=1e-9)


def _torsion_geometry(phi: float) -> np.ndarray:
    """i-j-k-l with j-k along z and the dihedral set by rotating l by ``phi`` about z."""
    return np.array(
        [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.5], [math.cos(phi), math.sin(phi), 1.5]]
    )


def test_dihedral_is_continuous_across_pi():
    cv = Dihedral(0, 1, 2, 3)
    angles = np.linspace(math.pi - 0.05, math.pi + 0.05, 21)
    values = np.array([_value(cv, _torsion_geometry(a)) for a in angles])
    assert np.all(values > -math.pi) and np.all(values <= math.pi)
    assert values.max() > 3.1 and values.min() < -3.1  # it does wrap
    steps = np.remainder(np.diff(values) + math.pi, PERIOD) - math.pi
    np.testing.assert_allclose(np.abs(steps), 0.005, rtol=1e-8)
    assert np.all(np.sign(steps) == np.sign(steps[0]))
    # the gradient does not jump where the value wraps
    grads = np.array([_autograd(cv, _torsion_geometry(a)) for a in angles])
    jumps = np.abs(np.diff(grads, axis=0)).max()
    assert jumps < 0.01 * np.abs(grads).max()
    wrap = _torsion_geometry(math.pi + 1e-3)
    np.testing.assert_allclose(
        _autograd(cv, wrap), _finite_differences(cv, wrap), rtol=1e-6, atol=1e-10
    )


def test_coordination_hand_values():
    r0 = 1.5
    positions = np.array(
        [
            [0.0, 0.0, 0.0],
            [r0, 0.0, 0.0],  # r = r0: s = nn/mm = 1/2
            [0.0, r0 * 2 ** (1 / 6), 0.0],  # (r/r0)^6 = 2: s = (1-2)/(1-4) = 1/3
            [0.0, 0.0, 2 * r0],  # (r/r0)^6 = 64: s = 63/4095 = 1/65
        ]
    )
    assert _value(Coordination([0], [1, 2, 3], r0), positions) == pytest.approx(
        0.5 + 1 / 3 + 1 / 65, rel=1e-12
    )
    assert _value(Coordination([0, 1], None, r0), positions) == pytest.approx(0.5, rel=1e-12)
    # a pair with both atoms in both groups counts twice; an atom never pairs with itself
    assert _value(Coordination([0, 1], [0, 1], r0), positions) == pytest.approx(1.0, rel=1e-12)
    assert _value(Coordination([0], [1], r0, nn=6, mm=10), positions) == pytest.approx(0.6)
    assert Coordination(range(8), None, r0).name == "coordination_0-7_8"
    assert Coordination([0], [1, 2], r0).name == "coordination_0__1_2"
    with pytest.raises(ValueError, match="at least one pair"):
        Coordination([0], [0], r0)
    # r == r0 exactly: finite, smooth gradient
    cv = Coordination([0], [1], r0)
    auto = _autograd(cv, positions)
    assert np.all(np.isfinite(auto))
    np.testing.assert_allclose(auto, _finite_differences(cv, positions), rtol=1e-6, atol=1e-12)
    # d s / d r at r0 for (6, 12): s = 1 / (1 + x^6), ds/dx = -6 x^5 / (1 + x^6)^2 = -3/2
    assert auto[1, 0] == pytest.approx(-1.5 / r0, rel=1e-9)


def test_cv_from_spec(five):
    pos = five.positions
    dihedral = cv_from_spec({"kind": "dihedral", "atoms": [1, 0, 2, 3]})
    assert isinstance(dihedral, Dihedral) and dihedral.periodic
    assert dihedral.name == "dihedral_1_0_2_3"
    assert _value(dihedral, pos) == pytest.approx(_value(Dihedral(1, 0, 2, 3), pos))
    distance = cv_from_spec({"kind": "distance", "atoms": [0, 1], "name": "d"})
    assert distance.name == "d" and not distance.periodic
    assert cv_from_spec({"kind": "angle", "atoms": [0, 1, 2]}).name == "angle_0_1_2"
    coordination = cv_from_spec(
        {"kind": "coordination", "group_a": [0, 1], "group_b": [2, 3, 4], "r0_A": 1.5}
    )
    assert _value(coordination, pos) == pytest.approx(_value(CVS["coordination"], pos))
    torch_cv = cv_from_spec({"kind": "torch", "function": "tests.explore.test_cv:x_of_atom0"})
    assert torch_cv.name == "x_of_atom0" and not torch_cv.periodic
    assert _value(torch_cv, pos) == pos[0, 0]
    # a config model's defaults for the other kinds do not get in the way
    with_defaults = {"kind": "distance", "atoms": [0, 1], "nn": 6, "mm": 12, "periodic": False}
    assert isinstance(cv_from_spec(with_defaults), Distance)
    periodic = cv_from_spec(
        {"kind": "torch", "function": "tests.explore.test_cv:x_of_atom0", "periodic": True}
    )
    assert periodic.periodic


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"kind": "torsion", "atoms": [0, 1, 2, 3]}, "unknown CV kind 'torsion'"),
        ({"kind": "dihedral", "atoms": [0, 1, 2]}, "needs 'atoms' with 4"),
        ({"kind": "distance", "atoms": [0, 1], "r0": 1.0}, "unknown CV spec keys: r0"),
        ({"kind": "coordination", "group_a": [0]}, "needs 'group_a' and 'r0_A'"),
        ({"kind": "torch", "function": "no_such_package.cvs:f"}, "cannot import 'no_such_package"),
        ({"kind": "torch", "function": "tests.explore.test_cv:nothing"}, "has no 'nothing'"),
        ({"kind": "torch", "function": "tests.explore.test_cv.x_of_atom0"}, "package.module:"),
    ],
)
def test_cv_from_spec_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        cv_from_spec(spec)
