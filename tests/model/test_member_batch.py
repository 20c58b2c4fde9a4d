"""Per-member batches: member k of a stack on its own frames equals that member alone."""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from eelt.model import DeepPot, build_graph, collate
from eelt.model.member_batch import collate_members
from eelt.model.packing import PACK_PAD_MACS, layout_packings, row_cost
from eelt.model.stack import stack_members

TYPE_MAP = ["H", "C", "O", "Cu"]


@pytest.fixture
def members(small, methanol, rattled) -> list[DeepPot]:
    """Three members of one architecture, different seeds and statistics."""
    out = []
    for seed in (1, 2, 3):
        model = DeepPot(TYPE_MAP, seed=seed, **small)
        model.set_statistics(rattled(methanol, 3, 0.1, seed=seed))
        with torch.no_grad():
            model.s_mean[0, 3] = 0.2  # Cu: statistics the molecules cannot give
            model.energy_shift[0, 3] = -3.0
        out.append(model)
    return out


def frames_per_member(methanol) -> list[list]:
    """Different compositions per member (ghost atoms), molecules and a periodic cell."""
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    cu.rattle(0.1, seed=1)
    water, co2 = molecule("H2O"), molecule("CO2")
    return [[methanol, water], [cu, methanol], [co2, co2]]


@pytest.mark.parametrize("packed", [True, False, None])
def test_each_member_sees_only_its_frames(members, methanol, packed):
    stack = stack_members(members)
    per_member = frames_per_member(methanol)
    graphs = [[build_graph(a, TYPE_MAP, stack.rcut_A) for a in frames] for frames in per_member]
    batch = collate_members(graphs, torch.float64)
    assert batch.has_ghosts
    out = stack.evaluate_members(batch, forces=True, virial=True, packed=packed)
    for k, (model, graph) in enumerate(zip(members, graphs, strict=True)):
        ref = model(collate(graph, torch.float64), forces=True, virial=True)
        forces = out["forces"][k].detach()
        np.testing.assert_allclose(out["energy"][k].detach(), ref["energy"].detach(), rtol=1e-13)
        np.testing.assert_allclose(forces[batch.atom_order[k]], ref["forces"], atol=1e-12)
        np.testing.assert_allclose(out["virial"][k].detach(), ref["virial"], atol=1e-12)
        assert not forces[~batch.atom_mask[k]].any()  # ghost atoms: no forces


def test_forces_are_minus_the_energy_gradient(members, methanol):
    """Finite differences of member 1's energy on its own (periodic) frame."""
    stack = stack_members(members)
    per_member = frames_per_member(methanol)
    graphs = [[build_graph(a, TYPE_MAP, stack.rcut_A) for a in f] for f in per_member]
    out = stack.evaluate_members(collate_members(graphs, torch.float64), forces=True)
    cu = per_member[1][0]
    i = 2
    order = collate_members(graphs, torch.float64).atom_order[1]
    numeric = np.zeros(3)
    for axis in range(3):
        energies = []
        for step in (1e-5, -1e-5):
            moved = cu.copy()
            moved.positions[i, axis] += step
            g = [list(x) for x in graphs]
            g[1][0] = build_graph(moved, TYPE_MAP, stack.rcut_A)
            e = stack.evaluate_members(collate_members(g, torch.float64), forces=False)
            energies.append(float(e["energy"][1, 0].detach()))
        numeric[axis] = -(energies[0] - energies[1]) / 2e-5
    np.testing.assert_allclose(out["forces"][1, order[i]].detach(), numeric, atol=1e-7)


def test_batch_without_the_last_elements_of_the_type_map(members, methanol):
    """A batch whose frames lack the model's last element (Cu) runs the nets of the elements
    it has: net (t, u) is t * 4 + u for the model's 4 elements, not the batch's 3."""
    stack = stack_members(members)
    graphs = [[build_graph(a, TYPE_MAP, stack.rcut_A)] for a in (methanol, molecule("H2O"))]
    graphs.append([build_graph(molecule("CO2"), TYPE_MAP, stack.rcut_A)])
    batch = collate_members(graphs, torch.float64)
    assert len(batch.type_counts) == 3
    out = stack.evaluate_members(batch, forces=True)
    for k, (model, graph) in enumerate(zip(members, graphs, strict=True)):
        ref = model(collate(graph, torch.float64), forces=True)
        energy = out["energy"][k].detach()
        np.testing.assert_allclose(energy, ref["energy"].detach(), rtol=1e-13)
        forces = out["forces"][k][batch.atom_order[k]].detach()
        np.testing.assert_allclose(forces, ref["forces"], atol=1e-12)


def test_blocks_group_by_size():
    """Blocks of similar size share a group; a group pads at most PACK_PAD_MACS of arithmetic."""
    members, cpu = 4, torch.device("cpu")
    costs = (row_cost([1, 16, 32], torch.float32), row_cost([256, 64, 64, 64, 1], torch.float32))
    assert costs == ((16 + 16 * 32) // 2, (256 * 64 + 2 * 64 * 64 + 64) // 4)
    pairs, centers = layout_packings([24, 8, 4], [6, 2, 1], 3, members, costs, cpu, None)
    sizes = sorted(n * s for n in (24, 8, 4) for s in (6, 2, 1))
    assert sorted(n for nets in pairs.nets for n in nets) == list(range(9))
    assert 1 < len(pairs.nets) < 9
    placed = sorted(sizes, reverse=True)
    for nets, rows in zip(pairs.nets, pairs.rows, strict=True):
        group, placed = placed[: len(nets)], placed[len(nets) :]
        assert rows == group[0]
        padding = len(nets) * rows - sum(group)
        assert padding * members * costs[0] <= PACK_PAD_MACS or len(nets) == 1
    # fitting rows cost 23x embedding rows: 24 centers alone, 8 and 4 together (4 padded rows)
    assert centers.nets == [[0], [1, 2]] and centers.rows == [24, 8]
    one, _ = layout_packings([24, 8, 4], [6, 2, 1], 3, members, costs, cpu, True)
    assert len(one.nets) == 1 and one.rows[0] == 144
    small, _ = layout_packings([24, 8, 4], [6, 2, 1], 3, 1, (8, 8), cpu, None)
    assert len(small.nets) == 1  # little arithmetic: one group whatever the padding
    # every slot's result comes back to it: gather then scatter is the identity
    order = one.gather[one.scatter]
    assert torch.equal(order, torch.arange(sum((24, 8, 4)) * sum((6, 2, 1))))
    # float64 arithmetic counts double: smaller groups
    costs64 = tuple(2 * c for c in costs)
    pairs64, _ = layout_packings([24, 8, 4], [6, 2, 1], 3, members, costs64, cpu, None)
    assert len(pairs64.nets) > len(pairs.nets)


def test_nets_of_the_model_elements_in_the_packing():
    """Embedding net (t, u) is t * n_types + u with the model's n_types, whatever the layout."""
    pairs, centers = layout_packings([2, 1], [3, 1], 4, 1, (8, 8), torch.device("cpu"), False)
    assert sorted(n for nets in pairs.nets for n in nets) == [0, 1, 4, 5]
    assert sorted(n for nets in centers.nets for n in nets) == [0, 1]


def test_unequal_frame_counts_are_refused(methanol):
    g = build_graph(methanol, TYPE_MAP, 4.0)
    with pytest.raises(ValueError, match="equal counts"):
        collate_members([[g, g], [g]])
