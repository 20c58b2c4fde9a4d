"""The eelt command line as a user meets it: exit codes, one-line errors, run/status/evaluate."""

import json
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from eelt.cli import app
from tests.loop_config import cu_start, tiny_config

runner = CliRunner()


def write_config(tmp_path, **overrides):
    cfg = tiny_config(cu_start(tmp_path), **overrides)
    data = cfg.model_dump(mode="json")
    data["system"]["structures"] = ["cu4.extxyz"]  # relative to the config file
    path = tmp_path / "eelt.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_validate_prints_resolved_config(tmp_path):
    result = runner.invoke(app, ["validate", str(write_config(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "trust_hi_eV_per_A: 5.0" in result.output


def test_bad_config_exits_2_with_one_line_per_problem(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: x\nsystem: {structures: [a.xyz]}\nexplore: {stages: [{temperatures_K: [300]}]}\n"
        "label: {kind: emt}\nexamine: {trust_lo_eV_per_A: 0.4, trust_hi_eV_per_A: 0.2}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "eelt.cli", "validate", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: examine: trust_lo_eV_per_A (0.4) must be below trust_hi_eV_per_A (0.2)"
    ]


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    config = write_config(tmp, loop={"max_iterations": 1})
    result = runner.invoke(
        app, ["run", str(config), "--plain", "--quiet", "--run-dir", str(tmp / "run")]
    )
    assert result.exit_code == 0, result.output
    return tmp, config, result


def test_run_plain_then_status(plain_run):
    tmp, _, result = plain_run
    assert "max_iterations" in result.output
    status = runner.invoke(app, ["status", str(tmp / "run"), "--json"])
    assert status.exit_code == 0
    state = json.loads(status.output)
    assert state["status"] == "max_iterations" and len(state["iterations"]) == 1
    first = state["iterations"][0]
    assert first["n_test_labeled"] > 0 and first["test_force_rmse_meV_per_A"] > 0
    table = runner.invoke(app, ["status", str(tmp / "run")])
    assert table.exit_code == 0
    assert "held-out test frames" in table.output and "Spearman" in table.output
    assert f"{first['test_force_rmse_meV_per_A']:.1f}" in table.output


def test_fresh_refuses_existing_run(plain_run):
    tmp, config, _ = plain_run
    result = runner.invoke(
        app, ["run", str(config), "--plain", "--fresh", "--run-dir", str(tmp / "run")]
    )
    assert result.exit_code == 2
    assert "already holds a run" in result.output


def test_evaluate_json(plain_run):
    tmp, _, _ = plain_run
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--model",
            str(tmp / "run/init/train"),
            "--data",
            str(tmp / "run/data/init.extxyz"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert set(metrics) >= {"energy_rmse_meV_per_atom", "force_rmse_meV_per_A", "n_frames"}
    assert metrics["n_frames"] == 7 and metrics["force_rmse_meV_per_A"] > 0


def test_evaluate_names_missing_models(tmp_path):
    result = runner.invoke(
        app, ["evaluate", "--model", str(tmp_path), "--data", str(tmp_path / "x.extxyz")]
    )
    assert result.exit_code == 2
    assert "no model-*.pt" in result.output


def test_status_of_a_non_run(tmp_path):
    result = runner.invoke(app, ["status", str(tmp_path)])
    assert result.exit_code == 2
    assert "not an eelt run directory" in result.output


def test_status_during_the_initial_step_says_where_it_is(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from eelt.orchestration.context import RunContext
    from eelt.orchestration.initial import init_label
    from eelt.orchestration.runs import prepare_run

    run = prepare_run(tiny_config(cu_start(tmp_path)), tmp_path, tmp_path / "run")
    result = runner.invoke(app, ["status", str(run.root)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "run: initial step (not started); no iteration yet"
    with ThreadPoolExecutor(1) as pool:
        init_label(RunContext(run, pool))
    run.init_dir("train").mkdir(parents=True)
    result = runner.invoke(app, ["status", str(run.root)])
    assert "initial step (label done, train under way)" in result.output, result.output


def test_cluster_script_prints_the_batch_script(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from eelt.cli import app

    (tmp_path / "h2o.xyz").write_text("3\n\nO 0 0 0.117\nH 0 0.757 -0.469\nH 0 -0.757 -0.469\n")
    cfg = {
        "name": "hpc", "system": {"structures": ["h2o.xyz"]},
        "explore": {"stages": [{"temperatures_K": [300]}]}, "label": {"kind": "pyscf"},
        "execution": {"kind": "slurm", "queue": "short", "threads_per_job": 8,
                      "job_script_prologue": ["module load python"]},
    }  # fmt: skip
    (tmp_path / "eelt.yaml").write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, ["cluster", "script", str(tmp_path / "eelt.yaml")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "#SBATCH -p short" in lines and "#SBATCH --cpus-per-task=8" in lines
    assert "module load python" in lines
    cfg["execution"] = {"kind": "local"}
    (tmp_path / "eelt.yaml").write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, ["cluster", "script", str(tmp_path / "eelt.yaml")])
    assert result.exit_code == 2 and "no batch script" in result.output


def test_validate_json_is_the_resolved_config(tmp_path):
    result = runner.invoke(app, ["validate", str(write_config(tmp_path)), "--json"])
    assert result.exit_code == 0, result.output
    resolved = json.loads(result.output)
    assert resolved["examine"]["trust_hi_eV_per_A"] == 5.0 and resolved["name"] == "cu-test"
