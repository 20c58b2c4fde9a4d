"""Errors before the engine: every problem a config has without DFT, one line each, exit 2,
nothing written, no server started."""

import pytest
import yaml
from typer.testing import CliRunner

from eelt.cli import app

WATER = "3\n\nO 0 0 0.117\nH 0 0.757 -0.469\nH 0 -0.757 -0.469\n"


def _config(tmp_path, **changes):
    (tmp_path / "h2o.xyz").write_text(WATER)
    cfg = {
        "name": "pre",
        "system": {"structures": ["h2o.xyz"]},
        "explore": {"stages": [{"temperatures_K": [300]}]},
        "label": {"kind": "pyscf", "xc": "pbe", "basis": "sto-3g"},
    }
    for key, value in changes.items():
        cfg[key] = value
    path = tmp_path / "eelt.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize(
    "changes, lines",
    [
        (
            {"system": {"structures": ["missing.xyz", "h2o.xyz", "also-missing.xyz"]}},
            ["system.structures: missing.xyz: no such file",
             "system.structures: also-missing.xyz: no such file"],
        ),
        ({"label": {"kind": "pyscf", "xc": "pbee"}}, ["label.xc: 'pbee' is not a functional"]),
        (
            {"label": {"kind": "pyscf", "basis": "no-such-basis"}},
            ["label: PySCF cannot build H2O with basis 'no-such-basis'"],
        ),
        ({"label": {"kind": "pyscf", "spin": 1}}, ["label: PySCF cannot build H2O"]),
        ({"label": {"kind": "emt"}, "system": {"structures": ["h2o.xyz"], "type_map": ["O"]}},
         ["system.type_map: ['O'] lacks ['H']"]),
        ({"init": {"data": ["mine.extxyz"]}}, ["init.data: mine.extxyz: no such file"]),
        (
            {"examine": {"yardstick_data": ["ref.extxyz"]}},
            ["examine.yardstick_data: ref.extxyz: no such file"],
        ),
        (
            {"train": {"model": {"kind": "mace", "base_model": "off.model"}}},
            ["train.model.base_model: off.model: no such file"],
        ),
        (
            {"explore": {"stages": [{"temperatures_K": [300], "ensemble": "npt",
                                     "pressures_bar": [1]}]}},
            ["explore.stages.0: ensemble 'npt' needs structures periodic"],
        ),
    ],
)  # fmt: skip
def test_bad_config_is_one_line_per_problem_and_writes_nothing(tmp_path, command, changes, lines):
    path = _config(tmp_path, **changes)
    args = [command, str(path)] + (["--plain"] if command == "run" else [])
    result = CliRunner().invoke(app, args + ["--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    out = result.output.splitlines()
    assert len(out) == len(lines), result.output
    for line, expected in zip(out, lines, strict=True):
        assert line.startswith("error: ") and expected in line, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_a_run_that_cannot_be_resumed_is_found_before_it_starts(tmp_path):
    from eelt.config import load_config
    from eelt.orchestration.runs import prepare_run

    path = _config(tmp_path)
    cfg, base = load_config(path)
    prepare_run(cfg, base, tmp_path / "run")
    changed = _config(tmp_path, label={"kind": "pyscf", "xc": "b3lyp", "basis": "sto-3g"})
    result = CliRunner().invoke(app, ["validate", str(changed), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2 and "label.xc" in result.output
    assert "only 'loop' and 'execution' may change on resume" in result.output


def test_a_good_config_validates_with_its_resolved_type_map(tmp_path):
    result = CliRunner().invoke(app, ["validate", str(_config(tmp_path))])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output)["system"]["type_map"] == ["H", "O"]


def test_a_relative_base_model_is_frozen_as_an_absolute_path(tmp_path):
    from eelt.config import load_config
    from eelt.orchestration.runs import prepare_run

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "off.model").write_bytes(b"a MACE model file")
    path = _config(tmp_path, train={"model": {"kind": "mace", "base_model": "models/off.model"}})
    cfg, base = load_config(path)
    run = prepare_run(cfg, base, tmp_path / "run")
    frozen = run.load_config().train.model.base_model
    assert frozen == str((tmp_path / "models" / "off.model").resolve())
    prepare_run(cfg, base, tmp_path / "run")  # the same config resumes


def test_a_sampler_that_cannot_run_on_the_elements_is_one_line(tmp_path):
    path = _config(tmp_path, init={"sampler": {"kind": "emt"}})
    silane = "5\n\nSi 0 0 0\nH 0.86 0.86 0.86\nH -0.86 -0.86 0.86\nH -0.86 0.86 -0.86\nH 0.86 -0.86 -0.86\n"
    (tmp_path / "h2o.xyz").write_text(silane)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == "error: init.sampler: EMT has no parameters for Si"
