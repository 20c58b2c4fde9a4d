"""Training MACE ensembles (train.model.kind: mace) on EMT-labeled Cu: errors fall below the
zero-force baseline, warm starts resume from the previous weights, divergence is reported,
finished members are kept on resume, a trained member conserves energy in NVE, and
`eelt train --model mace` runs."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import yaml
from ase import units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from typer.testing import CliRunner

from eelt.atomic import read_json, write_frames
from eelt.config import TrainConfig
from eelt.train import train_ensemble, training_busy_s
from eelt.train.curves import read_curve
from eelt.train.result import TrainingDiverged

TINY_MODEL = {
    "kind": "mace",
    "channels": 8,
    "max_ell": 2,
    "correlation": 2,
    "r_max_A": 4.0,
    "radial_MLP": [16, 16],
    "batch_size": 4,
    "steps": 80,
    "warm_steps": 10,
}


def tiny_train(**model) -> TrainConfig:
    return TrainConfig.model_validate(
        {"ensemble_size": 2, "validation_fraction": 0.2, "model": {**TINY_MODEL, **model}}
    )


def cu_frames(n_frames: int, seed: int, energy_offset_eV: float = 0.0) -> list:
    """Rattled 4-atom fcc Cu cells (lattice 3.5-3.7 A) labeled with EMT energy and forces
    (energies offset by +-``energy_offset_eV`` in turn)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n_frames):
        atoms = bulk("Cu", "fcc", a=rng.uniform(3.5, 3.7), cubic=True)
        atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        offset = energy_offset_eV * (-1) ** len(frames)
        atoms.calc = SinglePointCalculator(atoms, energy=energy + offset, forces=forces)
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data file, frames, model dir, results) of a tiny 2-member MACE ensemble on 20 frames."""
    tmp = tmp_path_factory.mktemp("mace-train")
    frames = cu_frames(20, seed=3)
    data = write_frames(tmp / "cu.extxyz", frames)
    out_dir = tmp / "models"
    with ThreadPoolExecutor(2) as pool:
        results = train_ensemble([str(data)], out_dir, tiny_train(), ["Cu"], pool)
    return data, frames, out_dir, results


def test_training_beats_zero_forces_and_writes_its_records(trained):
    _, frames, out_dir, results = trained
    assert [r.member for r in results] == [0, 1] and [r.seed for r in results] == [0, 1]
    forces = np.concatenate([a.get_forces() for a in frames])
    zero_force_rms = 1e3 * np.sqrt(np.mean(forces**2))
    for r in results:
        assert r.n_train_frames == 16 and r.n_val_frames == 4 and r.steps == 80
        assert 0 < r.val_force_rmse_meV_per_A < 0.2 * zero_force_rms
        rows = read_curve(out_dir / f"model-{r.member}.csv")
        assert rows[0]["step"] == 0 and rows[-1]["step"] == 80
        assert rows[-1]["val_force_rmse_meV_per_A"] == pytest.approx(r.val_force_rmse_meV_per_A)
        assert rows[0]["val_force_rmse_meV_per_A"] > 2 * rows[-1]["val_force_rmse_meV_per_A"]
    assert results[0].val_force_rmse_meV_per_A != results[1].val_force_rmse_meV_per_A
    family = read_json(out_dir / "family.json")
    assert family["family"] == "mace" and family["type_map"] == ["Cu"]
    assert family["E0s_source"] == "average" and family["members"] == ["model-0.pt", "model-1.pt"]
    assert family["precision"] == "float32"  # train.model.precision's default
    metrics = read_json(out_dir / "metrics.json")
    assert [m["member"] for m in metrics["members"]] == [0, 1]
    assert (out_dir / "learning_curves.png").is_file()
    # each checkpoint loads with weights_only
    assert torch.load(out_dir / "model-0.pt", weights_only=True)["format"] == "eelt-mace-1"


def test_E0s_are_the_least_squares_fit_of_the_training_energies(trained):
    from eelt.model.mace import MaceMember
    from eelt.train.data import split_train_validation

    _, frames, out_dir, _ = trained
    train_idx, _ = split_train_validation(len(frames), 0.2, 0)
    # one element: E0 is the mean energy per atom of the training split
    fitted = np.mean([frames[i].get_potential_energy() / 4 for i in train_idx])
    assert read_json(out_dir / "family.json")["E0s_eV"]["Cu"] == pytest.approx(fitted, rel=1e-6)
    assert MaceMember.load(out_dir / "model-1.pt").E0s_eV["Cu"] == pytest.approx(fitted, rel=1e-6)


def test_resume_keeps_finished_members_and_busy_time_counts_one_job_each(trained):
    data, _, out_dir, results = trained
    before = {p.name: p.stat().st_mtime_ns for p in out_dir.glob("model-*.pt")}
    with ThreadPoolExecutor(2) as pool:
        again = train_ensemble([str(data)], out_dir, tiny_train(), ["Cu"], pool)
        members = [r.to_dict() for r in again]
        busy = training_busy_s(members, tiny_train(), pool)
    assert {p.name: p.stat().st_mtime_ns for p in out_dir.glob("model-*.pt")} == before
    assert [r.val_force_rmse_meV_per_A for r in again] == [
        r.val_force_rmse_meV_per_A for r in results
    ]
    assert busy == pytest.approx(sum(r.wall_s for r in results))


def test_warm_start_begins_from_the_previous_weights(trained, tmp_path):
    from eelt.model.mace import MaceMember
    from eelt.train.mace import initial_member

    data, frames, out_dir, results = trained
    previous = MaceMember.load(out_dir / "model-1.pt")
    train = tiny_train()
    start = initial_member(train, ["Cu"], 1, frames, [], str(out_dir / "model-1.pt"), None)
    assert start.dtype == torch.float32  # train.precision
    for name, value in previous.module.state_dict().items():
        assert torch.equal(start.module.state_dict()[name], value.to(start.dtype))

    more = write_frames(tmp_path / "more.extxyz", [*frames, *cu_frames(5, seed=11)])
    with ThreadPoolExecutor(2) as pool:
        warm = train_ensemble(
            [str(more)], tmp_path / "warm", train, ["Cu"], pool, init_dir=out_dir, warm=True
        )
    assert [r.steps for r in warm] == [10, 10]
    assert warm[1].init_from == str(out_dir / "model-1.pt")
    # the first validation (before any step) is the previous member's on the new split
    from eelt.train.data import split_train_validation

    all_frames = [*frames, *cu_frames(5, seed=11)]
    _, val_idx = split_train_validation(len(all_frames), 0.2, train.seed)
    val = [all_frames[i] for i in val_idx]
    out = previous.predict(val)
    ref = torch.tensor(np.concatenate([a.get_forces() for a in val]))
    previous_rmse = 1e3 * float((out["forces"] - ref).square().mean().sqrt())
    first = read_curve(tmp_path / "warm" / "model-1.csv")[0]
    assert first["step"] == 0
    assert first["val_force_rmse_meV_per_A"] == pytest.approx(previous_rmse, rel=1e-3)


def test_base_model_starts_every_member_with_E0s_refitted(trained, tmp_path):
    from eelt.model.mace import MaceEnsemble, MaceMember
    from eelt.train.mace import initial_member

    data, frames, out_dir, _ = trained
    base_path, _ = MaceEnsemble([MaceMember.load(out_dir / "model-0.pt")]).export(tmp_path / "x")
    shifted = [a.copy() for a in frames]
    for a, b in zip(shifted, frames, strict=True):  # a new reference: 1 eV per atom lower
        a.calc = SinglePointCalculator(
            a, energy=b.get_potential_energy() - 4, forces=b.get_forces()
        )
    train = tiny_train(base_model=str(base_path))
    labels = [(a.get_potential_energy(), a.get_forces(), None) for a in shifted]
    start = initial_member(train, ["Cu"], 5, shifted, labels, None, str(base_path))
    base = MaceMember.from_base_model(base_path, ["Cu"], "float32")
    # the base's E0s (fitted on the old reference) give way to a fit on the new frames
    fitted = np.mean([a.get_potential_energy() / 4 for a in shifted])
    assert start.E0s_eV["Cu"] == pytest.approx(fitted, abs=1e-5)
    assert base.E0s_eV["Cu"] > fitted + 0.9
    for name, value in base.module.state_dict().items():
        if "atomic_energies" not in name:
            assert torch.equal(start.module.state_dict()[name], value)

    more = write_frames(tmp_path / "shifted.extxyz", shifted)
    with ThreadPoolExecutor(2) as pool:
        tuned = train_ensemble([str(more)], tmp_path / "tuned", train, ["Cu"], pool)
    assert [r.steps for r in tuned] == [10, 10]
    assert {r.init_from for r in tuned} == {str(base_path)}


def test_a_nan_loss_is_reported_as_divergence(tmp_path):
    # energies of +-1e30 eV are finite labels whose squared error overflows float32
    data = write_frames(tmp_path / "bad.extxyz", cu_frames(6, seed=5, energy_offset_eV=1e30))
    train = tiny_train(E0s={"Cu": 0.0}, steps=3)
    with ThreadPoolExecutor(1) as pool, pytest.raises(TrainingDiverged, match="members \\[0, 1\\]"):
        train_ensemble([str(data)], tmp_path / "m", train, ["Cu"], pool)
    assert not list((tmp_path / "m").glob("model-*.pt"))


class MemberCalculator(Calculator):
    """One member of a MaceEnsemble as an ASE calculator (what MD steps on)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, ensemble, member: int = 0):
        super().__init__()
        self.ensemble, self.member = ensemble, member

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        out = self.ensemble.predict([self.atoms], members=[self.member])
        self.results = {
            "energy": float(out["energy"][0, 0]),
            "forces": out["forces"][0].double().numpy(),
        }


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_trained_member_conserves_energy_in_nve(trained, precision):
    from eelt.model.mace import MaceEnsemble, MaceMember

    _, _, out_dir, _ = trained
    members = [MaceMember.load(out_dir / "model-0.pt").with_precision(precision)]
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=1)
    atoms.calc = MemberCalculator(MaceEnsemble(members))
    MaxwellBoltzmannDistribution(atoms, temperature_K=600, rng=np.random.default_rng(0))
    md = VelocityVerlet(atoms, timestep=2 * units.fs)
    totals, kinetic = [], []

    def record():
        totals.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())
        kinetic.append(atoms.get_kinetic_energy())

    md.attach(record, interval=1)
    md.run(200)
    totals = np.array(totals) / len(atoms)
    drift_meV = 1e3 * np.abs(totals - totals[0]).max()
    swing_meV = 1e3 * (np.max(kinetic) - np.min(kinetic)) / len(atoms)
    assert swing_meV > 10  # the atoms move: potential and kinetic energy trade
    assert drift_meV < 1.0 and drift_meV < 0.05 * swing_meV, (drift_meV, swing_meV)


def test_cli_trains_a_mace_ensemble_with_model_mace(tmp_path):
    from eelt.cli import app
    from eelt.model.mace import MaceEnsemble

    data = write_frames(tmp_path / "cu.extxyz", cu_frames(8, seed=7))
    config = tmp_path / "train.yaml"
    tiny = {k: v for k, v in TINY_MODEL.items() if k != "kind"} | {"steps": 10}
    config.write_text(
        yaml.safe_dump(
            {
                "train": {"ensemble_size": 2, "model": tiny},
                "execution": {"kind": "threads", "n_workers": 2},
            }
        )
    )
    out_dir = tmp_path / "models"
    args = ["train", "--data", str(data), "--out", str(out_dir), "--config", str(config)]
    result = CliRunner().invoke(app, [*args, "--model", "mace", "--json"])
    assert result.exit_code == 0, result.output
    members = json.loads(result.stdout)
    assert [m["member"] for m in members] == [0, 1] and all(m["steps"] == 10 for m in members)
    assert all(math.isfinite(m["val_force_rmse_meV_per_A"]) for m in members)
    assert MaceEnsemble.load(out_dir).n_members == 2
    assert read_json(out_dir / "family.json")["family"] == "mace"

    result = CliRunner().invoke(app, [*args, "--model", "deeppot"])
    assert result.exit_code == 2
    assert "train.model.channels: unknown key" in result.stderr


def test_cli_model_mace_without_config_uses_the_mace_defaults(monkeypatch, tmp_path):
    import eelt.train

    seen = {}

    def fake_train(data_files, out_dir, train, type_map, executor, **kwargs):
        seen["train"], seen["type_map"] = train, type_map
        return []

    monkeypatch.setattr(eelt.train, "train_ensemble", fake_train)
    from eelt.cli import app

    data = write_frames(tmp_path / "cu.extxyz", cu_frames(2, seed=7))
    config = tmp_path / "exec.yaml"
    config.write_text(yaml.safe_dump({"execution": {"kind": "threads"}}))
    args = ["train", "--data", str(data), "--out", str(tmp_path / "m"), "--config", str(config)]
    result = CliRunner().invoke(app, [*args, "--model", "mace"])
    assert result.exit_code == 0, result.output
    assert seen["train"].model == TrainConfig.model_validate({"model": {"kind": "mace"}}).model
    assert seen["type_map"] == ["Cu"]
    result = CliRunner().invoke(app, [*args, "--model", "nequip"])
    assert result.exit_code == 2 and "not one of deeppot, mace" in result.stderr
