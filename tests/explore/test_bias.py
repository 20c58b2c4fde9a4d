"""Biases for exploration: metadynamics (forces, well-tempered heights, HILLS files, free energy of
an analytic double well), the uncertainty bias (forces, more deviation sampled) and the biased
calculator (results, request_deviation, hills during MD)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from ase.cluster import Icosahedron
from ase.md.langevin import Langevin

from eelt import keys
from eelt.explore.bias import BiasedCalculator, Metadynamics, UncertaintyBias
from eelt.explore.cv import Dihedral, Distance, TorchCV
from eelt.model import DeepPot, Ensemble, EnsembleCalculator

from .conftest import CommitteeCalculator

T_K = 300.0
KT = units.kB * T_K  # eV


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """On one torch thread (see tests/conftest.py)."""


@pytest.fixture
def chain() -> Atoms:
    """Four atoms, dihedral 0-1-2-3 near +pi (about 3.0 rad), no cell."""
    phi = 3.0
    positions = [
        [1.0, 0.1, -0.2],
        [0.0, 0.0, 0.0],
        [0.1, -0.1, 1.5],
        [math.cos(phi), math.sin(phi), 1.6],
    ]
    return Atoms("CCCC", positions=positions)


def _metad(biasfactor: float | None = 5.0, pace_steps: int = 1) -> Metadynamics:
    cvs = [Distance(0, 1), Dihedral(0, 1, 2, 3)]
    return Metadynamics(cvs, 0.05, [0.2, 0.3], pace_steps, biasfactor, T_K)


def _fill(metad: Metadynamics, around: np.ndarray) -> None:
    """Hills near ``around`` (distance, dihedral), some across the dihedral's +-pi wrap."""
    offsets = [(0.1, 0.2), (-0.15, 0.35), (0.05, -0.25), (0.2, 0.5), (-0.1, -0.1), (0.0, 0.0)]
    for t, (dd, dphi) in enumerate(offsets):
        phi = np.remainder(around[1] + dphi + math.pi, 2 * math.pi) - math.pi
        metad.deposit([around[0] + dd, phi], time_fs=10.0 * t)


def _numeric_forces(energy, positions: np.ndarray, h: float = 1e-5) -> np.ndarray:
    forces = np.zeros_like(positions)
    for index in np.ndindex(positions.shape):
        plus, minus = positions.copy(), positions.copy()
        plus[index] += h
        minus[index] -= h
        forces[index] = -(energy(plus) - energy(minus)) / (2 * h)
    return forces


def test_metadynamics_forces_are_minus_the_bias_gradient(chain):
    metad = _metad()
    cell = chain.cell.array
    _, forces0, s = metad.bias(chain.positions, cell)
    assert np.all(forces0 == 0) and s[1] == pytest.approx(
        chain.get_dihedral(0, 1, 2, 3) * math.pi / 180
    )
    _fill(metad, s)
    assert metad.n_hills == 6 and np.any(metad.hills[:, 2] < 0)  # hills on both sides of pi
    energy, forces, _ = metad.bias(chain.positions, cell)
    assert energy > 0.05
    numeric = _numeric_forces(lambda p: metad.bias(p, cell)[0], chain.positions)
    assert np.abs(forces).max() > 1e-2
    np.testing.assert_allclose(forces, numeric, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-12)  # CVs are internal coordinates


def test_periodic_cv_hills_wrap():
    a, b = _metad(None), _metad(None)
    a.deposit([1.0, 3.0], 0.0)
    b.deposit([1.0, 3.0 - 2 * math.pi], 0.0)
    for s in ([1.0, -3.1], [1.1, 3.1], [0.9, 0.0]):
        assert a.bias_at(s) == pytest.approx(b.bias_at(s), rel=1e-12, abs=1e-300)
    # the wrapped distance from 3.0 to -3.1 is 0.183, not 6.1
    expected = 0.05 * math.exp(-0.5 * ((2 * math.pi - 6.1) / 0.3) ** 2)
    assert a.bias_at([1.0, -3.1]) == pytest.approx(expected, rel=1e-12)


def test_well_tempered_hill_heights():
    metad = _metad(biasfactor=5.0)
    metad.deposit([1.0, 0.5], 0.0)
    metad.deposit([1.0, 0.5], 10.0)
    h0 = 0.05
    expected = h0 * math.exp(-h0 / (units.kB * (5.0 - 1.0) * T_K))
    np.testing.assert_allclose(metad.hills[:, -1], [h0, expected], rtol=1e-12)
    np.testing.assert_allclose(metad.hills[:, 0], [0.0, 10.0])
    np.testing.assert_allclose(metad.hills[:, 1:3], [[1.0, 0.5], [1.0, 0.5]])
    np.testing.assert_allclose(metad.hills[:, 3:5], [[0.2, 0.3], [0.2, 0.3]])
    plain = _metad(biasfactor=None)
    plain.deposit([1.0, 0.5], 0.0)
    plain.deposit([1.0, 0.5], 10.0)
    np.testing.assert_allclose(plain.hills[:, -1], [h0, h0])
    assert not _metad(biasfactor=1).well_tempered


def test_many_hills_match_a_direct_sum():
    cv = TorchCV(lambda p, c: p[0, 0], "x")
    metad = Metadynamics([cv], 0.01, [0.1], 1, biasfactor=None)
    rng = np.random.default_rng(0)
    centers = rng.normal(0.0, 0.5, 2500)  # beyond the first storage chunk
    for t, c in enumerate(centers):
        metad.deposit([c], float(t))
    assert metad.n_hills == 2500 and metad.hills.shape == (2500, 4)
    grid = np.linspace(-1.0, 1.0, 7)
    direct = 0.01 * np.exp(-0.5 * ((grid[:, None] - centers[None, :]) / 0.1) ** 2).sum(1)
    np.testing.assert_allclose(metad.bias_on_grid([grid]), direct, rtol=1e-12)
    energy, forces, s = metad.bias(np.array([[0.3, 0.0, 0.0]]), np.zeros((3, 3)))
    slope = (0.01 * np.exp(-0.5 * ((0.3 - centers) / 0.1) ** 2) * -(0.3 - centers) / 0.01).sum()
    assert forces[0, 0] == pytest.approx(-slope, rel=1e-10) and s[0] == 0.3


def test_free_energy_on_grids():
    metad = _metad(biasfactor=4.0)
    for t, s in enumerate([[1.0, 0.2], [1.1, 0.4], [0.9, -2.9], [1.3, 3.0]]):
        metad.deposit(s, float(t))
    d_grid, phi_grid = np.linspace(0.5, 1.8, 27), np.linspace(-math.pi, math.pi, 41)
    bias = metad.bias_on_grid([d_grid, phi_grid])
    assert bias.shape == (27, 41)
    assert bias[10, 20] == pytest.approx(metad.bias_at([d_grid[10], phi_grid[20]]), rel=1e-12)
    free = metad.free_energy([d_grid, phi_grid])
    expected = -(4.0 / 3.0) * bias
    np.testing.assert_allclose(free, expected - expected.min(), atol=1e-14)
    assert free.min() == 0.0
    plain = _metad(biasfactor=None)
    plain.set_hills(metad.hills)
    one_d = plain.bias_on_grid([d_grid, np.array([0.2])])[:, 0]
    np.testing.assert_allclose(
        plain.free_energy([d_grid, np.array([0.2])])[:, 0], one_d.max() - one_d
    )
    with pytest.raises(ValueError, match="one grid per CV"):
        metad.bias_on_grid([d_grid])


def test_hills_file_round_trip(tmp_path, chain):
    metad = _metad(biasfactor=5.0)
    _fill(metad, np.array([1.0, 3.0]))
    path = tmp_path / "HILLS"
    metad.write_hills(path)
    lines = path.read_text().splitlines()
    assert lines[0] == (
        "#! FIELDS time distance_0_1 dihedral_0_1_2_3 sigma_distance_0_1 sigma_dihedral_0_1_2_3"
        " height biasf"
    )
    assert "#! SET min_dihedral_0_1_2_3 -pi" in lines
    rows = np.array([line.split() for line in lines if not line.startswith("#")], dtype=float)
    # PLUMED's convention: well-tempered heights are written times gamma / (gamma - 1)
    np.testing.assert_allclose(rows[:, -2], metad.hills[:, -1] * 5.0 / 4.0, rtol=1e-11)
    np.testing.assert_allclose(rows[:, -1], 5.0)

    restored = _metad(biasfactor=5.0)
    restored.read_hills(path)
    np.testing.assert_allclose(restored.hills, metad.hills, rtol=1e-11)
    e1, f1, _ = metad.bias(chain.positions, chain.cell.array)
    e2, f2, _ = restored.bias(chain.positions, chain.cell.array)
    assert e2 == pytest.approx(e1, rel=1e-10)
    np.testing.assert_allclose(f2, f1, rtol=1e-9, atol=1e-14)
    with pytest.raises(ValueError, match="biasf"):
        _metad(biasfactor=10.0).read_hills(path)
    other = Metadynamics([Distance(0, 2), Dihedral(0, 1, 2, 3)], 0.05, [0.2, 0.3], 1, 5.0)
    with pytest.raises(ValueError, match="do not match"):
        other.read_hills(path)


# ---- an analytic 1-D double well: one H atom, V(x) = a (x^2 - b^2)^2, barrier a b^4 ----

BARRIER_KT = 12.0
WELL_A = 1.0


class DoubleWellX(Calculator):
    """V = a (x^2 - b^2)^2 on atom 0's x coordinate (eV, Angstrom); y and z are free."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, barrier_eV: float, b_A: float, **kwargs):
        super().__init__(**kwargs)
        self.a, self.b = barrier_eV / b_A**4, b_A

    def potential(self, x):
        return self.a * (x**2 - self.b**2) ** 2

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        x = self.atoms.positions[0, 0]
        forces = np.zeros((1, 3))
        forces[0, 0] = -4.0 * self.a * x * (x**2 - self.b**2)
        energy = self.potential(x)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}


def _double_well_md(calc: Calculator, n_steps: int, seed: int) -> np.ndarray:
    """x (Angstrom) after every step of Langevin MD from the right well; calls after_step."""
    atoms = Atoms("H", positions=[[WELL_A, 0.0, 0.0]])
    atoms.calc = calc
    dyn = _langevin(atoms, timestep_fs=4.0, friction_per_fs=0.05, seed=seed)
    if isinstance(calc, BiasedCalculator):
        dyn.attach(lambda: calc.after_step(dyn.get_time() / units.fs), interval=1)
    xs = []
    dyn.attach(lambda: xs.append(atoms.positions[0, 0]), interval=1)
    dyn.run(n_steps)
    return np.array(xs)


def _crossings(xs: np.ndarray) -> int:
    """Transitions between the wells (|x| > b/2 on either side)."""
    sides = np.sign(xs[np.abs(xs) > 0.5 * WELL_A])
    return int((np.diff(sides) != 0).sum())


def _barrier(grid: np.ndarray, free: np.ndarray) -> float:
    """Top of F near x = 0 above the mean of the two wells' minima (eV)."""
    top = free[np.abs(grid) < 0.5 * WELL_A].max()
    return top - 0.5 * (free[grid < -0.5 * WELL_A].min() + free[grid > 0.5 * WELL_A].min())


def test_metadynamics_crosses_a_double_well_and_recovers_its_barrier():
    n_steps, gamma = 6000, 4.0
    plain = _double_well_md(DoubleWellX(BARRIER_KT * KT, WELL_A), n_steps, seed=0)
    assert _crossings(plain) == 0 and plain.min() > 0.0  # 12 kT: plain MD stays in its well

    x_cv = TorchCV(lambda positions, cell: positions[0, 0], "x")
    metad = Metadynamics([x_cv], KT, [0.12], pace_steps=5, biasfactor=gamma, temperature_K=T_K)
    calc = BiasedCalculator(DoubleWellX(BARRIER_KT * KT, WELL_A), [metad])
    walked = _double_well_md(calc, n_steps, seed=0)
    assert walked.min() < -WELL_A and walked.max() > WELL_A
    assert _crossings(walked) >= 4
    assert metad.n_hills == (n_steps + 1) // 5  # after_step also runs at step 0

    grid = np.linspace(-1.8, 1.8, 361)
    free = metad.free_energy([grid])
    exact = calc.base.potential(grid)
    # within 15%: forgetting gamma/(gamma - 1) = 4/3 would be 25% low, a sign error far off
    assert _barrier(grid, free) == pytest.approx(_barrier(grid, exact - exact.min()), rel=0.15)
    wells = (
        grid[np.argmin(np.where(grid < 0, free, np.inf))],
        grid[np.argmin(np.where(grid > 0, free, np.inf))],
    )
    np.testing.assert_allclose(wells, [-WELL_A, WELL_A], atol=0.2)


# ---- the uncertainty bias ----


def _sigma_committee() -> CommitteeCalculator:
    """EMT plus LJ terms of different sigma (2.1, 2.3, 2.5 A): the members disagree more, in
    energy and in forces, as Cu-Cu contacts shorten."""
    return CommitteeCalculator(
        EMT(),
        [
            LennardJones(sigma=s, epsilon=0.005, rc=5.0, ro=4.0, smooth=True)
            for s in (2.1, 2.3, 2.5)
        ],
    )


def _member_energies(calc: Calculator, atoms: Atoms, positions: np.ndarray) -> np.ndarray:
    work = atoms.copy()
    work.positions = positions
    work.calc = calc
    work.get_potential_energy()
    return work.calc.results["member_energies"]


@pytest.mark.parametrize("make", [_sigma_committee, None], ids=["lj_sigmas", "lj_epsilons"])
def test_uncertainty_bias_forces_are_minus_its_gradient(make, cu_small, committee):
    calc = make() if make else committee
    strength = 3.0
    bias = UncertaintyBias(strength)
    cu_small.calc = calc
    cu_small.get_forces()
    energy, forces = bias.bias_from_members(
        calc.results["member_energies"], calc.results["member_forces"]
    )
    sigma = calc.results["member_energies"].std()
    assert sigma > 1e-3 and energy == pytest.approx(-strength * sigma, rel=1e-12)

    def potential(positions):
        return -strength * _member_energies(calc, cu_small, positions).std()

    numeric = _numeric_forces(potential, cu_small.positions, h=1e-5)
    assert np.abs(forces).max() > 1e-3
    np.testing.assert_allclose(forces, numeric, rtol=1e-5, atol=1e-8)


def test_uncertainty_bias_without_spread_is_zero():
    bias = UncertaintyBias(2.0)
    forces = np.random.default_rng(0).normal(size=(4, 3))
    energy, bias_forces = bias.bias_from_members(np.full(3, -1.5), np.stack([forces] * 3))
    assert energy == 0.0 and np.all(bias_forces == 0.0)
    energy, bias_forces = bias.bias_from_members(
        np.array([1.0, 1.0 + 1e-14, 1.0]), np.stack([forces, -forces, forces])
    )
    assert np.all(np.isfinite(bias_forces)) and np.all(bias_forces == 0.0)


def _mean_max_devi_f(strength: float, seed: int, n_steps: int = 200) -> float:
    atoms = Icosahedron("Cu", 2)  # 13 atoms
    atoms.rattle(0.02, seed=seed)
    base = _sigma_committee()
    calc = BiasedCalculator(base, [UncertaintyBias(strength)]) if strength else base
    atoms.calc = calc
    dyn = _langevin(atoms, timestep_fs=2.0, seed=seed)
    devi = []
    dyn.attach(lambda: devi.append(calc.results[keys.MAX_DEVI_F]), interval=5)
    dyn.run(n_steps)
    return float(np.mean(devi))


@pytest.mark.parametrize("seed", [0, 1])
def test_uncertainty_bias_samples_higher_deviation(seed):
    plain = _mean_max_devi_f(0.0, seed)
    biased = _mean_max_devi_f(10.0, seed)
    assert plain > 0.05
    assert biased > 1.5 * plain  # about 2x in practice


# ---- the biased calculator ----


class FirstOnlyCommittee(CommitteeCalculator):
    """Like EnsembleCalculator(forces_from="first"): member 0 drives; the deviation and the
    member results only in a calculation after request_deviation()."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.requested = False
        self.n_requests = 0
        self.n_calculations = 0
        self.n_full = 0

    def request_deviation(self):
        self.requested = True
        self.n_requests += 1

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.n_calculations += 1
        full, self.requested = self.requested, False
        self.n_full += full
        energies, forces = self.results["member_energies"], self.results["member_forces"]
        if not full:
            self.results = {}
        self.results |= {"energy": energies[0], "free_energy": energies[0], "forces": forces[0]}


def _langevin(
    atoms: Atoms, timestep_fs: float = 1.0, friction_per_fs: float = 0.02, seed: int = 0
) -> Langevin:
    """Langevin at T_K, seeded."""
    return Langevin(
        atoms,
        timestep=timestep_fs * units.fs,
        temperature_K=T_K,
        friction=friction_per_fs / units.fs,
        fixcm=False,
        rng=np.random.default_rng(seed),
    )


def _first_only() -> FirstOnlyCommittee:
    lj = [LennardJones(sigma=2.3, epsilon=e, rc=5.0, ro=4.0, smooth=True) for e in (0.005, -0.005)]
    return FirstOnlyCommittee(EMT(), [None, *lj])


def test_biased_calculator_results(cu_small, committee):
    metad = Metadynamics([Distance(0, 1), Distance(2, 3)], 0.1, [0.3, 0.3], 1)
    calc = BiasedCalculator(committee, [metad, UncertaintyBias(2.0)])
    assert calc.cv_names == ["distance_0_1", "distance_2_3"]
    assert getattr(calc, "request_deviation", None) is None  # the base has none
    atoms = cu_small.copy()
    atoms.calc = calc
    atoms.get_forces()
    d = np.array([atoms.get_distance(0, 1), atoms.get_distance(2, 3)])
    np.testing.assert_allclose(calc.results["cv_values"], d, rtol=1e-12)
    assert calc.results["bias_energy"] == pytest.approx(-2.0 * committee.results["energy_std"])
    calc.after_step(1.0)  # a hill where the walker is
    assert metad.n_hills == 1
    results = calc.results
    for key in (keys.MAX_DEVI_F, keys.AVG_DEVI_F, keys.DEVI_E, keys.FORCES_STD, "member_energies"):
        assert key in results, key
    assert results[keys.MAX_DEVI_F] == committee.results[keys.MAX_DEVI_F]
    np.testing.assert_allclose(results["unbiased_forces"], committee.results["forces"])
    assert results["unbiased_energy"] == committee.results["energy"]
    uncertainty = -2.0 * committee.results["energy_std"]
    assert results["bias_energy"] == pytest.approx(0.1 + uncertainty, rel=1e-12)  # hill at s
    assert atoms.get_potential_energy() == pytest.approx(
        results["unbiased_energy"] + 0.1 + uncertainty
    )
    assert results["free_energy"] == pytest.approx(results["energy"])
    _, metad_forces, _ = metad.bias(atoms.positions, atoms.cell.array)
    _, uncertainty_forces = UncertaintyBias(2.0).bias_from_members(
        committee.results["member_energies"], committee.results["member_forces"]
    )
    expected = committee.results["forces"] + metad_forces + uncertainty_forces
    np.testing.assert_allclose(atoms.get_forces(), expected, rtol=1e-12, atol=1e-14)
    assert np.abs(metad_forces).max() == 0.0  # at a hill's centre its force vanishes
    assert np.abs(uncertainty_forces).max() > 1e-4


def test_biased_calculator_passes_stress_through(cu_small):
    metad = Metadynamics([Distance(0, 1)], 0.1, [0.3], 1)
    metad.deposit([cu_small.get_distance(0, 1) + 0.1], 0.0)
    atoms = cu_small.copy()
    atoms.calc = BiasedCalculator(EMT(), [metad])
    reference = cu_small.copy()
    reference.calc = EMT()
    np.testing.assert_allclose(atoms.get_stress(), reference.get_stress(), rtol=1e-12)
    assert atoms.calc.results["bias_energy"] > 0
    assert np.abs(atoms.get_forces() - reference.get_forces()).max() > 1e-3


def test_request_deviation_is_forwarded(cu_small):
    base = _first_only()
    calc = BiasedCalculator(base, [Metadynamics([Distance(0, 1)], 0.1, [0.3], 1)])
    atoms = cu_small.copy()
    atoms.calc = calc
    atoms.get_forces()
    assert keys.MAX_DEVI_F not in calc.results  # member 0 only, as asked
    calc.request_deviation()
    assert base.requested
    atoms.positions[0, 0] += 0.01
    atoms.get_forces()
    assert calc.results[keys.MAX_DEVI_F] > 1e-4
    atoms.positions[0, 0] += 0.01
    atoms.get_forces()
    assert keys.MAX_DEVI_F not in calc.results  # the request was used up


def test_uncertainty_bias_requests_every_member_at_every_step(cu_small):
    base = _first_only()
    calc = BiasedCalculator(base, [UncertaintyBias(1.0)])
    atoms = cu_small.copy()
    atoms.calc = calc
    dyn = _langevin(atoms)
    seen = []
    dyn.attach(lambda: seen.append(keys.MAX_DEVI_F in calc.results), interval=1)
    dyn.run(5)
    assert base.n_calculations == 6 and base.n_full == 6 and all(seen)


def test_uncertainty_bias_with_a_stride_is_an_impulse(cu_small):
    # stride 3: every member on geometries 0, 3, 6 only, with 3x the bias force there
    base = _first_only()
    calc = BiasedCalculator(base, [UncertaintyBias(1.0, stride_steps=3)])
    atoms = cu_small.copy()
    atoms.calc = calc
    kicks = []
    for _ in range(7):
        atoms.get_forces()
        results = calc.results
        kicks.append(np.abs(results["forces"] - results["unbiased_forces"]).max())
        if keys.MAX_DEVI_F in results:
            _, force = UncertaintyBias(1.0).bias_from_members(
                results["member_energies"], results["member_forces"]
            )
            np.testing.assert_allclose(results["forces"] - results["unbiased_forces"], 3 * force)
        atoms.positions[0, 0] += 0.01
    assert base.n_calculations == 7 and base.n_full == 3
    assert [k > 1e-6 for k in kicks] == [True, False, False, True, False, False, True]
    with pytest.raises(ValueError, match="stride_steps"):
        UncertaintyBias(1.0, stride_steps=0)


def test_with_an_ensemble_calculator_forces_from_first():
    small = dict(
        rcut_A=4.0,
        rcut_smth_A=1.0,
        embedding_widths=(6, 12, 24),
        axis_neuron=4,
        fitting_widths=(16, 16),
    )
    ensemble = Ensemble([DeepPot(["Cu"], seed=seed, **small) for seed in range(2)])
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.rattle(0.05, seed=1)
    base = EnsembleCalculator(ensemble, forces_from="first")
    atoms.calc = BiasedCalculator(base, [UncertaintyBias(1.0)])
    for _ in range(2):
        atoms.positions[0, 0] += 0.01
        atoms.get_forces()
        results = atoms.calc.results
        assert results[keys.MAX_DEVI_F] > 0 and results["member_energies"].shape == (2,)
        assert results["bias_energy"] == pytest.approx(-results["member_energies"].std())
    reference = atoms.copy()
    reference.calc = EnsembleCalculator(ensemble, forces_from="first")
    np.testing.assert_allclose(atoms.get_stress(), reference.get_stress(), rtol=1e-10)


def test_after_step_deposits_every_pace_steps(chain):
    metad = Metadynamics([Distance(0, 1)], 0.1, [0.2], pace_steps=3)
    calc = BiasedCalculator(EMT(), [metad])
    calc.after_step(0.0)  # nothing calculated yet: counts only
    atoms = chain.copy()
    atoms.calc = calc
    positions = []
    for step in range(1, 8):
        atoms.positions[1, 0] += 0.05
        atoms.get_forces()
        positions.append(atoms.get_distance(0, 1))
        calc.after_step(2.0 * step)
    assert calc.n_steps == 8 and metad.n_hills == 2  # steps 3 and 6
    np.testing.assert_allclose(metad.hills[:, 0], [4.0, 10.0])
    np.testing.assert_allclose(metad.hills[:, 1], [positions[1], positions[4]])


class HarmonicStepBias:
    """A step-driven bias (the shape of eelt.explore.plumed.PlumedBias): k/2 |x_0 - x_ref|^2
    on atom 0, recording the steps it was called with."""

    def __init__(self, k_eV_per_A2: float, reference: np.ndarray):
        self.k, self.reference = k_eV_per_A2, np.asarray(reference, dtype=float)
        self.steps: list[int] = []

    def bias(self, positions, cell, step):
        self.steps.append(step)
        forces = np.zeros_like(positions)
        forces[0] = -self.k * (positions[0] - self.reference)
        return 0.5 * self.k * float(((positions[0] - self.reference) ** 2).sum()), forces


def test_step_biases_run_once_per_calculation(chain):
    step_bias = HarmonicStepBias(2.0, chain.positions[0] + [0.1, 0.0, 0.0])
    metad = Metadynamics([Distance(0, 1)], 0.1, [0.2], pace_steps=1)
    calc = BiasedCalculator(EMT(), [step_bias, metad])
    atoms = chain.copy()
    atoms.calc = calc
    dyn = _langevin(atoms)
    dyn.attach(lambda: calc.after_step(dyn.get_time() / units.fs), interval=1)
    dyn.run(4)
    assert step_bias.steps == [0, 1, 2, 3, 4]  # not again when a hill updates the results
    assert metad.n_hills == 5
    results = calc.results
    energy, forces = step_bias.bias(atoms.positions, atoms.cell.array, 99)
    metad_energy, metad_forces, _ = metad.bias(atoms.positions, atoms.cell.array)
    assert results["bias_energy"] == pytest.approx(energy + metad_energy, rel=1e-12)
    np.testing.assert_allclose(
        results["forces"] - results["unbiased_forces"], forces + metad_forces, atol=1e-12
    )


class CountingEMT(EMT):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.n_calculations = 0

    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        self.n_calculations += 1


def test_one_base_calculation_per_geometry_with_stress(cu_small):
    base = CountingEMT()
    step_bias = HarmonicStepBias(1.0, cu_small.positions[0])
    atoms = cu_small.copy()
    atoms.calc = BiasedCalculator(base, [step_bias])
    for _ in range(3):
        atoms.positions[1, 2] += 0.02
        atoms.get_forces()
        atoms.get_stress()  # as NPT asks: no second base calculation, no second step
        atoms.get_potential_energy()
    assert base.n_calculations == 3 and step_bias.steps == [0, 1, 2]
