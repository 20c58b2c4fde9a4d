"""K DeepPot-SE models of one architecture, weights stacked on a leading member axis.

One DeepPot is a stack of one; an Ensemble is a stack of K. Both run this code, so an
ensemble shares the batch, neighbor list and pair geometry and runs its nets as batched
matmuls. Forces and virials come from one backward pass with respect to the pair vectors,
which are a separate leaf per member (member k's energy depends only on copy k).

The arithmetic is ``MemberStack.evaluate_frames``: tensors in, tensors out, TorchScript-able,
so the exported model (export.py) is this code scripted, not a copy of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
from ase.data import atomic_numbers
from torch import nn

from eelt.model.descriptor import se_e2_a
from eelt.model.neighbors import Batch
from eelt.model.networks import StackedMLP, member_rows, residual_mlp

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

    def evaluate(
        self,
        batch: Batch,
        forces: bool,
        virial: bool,
        create_graph: bool,
        members: slice = slice(None),
    ) -> dict[str, torch.Tensor]:
        """energy (K, F) eV, atom_energy (K, N); forces (K, N, 3) eV/A; virial (K, F, 3, 3) eV.

        K counts the members selected by ``members`` (a slice without step). Forces need
        autograd: grad mode is switched on for them, as TorchScript code cannot.
        """
        selected = range(self.n_members)[members]
        if selected.step != 1 or not selected:
            raise ValueError(f"members must select consecutive members, got {members}")
        check_batch(self, batch.positions.dtype, batch.type_counts)
        grads = forces or virial
        grad_outside = torch.is_grad_enabled()
        retain_graph = create_graph or (
            grads and grad_outside and any(p.requires_grad for p in self.parameters())
        )
        with torch.enable_grad() if grads else nullcontext():
            out = self.evaluate_frames(
                batch.positions,
                batch.types,
                batch.cell,
                batch.frame_index,
                batch.n_frames,
                batch.type_counts,
                batch.sel,
                None if batch.centers_sorted else batch.center_inverse,
                batch.nbr_i,
                batch.nbr_j,
                batch.nbr_shift,
                batch.nbr_mask,
                selected.start,
                selected.stop,
                forces,
                virial,
                create_graph,
                retain_graph,
            )
        if grads and not grad_outside:
            out = {key: value.detach() for key, value in out.items()}
        return out

    def evaluate_frames(
        self,
        positions: torch.Tensor,
        types: torch.Tensor,
        cell: torch.Tensor,
        frame_index: torch.Tensor,
        n_frames: int,
        type_counts: list[int],
        sel: list[int],
        center_inverse: torch.Tensor | None,
        nbr_i: torch.Tensor,
        nbr_j: torch.Tensor,
        nbr_shift: torch.Tensor,
        nbr_mask: torch.Tensor,
        start: int,
        stop: int,
        forces: bool,
        virial: bool,
        create_graph: bool,
        retain_graph: bool,
    ) -> dict[str, torch.Tensor]:
        """The model on frames in the dense neighbor layout of ``Batch`` (its fields, by name);
        tensors in, tensors out, TorchScript-able: training, MD and the export all run it.

        Members start..stop-1. Returns energy (K, F) eV and atom_energy (K, N); with
        ``forces`` forces (K, N, 3) eV/A, with ``virial`` virial (K, F, 3, 3) eV, both by
        autograd, which needs grad mode on. ``center_inverse`` None: atoms sorted by type.
        """
        n_members, n_atoms = stop - start, positions.shape[0]
        slot_frame = frame_index[nbr_i]
        pos = positions.detach()
        cell_shift = torch.bmm(nbr_shift.unsqueeze(1), cell[slot_frame]).squeeze(1)
        r = pos[nbr_j] - pos[nbr_i] + cell_shift
        # padding slots beyond rcut: they contribute exactly 0
        padding = torch.tensor([self.rcut_A + 1.0, 0.0, 0.0], dtype=r.dtype, device=r.device)
        r = torch.where(nbr_mask.unsqueeze(-1), r, padding).expand(n_members, -1, -1)
        grads = forces or virial
        if grads:
            r = r.clone().requires_grad_(True)
        embedding: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []
        for net in self.embedding:
            embedding.append(net.layers(start, stop))
        stats: dict[str, torch.Tensor] = {
            "s_mean": member_rows(self.s_mean, start, stop),
            "s_std": member_rows(self.s_std, start, stop),
            "s_rms": member_rows(self.s_rms, start, stop),
            "a_std": member_rows(self.a_std, start, stop),
            "n_norm": member_rows(self.n_norm, start, stop),
        }
        descriptors = se_e2_a(
            r, type_counts, sel, embedding, stats, self.rcut_smth_A, self.rcut_A, self.axis_neuron
        )
        atom_energy = self._atom_energies(descriptors, types, center_inverse, start, stop)
        energy = atom_energy.new_zeros(n_members, n_frames).index_add(1, frame_index, atom_energy)
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
        if forces:
            f = r.new_zeros(n_members, n_atoms, 3).index_add(1, nbr_i, g)
            out["forces"] = f.index_add(1, nbr_j, -g)
        if virial:
            rg = (r.unsqueeze(-1) * g.unsqueeze(-2)).flatten(-2)
            w = r.new_zeros(n_members, n_frames, 9).index_add(1, slot_frame, -rg)
            out["virial"] = w.view(n_members, n_frames, 3, 3)
        return out

    def _atom_energies(
        self,
        descriptors: list[tuple[int, torch.Tensor]],
        types: torch.Tensor,
        center_inverse: torch.Tensor | None,
        start: int,
        stop: int,
    ) -> torch.Tensor:
        """Per-element descriptors -> (K, N) atomic energies in eV, per-element shift included."""
        fitting: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []
        for net in self.fitting:
            fitting.append(net.layers(start, stop))
        parts: list[torch.Tensor] = []
        for center_type, d in descriptors:
            weights, biases = fitting[center_type]
            parts.append(residual_mlp(d, weights, biases, True).squeeze(-1))
        energy = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        if center_inverse is not None:
            energy = energy.index_select(1, center_inverse)
        return energy + member_rows(self.energy_shift, start, stop)[:, types]


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
