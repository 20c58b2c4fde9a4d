"""Neighbor graphs and batches: the pairs are the ones ASE finds, batched consistently."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list

from eelt.model import build_graph, collate
from eelt.model.descriptor import environment, smooth_switch


def pair_distances(graph):
    r = graph.positions[graph.pair_j] - graph.positions[graph.pair_i] + graph.shift @ graph.cell
    return np.linalg.norm(r, axis=1)


def test_small_skewed_cell_matches_ase(cu_au_cell):
    atoms = cu_au_cell.copy()
    atoms.positions += [7.0, -11.0, 3.0]  # unwrapped positions
    graph = build_graph(atoms, ["Cu", "Au"], 4.0)
    i, j, d = neighbor_list("ijd", atoms, 4.0)
    assert len(graph.pair_i) == len(i) > 10 * len(atoms)  # many periodic images
    key = np.lexsort((np.round(pair_distances(graph), 9), graph.pair_j, graph.pair_i))
    ref = np.lexsort((np.round(d, 9), j, i))
    np.testing.assert_array_equal(graph.pair_i[key], i[ref])
    np.testing.assert_array_equal(graph.pair_j[key], j[ref])
    np.testing.assert_allclose(pair_distances(graph)[key], d[ref], atol=1e-9)
    assert graph.types.tolist() == [0, 0, 1]


def test_periodic_without_cell_is_refused():
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2]], pbc=True)
    with pytest.raises(ValueError, match="periodic along axis 0"):
        build_graph(atoms, ["Cu"], 3.0)


def test_molecule_without_cell(methanol):
    methanol.cell = [5.0, 5.0, 5.0]  # a cell without periodicity is ignored
    graph = build_graph(methanol, ["C", "H", "O"], 1.5)
    assert not graph.pbc.any() and not graph.cell.any() and not graph.shift.any()
    i, j = neighbor_list("ij", methanol, 1.5)
    assert sorted(zip(graph.pair_i, graph.pair_j, strict=True)) == sorted(zip(i, j, strict=True))


def test_collate_offsets_and_dense_layout(methanol, cu_au_cell):
    graphs = [build_graph(a, ["Cu", "Au", "C", "H", "O"], 4.0) for a in (methanol, cu_au_cell)]
    batch = collate(graphs, torch.float32)
    assert batch.positions.dtype == torch.float32 and batch.nbr_shift.dtype == torch.float32
    assert batch.n_frames == 2 and batch.n_atoms_per_frame.tolist() == [6, 3]
    assert batch.frame_index.tolist() == [0] * 6 + [1] * 3
    assert batch.cell.shape == (2, 3, 3) and not batch.cell[0].any()
    i, j = batch.pair_i.numpy(), batch.pair_j.numpy()
    assert (batch.frame_index[i] == batch.frame_index[j]).all()
    assert len(i) == len(graphs[0].pair_i) + len(graphs[1].pair_i)

    types = batch.types.numpy()
    assert batch.type_counts == np.bincount(types).tolist()
    order = batch.center_order.numpy()
    assert (np.diff(types[order]) >= 0).all() and not batch.centers_sorted
    assert (order[batch.center_inverse.numpy()] == np.arange(9)).all()
    # every pair appears once in the dense layout, in its center's row and its type's block
    n_slots = sum(batch.sel)
    mask = batch.nbr_mask.numpy()
    nbr_i, nbr_j = batch.nbr_i.numpy(), batch.nbr_j.numpy()
    assert mask.sum() == len(i) and len(mask) == 9 * n_slots
    assert (nbr_i == np.repeat(order, n_slots)).all()
    dense = {
        (a, b, tuple(s))
        for a, b, s in zip(nbr_i[mask], nbr_j[mask], batch.nbr_shift.numpy()[mask], strict=True)
    }
    sparse = {(a, b, tuple(s)) for a, b, s in zip(i, j, batch.shift.numpy(), strict=True)}
    assert dense == sparse
    block_start = np.cumsum(batch.sel) - batch.sel
    column = np.tile(np.arange(n_slots), 9)[mask]
    neighbor_type = types[nbr_j[mask]]
    assert (column >= block_start[neighbor_type]).all()
    assert (column < block_start[neighbor_type] + np.array(batch.sel)[neighbor_type]).all()
    moved = batch.to("cpu")
    assert torch.equal(moved.nbr_j, batch.nbr_j) and moved.sel == batch.sel


def test_collate_isolated_atom():
    batch = collate([build_graph(Atoms("Cu"), ["Cu"], 3.0)])
    assert batch.sel == [0] and len(batch.pair_i) == 0 and len(batch.nbr_i) == 0
    with pytest.raises(ValueError, match="at least one"):
        collate([])


def test_switch_and_environment_row():
    r = torch.tensor([0.5, 1.0, 2.0, 3.0, 3.5], dtype=torch.float64)
    sw = smooth_switch(r, 1.0, 3.0)
    assert sw[:2].tolist() == [1.0, 1.0] and sw[3:].tolist() == [0.0, 0.0]
    assert sw[2].item() == pytest.approx(0.5)
    # zero slope at both ends
    h = 1e-6
    for edge in (1.0, 3.0):
        ends = torch.tensor([edge + h, edge - h], dtype=torch.float64)
        slope = (smooth_switch(ends, 1.0, 3.0) @ torch.tensor([1.0, -1.0]).double()) / (2 * h)
        assert abs(slope.item()) < 1e-9
    vec = torch.tensor([[[0.6, 0.0, 0.8]]], dtype=torch.float64)
    s, env = environment(vec, 0.5, 2.0)
    assert s.item() == pytest.approx(smooth_switch(torch.tensor(1.0), 0.5, 2.0).item())
    np.testing.assert_allclose(env[0, 0].numpy(), s.item() * np.array([1.0, 0.6, 0.0, 0.8]))
