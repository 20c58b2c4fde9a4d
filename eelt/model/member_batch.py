"""Per-member batches: K batches of frames, one per member of a MemberStack, in one layout.

Members trained together each draw their own frames, so member k evaluates only batch k.
The K batches share one dense layout (see neighbors.Batch), padded to the largest: per
element as many centers as the member with most (the others get ghost atoms without
neighbors, summed into a ghost frame that is dropped), per neighbor element as many slots
as the widest center. Within a member, atoms are sorted by element (real atoms before the
ghosts of their element); atom, slot and frame indices are flat over members (member k's
atoms are k * N .. (k + 1) * N - 1, its frames k * (F + 1) .. k * (F + 1) + F, F its ghost
frame).

The layout also says how the per element-pair embedding nets and per element fitting nets
run. The per-operation overhead, not the arithmetic, sets the time of a training step of
small nets, so blocks of similar size run as one batched MLP ("group"), each padded to the
largest of its group; the padding of a group is bounded (PACK_PAD_ELEMENTS), so large
nets, whose time is arithmetic, do not pay for it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from eelt.model.descriptor import environment
from eelt.model.neighbors import FrameGraph
from eelt.model.networks import residual_mlp
from eelt.model.stack import MemberStack, check_batch

# A block joins a group while the group's padding, over all members and the nets' widest
# layer, stays within PACK_PAD_ELEMENTS (about what the per-operation overhead of running it
# apart costs in arithmetic); all blocks form one group when the padded rows of all members
# times the widest layer are at most PACK_SMALL_ELEMENTS, and on an accelerator, where a
# kernel launch costs more than small arithmetic. Measured CPU ms per training step, 4 frames
# of ethanol per member, the water example's nets, float32, one thread: one member 7.6 in
# groups (here: one, padded 4x), 10.4 block by block, 11.8 in MemberStack.evaluate; four
# members 12.4 in groups, 16.1 as one group, 16.8 block by block, 19.2 in MemberStack.evaluate
# (one batch shared by all).
PACK_PAD_ELEMENTS = 2**15
PACK_SMALL_ELEMENTS = 2**16


@dataclass
class Packing:
    """Blocks of rows, each through its own net, in groups that each run as one batched MLP.

    ``gather`` (P,) lays the rows out group after group, group g holding its blocks
    ``groups[g][0]`` (their nets) padded to ``groups[g][1]`` rows each (padding repeats a
    row of the block); ``scatter`` (rows,) says where each row's result lies in the P.
    None: the identity.
    """

    groups: list[tuple[list[int], int]]
    gather: torch.Tensor | None
    scatter: torch.Tensor | None


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


def _groups(sizes: list[int], pad_rows: int, small: bool, packed: bool | None) -> list[list[int]]:
    """Blocks (indices into ``sizes``) in groups: largest first, a group taking the next
    block while its padding stays within ``pad_rows`` rows; one group when ``small``."""
    order = sorted(range(len(sizes)), key=lambda b: -sizes[b])
    if packed or (packed is None and small):
        return [order]
    if packed is False:
        return [[b] for b in range(len(sizes))]
    groups: list[list[int]] = []
    for b in order:
        if groups:
            group = groups[-1]
            padding = sizes[group[0]] * (len(group) + 1) - sum(sizes[c] for c in group) - sizes[b]
            if padding <= pad_rows:
                group.append(b)
                continue
        groups.append([b])
    return groups


def _packing(
    nets: list[int],
    rows: list[np.ndarray],
    n_rows: int,
    pad_rows: int,
    small: bool,
    device: torch.device,
    packed: bool | None,
) -> Packing:
    """Packing of blocks: net ``nets[b]`` on rows ``rows[b]`` (together all 0..n_rows-1)."""
    sizes = [len(r) for r in rows]
    layout, gather = [], []
    scatter = np.empty(n_rows, dtype=np.int64)
    start = 0
    for group in _groups(sizes, pad_rows, small, packed):
        most = max(sizes[b] for b in group)
        for b in group:
            r = rows[b]
            block = np.full(most, r[0] if len(r) else 0, dtype=np.int64)
            block[: len(r)] = r
            gather.append(block)
            scatter[r] = start + np.arange(len(r))
            start += most
        layout.append(([nets[b] for b in group], most))
    gather = np.concatenate(gather)
    identity = len(gather) == n_rows and bool((gather == np.arange(n_rows)).all())
    return Packing(
        groups=layout,
        gather=None if identity else torch.from_numpy(gather).to(device),
        scatter=None if identity else torch.from_numpy(scatter).to(device),
    )


@functools.lru_cache(maxsize=256)
def packings(
    type_counts: tuple[int, ...],
    sel: tuple[int, ...],
    n_members: int,
    widths: tuple[int, int],
    device: torch.device,
    packed: bool | None,
) -> tuple[Packing, Packing]:
    """How the embedding nets (rows: a member's N * S slots) and the fitting nets (rows: its
    N centers) run on a layout; ``widths``: the widest layer of each. ``packed`` True: all
    blocks in one group; False: block by block; None: see PACK_PAD_ELEMENTS."""
    n_types, n_slots = len(type_counts), sum(sel)
    center_start = np.cumsum([0, *type_counts])[:-1]
    slot_start = np.cumsum([0, *sel])[:-1]
    pair_nets, pair_rows, center_nets, center_rows = [], [], [], []
    for t, n_centers in enumerate(type_counts):
        if not n_centers:
            continue
        centers = center_start[t] + np.arange(n_centers)
        center_nets.append(t)
        center_rows.append(centers)
        for u, n_sel in enumerate(sel):
            if n_sel:
                slots = slot_start[u] + np.arange(n_sel)
                pair_nets.append(t * n_types + u)
                pair_rows.append((centers[:, None] * n_slots + slots[None, :]).ravel())
    if not pair_nets:  # no neighbors anywhere: one empty block keeps one code path
        pair_nets, pair_rows = [0], [np.zeros(0, dtype=np.int64)]
    out = []
    for nets, rows, n_rows, width in (
        (pair_nets, pair_rows, sum(type_counts) * n_slots, widths[0]),
        (center_nets, center_rows, sum(type_counts), widths[1]),
    ):
        padded = max(len(r) for r in rows) * len(rows)
        small = device.type != "cpu" or n_members * padded * width <= PACK_SMALL_ELEMENTS
        pad_rows = PACK_PAD_ELEMENTS // (n_members * width)
        out.append(_packing(nets, rows, n_rows, pad_rows, small, device, packed))
    return out[0], out[1]


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


def evaluate_members(
    stack: MemberStack,
    batch: MemberBatch,
    forces: bool = True,
    virial: bool = False,
    create_graph: bool = False,
    packed: bool | None = None,
) -> dict[str, torch.Tensor]:
    """Member k of ``stack`` on frames k of ``batch``: energy (K, F) eV, atom_energy (K, N);
    forces (K, N, 3) eV/A and virial (K, F, 3, 3) eV by autograd. Atoms in the batch's
    layout (``batch.atom_order``); ghost atoms get zero forces.

    The same model as ``MemberStack.evaluate``; only the sums run in another order.
    ``packed``: how the nets run, see ``packings``.
    """
    n_members, n_atoms, n_frames = batch.n_members, batch.n_atoms, batch.n_frames
    if stack.n_members != n_members:
        raise ValueError(f"batch has {n_members} members, the stack {stack.n_members}")
    check_batch(stack, batch.positions.dtype, batch.type_counts)
    slot_frame = batch.frame_index[batch.nbr_i]
    pos = batch.positions.detach()
    cell_shift = torch.bmm(batch.nbr_shift.unsqueeze(1), batch.cell[slot_frame]).squeeze(1)
    r = pos[batch.nbr_j] - pos[batch.nbr_i] + cell_shift
    padding = r.new_tensor([stack.rcut_A + 1.0, 0.0, 0.0])  # beyond rcut: contributes 0
    r = torch.where(batch.nbr_mask.unsqueeze(-1), r, padding).view(n_members, -1, 3)
    grads = forces or virial
    grad_outside = torch.is_grad_enabled()
    with torch.enable_grad() if grads else nullcontext():
        if grads:
            r = r.detach().requires_grad_(True)
        atom_energy = _atom_energies(stack, r, batch, packed)
        energy = atom_energy.new_zeros(n_members * (n_frames + 1))
        energy = energy.index_add(0, batch.frame_index, atom_energy.reshape(-1))
        energy = energy.view(n_members, n_frames + 1)[:, :n_frames]
    out = {"energy": energy, "atom_energy": atom_energy}
    if not grads:
        return out
    g = None
    if energy.requires_grad:
        keep = create_graph or (grad_outside and any(p.requires_grad for p in stack.parameters()))
        with torch.enable_grad():
            (g,) = torch.autograd.grad(
                energy.sum(), r, create_graph=create_graph, retain_graph=keep, allow_unused=True
            )
    if g is None:
        g = torch.zeros_like(r)
    if not grad_outside:
        out = {key: value.detach() for key, value in out.items()}
    flat_g = g.reshape(-1, 3)
    if forces:
        f = flat_g.new_zeros(n_members * n_atoms, 3).index_add(0, batch.nbr_i, flat_g)
        out["forces"] = f.index_add(0, batch.nbr_j, -flat_g).view(n_members, n_atoms, 3)
    if virial:
        rg = (r.reshape(-1, 3).unsqueeze(-1) * flat_g.unsqueeze(-2)).flatten(-2)
        w = rg.new_zeros(n_members * (n_frames + 1), 9).index_add(0, slot_frame, -rg)
        out["virial"] = w.view(n_members, n_frames + 1, 3, 3)[:, :n_frames]
    if not create_graph:
        out = {k: v.detach() if k in ("forces", "virial") else v for k, v in out.items()}
    return out


def _atom_energies(
    stack: MemberStack, r: torch.Tensor, batch: MemberBatch, packed: bool | None
) -> torch.Tensor:
    """Pair vectors (K, N * S, 3) -> atomic energies (K, N) eV, per-element shift included:
    the se_e2_a descriptor (see descriptor.se_e2_a) and the fitting nets."""
    n_members, n_atoms, n_slots = batch.n_members, batch.n_atoms, sum(batch.sel)
    width = stack.embedding[0].weights[-1].shape[-1]
    center = batch.types
    widths = (_widest(stack.embedding[0]), _widest(stack.fitting[0]))
    pairs, centers = packings(
        tuple(batch.type_counts), tuple(batch.sel), n_members, widths, r.device, packed
    )
    s, env = environment(r, stack.rcut_smth_A, stack.rcut_A)
    x = (s.view(n_members, n_atoms, n_slots) - stack.s_mean[:, center, None]) / stack.s_std[
        :, center, None
    ]
    g = _run_blocks(stack.embedding, pairs, x.reshape(n_members, -1, 1))
    env = env.view(n_members * n_atoms, n_slots, 4)
    t = torch.bmm(env.transpose(1, 2), g.view(n_members * n_atoms, n_slots, width))
    # R~ rows scaled by their RMS and the mean neighbor count, per center element
    scale = torch.cat(
        [stack.s_rms[:, center, None], stack.a_std[:, center, None].expand(-1, -1, 3)], 2
    )
    scale = scale * stack.n_norm[:, center, None]
    t = (t.view(n_members, n_atoms, 4, width) / scale[..., None]).view(-1, 4, width)
    d = torch.bmm(t.transpose(1, 2), t[:, :, : stack.axis_neuron])
    d = d.view(n_members, n_atoms, width * stack.axis_neuron)
    energy = _run_blocks(stack.fitting, centers, d).squeeze(-1)
    return energy + stack.energy_shift[:, center]


def _widest(net: nn.Module) -> int:
    """The widest layer (input included) of a StackedMLP."""
    return max(net.weights[0].shape[1], *(w.shape[-1] for w in net.weights))


def _run_blocks(nets: nn.ModuleList, packing: Packing, x: torch.Tensor) -> torch.Tensor:
    """Rows x (K, R, n_in) -> (K, R, n_out), each block through its own stacked MLP."""
    n_members = x.shape[0]
    if packing.gather is not None:
        x = x[:, packing.gather]
    linear_out = nets[packing.groups[0][0][0]].linear_out
    outs = []
    start = 0
    for group, rows in packing.groups:
        chosen = [nets[n] for n in group]
        stop = start + len(group) * rows
        part = x if len(packing.groups) == 1 else x[:, start:stop]
        if len(group) == 1:
            y = residual_mlp(part, list(chosen[0].weights), list(chosen[0].biases), linear_out)
        else:
            n_layers = len(chosen[0].weights)
            weights = [torch.stack([c.weights[i] for c in chosen], 1) for i in range(n_layers)]
            biases = [torch.stack([c.biases[i] for c in chosen], 1) for i in range(n_layers)]
            part = part.reshape(n_members * len(group), rows, part.shape[-1])
            y = residual_mlp(
                part,
                [w.flatten(0, 1) for w in weights],
                [b.flatten(0, 1) for b in biases],
                linear_out,
            ).view(n_members, len(group) * rows, -1)
        outs.append(y)
        start = stop
    y = torch.cat(outs, 1) if len(outs) > 1 else outs[0]
    return y if packing.scatter is None else y[:, packing.scatter]
