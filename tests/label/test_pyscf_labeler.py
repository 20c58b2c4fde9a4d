"""PySCF labeler: a direct PySCF call, a recorded value, finite differences, errors."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.units import Bohr, Hartree
from pyscf import dft, gto, lib

from eelt.label import LabelError, PySCFLabeler, frame_hash
from eelt.label.pyscf_labeler import gpu_available

# PBE/def2-SVP total energy of WATER (Hartree), obtained with PySCF 2.14 directly:
# gto.M(atom=WATER, unit="Angstrom", basis="def2-svp", verbose=0); dft.RKS(mol), xc="pbe",
# grids.level=3, conv_tol=1e-9; mf.kernel() -> -76.27200096169335
WATER_PBE_DEF2SVP_HA = -76.27200096169335


@pytest.fixture(scope="module", autouse=True)
def one_openmp_thread():
    """Tiny molecules gain nothing from threads, and busy cores make OpenMP spin (10x slower)."""
    previous = lib.num_threads()
    lib.num_threads(1)
    yield
    lib.num_threads(previous)


@pytest.fixture(scope="module")
def water() -> Atoms:
    return Atoms(
        "OH2", positions=[(0.0, 0.0, 0.1173), (0.0, 0.7572, -0.4692), (0.0, -0.7572, -0.4692)]
    )


@pytest.fixture
def distorted_water(water) -> Atoms:
    atoms = water.copy()
    atoms.positions += [(0.02, -0.03, 0.01), (0.05, 0.0, 0.03), (0.0, 0.04, -0.06)]
    return atoms


def direct_pyscf(atoms: Atoms, xc: str, basis: str, spin: int = 0, grid_level: int = 3):
    """Energy (eV) and forces (eV/Angstrom) straight from PySCF, as a user would write it."""
    mol = gto.M(
        atom=[
            (s, tuple(p))
            for s, p in zip(atoms.get_chemical_symbols(), atoms.positions, strict=True)
        ],
        unit="Angstrom",
        basis=basis,
        spin=spin,
        verbose=0,
    )
    mf = dft.RKS(mol) if spin == 0 else dft.UKS(mol)
    mf.xc = xc
    mf.grids.level = grid_level
    mf.conv_tol = 1e-9
    energy = mf.kernel()
    assert mf.converged
    grad = mf.nuc_grad_method().kernel()
    return energy * Hartree, -grad * Hartree / Bohr


@pytest.fixture(scope="module")
def labeled_water(water) -> Atoms:
    return PySCFLabeler(device="cpu")(water)


def test_matches_direct_pyscf(water, labeled_water):
    energy, forces = direct_pyscf(water, "pbe", "def2-svp")
    assert labeled_water is not water and water.calc is None
    np.testing.assert_array_equal(labeled_water.positions, water.positions)
    assert labeled_water.get_chemical_symbols() == ["O", "H", "H"]
    assert abs(labeled_water.get_potential_energy() - energy) < 1e-8
    np.testing.assert_allclose(labeled_water.get_forces(), forces, rtol=0, atol=1e-6)
    # O is pulled towards the H atoms (+z is away from them here), and forces sum to ~zero
    assert np.abs(labeled_water.get_forces()).max() > 0.1
    np.testing.assert_allclose(labeled_water.get_forces().sum(axis=0), 0.0, atol=1e-3)


def test_known_value(labeled_water):
    assert abs(labeled_water.get_potential_energy() / Hartree - WATER_PBE_DEF2SVP_HA) < 1e-5


def directional_derivative_check(labeler: PySCFLabeler, atoms: Atoms, n_directions: int) -> None:
    """-dE/ds along random unit displacements (central differences) equals forces . direction."""
    step_A = 5e-4
    analytic = labeler(atoms).get_forces()
    assert np.abs(analytic).max() > 0.1
    rng = np.random.default_rng(7)
    for _ in range(n_directions):
        direction = rng.normal(size=(len(atoms), 3))
        direction /= np.linalg.norm(direction)
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions += step_A * direction
        minus.positions -= step_A * direction
        numeric = -(labeler(plus).get_potential_energy() - labeler(minus).get_potential_energy())
        numeric /= 2 * step_A
        assert abs(numeric - np.sum(analytic * direction)) < 1e-4


def test_forces_are_minus_energy_gradient_rks(distorted_water):
    # Hartree-Fock: no DFT grid, so the analytic gradient is the exact derivative of the energy
    labeler = PySCFLabeler(xc="hf", basis="sto-3g", conv_tol=1e-12, device="cpu")
    directional_derivative_check(labeler, distorted_water, n_directions=3)


def test_forces_are_minus_energy_gradient_uks():
    oh = Atoms("OH", positions=[(0.0, 0.0, 0.0), (0.1, 0.0, 1.05)])
    labeler = PySCFLabeler(xc="hf", basis="sto-3g", spin=1, conv_tol=1e-12, device="cpu")
    directional_derivative_check(labeler, oh, n_directions=2)


def test_density_fitting_is_close_to_exact(distorted_water):
    exact = PySCFLabeler(xc="hf", basis="sto-3g", device="cpu")(distorted_water)
    fitted = PySCFLabeler(xc="hf", basis="sto-3g", density_fit=True, device="cpu")(distorted_water)
    difference_eV = abs(fitted.get_potential_energy() - exact.get_potential_energy())
    assert 0 < difference_eV < 5e-2
    np.testing.assert_allclose(fitted.get_forces(), exact.get_forces(), atol=5e-2)


def assert_one_line_label_error(labeler: PySCFLabeler, atoms: Atoms, *fragments: str) -> None:
    with pytest.raises(LabelError) as info:
        labeler(atoms)
    message = str(info.value)
    assert "\n" not in message and message
    for fragment in fragments:
        assert fragment in message, message


def test_unconverged_scf_is_an_error(distorted_water):
    labeler = PySCFLabeler(basis="sto-3g", max_cycle=1, device="cpu")
    assert_one_line_label_error(labeler, distorted_water, "not converged", "max_cycle=1", "RKS pbe")


def test_periodic_frame_is_an_error(water):
    atoms = water.copy()
    atoms.cell = [8.0, 8.0, 8.0]
    atoms.pbc = [True, True, False]
    assert_one_line_label_error(PySCFLabeler(device="cpu"), atoms, "molecules only", "periodic")


def test_odd_electron_count_with_spin_zero_is_an_error():
    oh = Atoms("OH", positions=[(0.0, 0.0, 0.0), (0.0, 0.0, 0.97)])
    assert_one_line_label_error(PySCFLabeler(device="cpu"), oh, "Electron number 9", "spin 0")
    cation = PySCFLabeler(xc="hf", basis="sto-3g", charge=1, device="cpu")(oh)  # 8 electrons: fine
    assert np.isfinite(cation.get_potential_energy())


@pytest.mark.filterwarnings("ignore:Basis may be available")
def test_element_without_basis_is_an_error():
    atoms = Atoms("UH", positions=[(0.0, 0.0, 0.0), (0.0, 0.0, 2.0)])
    labeler = PySCFLabeler(basis="sto-3g", spin=1, device="cpu")
    assert_one_line_label_error(labeler, atoms, "U", "sto-3g")


def test_unknown_functional_is_an_error(distorted_water):
    labeler = PySCFLabeler(xc="not-a-functional", basis="sto-3g", device="cpu")
    assert_one_line_label_error(labeler, distorted_water, "RKS not-a-functional/sto-3g failed")


def test_gpu_device(distorted_water):
    labeler = PySCFLabeler(basis="sto-3g", device="gpu")
    if gpu_available():
        cpu = PySCFLabeler(basis="sto-3g", device="cpu")(distorted_water)
        gpu = labeler(distorted_water)
        assert abs(gpu.get_potential_energy() - cpu.get_potential_energy()) < 1e-5
    else:
        assert_one_line_label_error(labeler, distorted_water, "gpu4pyscf")


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="device"):
        PySCFLabeler(device="tpu")
    with pytest.raises(ValueError, match="spin"):
        PySCFLabeler(spin=-1)


def test_settings_hash_physics_not_device(water):
    base = frame_hash(water, PySCFLabeler().settings())
    assert frame_hash(water, PySCFLabeler(device="cpu").settings()) == base
    for changed in (
        PySCFLabeler(basis="sto-3g"),
        PySCFLabeler(xc="b3lyp"),
        PySCFLabeler(charge=1),
        PySCFLabeler(spin=2),
        PySCFLabeler(conv_tol=1e-8),
        PySCFLabeler(grid_level=4),
        PySCFLabeler(density_fit=True),
    ):
        assert frame_hash(water, changed.settings()) != base, changed


@pytest.fixture(scope="module")
def stretched_water() -> Atoms:
    """One O-H bond at 2.2 A: RKS PBE/STO-3G with DIIS does not converge in 100 cycles
    (measured), the second-order solver does."""
    return Atoms("OH2", positions=[(0.0, 0.0, 0.0), (2.2, 0.0, 0.0), (-0.3, 0.9, 0.0)])


def test_scf_fallback_chain_converges_a_stretched_bond(stretched_water):
    import json

    out = PySCFLabeler(basis="sto-3g", max_cycle=20, device="cpu")(stretched_water)
    attempts = json.loads(out.info["scf_attempts"])
    assert [(a["attempt"], a["converged"]) for a in attempts] == [
        ("default", False),
        ("damped, level shift", False),
        ("second order (newton)", True),
    ]
    assert attempts[1]["max_cycle"] == 40 and all(a["wall_s"] > 0 for a in attempts)
    # the label is the converged SCF's: the same energy as PySCF's own second-order solver
    mol = gto.M(
        atom=[(s, tuple(p)) for s, p in zip("OHH", stretched_water.positions, strict=True)],
        unit="Angstrom", basis="sto-3g", verbose=0,
    )  # fmt: skip
    mf = dft.RKS(mol)
    mf.xc = "pbe"
    mf.conv_tol = 1e-9
    mf = mf.newton()
    reference = mf.kernel()
    assert mf.converged
    assert out.get_potential_energy() == pytest.approx(reference * Hartree, abs=1e-5)
    assert attempts[-1]["energy_Ha"] == pytest.approx(reference, abs=1e-7)


def test_hopeless_scf_fails_with_every_attempt_listed(stretched_water):
    with pytest.raises(LabelError) as info:
        PySCFLabeler(basis="sto-3g", max_cycle=1, device="cpu")(stretched_water)
    err = info.value
    assert err.kind == "scf_not_converged"
    assert [a["attempt"] for a in err.attempts] == [
        "default", "damped, level shift", "second order (newton)", "atom guess, second order",
    ]  # fmt: skip
    assert not any(a["converged"] for a in err.attempts)
    assert "after 4 attempts" in str(err) and "\n" not in str(err)
    # the kind and attempts survive the trip from a worker process
    import pickle

    again = pickle.loads(pickle.dumps(err))
    assert again.kind == err.kind and again.attempts == err.attempts


def test_without_fallbacks_one_attempt(stretched_water):
    with pytest.raises(LabelError, match="after 1 attempts") as info:
        PySCFLabeler(basis="sto-3g", max_cycle=20, device="cpu", scf_fallbacks=False)(
            stretched_water
        )
    assert len(info.value.attempts) == 1


def test_threads_per_job_are_used_and_measured(distorted_water):
    one = PySCFLabeler(basis="sto-3g", device="cpu", threads=1)(distorted_water)
    two = PySCFLabeler(basis="sto-3g", device="cpu", threads=2)(distorted_water)
    assert one.info["label_threads"] == 1 and two.info["label_threads"] == 2
    assert lib.num_threads() == 1  # the process's own setting is back
    assert two.get_potential_energy() == pytest.approx(one.get_potential_energy(), abs=1e-8)
    np.testing.assert_allclose(two.get_forces(), one.get_forces(), atol=1e-6)
    # threads, memory and timeout are where a job runs, not what it computes
    assert PySCFLabeler(threads=8, max_memory_MB=100.0, timeout_s=5.0).settings() == (
        PySCFLabeler().settings()
    )


def test_a_job_past_its_timeout_is_a_timeout_failure(stretched_water):
    with pytest.raises(LabelError, match="still running after label.timeout_s=0.01 s") as info:
        PySCFLabeler(basis="sto-3g", device="cpu", timeout_s=0.01)(stretched_water)
    assert info.value.kind == "timeout" and len(info.value.attempts) == 1


@pytest.mark.parametrize("version", ["d3bj", "d4"])
def test_dispersion_adds_the_packages_own_correction(distorted_water, version):
    pytest.importorskip("pyscf.dispersion", reason="pyscf-dispersion is not installed")
    from pyscf.dispersion import dftd3, dftd4

    plain = PySCFLabeler(basis="sto-3g", device="cpu")(distorted_water)
    labeler = PySCFLabeler(basis="sto-3g", device="cpu", dispersion=version)
    with_disp = labeler(distorted_water)
    mol = gto.M(
        atom=[(s, tuple(p)) for s, p in zip("OHH", distorted_water.positions, strict=True)],
        unit="Angstrom", basis="sto-3g", verbose=0,
    )  # fmt: skip
    engine = (
        dftd3.DFTD3Dispersion(mol, xc="pbe", version=version)
        if version.startswith("d3")
        else dftd4.DFTD4Dispersion(mol, xc="pbe")
    )
    direct = engine.get_dispersion(grad=True)
    delta_e = with_disp.get_potential_energy() - plain.get_potential_energy()
    assert delta_e == pytest.approx(float(direct["energy"]) * Hartree, rel=1e-6, abs=1e-9)
    assert abs(delta_e) > 1e-4  # a real correction, not zero
    np.testing.assert_allclose(
        with_disp.get_forces() - plain.get_forces(),
        -np.asarray(direct["gradient"]) * Hartree / Bohr,
        atol=1e-6,
    )
    # part of the label's content hash; named in the method
    assert frame_hash(distorted_water, labeler.settings()) != frame_hash(
        distorted_water, PySCFLabeler(basis="sto-3g").settings()
    )
    assert labeler.method == f"RKS pbe-{version}/sto-3g"


def test_dispersion_forces_are_minus_the_energy_gradient(distorted_water):
    pytest.importorskip("pyscf.dispersion", reason="pyscf-dispersion is not installed")
    labeler = PySCFLabeler(basis="sto-3g", device="cpu", dispersion="d3bj", conv_tol=1e-11)
    forces = labeler(distorted_water).get_forces()
    h = 1e-3
    for atom, axis in ((0, 2), (1, 1)):
        shifted = []
        for sign in (1, -1):
            moved = distorted_water.copy()
            moved.positions[atom, axis] += sign * h
            shifted.append(labeler(moved).get_potential_energy())
        numeric = -(shifted[0] - shifted[1]) / (2 * h)
        assert forces[atom, axis] == pytest.approx(numeric, abs=2e-4)
