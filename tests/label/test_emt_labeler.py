"""EMT labeler: same numbers as ASE's EMT, stress only for fully periodic cells."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT

from eelt.label import EMTLabeler, LabelError


@pytest.fixture
def copper() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 1))
    atoms.rattle(stdev=0.05, seed=1)
    atoms.set_cell(atoms.cell * [1.01, 0.99, 1.0], scale_atoms=True)
    return atoms


def test_matches_ase_emt(copper):
    labeled = EMTLabeler()(copper)
    reference = copper.copy()
    reference.calc = EMT()
    assert labeled is not copper and copper.calc is None
    np.testing.assert_array_equal(labeled.positions, copper.positions)
    assert labeled.get_potential_energy() == pytest.approx(
        reference.get_potential_energy(), abs=1e-12
    )
    np.testing.assert_allclose(labeled.get_forces(), reference.get_forces(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(labeled.get_stress(), reference.get_stress(), rtol=0, atol=1e-12)
    assert np.abs(labeled.get_forces()).max() > 0.05
    assert np.abs(labeled.get_stress()).max() > 1e-3


def test_molecule_has_no_stress():
    atoms = molecule("N2")
    labeled = EMTLabeler()(atoms)
    reference = atoms.copy()
    reference.calc = EMT()
    np.testing.assert_allclose(labeled.get_forces(), reference.get_forces(), atol=1e-12)
    assert "stress" not in labeled.calc.results


def test_unknown_element_is_an_error():
    with pytest.raises(LabelError, match="EMT has no parameters for Si"):
        EMTLabeler()(bulk("Si"))
