import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import Calculator
from ase.calculators.emt import EMT

from eelt import keys
from eelt.explore import (
    COMPLETED,
    KINETIC_TEMPERATURE_K,
    MODEL_ENERGY,
    closest_contact,
    isolated_atoms,
    read_trajectory,
    run_walker,
)

from .conftest import WrappingCalculator

MD = dict(temperature_K=300.0, timestep_fs=2.0, friction_per_fs=0.01)


def _run(atoms, calc, tmp_path, name="w", seed=0, n_steps=20, dump_interval=5, **kw):
    return run_walker(
        atoms,
        calc,
        n_steps=n_steps,
        dump_interval=dump_interval,
        seed=seed,
        out_path=tmp_path / f"{name}.xyz",
        walker=name,
        **{**MD, **kw},
    )


def test_frames_steps_and_deviation_columns(cu_small, committee, tmp_path):
    before = cu_small.positions.copy()
    summary = _run(cu_small, committee, tmp_path, name="cu-300K-0", n_steps=20, dump_interval=5)
    frames = read_trajectory(summary.trajectory)

    assert summary.stop_reason == COMPLETED
    assert summary.n_steps_run == 20
    assert summary.n_frames == len(frames) == 20 // 5 + 1
    assert summary.walker == "cu-300K-0"
    assert summary.wall_s > 0
    assert [f.info[keys.STEP] for f in frames] == [0, 5, 10, 15, 20]
    assert all(f.info[keys.WALKER] == "cu-300K-0" for f in frames)
    assert all(f.info[keys.TEMPERATURE_K] == pytest.approx(300.0) for f in frames)
    devi = np.array([f.info[keys.MAX_DEVI_F] for f in frames])
    avg = np.array([f.info[keys.AVG_DEVI_F] for f in frames])
    assert np.all(devi > 1e-4) and np.all(avg <= devi + 1e-12)
    assert all(keys.DEVI_E in f.info for f in frames)
    assert summary.max_devi_f_max == pytest.approx(devi.max(), rel=1e-9)
    np.testing.assert_array_equal(cu_small.positions, before)  # input untouched

    # step-0 frame is the start structure, and its deviation is the committee's at that geometry
    np.testing.assert_allclose(frames[0].positions, cu_small.positions, atol=1e-8)
    probe = cu_small.copy()
    probe.calc = type(committee)(committee.base, committee.perturbations)
    probe.get_forces()
    assert frames[0].info[keys.MAX_DEVI_F] == pytest.approx(probe.calc.results[keys.MAX_DEVI_F])
    assert frames[0].info[MODEL_ENERGY] == pytest.approx(probe.get_potential_energy())


def test_frames_carry_no_labels(cu_small, committee, tmp_path):
    summary = _run(cu_small, committee, tmp_path, n_steps=10, dump_interval=5)
    for frame in read_trajectory(summary.trajectory):
        assert frame.calc is None
        assert keys.ENERGY not in frame.info and keys.FORCES not in frame.arrays
        assert set(frame.arrays) == {"numbers", "positions"}
        assert frame.pbc.all() and frame.cell.volume == pytest.approx(3.61**3, rel=1e-9)


def test_same_seed_same_trajectory_other_seed_differs(cu_small, committee_factory, tmp_path):
    runs = [
        read_trajectory(
            _run(cu_small, committee_factory(), tmp_path, name=f"s{i}", seed=s).trajectory
        )
        for i, s in enumerate([7, 7, 8])
    ]
    a, b, c = (np.array([f.positions for f in r]) for r in runs)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a[-1] - c[-1]).max() > 1e-3


def test_stops_after_m_dumps_above_trust_hi(cu_small, committee, tmp_path):
    summary = _run(
        cu_small,
        committee,
        tmp_path,
        n_steps=100,
        dump_interval=2,
        trust_hi_eV_per_A=1e-6,
        stop_after_failed_dumps=3,
    )
    frames = read_trajectory(summary.trajectory)
    assert summary.stop_reason.startswith("deviation above trust_hi for 3 dumps")
    assert summary.n_frames == len(frames) == 3
    assert summary.n_steps_run == 4  # dumps at steps 0, 2, 4
    assert [f.info[keys.STEP] for f in frames] == [0, 2, 4]


def test_high_deviation_streak_resets_below_trust_hi(cu_small, committee, tmp_path):
    # a generous trust_hi never stops the walker
    summary = _run(
        cu_small, committee, tmp_path, n_steps=20, trust_hi_eV_per_A=10.0, stop_after_failed_dumps=1
    )
    assert summary.stop_reason == COMPLETED and summary.n_frames == 5


def test_stops_on_overlapping_atoms(cu_small, committee, tmp_path):
    atoms = cu_small.copy()
    atoms.positions[1] = atoms.positions[0] + [0.3, 0.0, 0.0]
    summary = _run(atoms, committee, tmp_path, n_steps=50)
    assert summary.stop_reason.startswith("atoms too close: 0-1 0.300 A")
    assert summary.n_steps_run == 0
    assert summary.n_frames == 0 and read_trajectory(summary.trajectory) == []
    assert np.isnan(summary.max_devi_f_max)


def test_closest_contact_uses_periodic_images():
    # two atoms 0.4 A apart only through the periodic boundary
    atoms = Atoms("Cu2", positions=[[0.1, 0, 0], [9.7, 0, 0]], cell=[10, 10, 10], pbc=True)
    i, j, d = closest_contact(atoms, 0.5)
    assert (i, j) == (0, 1) and d == pytest.approx(0.4)
    atoms.pbc = False
    assert closest_contact(atoms, 0.5) is None


def test_stops_on_nan_forces_and_keeps_frames(cu_small, committee, nan_after, tmp_path):
    calc = nan_after(committee, n_good=7)
    summary = _run(cu_small, calc, tmp_path, n_steps=20, dump_interval=2)
    # evaluations at steps 0..6 are good; step 7 (not a dump step) gives NaN forces
    assert summary.stop_reason == "NaN in forces at step 7"
    assert summary.n_steps_run == 7
    assert summary.n_frames == 4
    assert [f.info[keys.STEP] for f in read_trajectory(summary.trajectory)] == [0, 2, 4, 6]


def test_calculator_without_deviation_is_refused(cu_small, tmp_path):
    with pytest.raises(ValueError, match="does not report max_devi_f"):
        _run(cu_small, EMT(), tmp_path)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(temperature_K=-1.0), "temperature_K"),
        (dict(timestep_fs=0.0), "timestep_fs"),
        (dict(dump_interval=0), "dump_interval"),
        (dict(friction_per_fs=0.0), "friction_per_fs"),
        (dict(stop_after_failed_dumps=0), "stop_after_failed_dumps"),
        (dict(min_distance_fraction=1.5), "min_distance_fraction"),
        (dict(max_bond_fraction=0.5), "max_bond_fraction"),
    ],
)
def test_bad_arguments_named(cu_small, committee, tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        _run(cu_small, committee, tmp_path, **bad)


def test_molecule_walker_keeps_center_of_mass(committee_factory, tmp_path):
    atoms = molecule("H2O")  # EMT knows H and O roughly; enough for a short run
    atoms.center(vacuum=4.0)
    atoms.pbc = False
    atoms.cell = [0, 0, 0]
    com = atoms.get_center_of_mass()
    calc = committee_factory(epsilon_eV=0.001)
    summary = _run(atoms, calc, tmp_path, n_steps=10, dump_interval=5, timestep_fs=0.25)
    frames = read_trajectory(summary.trajectory)
    assert summary.stop_reason == COMPLETED and len(frames) == 3
    for frame in frames:
        np.testing.assert_allclose(frame.get_center_of_mass(), com, atol=1e-8)
        assert not frame.pbc.any()


def test_langevin_reaches_target_temperature(cu32, committee, tmp_path):
    # 800 fs at friction 0.01/fs: the second half is thermalized at 600 K. A friction or
    # timestep off by the ASE time unit (~10 fs) leaves it near 370 K or blows it up.
    summary = run_walker(
        cu32,
        committee,
        temperature_K=600.0,
        timestep_fs=2.0,
        n_steps=400,
        dump_interval=2,
        friction_per_fs=0.01,
        seed=3,
        out_path=tmp_path / "hot.xyz",
        walker="hot",
    )
    frames = read_trajectory(summary.trajectory)
    temps = np.array([f.info[KINETIC_TEMPERATURE_K] for f in frames])
    assert summary.stop_reason == COMPLETED and len(frames) == 201
    assert temps[len(temps) // 2 :].mean() == pytest.approx(600.0, abs=100.0)


class PushAway(WrappingCalculator):
    """The committee's results plus a constant force (eV/A) on one atom along +x."""

    def __init__(self, inner: Calculator, atom: int, force_eV_per_A: float, **kwargs):
        super().__init__(inner, **kwargs)
        self.atom, self.force = atom, force_eV_per_A

    def adjust(self) -> None:
        self.results["forces"][self.atom, 0] += self.force


def test_stops_when_an_atom_flies_off_and_keeps_the_frames_before(committee_factory, tmp_path):
    atoms = molecule("H2O")
    calc = PushAway(committee_factory(), atom=1, force_eV_per_A=20.0)
    summary = _run(atoms, calc, tmp_path, n_steps=200, dump_interval=2, timestep_fs=0.5)
    assert summary.stop_reason.startswith("atom 1 (H) left the others"), summary.stop_reason
    frames = read_trajectory(summary.trajectory)
    assert 0 < len(frames) < 100
    assert all(isolated_atoms(f, 2.0) == [] for f in frames)  # the escaped frame is not kept
    # off: the same push runs to the end
    free = _run(atoms, calc, tmp_path, name="off", n_steps=40, max_bond_fraction=0.0)
    assert free.stop_reason == COMPLETED


def test_isolated_atoms():
    water = molecule("H2O")
    assert isolated_atoms(water, 2.0) == []
    water.positions[2] += [3.0, 0.0, 0.0]
    ((index, nearest),) = isolated_atoms(water, 2.0)
    assert index == 2 and nearest > 2.0
    assert isolated_atoms(water, 0.0) == []  # off
    cu = bulk("Cu", "fcc", a=3.6)  # one atom per cell: bonded to its periodic images
    assert isolated_atoms(cu, 2.0) == []


def test_relative_deviation_is_recorded_and_stops_the_walker(cu_small, committee, tmp_path):
    from eelt.model.deviation import relative_max_devi_f

    summary = _run(cu_small, committee, tmp_path, n_steps=20, relative_eps_eV_per_A=0.5)
    frames = read_trajectory(summary.trajectory)
    for frame in frames:  # recompute from the committee at the frame's positions
        atoms = frame.copy()
        atoms.calc = committee
        atoms.get_forces()
        res = committee.results
        expected = relative_max_devi_f(res[keys.FORCES_STD], res["member_forces"].mean(0), 0.5)
        assert frame.info[keys.MAX_DEVI_F_REL] == pytest.approx(expected, rel=1e-6)
        assert frame.info[keys.MAX_DEVI_F_REL] < frame.info[keys.MAX_DEVI_F] / 0.5 + 1e-12
    stopped = _run(
        cu_small,
        committee,
        tmp_path,
        name="rel",
        n_steps=100,
        dump_interval=2,
        relative_eps_eV_per_A=0.5,
        trust_hi_relative=1e-9,
        stop_after_failed_dumps=2,
    )
    assert stopped.stop_reason.startswith("deviation above trust_hi for 2 dumps (max_devi_f_rel")
    with pytest.raises(ValueError, match="trust_hi_relative needs relative_eps_eV_per_A"):
        _run(cu_small, committee, tmp_path, name="bad", trust_hi_relative=0.1)
