"""eelt init: a commented first config that eelt's loader and `eelt validate` accept, and that
runs."""

import json

import ase.io
import pytest
import yaml
from ase import Atoms
from ase.build import bulk, molecule
from typer.testing import CliRunner

from eelt.cli import app
from eelt.config import load_config

runner = CliRunner()


@pytest.fixture
def water(tmp_path):
    path = tmp_path / "structures" / "h2o.xyz"
    path.parent.mkdir()
    ase.io.write(path, molecule("H2O"))
    return path


@pytest.fixture
def cu_cell(tmp_path):
    path = tmp_path / "cu4.extxyz"
    ase.io.write(path, bulk("Cu", "fcc", a=3.6, cubic=True))
    return path


def init(*args):
    return runner.invoke(app, ["init", *map(str, args)])


def validate(config, tmp_path):
    return runner.invoke(app, ["validate", str(config), "--run-dir", str(tmp_path / "runs" / "x")])


def test_water_molecule_config_loads_and_validates(water, tmp_path):
    config = tmp_path / "configs" / "eelt.yaml"  # elsewhere than the structure
    result = init(water, "--out", config)
    assert result.exit_code == 0, result.output
    assert "labeler pyscf" in result.output
    text = config.read_text()
    assert "# " in text and "mod 2" in text  # commented, the spin rule said
    cfg, base = load_config(config)
    assert cfg.name == "h2o" and cfg.system.type_map == ["H", "O"]
    assert cfg.system.structures == ["../structures/h2o.xyz"]
    assert (base / cfg.system.structures[0]).resolve() == water.resolve()
    assert cfg.label.kind == "pyscf" and (cfg.label.xc, cfg.label.basis) == ("pbe", "def2-svp")
    assert (cfg.label.charge, cfg.label.spin) == (0, 0)
    assert [s.ensemble for s in cfg.explore.stages] == ["nvt", "nvt"]
    assert cfg.explore.stages[0].timestep_fs == 0.5  # hydrogen
    assert cfg.execution.kind == "local" and cfg.execution.n_workers == 2
    assert cfg.train.model.kind == "mace"  # the default for a molecule
    # a thermal start: GFN2-xTB frames, a random few of them the yardstick
    assert cfg.init.n_perturbed == 0 and cfg.init.sampler.kind == "xtb"
    assert cfg.init.sampler.conformers and cfg.init.sampler.n_yardstick > 0
    # walkers start from the sampler's frames, two others each iteration
    assert [(s.starts, s.max_starts, s.walkers_per_condition) for s in cfg.explore.stages] == [
        ("sampler", 2, 1),
        ("sampler", 2, 1),
    ]
    result = validate(config, tmp_path)
    assert result.exit_code == 0, result.output


def test_model_mace_writes_a_mace_ensemble_that_validates(water, cu_cell, tmp_path):
    for structure in (water, cu_cell):
        config = tmp_path / f"{structure.stem}.yaml"
        result = init(structure, "--out", config, "--model", "mace")
        assert result.exit_code == 0, result.output
        assert "model mace" in result.output
        cfg, _ = load_config(config)
        assert cfg.train.model.kind == "mace" and cfg.train.ensemble_size == 4
        assert (cfg.train.model.steps, cfg.train.model.warm_steps) == (2000, 500)
        assert validate(config, tmp_path).exit_code == 0


def test_odd_electron_count_gets_spin_1(tmp_path):
    path = tmp_path / "oh.xyz"
    ase.io.write(path, Atoms("OH", positions=[(0, 0, 0), (0, 0, 0.97)]))
    assert init(path, "--out", tmp_path / "oh.yaml", "--name", "007").exit_code == 0
    cfg, _ = load_config(tmp_path / "oh.yaml")
    assert cfg.name == "007" and cfg.label.spin == 1  # a string name; 9 electrons


def test_cu_cell_config(cu_cell, tmp_path):
    result = init(cu_cell, "--out", tmp_path / "cu.yaml", "--labeler", "emt")
    assert result.exit_code == 0, result.output
    cfg, _ = load_config(tmp_path / "cu.yaml")
    assert cfg.label.kind == "emt" and cfg.system.type_map == ["Cu"]
    assert [s.ensemble for s in cfg.explore.stages] == ["nvt"]
    assert cfg.init.cell_strain > 0 and cfg.explore.stages[0].timestep_fs == 2.0
    assert validate(tmp_path / "cu.yaml", tmp_path).exit_code == 0
    # by default a cell gets xTB (PySCF labels molecules only) ...
    assert init(cu_cell, "--out", tmp_path / "xtb.yaml").exit_code == 0
    cfg, _ = load_config(tmp_path / "xtb.yaml")
    assert cfg.label.kind == "xtb" and cfg.label.method == "GFN1-xTB"
    # ... and PySCF asked for on a cell is refused
    result = init(cu_cell, "--out", tmp_path / "pyscf.yaml", "--labeler", "pyscf")
    assert result.exit_code == 2 and "PySCF labels molecules only" in result.output
    assert not (tmp_path / "pyscf.yaml").exists()


def test_refusals_exit_2_with_one_line(water, tmp_path):
    si = tmp_path / "si.extxyz"
    ase.io.write(si, bulk("Si", "diamond", a=5.43))
    cases = [
        ((si, "--out", tmp_path / "si.yaml", "--labeler", "emt"), "EMT has no parameters for Si"),
        ((tmp_path / "missing.xyz", "--out", tmp_path / "m.yaml"), "no such structure file"),
        ((water, "--out", tmp_path / "w.yaml", "--labeler", "vasp"), "not one of pyscf, xtb, emt"),
        ((water, "--out", tmp_path / "w.yaml", "--name", "a b"), "--name 'a b'"),
        ((water, "--out", tmp_path / "w.yaml", "--model", "nequip"), "not one of deeppot, mace"),
    ]
    for args, message in cases:
        result = init(*args)
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1
        assert not args[2].exists()
    config = tmp_path / "eelt.yaml"
    config.write_text("mine\n")
    result = init(water, "--out", config)
    assert result.exit_code == 2 and "does not overwrite" in result.output
    assert config.read_text() == "mine\n"


def run_small(config, data, root):
    """Shrink an eelt init config (one short iteration, tiny DeepPot-SE members, threads),
    write it to ``config`` and run it into ``root``; (root, the CLI result)."""
    data["explore"]["stages"][0].update(n_steps=30, dump_interval=5, max_iterations=1)
    data["examine"]["max_candidates"] = 2
    data["train"].update(steps=20, warm_steps=10, ensemble_size=2)
    data["train"]["model"].update(embedding_widths=[4, 8], axis_neuron=2, fitting_widths=[16])
    data["loop"]["max_iterations"] = 1
    data["execution"] = {"kind": "threads", "n_workers": 2}
    config.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["run", str(config), "--plain", "--quiet", "--run-dir", str(root)])
    assert result.exit_code == 0, result.output
    return root, result


def test_emt_cu_config_runs_a_short_loop(cu_cell, tmp_path):
    config = tmp_path / "eelt.yaml"
    assert init(cu_cell, "--out", config, "--labeler", "emt").exit_code == 0
    data = yaml.safe_load(config.read_text())
    assert data["train"]["model"].get("kind", "deeppot") == "deeppot"  # the default for a cell
    data["init"]["n_perturbed"] = 4
    root, result = run_small(config, data, tmp_path / "run")
    assert "max_iterations" in result.output
    assert (root / "iter-000" / "train" / "model-1.pt").is_file()


def test_xtb_molecule_config_runs_its_sampler_and_a_short_loop(water, tmp_path):
    config = tmp_path / "eelt.yaml"
    assert init(water, "--out", config, "--labeler", "xtb", "--model", "deeppot").exit_code == 0
    data = yaml.safe_load(config.read_text())
    data["init"]["sampler"].update(n_steps=100, n_frames=4, n_yardstick=3, equilibrate_fs=5)
    data["explore"]["stages"] = data["explore"]["stages"][:1]
    root, _ = run_small(config, data, tmp_path / "run")
    assert len(ase.io.read(root / "data" / "init.extxyz", ":")) == 4  # the sampler's only
    assert len(ase.io.read(root / "data" / "yardstick-sampler.extxyz", ":")) == 3
    status = runner.invoke(app, ["status", str(root)])
    assert "yardstick: 3 frames no model chose" in status.output, status.output
    explored = json.loads((root / "iter-000" / "explore" / "report.json").read_text())
    assert explored["starts"] == "thermal sampler frames 0, 1"
