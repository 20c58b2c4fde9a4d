import numpy as np
import pytest

from eelt.model.deviation import force_deviation, relative_max_devi_f


def test_relative_max_devi_f_by_hand():
    forces = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0], [1.0, 2.0, 2.0]])  # |F| = 5, 0, 3 eV/A
    forces_std = np.array([0.5, 0.02, 0.6])
    eps = 0.1
    # 0.5 / 5.1 = 0.0980, 0.02 / 0.1 = 0.2, 0.6 / 3.1 = 0.1935
    assert relative_max_devi_f(forces_std, forces, eps) == pytest.approx(0.2, rel=1e-12)
    # a larger eps tames the zero-force atom: then the third atom dominates
    assert relative_max_devi_f(forces_std, forces, 1.0) == pytest.approx(0.6 / 4.0, rel=1e-12)


def test_relative_max_devi_f_from_an_ensemble():
    rng = np.random.default_rng(0)
    members = rng.normal(0.0, 1.0, (4, 7, 3)) + rng.normal(0.0, 3.0, (1, 7, 3))
    std = force_deviation(members)
    mean = members.mean(0)
    expected = max(std[i] / (np.sqrt((mean[i] ** 2).sum()) + 0.05) for i in range(7))
    assert relative_max_devi_f(std, mean, 0.05) == pytest.approx(expected, rel=1e-12)


def test_relative_max_devi_f_no_atoms():
    assert relative_max_devi_f(np.zeros(0), np.zeros((0, 3)), 0.1) == 0.0


@pytest.mark.parametrize("eps", [0.0, -0.1, np.nan, np.inf])
def test_relative_max_devi_f_rejects_bad_eps(eps):
    with pytest.raises(ValueError, match="eps_eV_per_A"):
        relative_max_devi_f(np.ones(2), np.ones((2, 3)), eps)


def test_relative_max_devi_f_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        relative_max_devi_f(np.ones(2), np.ones((3, 3)), 0.1)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        relative_max_devi_f(np.ones((2, 1)), np.ones((2, 3)), 0.1)
