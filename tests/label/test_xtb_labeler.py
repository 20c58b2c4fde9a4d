"""GFN-xTB labels through tblite: against its calculator called directly, forces by finite
differences, stress for periodic cells, failures typed."""

import numpy as np
import pytest
from ase.build import bulk, molecule

from eelt.label import LabelError, XTBLabeler, frame_hash

tblite_ase = pytest.importorskip(
    "tblite.ase", reason="tblite is not installed (pip install tblite)"
)


@pytest.fixture(scope="module")
def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.03, seed=4)
    return atoms


def test_matches_tblite_called_directly(ethanol):
    out = XTBLabeler()(ethanol)
    direct = ethanol.copy()
    direct.calc = tblite_ase.TBLite(method="GFN2-xTB", verbosity=0)
    assert out.get_potential_energy() == pytest.approx(direct.get_potential_energy(), abs=1e-8)
    np.testing.assert_allclose(out.get_forces(), direct.get_forces(), atol=1e-8)
    assert "stress" not in out.calc.results


def test_forces_are_minus_the_energy_gradient(ethanol):
    labeler = XTBLabeler(accuracy=0.01)
    forces = labeler(ethanol).get_forces()
    h = 1e-4
    for atom, axis in ((0, 0), (2, 2), (8, 1)):
        energies = []
        for sign in (1, -1):
            moved = ethanol.copy()
            moved.positions[atom, axis] += sign * h
            energies.append(labeler(moved).get_potential_energy())
        assert forces[atom, axis] == pytest.approx(-(energies[0] - energies[1]) / (2 * h), abs=1e-4)


def test_periodic_cell_with_gfn1_has_stress():
    si = bulk("Si", "diamond", a=5.43)
    si.rattle(0.02, seed=1)
    out = XTBLabeler(method="GFN1-xTB")(si)
    direct = si.copy()
    direct.calc = tblite_ase.TBLite(method="GFN1-xTB", verbosity=0)
    np.testing.assert_allclose(out.get_stress(), direct.get_stress(), atol=1e-9)
    assert np.abs(out.get_stress()[:3]).max() > 1e-3


def test_unconverged_scc_is_a_typed_failure(ethanol):
    with pytest.raises(LabelError, match="SCF not converged") as info:
        XTBLabeler(max_iterations=1)(ethanol)
    assert info.value.kind == "scf_not_converged"


def test_settings_are_in_the_hash(ethanol):
    a = frame_hash(ethanol, XTBLabeler().settings())
    b = frame_hash(ethanol, XTBLabeler(method="GFN1-xTB").settings())
    assert a != b
    with pytest.raises(ValueError, match="method must be one of"):
        XTBLabeler(method="GFN3")
