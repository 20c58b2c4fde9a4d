"""K DeepPot-SE models of one architecture, weights stacked on a leading member axis.

One DeepPot is a stack of one; an Ensemble is a stack of K; members in training are a stack
of K that each evaluate their own frames. All run this code: all members on the same frames
(``evaluate``: an ensemble shares the batch, neighbor list and pair geometry) or each member
on its own (``evaluate_members``, member_batch.MemberBatch), nets run as batched matmuls
packed by size (packing.py). Forces and virials come from one backward pass with respect to
the pair vectors, which are a separate leaf per member (member k's energy depends only on
copy k).

The arithmetic is ``MemberStack.evaluate_frames``: tensors in, tensors out, TorchScript-able,
so the exported model (export.py) is this code scripted, not a copy of it, and a member is
exported as the code that trained it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from contextlib import nullcontext

import torch
from ase.data import atomic_numbers
from torch import nn

from eelt.model.descriptor import se_e2_a
from eelt.model.member_batch import MemberBatch
from eelt.model.neighbors import Batch
from eelt.model.networks import StackedMLP, member_rows, run_blocks
from eelt.model.packing import Packing, layout_packings, row_cost

PRECISIONS = {"float32": torch.float32, "float64": torch.float64}
STAT_NAMES = ("s_mean", "s_std", "s_rms", "a_std", "n_norm")


def check_architecture(
    type_map: Sequence[str],
    rcut_A: float,
    rcut_smth_A: float,
    embedding_widths: Sequence[int],
    axis_neuron: int,
    fitting_widths: Sequence[int],
) -> None:
    """ValueError naming the first bad hyper-parameter."""
    if not type_map:
        raise ValueError("type_map is empty")
    unknown = [s for s in type_map if s not in atomic_numbers or s == "X"]
    if unknown:
        raise ValueError(f"type_map {list(type_map)} has unknown element symbols {unknown}")
    if len(set(type_map)) != len(type_map):
        raise ValueError(f"type_map {list(type_map)} repeats an element")
    if not 0 <= rcut_smth_A < rcut_A:
        raise ValueError(f"need 0 <= rcut_smth_A ({rcut_smth_A}) < rcut_A ({rcut_A})")
    for name, widths in (
        ("embedding_widths", embedding_widths),
        ("fitting_widths", fitting_widths),
    ):
        if not widths or min(widths) < 1:
            raise ValueError(f"{name} must be a non-empty list of positive ints, got {widths}")
    if not 1 <= axis_neuron <= embedding_widths[-1]:
        raise ValueError(
            f"axis_neuron ({axis_neuron}) must be in 1..{embedding_widths[-1]} "
            "(the last embedding width)"
        )


def check_batch(stack: MemberStack, dtype: torch.dtype, type_counts: Sequence[int]) -> None:
    """ValueError when a batch (its positions' dtype, atoms per type) does not fit ``stack``."""
    if dtype != stack.dtype:
        raise ValueError(f"batch is {dtype}, model is {stack.dtype}: collate")
    if len(type_counts) > len(stack.type_map):
        raise ValueError(
            f"batch has atom types up to {len(type_counts) - 1}, "
            f"model type_map {stack.type_map} has {len(stack.type_map)} elements"
        )


class MemberStack(nn.Module):
    """K DeepPot-SE (se_e2_a) models evaluated together; outputs carry a leading member axis."""

    # not compiled when export.py scripts a subclass: Python-side conveniences
    __jit_unused_properties__ = ["n_members", "dtype", "device"]

    def __init__(
        self,
        n_members: int,
        type_map: Sequence[str],
        rcut_A: float,
        rcut_smth_A: float,
        embedding_widths: Sequence[int],
        axis_neuron: int,
        fitting_widths: Sequence[int],
        dtype: torch.dtype,
        generator: torch.Generator | None,
    ) -> None:
        super().__init__()
        check_architecture(
            type_map, rcut_A, rcut_smth_A, embedding_widths, axis_neuron, fitting_widths
        )
        self.type_map = list(type_map)
        self.rcut_A = float(rcut_A)
        self.rcut_smth_A = float(rcut_smth_A)
        self.axis_neuron = int(axis_neuron)
        n_types = len(type_map)
        self.embedding = nn.ModuleList(
            StackedMLP([1, *embedding_widths], n_members, False, dtype, generator)
            for _ in range(n_types**2)
        )
        n_descriptor = embedding_widths[-1] * axis_neuron
        self.fitting = nn.ModuleList(
            StackedMLP([n_descriptor, *fitting_widths], n_members, True, dtype, generator)
            for _ in range(n_types)
        )
        # what a row of the embedding and of the fitting nets costs (packing.row_cost)
        self.pack_costs = (
            row_cost([1, *embedding_widths], dtype),
            row_cost([n_descriptor, *fitting_widths, 1], dtype),
        )
        shape = (n_members, n_types)
        self.register_buffer("s_mean", torch.zeros(shape, dtype=dtype))
        self.register_buffer("s_std", torch.ones(shape, dtype=dtype))
        self.register_buffer("s_rms", torch.ones(shape, dtype=dtype))
        self.register_buffer("a_std", torch.ones(shape, dtype=dtype))
        self.register_buffer("n_norm", torch.ones(shape, dtype=dtype))
        self.register_buffer("energy_shift", torch.zeros(shape, dtype=dtype))

    @property
    def n_members(self) -> int:
        return self.energy_shift.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.energy_shift.dtype

    @property
    def device(self) -> torch.device:
        return self.energy_shift.device

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's weights and statistics, as a DeepPot's state_dict (copies)."""
        return {key: value[k : k + 1].detach().clone() for key, value in self.state_dict().items()}

    def evaluate(
        self,
        batch: Batch,
        forces: bool,
        virial: bool,
        create_graph: bool,
        members: slice = slice(None),
        packed: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """All members (or those ``members`` selects, a slice without step) on the same frames:
        energy (K, F) eV, atom_energy (K, N); forces (K, N, 3) eV/A; virial (K, F, 3, 3) eV.
        ``packed``: how the nets run (packing.block_groups)."""
        selected = range(self.n_members)[members]
        if selected.step != 1 or not selected:
            raise ValueError(f"members must select consecutive members, got {members}")
        center_types = batch.types if batch.centers_sorted else batch.types[batch.center_order]
        return self._evaluate_layout(
            batch.positions,
            batch.cell,
            batch.frame_index,
            batch.n_frames,
            batch.type_counts,
            batch.sel,
            center_types,
            None if batch.centers_sorted else batch.center_inverse,
            (batch.nbr_i, batch.nbr_j, batch.nbr_shift, batch.nbr_mask),
            selected.start,
            selected.stop,
            forces,
            virial,
            create_graph,
            packed,
        )

    def evaluate_members(
        self,
        batch: MemberBatch,
        forces: bool = True,
        virial: bool = False,
        create_graph: bool = False,
        packed: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """Member k on its own frames, frames k of ``batch``: energy (K, F) eV, atom_energy
        (K, N); forces (K, N, 3) eV/A and virial (K, F, 3, 3) eV. Atoms in the batch's layout
        (``batch.atom_order``); ghost atoms get zero forces. ``packed``: as in evaluate."""
        if batch.n_members != self.n_members:
            raise ValueError(f"batch has {batch.n_members} members, the stack {self.n_members}")
        out = self._evaluate_layout(
            batch.positions,
            batch.cell,
            batch.frame_index,
            batch.n_frames + 1,  # each member's ghost frame last
            batch.type_counts,
            batch.sel,
            batch.types,
            None,
            (batch.nbr_i, batch.nbr_j, batch.nbr_shift, batch.nbr_mask),
            0,
            self.n_members,
            forces,
            virial,
            create_graph,
            packed,
        )
        for key in ("energy", "virial"):
            if key in out:
                out[key] = out[key][:, : batch.n_frames]
        return out

    def _evaluate_layout(
        self,
        positions: torch.Tensor,
        cell: torch.Tensor,
        frame_index: torch.Tensor,
        n_frames: int,
        type_counts: list[int],
        sel: list[int],
        center_types: torch.Tensor,
        center_inverse: torch.Tensor | None,
        neighbors: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
        start: int,
        stop: int,
        forces: bool,
        virial: bool,
        create_graph: bool,
        packed: bool | None,
    ) -> dict[str, torch.Tensor]:
        """evaluate_frames with its packings, in grad mode for forces (as TorchScript code
        cannot switch it); outputs detached when grad mode was off."""
        check_batch(self, positions.dtype, type_counts)
        pairs, centers = packings(
            tuple(type_counts),
            tuple(sel),
            len(self.type_map),
            stop - start,
            self.pack_costs,
            positions.device,
            packed,
        )
        grads = forces or virial
        grad_outside = torch.is_grad_enabled()
        retain_graph = create_graph or (
            grads and grad_outside and any(p.requires_grad for p in self.parameters())
        )
        with torch.enable_grad() if grads else nullcontext():
            out = self.evaluate_frames(
                positions,
                cell,
                frame_index,
                n_frames,
                center_types,
                center_inverse,
                *neighbors,
                pairs,
                centers,
                start,
                stop,
                forces,
                virial,
                create_graph,
                retain_graph,
            )
        if not grad_outside:
            out = {key: value.detach() for key, value in out.items()}
        return out

    def evaluate_frames(
        self,
        positions: torch.Tensor,
        cell: torch.Tensor,
        frame_index: torch.Tensor,
        n_frames: int,
        center_types: torch.Tensor,
        center_inverse: torch.Tensor | None,
        nbr_i: torch.Tensor,
        nbr_j: torch.Tensor,
        nbr_shift: torch.Tensor,
        nbr_mask: torch.Tensor,
        pairs: Packing,
        centers: Packing,
        start: int,
        stop: int,
        forces: bool,
        virial: bool,
        create_graph: bool,
        retain_graph: bool,
    ) -> dict[str, torch.Tensor]:
        """The model on frames in a dense neighbor layout; tensors in, tensors out,
        TorchScript-able: training, MD, evaluation and the export all run it.

        Members start..stop-1 (K of them) on one layout that all of them share, or on K
        layouts, one per member, laid end to end (member k's atoms, frames and slots after
        those of members 0..k-1). A layout: N atoms, ``positions`` (N, 3) Angstrom, ``cell``
        (n_frames, 3, 3) Angstrom, ``frame_index`` (N,) each atom's frame; N * S slots
        (``nbr_i``, ``nbr_j``, ``nbr_shift``, ``nbr_mask``, see neighbors.Batch), centers in
        element order, ``center_types`` (N,) their elements and ``center_inverse`` (N,) each
        atom's center (None: atoms are in center order); indices count from the first layout's
        first atom or frame. ``pairs``, ``centers``: how the embedding and fitting nets run
        (packing.layout_packings). Returns energy (K, n_frames) eV and atom_energy (K, N);
        with ``forces`` forces (K, N, 3) eV/A, with ``virial`` virial (K, n_frames, 3, 3) eV,
        both by autograd, which needs grad mode on.
        """
        n_members, n_atoms = stop - start, center_types.shape[0]
        n_layouts = positions.shape[0] // max(n_atoms, 1)
        if n_layouts != 1 and n_layouts != n_members:
            raise ValueError("need one layout for all members or one per member")
        slot_frame = frame_index[nbr_i]
        pos = positions.detach()
        cell_shift = torch.bmm(nbr_shift.unsqueeze(1), cell[slot_frame]).squeeze(1)
        r = pos[nbr_j] - pos[nbr_i] + cell_shift
        # padding slots beyond rcut: they contribute exactly 0
        padding = torch.tensor([self.rcut_A + 1.0, 0.0, 0.0], dtype=r.dtype, device=r.device)
        r = torch.where(nbr_mask.unsqueeze(-1), r, padding).view(n_layouts, -1, 3)
        if n_layouts != n_members:
            r = r.expand(n_members, -1, -1).clone()
        grads = forces or virial
        if grads:
            r = r.detach().requires_grad_(True)
        atom_energy = self._atom_energies(r, center_types, pairs, centers, start, stop)
        if center_inverse is not None:
            atom_energy = atom_energy.index_select(1, center_inverse)
        frame_of = _flat(frame_index, n_layouts, n_members, n_frames)
        energy = atom_energy.new_zeros(n_members * n_frames).index_add(
            0, frame_of, atom_energy.flatten()
        )
        energy = energy.view(n_members, n_frames)
        out = {"energy": energy, "atom_energy": atom_energy}
        if not grads:
            return out
        g: torch.Tensor | None = None
        if energy.requires_grad:
            g = torch.autograd.grad(
                [energy.sum()],
                [r],
                retain_graph=retain_graph,
                create_graph=create_graph,
                allow_unused=True,
            )[0]
        if g is None:
            g = torch.zeros_like(r)
        if not create_graph:
            r = r.detach()
        g = g.reshape(-1, 3)
        if forces:
            f = g.new_zeros(n_members * n_atoms, 3)
            f = f.index_add(0, _flat(nbr_i, n_layouts, n_members, n_atoms), g)
            f = f.index_add(0, _flat(nbr_j, n_layouts, n_members, n_atoms), -g)
            out["forces"] = f.view(n_members, n_atoms, 3)
        if virial:
            rg = (r.reshape(-1, 3).unsqueeze(-1) * g.unsqueeze(-2)).flatten(-2)
            w = g.new_zeros(n_members * n_frames, 9)
            w = w.index_add(0, _flat(slot_frame, n_layouts, n_members, n_frames), -rg)
            out["virial"] = w.view(n_members, n_frames, 3, 3)
        return out

    def _atom_energies(
        self,
        r: torch.Tensor,
        center_types: torch.Tensor,
        pairs: Packing,
        centers: Packing,
        start: int,
        stop: int,
    ) -> torch.Tensor:
        """Pair vectors (K, N * S, 3) -> (K, N) atomic energies in eV (centers in element
        order), per-element shift included: the descriptor and the fitting nets."""
        embedding: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []
        for net in self.embedding:
            embedding.append(net.layers(start, stop))
        fitting: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []
        for net in self.fitting:
            fitting.append(net.layers(start, stop))
        stats: dict[str, torch.Tensor] = {
            "s_mean": member_rows(self.s_mean, start, stop),
            "s_std": member_rows(self.s_std, start, stop),
            "s_rms": member_rows(self.s_rms, start, stop),
            "a_std": member_rows(self.a_std, start, stop),
            "n_norm": member_rows(self.n_norm, start, stop),
        }
        d = se_e2_a(
            r,
            center_types,
            embedding,
            pairs,
            stats,
            self.rcut_smth_A,
            self.rcut_A,
            self.axis_neuron,
        )
        energy = run_blocks(fitting, True, centers, d).squeeze(-1)
        return energy + member_rows(self.energy_shift, start, stop)[:, center_types]


def _flat(index: torch.Tensor, n_layouts: int, n_members: int, size: int) -> torch.Tensor:
    """Indices into a layout's ``size`` atoms, slots or frames as indices into K layouts end to
    end: themselves when each member has its layout, else repeated with offsets k * size."""
    if n_layouts == n_members:
        return index
    offsets = torch.arange(n_members, device=index.device) * size
    return (index.unsqueeze(0) + offsets.unsqueeze(1)).flatten()


@functools.lru_cache(maxsize=256)
def packings(
    type_counts: tuple[int, ...],
    sel: tuple[int, ...],
    n_types: int,
    n_members: int,
    costs: tuple[int, int],
    device: torch.device,
    packed: bool | None,
) -> tuple[Packing, Packing]:
    """packing.layout_packings, kept for the layouts seen last (a training sees few)."""
    return layout_packings(list(type_counts), list(sel), n_types, n_members, costs, device, packed)


def stack_arguments(members: Sequence) -> dict:
    """MemberStack's constructor arguments for DeepPot ``members`` of one architecture."""
    first = members[0].hparams
    return {
        "n_members": len(members),
        "type_map": first["type_map"],
        "rcut_A": first["rcut_A"],
        "rcut_smth_A": first["rcut_smth_A"],
        "embedding_widths": first["embedding_widths"],
        "axis_neuron": first["axis_neuron"],
        "fitting_widths": first["fitting_widths"],
        "dtype": PRECISIONS[first["precision"]],
        "generator": None,
    }


def stacked_state(members: Sequence[nn.Module]) -> dict[str, torch.Tensor]:
    """The members' state_dicts concatenated along the member axis, in order."""
    states = [member.state_dict() for member in members]
    return {key: torch.cat([state[key] for state in states]) for key in states[0]}


def stack_members(members: Sequence) -> MemberStack:
    """A trainable MemberStack holding DeepPot ``members``' weights and statistics, in order,
    on member 0's device."""
    stack = MemberStack(**stack_arguments(members))
    stack.load_state_dict(stacked_state(members))
    return stack.to(members[0].device)
