"""`eelt train` and `eelt evaluate` as a user meets them: a tiny EMT-labeled Cu dataset, a tiny
model in the config's train section, loadable checkpoints, JSON metrics, one-line errors."""

import json

import numpy as np
import pytest
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from typer.testing import CliRunner

from eelt.atomic import write_frames
from eelt.cli import app
from eelt.model import Ensemble
from eelt.train import evaluate_rmse

runner = CliRunner()

TINY_TRAIN = {
    "ensemble_size": 2,
    "model": {
        "rcut_A": 4.0,
        "rcut_smth_A": 1.0,
        "embedding_widths": [4, 8],
        "axis_neuron": 2,
        "fitting_widths": [16, 16],
    },
    "steps": 200,
    "batch_size": 4,
    "start_lr": 1e-2,
    "stop_lr": 1e-3,
    "validation_fraction": 0.2,
}


def cu_frames(n_frames: int, seed: int) -> list:
    """Rattled 4-atom fcc Cu cells (lattice 3.5-3.7 A) labeled with EMT energy and forces."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n_frames):
        atoms = bulk("Cu", "fcc", a=rng.uniform(3.5, 3.7), cubic=True)
        atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data file, frames, model dir, config file) after one `eelt train`."""
    tmp = tmp_path_factory.mktemp("cli-train")
    frames = cu_frames(24, seed=3)
    data = write_frames(tmp / "cu.extxyz", frames)
    config = tmp / "train.yaml"
    config.write_text(
        yaml.safe_dump({"train": TINY_TRAIN, "execution": {"kind": "threads", "n_workers": 2}})
    )
    out_dir = tmp / "models"
    result = runner.invoke(
        app, ["train", "--data", str(data), "--out", str(out_dir), "--config", str(config)]
    )
    assert result.exit_code == 0, result.output
    return data, frames, out_dir, config, result


def test_train_writes_loadable_ensemble_of_the_configured_model(trained):
    _, _, out_dir, _, result = trained
    assert sorted(p.name for p in out_dir.glob("model-*.pt")) == ["model-0.pt", "model-1.pt"]
    ensemble = Ensemble.load(out_dir)
    assert ensemble.n_members == 2
    for hparams in ensemble.member_hparams:
        assert hparams["type_map"] == ["Cu"]
        assert hparams["embedding_widths"] == [4, 8] and hparams["fitting_widths"] == [16, 16]
        assert hparams["rcut_A"] == pytest.approx(4.0)
    assert {h["seed"] for h in ensemble.member_hparams} == {0, 1}
    assert "member 0:" in result.output and "member 1:" in result.output
    assert (out_dir / "metrics.json").is_file()


def test_evaluate_json_matches_the_library_and_beats_zero_forces(trained):
    data, frames, out_dir, _, _ = trained
    result = runner.invoke(
        app, ["evaluate", "--model", str(out_dir), "--data", str(data), "--json"]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert set(metrics) == {"energy_rmse_meV_per_atom", "force_rmse_meV_per_A", "n_frames"}
    assert metrics["n_frames"] == len(frames)
    direct = evaluate_rmse(Ensemble.load(out_dir), frames)
    assert metrics["force_rmse_meV_per_A"] == pytest.approx(direct["force_rmse_meV_per_A"])
    assert metrics["energy_rmse_meV_per_atom"] == pytest.approx(direct["energy_rmse_meV_per_atom"])
    # trained, not just initialised: clearly better than predicting zero forces
    zero_force_rmse = 1e3 * np.sqrt(np.mean(np.concatenate([a.get_forces() for a in frames]) ** 2))
    assert 0 < metrics["force_rmse_meV_per_A"] < 0.3 * zero_force_rmse


def one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_train_with_missing_data_exits_2_with_one_line(tmp_path):
    missing = tmp_path / "nope.extxyz"
    result = runner.invoke(app, ["train", "--data", str(missing), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    line = one_line_error(result)
    assert line.startswith("error: --data") and "nope.extxyz" in line and "no such file" in line
    assert not (tmp_path / "m").exists()


def test_train_with_unknown_config_key_names_it(trained, tmp_path):
    data = trained[0]
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"train": {**TINY_TRAIN, "stepz": 5}}))
    result = runner.invoke(
        app, ["train", "--data", str(data), "--out", str(tmp_path / "m"), "--config", str(config)]
    )
    assert result.exit_code == 2
    assert one_line_error(result) == "error: train.stepz: unknown key"
