import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.emt import EMT

from eelt.explore import perturbed_copies


def test_displacement_sigma_without_strain():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    copies = perturbed_copies(atoms, 20, 0.05, 0.0, np.random.default_rng(0))
    assert len(copies) == 20
    disp = np.array([c.positions - atoms.positions for c in copies])
    assert disp.std() == pytest.approx(0.05, rel=0.08)  # 1920 samples: ~2% std error
    assert abs(disp.mean()) < 0.01
    for c in copies:
        np.testing.assert_array_equal(c.cell.array, atoms.cell.array)


def test_strain_symmetric_bounded_and_scales_positions():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.02, seed=3)
    atoms.calc = EMT()
    atoms.info["energy"] = -1.0
    before = atoms.positions.copy()
    copies = perturbed_copies(atoms, 30, 0.0, 0.03, np.random.default_rng(1))
    strains = []
    for c in copies:
        strain = np.linalg.solve(atoms.cell.array, c.cell.array) - np.eye(3)
        np.testing.assert_allclose(strain, strain.T, atol=1e-12)
        strains.append(strain)
        # positions follow the cell: fractional coordinates unchanged
        np.testing.assert_allclose(
            c.get_scaled_positions(), atoms.get_scaled_positions(), atol=1e-12
        )
        assert c.calc is None and "energy" not in c.info
    strains = np.array(strains)
    assert np.abs(strains).max() <= 0.03 + 1e-12
    assert np.abs(strains).max() > 0.02  # actually strained, over most of the range
    np.testing.assert_array_equal(atoms.positions, before)
    assert isinstance(atoms.calc, EMT) and atoms.info["energy"] == -1.0


def test_molecule_gets_no_strain_and_is_reproducible():
    mol = molecule("CH4")
    a = perturbed_copies(mol, 3, 0.1, 0.05, np.random.default_rng(5))
    b = perturbed_copies(mol, 3, 0.1, 0.05, np.random.default_rng(5))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.positions, y.positions)
        assert not x.pbc.any() and x.cell.rank == 0
    assert np.abs(a[0].positions - a[1].positions).max() > 1e-3


@pytest.mark.parametrize(
    "n, sigma, strain, match",
    [(-1, 0.1, 0.0, "n must"), (2, -0.1, 0.0, "position_sigma_A"), (2, 0.1, 1.0, "cell_strain")],
)
def test_bad_arguments_named(n, sigma, strain, match):
    with pytest.raises(ValueError, match=match):
        perturbed_copies(molecule("CH4"), n, sigma, strain, np.random.default_rng(0))
