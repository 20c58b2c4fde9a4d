"""An ensemble evaluated together equals its members evaluated one by one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eelt.model import DeepPot, Ensemble, build_graph, collate, force_deviation


@pytest.fixture
def members(cu_au_cell, methanol, small):
    type_map = ["H", "C", "O", "Cu", "Au"]
    models = [DeepPot(type_map, seed=seed, **small) for seed in range(3)]
    rattled = cu_au_cell.copy()
    rattled.positions += 0.2
    models[0].set_statistics([cu_au_cell, methanol])
    models[2].set_statistics([rattled])  # members may carry different statistics
    with torch.no_grad():
        models[1].energy_shift.copy_(torch.tensor([[-1.0, -2.0, -3.0, -4.0, -5.0]]))
    return models


@pytest.mark.parametrize("group", [3, 2, 1])  # members evaluated together: all, 2 + 1, 1 by 1
def test_ensemble_equals_members(members, cu_au_cell, methanol, group, monkeypatch):
    frames = [cu_au_cell, methanol, cu_au_cell[[2, 0, 1]]]
    type_map = members[0].type_map
    batch = collate([build_graph(a, type_map, members[0].rcut_A) for a in frames])
    per_member = batch.n_atoms * sum(batch.sel) * members[0].hparams["embedding_widths"][-1]
    monkeypatch.setattr("eelt.model.ensemble.MEMBER_GROUP_ELEMENTS", group * per_member)
    out = Ensemble(members)(batch, virial=True)
    assert out["energy"].shape == (3, 3) and out["forces"].shape == (3, batch.n_atoms, 3)
    assert out["virial"].shape == (3, 3, 3, 3) and not out["forces"].requires_grad
    for k, member in enumerate(members):
        alone = member(batch, virial=True)
        for key in ("energy", "atom_energy", "forces", "virial"):
            np.testing.assert_allclose(
                out[key][k].numpy(), alone[key].detach().numpy(), atol=1e-10, rtol=0
            )
    with torch.no_grad():
        quiet = Ensemble(members)(batch)
    assert torch.equal(quiet["forces"], out["forces"])
    # the members really differ
    assert (out["energy"][0] - out["energy"][1]).abs().min() > 1e-3


def test_ensemble_is_a_snapshot_with_consistent_attributes(members):
    ensemble = Ensemble(members)
    assert ensemble.n_members == 3 and ensemble.type_map == members[0].type_map
    assert ensemble.rcut_A == members[0].rcut_A and ensemble.dtype == torch.float64
    assert not any(p.requires_grad for p in ensemble.parameters())
    assert ensemble.member_hparams[2]["seed"] == 2


def test_incompatible_members_are_refused(small):
    with pytest.raises(ValueError, match="type_map"):
        Ensemble([DeepPot(["Cu", "Au"], **small), DeepPot(["Au", "Cu"], **small)])
    other = dict(small, fitting_widths=(8, 8))
    with pytest.raises(ValueError, match="fitting_widths"):
        Ensemble([DeepPot(["Cu"], **small), DeepPot(["Cu"], **other)])
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])


def test_load_directory_in_member_order(tmp_path, small, cu_au_cell):
    models = [DeepPot(["Cu", "Au"], seed=seed, **small) for seed in range(11)]
    for k, model in enumerate(models):
        model.save(tmp_path / f"model-{k}.pt")
    (tmp_path / "model-0.csv").write_text("step,loss\n")
    ensemble = Ensemble.load(tmp_path)
    assert [h["seed"] for h in ensemble.member_hparams] == list(range(11))
    batch = collate([build_graph(cu_au_cell, ["Cu", "Au"], small["rcut_A"])])
    out = ensemble(batch)
    np.testing.assert_allclose(
        out["energy"][10].numpy(), models[10](batch)["energy"].detach(), atol=1e-12
    )
    with pytest.raises(FileNotFoundError, match="model-"):
        Ensemble.load(tmp_path / "missing")


def test_force_deviation_definition():
    rng = np.random.default_rng(0)
    forces = rng.normal(size=(4, 5, 3))
    expected = np.sqrt(np.mean(np.sum((forces - forces.mean(0)) ** 2, axis=-1), axis=0))
    np.testing.assert_allclose(force_deviation(forces), expected, rtol=1e-14)
    as_torch = force_deviation(torch.from_numpy(forces))
    assert isinstance(as_torch, torch.Tensor)
    np.testing.assert_allclose(as_torch.numpy(), expected, rtol=1e-14)
    assert force_deviation(np.repeat(forces[:1], 4, axis=0)).max() == 0.0
    with pytest.raises(ValueError, match="shape"):
        force_deviation(forces[0])
