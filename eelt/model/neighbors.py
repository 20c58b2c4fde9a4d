"""Neighbor graphs: per-frame pair lists (numpy, built once per frame) and batches (torch).

A pair (i, j, shift) stands for r_ij = x_j - x_i + shift @ cell (Angstrom); lists are full
(both i->j and j->i), from vesin, so cells smaller than 2 * rcut work.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
import vesin
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols


@dataclass(frozen=True)
class FrameGraph:
    """One frame's atoms and pairs within rcut; numpy arrays, positions in Angstrom."""

    numbers: np.ndarray  # (n,) atomic numbers
    types: np.ndarray  # (n,) index into the type map
    positions: np.ndarray  # (n, 3) float64, Angstrom
    cell: np.ndarray  # (3, 3) float64, Angstrom; zeros when no direction is periodic
    pbc: np.ndarray  # (3,) bool
    pair_i: np.ndarray  # (P,) int64 center atom
    pair_j: np.ndarray  # (P,) int64 neighbor atom
    shift: np.ndarray  # (P, 3) int64 cell shifts

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)


def element_types(numbers: np.ndarray, type_map: list[str]) -> np.ndarray:
    """Map atomic numbers to type indices; ValueError naming an element missing from type_map."""
    index = {atomic_numbers[symbol]: k for k, symbol in enumerate(type_map)}
    types = np.empty(len(numbers), dtype=np.int64)
    for z in np.unique(numbers):
        if int(z) not in index:
            raise ValueError(f"element {chemical_symbols[int(z)]} is not in type_map {type_map}")
        types[numbers == z] = index[int(z)]
    return types


def build_graph(atoms: Atoms, type_map: list[str], rcut_A: float) -> FrameGraph:
    """Full neighbor list of ``atoms`` within ``rcut_A`` (any triclinic cell, or none)."""
    numbers = np.asarray(atoms.numbers, dtype=np.int64)
    types = element_types(numbers, type_map)
    positions = np.asarray(atoms.positions, dtype=np.float64)
    pbc = np.asarray(atoms.pbc, dtype=bool).copy()
    cell = atoms.cell.array.astype(np.float64) if pbc.any() else np.zeros((3, 3))
    for axis in np.flatnonzero(pbc):
        if not np.linalg.norm(cell[axis]) > 0:
            raise ValueError(f"atoms are periodic along axis {axis} but cell vector {axis} is zero")
    pair_i, pair_j, shift = vesin.NeighborList(cutoff=rcut_A, full_list=True).compute(
        points=positions, box=cell, periodic=pbc if pbc.any() else False, quantities="ijS"
    )
    return FrameGraph(
        numbers=numbers,
        types=types,
        positions=positions,
        cell=cell,
        pbc=pbc,
        pair_i=pair_i.astype(np.int64),
        pair_j=pair_j.astype(np.int64),
        shift=shift.astype(np.int64),
    )


@dataclass
class Batch:
    """Several frames concatenated, plus a dense neighbor layout for the descriptor.

    Dense layout (DeePMD's "sel"): centers sorted by type (``center_order``), and for every
    center ``sum(sel)`` neighbor slots, ``sel[t]`` of them for neighbors of type t; the
    slots a center does not fill are padding (``nbr_mask`` False). Each (center type,
    neighbor type) block is then a rectangle, and the sum over neighbors a batched matmul.
    """

    positions: torch.Tensor  # (N, 3) Angstrom
    types: torch.Tensor  # (N,) long
    numbers: torch.Tensor  # (N,) long
    frame_index: torch.Tensor  # (N,) long
    cell: torch.Tensor  # (F, 3, 3) Angstrom
    pbc: torch.Tensor  # (F, 3) bool
    pair_i: torch.Tensor  # (P,) long, global atom index
    pair_j: torch.Tensor  # (P,) long
    shift: torch.Tensor  # (P, 3) integer-valued, in the positions' dtype
    n_atoms_per_frame: torch.Tensor  # (F,) long
    n_frames: int
    type_counts: list[int]  # atoms per type, type 0 .. max type in the batch
    sel: list[int]  # neighbor slots per neighbor type
    center_order: torch.Tensor  # (N,) atoms sorted by type (stable)
    center_inverse: torch.Tensor  # (N,) position of each atom in center_order
    centers_sorted: bool  # atoms already in type order: center_order is the identity
    nbr_i: torch.Tensor  # (N * sum(sel),) center atom of each slot (row-major by center)
    nbr_j: torch.Tensor  # (N * sum(sel),) neighbor atom (the center itself for padding)
    nbr_shift: torch.Tensor  # (N * sum(sel), 3) cell shifts, in the positions' dtype
    nbr_mask: torch.Tensor  # (N * sum(sel),) bool, True for real pairs

    @property
    def n_atoms(self) -> int:
        return self.positions.shape[0]

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with every tensor on ``device``."""
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            moved[f.name] = value.to(device) if isinstance(value, torch.Tensor) else value
        return Batch(**moved)


def dense_neighbors(
    types: np.ndarray, pair_i: np.ndarray, pair_j: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centers sorted by type, slots per neighbor type, and each pair's dense slot index.

    Returns (center_order, type_counts, sel, slot) with slot = rank_of_center * sum(sel)
    + offset of the neighbor type + rank among the center's neighbors of that type.
    """
    n_atoms = len(types)
    n_types = int(types.max()) + 1 if n_atoms else 1
    order = np.argsort(types, kind="stable")
    rank_of = np.empty(n_atoms, dtype=np.int64)
    rank_of[order] = np.arange(n_atoms)
    neighbor_type = types[pair_j]
    key = pair_i * n_types + neighbor_type
    counts = np.bincount(key, minlength=n_atoms * n_types)
    sel = counts.reshape(n_atoms, n_types).max(axis=0) if n_atoms else np.zeros(1, np.int64)
    first = np.cumsum(counts) - counts
    by_key = np.argsort(key, kind="stable")
    rank = np.empty(len(key), dtype=np.int64)
    rank[by_key] = np.arange(len(key)) - first[key[by_key]]
    offset = np.cumsum(sel) - sel
    slot = rank_of[pair_i] * int(sel.sum()) + offset[neighbor_type] + rank
    return order, np.bincount(types, minlength=n_types), sel, slot


def collate(
    graphs: list[FrameGraph], dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
) -> Batch:
    """Concatenate frames into one Batch (positions, cell and shifts in ``dtype``) on ``device``."""
    if not graphs:
        raise ValueError("collate needs at least one FrameGraph")
    n_atoms = np.array([g.n_atoms for g in graphs], dtype=np.int64)
    if n_atoms.sum() == 0:
        raise ValueError("collate got frames without atoms")
    offsets = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
    types = np.concatenate([g.types for g in graphs])
    pair_i = np.concatenate([g.pair_i + o for g, o in zip(graphs, offsets, strict=True)])
    pair_j = np.concatenate([g.pair_j + o for g, o in zip(graphs, offsets, strict=True)])
    shift = np.concatenate([g.shift for g in graphs])

    order, type_counts, sel, slot = dense_neighbors(types, pair_i, pair_j)
    nbr_i = np.repeat(order, int(sel.sum()))
    nbr_j = nbr_i.copy()
    nbr_j[slot] = pair_j
    nbr_shift = np.zeros((len(nbr_i), 3))
    nbr_shift[slot] = shift
    nbr_mask = np.zeros(len(nbr_i), dtype=bool)
    nbr_mask[slot] = True
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))

    def tensor(array: np.ndarray, kind: torch.dtype) -> torch.Tensor:
        # convert in numpy: torch's threaded CPU casts stall on a busy machine
        as_numpy = np.ascontiguousarray(array, dtype=str(kind).removeprefix("torch."))
        return torch.from_numpy(as_numpy).to(device)

    return Batch(
        positions=tensor(np.concatenate([g.positions for g in graphs]), dtype),
        types=tensor(types, torch.long),
        numbers=tensor(np.concatenate([g.numbers for g in graphs]), torch.long),
        frame_index=tensor(np.repeat(np.arange(len(graphs)), n_atoms), torch.long),
        cell=tensor(np.stack([g.cell for g in graphs]), dtype),
        pbc=tensor(np.stack([g.pbc for g in graphs]), torch.bool),
        pair_i=tensor(pair_i, torch.long),
        pair_j=tensor(pair_j, torch.long),
        shift=tensor(shift, dtype),
        n_atoms_per_frame=tensor(n_atoms, torch.long),
        n_frames=len(graphs),
        type_counts=type_counts.tolist(),
        sel=sel.tolist(),
        center_order=tensor(order, torch.long),
        center_inverse=tensor(inverse, torch.long),
        centers_sorted=bool((np.diff(types) >= 0).all()),
        nbr_i=tensor(nbr_i, torch.long),
        nbr_j=tensor(nbr_j, torch.long),
        nbr_shift=tensor(nbr_shift, dtype),
        nbr_mask=tensor(nbr_mask, torch.bool),
    )
