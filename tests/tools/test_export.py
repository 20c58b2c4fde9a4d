"""eelt export: a run's labeled frames as extxyz and as DeePMD npy systems, read back by ase and
dpdata with the same numbers."""

import ase.io
import dpdata
import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import voigt_6_to_full_3x3_stress
from typer.testing import CliRunner

from eelt import atomic
from eelt.cli import app
from eelt.errors import EeltError
from eelt.orchestration.rundir import RunDir
from eelt.tools.export import export_run, labeled_systems
from tests.loop_config import cu_start, tiny_config

runner = CliRunner()
TYPE_MAP = ["H", "O", "Cu"]


def cu_frames(n, seed):
    frames = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.05, seed=seed + k)
        atoms.set_cell(atoms.cell.array * (1 + 0.01 * k), scale_atoms=True)
        atoms.calc = EMT()
        labels = {
            "energy": atoms.get_potential_energy(),
            "forces": atoms.get_forces(),
            "stress": atoms.get_stress(),
        }
        atoms.calc = SinglePointCalculator(atoms, **labels)
        frames.append(atoms)
    return frames


def water_frames(n, seed):
    """Molecules (no cell), atoms in the order O, H, H; made-up labels."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = molecule("H2O")
        atoms.positions += rng.normal(0, 0.03, (3, 3))
        atoms.calc = SinglePointCalculator(
            atoms, energy=float(rng.normal(-470.0, 1.0)), forces=rng.normal(0, 1.0, (3, 3))
        )
        frames.append(atoms)
    return frames


@pytest.fixture
def run_dir(tmp_path):
    """A run directory as the loop leaves it: Cu cells (with stress) from init, water molecules
    from iteration 0, held-out frames of both."""
    cfg = tiny_config(cu_start(tmp_path), system={"type_map": TYPE_MAP})
    run = RunDir(tmp_path / "run")
    run.create(cfg, cu_frames(1, 0))
    atomic.write_frames(run.data_dir / "init.extxyz", cu_frames(3, 10))
    atomic.write_frames(run.data_dir / "iter-000.extxyz", water_frames(2, 1))
    atomic.write_frames(run.test_data_file(0), cu_frames(1, 20) + water_frames(1, 2))
    return run


def source(run, test=False):
    files = run.test_data_files() if test else run.data_files()
    return [a for f in files for a in ase.io.read(f, ":")]


def test_extxyz_round_trip(run_dir, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["export", str(run_dir.root), "--format", "extxyz", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert f"train: 5 frames, 2 systems -> {out / 'train.extxyz'}" in result.output
    assert f"test: 2 frames, 2 systems -> {out / 'test.extxyz'}" in result.output
    for name, test in (("train", False), ("test", True)):
        ref, got = source(run_dir, test), ase.io.read(out / f"{name}.extxyz", ":")
        assert len(got) == len(ref)
        for a, b in zip(ref, got, strict=True):
            assert a.get_chemical_symbols() == b.get_chemical_symbols()
            assert (a.pbc == b.pbc).all()
            np.testing.assert_allclose(b.positions, a.positions, rtol=0, atol=1e-10)
            np.testing.assert_allclose(b.cell.array, a.cell.array, rtol=0, atol=1e-10)
            assert abs(b.get_potential_energy() - a.get_potential_energy()) < 1e-10
            np.testing.assert_allclose(b.get_forces(), a.get_forces(), rtol=0, atol=1e-10)
            if a.pbc.all():
                np.testing.assert_allclose(b.get_stress(), a.get_stress(), rtol=0, atol=1e-10)
            else:
                assert "stress" not in b.calc.results


def read_system(path):
    return dpdata.LabeledSystem(str(path), fmt="deepmd/npy")


def test_deepmd_round_trip_one_system_per_formula(run_dir, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["export", str(run_dir.root), "--format", "deepmd", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert f"train: 5 frames, 2 systems -> {out / 'train'}" in result.output
    assert f"test: 2 frames, 2 systems -> {out / 'test'}" in result.output
    for name, test in (("train", False), ("test", True)):
        ref = source(run_dir, test)
        assert sorted(p.name for p in (out / name).iterdir()) == ["H0O0Cu4", "H2O1Cu0"]
        for system_dir in (out / name).iterdir():
            assert (system_dir / "type_map.raw").read_text().split() == TYPE_MAP
        cu = read_system(out / name / "H0O0Cu4")
        water = read_system(out / name / "H2O1Cu0")
        cu_ref = [a for a in ref if a.pbc.all()]
        water_ref = [a for a in ref if not a.pbc.any()]
        assert cu.get_nframes() == len(cu_ref) and water.get_nframes() == len(water_ref)
        assert cu["atom_names"] == TYPE_MAP and list(cu["atom_types"]) == [2, 2, 2, 2]
        assert not cu.nopbc and cu.has_virial()
        for k, a in enumerate(cu_ref):
            assert abs(cu["energies"][k] - a.get_potential_energy()) < 1e-10
            np.testing.assert_allclose(cu["forces"][k], a.get_forces(), rtol=0, atol=1e-10)
            np.testing.assert_allclose(cu["coords"][k], a.positions, rtol=0, atol=1e-10)
            np.testing.assert_allclose(cu["cells"][k], a.cell.array, rtol=0, atol=1e-10)
            virial = -voigt_6_to_full_3x3_stress(a.get_stress()) * a.get_volume()
            np.testing.assert_allclose(cu["virials"][k], virial, rtol=0, atol=1e-10)
            assert np.abs(virial).max() > 1e-3  # a real stress, not zeros compared to zeros
        # molecules: a nopbc system without virials, atoms sorted by type (O, H, H -> H, H, O)
        assert water.nopbc and not water.has_virial()
        assert (out / name / "H2O1Cu0" / "nopbc").is_file()
        assert list(water["atom_types"]) == [0, 0, 1]
        order = [1, 2, 0]
        for k, a in enumerate(water_ref):
            assert abs(water["energies"][k] - a.get_potential_energy()) < 1e-10
            np.testing.assert_allclose(
                water["forces"][k], a.get_forces()[order], rtol=0, atol=1e-10
            )
            np.testing.assert_allclose(water["coords"][k], a.positions[order], rtol=0, atol=1e-10)


def test_no_test_and_reexport(run_dir, tmp_path):
    out = tmp_path / "out"
    args = ["export", str(run_dir.root), "--format", "deepmd", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    atomic.write_frames(run_dir.data_dir / "iter-001.extxyz", water_frames(3, 5))
    result = runner.invoke(app, [*args, "--no-test"])
    assert result.exit_code == 0, result.output
    assert "train: 8 frames, 2 systems" in result.output and "test:" not in result.output
    assert read_system(out / "train" / "H2O1Cu0").get_nframes() == 5  # replaced, not appended
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no temp dirs left
    (out / "train" / "notes.txt").write_text("mine")
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "not an earlier DeePMD export" in result.output
    assert (out / "train" / "notes.txt").is_file()


def test_virials_dropped_where_only_some_frames_have_a_stress():
    frames = cu_frames(2, 0)
    frames[1].calc = SinglePointCalculator(
        frames[1], energy=frames[1].get_potential_energy(), forces=frames[1].get_forces()
    )
    systems, notes = labeled_systems(frames, ["Cu"])
    assert len(systems) == 1 and not systems[0].has_virial()
    assert notes == ["Cu4: 1 of 2 frames have a stress; virials left out of this system"]


def test_user_errors_exit_2(run_dir, tmp_path):
    missing = runner.invoke(
        app, ["export", str(tmp_path / "nope"), "--format", "extxyz", "--out", str(tmp_path / "o")]
    )
    assert missing.exit_code == 2
    assert "no such run directory" in missing.output and "Traceback" not in missing.output
    bad = runner.invoke(
        app, ["export", str(run_dir.root), "--format", "lammps", "--out", str(tmp_path / "o")]
    )
    assert bad.exit_code == 2 and "not one of extxyz, deepmd" in bad.output
    for f in run_dir.data_files():
        f.unlink()
    with pytest.raises(EeltError, match="no labeled training frames"):
        export_run(run_dir.root, "extxyz", tmp_path / "o")
    empty = runner.invoke(
        app, ["export", str(run_dir.root), "--format", "extxyz", "--out", str(tmp_path / "o")]
    )
    assert empty.exit_code == 2 and len(empty.output.strip().splitlines()) == 1
