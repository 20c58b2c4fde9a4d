"""Per-member batches: K batches of frames, one per member of a MemberStack, in one layout.

Members trained together each draw their own frames, so member k evaluates only batch k
(``MemberStack.evaluate_members``). The K batches share one dense layout (see
neighbors.Batch), padded to the largest: per element as many centers as the member with most
(the others get ghost atoms without neighbors, summed into a ghost frame that is dropped),
per neighbor element as many slots as the widest center. Within a member, atoms are sorted by
element (real atoms before the ghosts of their element); atom, slot and frame indices are
flat over members (member k's atoms are k * N .. (k + 1) * N - 1, its frames
k * (F + 1) .. k * (F + 1) + F, F its ghost frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from eelt.model.neighbors import FrameGraph


@dataclass
class MemberBatch:
    """K batches of F frames each, one per member, in one dense neighbor layout (flat indices)."""

    n_members: int
    n_frames: int  # real frames per member; frame F of each member holds its ghost atoms
    type_counts: list[int]  # centers per element, per member (ghost atoms included)
    sel: list[int]  # neighbor slots per element
    positions: torch.Tensor  # (K * N, 3) Angstrom; ghost atoms at the origin
    cell: torch.Tensor  # (K * (F + 1), 3, 3) Angstrom
    frame_index: torch.Tensor  # (K * N,) long, flat frame of each atom
    types: torch.Tensor  # (N,) long, element at each position of a member's layout
    atom_mask: torch.Tensor  # (K, N) bool, real atoms
    atom_order: list[np.ndarray]  # per member: layout position of its atoms in input order
    nbr_i: torch.Tensor  # (K * N * S,) long, flat center of each slot
    nbr_j: torch.Tensor  # (K * N * S,) long, flat neighbor (the center itself for padding)
    nbr_shift: torch.Tensor  # (K * N * S, 3) cell shifts, in the positions' dtype
    nbr_mask: torch.Tensor  # (K * N * S,) bool, True for real pairs
    has_ghosts: bool  # whether any member's batch holds ghost atoms

    @property
    def n_atoms(self) -> int:
        """Atoms per member, ghost atoms included."""
        return int(sum(self.type_counts))


@dataclass(frozen=True, eq=False)
class FrameLayout:
    """What a frame brings to any layout, computed once: per atom its rank among the frame's
    atoms of its element; per pair the neighbor's element and the pair's rank among the
    center's neighbors of that element."""

    graph: FrameGraph
    type_counts: np.ndarray  # (T,) atoms per element, T = 1 + the frame's largest type
    sel: np.ndarray  # (T,) most neighbors of each element around one center
    rank_in_type: np.ndarray  # (n,)
    pair_type: np.ndarray  # (P,)
    pair_rank: np.ndarray  # (P,)


def frame_layout(graph: FrameGraph) -> FrameLayout:
    """The layout-independent part of collating ``graph`` (see FrameLayout)."""
    types = graph.types
    n_types = int(types.max()) + 1 if graph.n_atoms else 1
    order = np.argsort(types, kind="stable")
    counts = np.bincount(types, minlength=n_types)
    rank_in_type = np.empty(len(types), dtype=np.int64)
    rank_in_type[order] = np.arange(len(types)) - (np.cumsum(counts) - counts)[types[order]]
    pair_type = types[graph.pair_j]
    key = graph.pair_i * n_types + pair_type
    per_key = np.bincount(key, minlength=len(types) * n_types)
    by_key = np.argsort(key, kind="stable")
    pair_rank = np.empty(len(key), dtype=np.int64)
    pair_rank[by_key] = np.arange(len(key)) - (np.cumsum(per_key) - per_key)[key[by_key]]
    sel = per_key.reshape(len(types), n_types).max(axis=0) if len(types) else counts * 0
    return FrameLayout(graph, counts, sel, rank_in_type, pair_type, pair_rank)


def _padded(rows: list[np.ndarray], width: int) -> np.ndarray:
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def collate_members(
    frames: Sequence[Sequence[FrameGraph | FrameLayout]],
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> MemberBatch:
    """One MemberBatch of K lists of frames (one list per member, all of the same length);
    frames as FrameGraphs or, prepared once for many batches, as their FrameLayouts."""
    n_members = len(frames)
    if n_members == 0 or any(len(f) == 0 for f in frames):
        raise ValueError("collate_members needs at least one frame per member")
    n_frames = len(frames[0])
    if any(len(f) != n_frames for f in frames):
        raise ValueError(f"members got {[len(f) for f in frames]} frames; need equal counts")
    flat = [f if isinstance(f, FrameLayout) else frame_layout(f) for group in frames for f in group]
    graphs = [f.graph for f in flat]
    n_types = max(len(f.type_counts) for f in flat)
    counts = _padded([f.type_counts for f in flat], n_types).reshape(n_members, n_frames, -1)
    sel = _padded([f.sel for f in flat], n_types).max(axis=0)
    type_counts = counts.sum(axis=1).max(axis=0)  # per element, the member with most
    n_layout, n_slots = int(type_counts.sum()), int(sel.sum())
    type_start = np.cumsum(type_counts) - type_counts
    slot_start = np.cumsum(sel) - sel

    # each atom's place: its member's block, its element's block, after the same element's
    # atoms of the member's earlier frames
    n_atoms = np.array([g.n_atoms for g in graphs], dtype=np.int64)
    frame_of_atom = np.repeat(np.arange(len(flat)), n_atoms)
    types = np.concatenate([g.types for g in graphs])
    earlier = (np.cumsum(counts, axis=1) - counts).reshape(len(flat), -1)
    local = (
        type_start[types]
        + earlier[frame_of_atom, types]
        + np.concatenate([f.rank_in_type for f in flat])
    )
    member_of_atom = frame_of_atom // n_frames
    where = member_of_atom * n_layout + local
    atom_start = np.cumsum(n_atoms) - n_atoms
    member_atoms = np.add.reduceat(n_atoms, np.arange(0, len(flat), n_frames))
    atom_order = np.split(local, np.cumsum(member_atoms)[:-1])

    positions = np.zeros((n_members * n_layout, 3))
    positions[where] = np.concatenate([g.positions for g in graphs])
    frame_index = np.repeat(np.arange(n_members) * (n_frames + 1) + n_frames, n_layout)
    frame_index[where] = frame_of_atom + member_of_atom  # member k's frames start at k(F+1)
    atom_mask = np.zeros(n_members * n_layout, dtype=bool)
    atom_mask[where] = True
    cell = np.zeros((n_members, n_frames + 1, 3, 3))
    cell[:, :n_frames] = np.stack([g.cell for g in graphs]).reshape(n_members, n_frames, 3, 3)

    pair_i = np.concatenate([g.pair_i + o for g, o in zip(graphs, atom_start, strict=True)])
    pair_j = np.concatenate([g.pair_j + o for g, o in zip(graphs, atom_start, strict=True)])
    pair_type = np.concatenate([f.pair_type for f in flat])
    slot = (
        where[pair_i] * n_slots
        + slot_start[pair_type]
        + np.concatenate([f.pair_rank for f in flat])
    )
    nbr_i = np.repeat(np.arange(n_members * n_layout), n_slots)
    nbr_j = nbr_i.copy()
    nbr_j[slot] = where[pair_j]
    nbr_shift = np.zeros((len(nbr_i), 3))
    nbr_shift[slot] = np.concatenate([g.shift for g in graphs])
    nbr_mask = np.zeros(len(nbr_i), dtype=bool)
    nbr_mask[slot] = True

    def tensor(array: np.ndarray, kind: torch.dtype) -> torch.Tensor:
        as_numpy = np.ascontiguousarray(array, dtype=str(kind).removeprefix("torch."))
        return torch.from_numpy(as_numpy).to(device)

    return MemberBatch(
        n_members=n_members,
        n_frames=n_frames,
        type_counts=type_counts.tolist(),
        sel=sel.tolist(),
        positions=tensor(positions, dtype),
        cell=tensor(cell.reshape(-1, 3, 3), dtype),
        frame_index=tensor(frame_index, torch.long),
        types=tensor(np.repeat(np.arange(n_types), type_counts), torch.long),
        atom_mask=tensor(atom_mask.reshape(n_members, n_layout), torch.bool),
        atom_order=atom_order,
        nbr_i=tensor(nbr_i, torch.long),
        nbr_j=tensor(nbr_j, torch.long),
        nbr_shift=tensor(nbr_shift, dtype),
        nbr_mask=tensor(nbr_mask, torch.bool),
        has_ghosts=not bool(atom_mask.all()),
    )
