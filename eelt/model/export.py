"""TorchScript export of one DeepPot, to run a trained model outside Python (C++, LAMMPS-style).

The exported module's forward takes plain tensors of one frame:
positions (N, 3) Angstrom, types (N,) long (indices into the model's type map), cell (3, 3)
Angstrom (zeros without periodicity), and a full pair list: pair_i, pair_j (P,) long and
shift (P, 3) integer cell shifts, r_ij = x_j - x_i + shift @ cell, both i->j and j->i (what
``build_graph``, vesin ``"ijS"`` or ase's neighbor_list give). Pairs beyond rcut contribute
exactly zero, so a Verlet list with a skin is fine. It returns energy () eV, forces (N, 3)
eV/A and virial (3, 3) eV, in the model's precision. The arithmetic is the model's own
(same switch, environment, nets and dense neighbor layout), built in TorchScript because
DeepPot.forward takes a Python ``Batch`` (lists, a numpy-built layout) that scripting cannot.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from eelt.atomic import atomic_write
from eelt.model.deeppot import DeepPot
from eelt.model.descriptor import environment
from eelt.model.networks import StackedMLP, residual_mlp

HPARAMS_FILE = "hparams.json"  # extra file in the archive: DeepPot's hyper-parameters


class ScriptedNet(nn.Module):
    """One member of a StackedMLP as a scriptable module (copied weights, no gradients)."""

    def __init__(self, net: StackedMLP) -> None:
        super().__init__()
        self.linear_out = net.linear_out
        self.weights = nn.ParameterList(
            nn.Parameter(w.detach()[:1].clone(), requires_grad=False) for w in net.weights
        )
        self.biases = nn.ParameterList(
            nn.Parameter(b.detach()[:1].clone(), requires_grad=False) for b in net.biases
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(1, M, n_in) -> (1, M, n_out)."""
        weights: list[torch.Tensor] = []
        biases: list[torch.Tensor] = []
        for weight in self.weights:
            weights.append(weight)
        for bias in self.biases:
            biases.append(bias)
        return residual_mlp(x, weights, biases, self.linear_out)


class ScriptableDeepPot(nn.Module):
    """DeepPot's energy, forces and virial for one frame given as plain tensors."""

    def __init__(self, model: DeepPot) -> None:
        super().__init__()
        if model.n_members != 1:
            raise ValueError(f"export needs one DeepPot, got a stack of {model.n_members}")
        self.type_map = list(model.type_map)
        self.n_types = len(model.type_map)
        self.rcut_A = model.rcut_A
        self.rcut_smth_A = model.rcut_smth_A
        self.axis_neuron = model.axis_neuron
        self.width = int(model.embedding[0].weights[-1].shape[-1])
        self.embedding = nn.ModuleList(ScriptedNet(net) for net in model.embedding)
        self.fitting = nn.ModuleList(ScriptedNet(net) for net in model.fitting)
        for name in ("s_mean", "s_std", "s_rms", "a_std", "n_norm", "energy_shift"):
            self.register_buffer(name, getattr(model, name).detach()[:1].clone())

    @torch.jit.export
    def get_type_map(self) -> list[str]:
        return self.type_map

    @torch.jit.export
    def get_rcut(self) -> float:
        return self.rcut_A

    def forward(
        self,
        positions: torch.Tensor,
        types: torch.Tensor,
        cell: torch.Tensor,
        pair_i: torch.Tensor,
        pair_j: torch.Tensor,
        shift: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """energy () eV, forces (N, 3) eV/A, virial (3, 3) eV; see the module docstring."""
        dtype = self.energy_shift.dtype
        n_types = self.n_types
        n_atoms = positions.shape[0]
        if positions.dim() != 2 or positions.shape[1] != 3 or positions.dtype != dtype:
            raise ValueError("positions must be (N, 3) in the model's dtype")
        if types.dim() != 1 or types.shape[0] != n_atoms or types.dtype != torch.long:
            raise ValueError("types must be (N,) long")
        if n_atoms == 0:
            raise ValueError("no atoms")
        if int(types.min()) < 0 or int(types.max()) >= n_types:
            raise ValueError("types must index the model's type map")
        if cell.dim() != 2 or cell.shape[0] != 3 or cell.shape[1] != 3:
            raise ValueError("cell must be (3, 3)")
        n_pairs = pair_i.shape[0]
        if pair_i.dim() != 1 or pair_j.dim() != 1 or pair_j.shape[0] != n_pairs:
            raise ValueError("pair_i and pair_j must be (P,) of one length")
        if shift.dim() != 2 or shift.shape[0] != n_pairs or shift.shape[1] != 3:
            raise ValueError("shift must be (P, 3)")
        if n_pairs > 0 and (
            int(torch.minimum(pair_i.min(), pair_j.min())) < 0
            or int(torch.maximum(pair_i.max(), pair_j.max())) >= n_atoms
        ):
            raise ValueError("pair_i and pair_j must index the atoms")
        device = positions.device
        pair_i = pair_i.to(torch.long)
        pair_j = pair_j.to(torch.long)

        # Dense layout, as eelt.model.neighbors.dense_neighbors: centers sorted by type,
        # sel[u] slots per neighbor type u for every center, padding slots beyond rcut.
        order = torch.argsort(types, stable=True)
        rank_of = torch.empty_like(order)
        rank_of[order] = torch.arange(n_atoms, device=device)
        neighbor_type = types[pair_j]
        key = pair_i * n_types + neighbor_type
        counts = torch.bincount(key, minlength=n_atoms * n_types)
        sel = counts.view(n_atoms, n_types).amax(0)
        first = torch.cumsum(counts, 0) - counts
        by_key = torch.argsort(key, stable=True)
        rank = torch.empty_like(key)
        rank[by_key] = torch.arange(n_pairs, device=device) - first[key[by_key]]
        offset = torch.cumsum(sel, 0) - sel
        sel_list: list[int] = sel.tolist()
        n_slots = sum(sel_list)
        slot = rank_of[pair_i] * n_slots + offset[neighbor_type] + rank
        nbr_i = order.repeat_interleave(n_slots)
        nbr_j = nbr_i.clone()
        nbr_j[slot] = pair_j
        nbr_shift = torch.zeros(n_atoms * n_slots, 3, dtype=dtype, device=device)
        nbr_shift[slot] = shift.to(dtype)
        nbr_mask = torch.zeros(n_atoms * n_slots, dtype=torch.bool, device=device)
        nbr_mask[slot] = True
        type_counts: list[int] = torch.bincount(types, minlength=n_types).tolist()

        pos = positions.detach()
        r = pos[nbr_j] - pos[nbr_i] + nbr_shift @ cell.to(dtype)
        padding = torch.tensor([self.rcut_A + 1.0, 0.0, 0.0], dtype=dtype, device=device)
        r = torch.where(nbr_mask.unsqueeze(-1), r, padding).unsqueeze(0)
        if not torch.is_grad_enabled():
            raise RuntimeError("forces need autograd: do not call under no_grad/inference_mode")
        r.requires_grad_(True)
        atom_energy = self._atom_energies(r, n_atoms, type_counts, sel_list)
        atom_energy = atom_energy.index_select(1, rank_of)  # back to input order
        atom_energy = atom_energy + self.energy_shift[:, types]
        energy = atom_energy.sum()
        g = torch.zeros_like(r)
        if energy.requires_grad:
            (grad,) = torch.autograd.grad([energy], [r], allow_unused=True)
            if grad is not None:
                g = grad
        g = g[0].detach()
        r = r[0].detach()
        forces = torch.zeros(n_atoms, 3, dtype=dtype, device=device).index_add(0, nbr_i, g)
        forces = forces.index_add(0, nbr_j, -g)
        virial = -(r.unsqueeze(-1) * g.unsqueeze(-2)).sum(0)
        return energy.detach(), forces, virial

    def _atom_energies(
        self, r: torch.Tensor, n_atoms: int, type_counts: list[int], sel: list[int]
    ) -> torch.Tensor:
        """Dense pair vectors (1, N * sum(sel), 3) -> (1, N) atom energies in center order.

        As eelt.model.descriptor.se_e2_a followed by the fitting nets, for one member.
        """
        n_types, width, n_slots = self.n_types, self.width, sum(sel)
        s, env = environment(r, self.rcut_smth_A, self.rcut_A)
        s = s.view(1, n_atoms, n_slots)
        env = env.view(1, n_atoms, n_slots, 4)
        starts: list[int] = []
        first_slots: list[int] = []
        start, first = 0, 0
        for t in range(n_types):
            starts.append(start)
            first_slots.append(first)
            start += type_counts[t]
            first += sel[t]
        sums: list[torch.Tensor | None] = [None for _ in range(n_types)]
        for index, net in enumerate(self.embedding):  # no `continue` in unrolled loops
            center_type, neighbor_type = index // n_types, index % n_types
            n_centers, n_sel = type_counts[center_type], sel[neighbor_type]
            if n_centers > 0 and n_sel > 0:
                start, first = starts[center_type], first_slots[neighbor_type]
                stop, last = start + n_centers, first + n_sel
                mean = self.s_mean[:, center_type, None, None]
                s_std = self.s_std[:, center_type, None, None]
                x = ((s[:, start:stop, first:last] - mean) / s_std).reshape(1, -1, 1)
                g = net(x).view(n_centers, n_sel, width)
                rows = env[:, start:stop, first:last].reshape(n_centers, n_sel, 4)
                part = torch.bmm(rows.transpose(1, 2), g)
                previous = sums[center_type]
                sums[center_type] = part if previous is None else previous + part
        parts: list[torch.Tensor] = []
        for center_type, net in enumerate(self.fitting):
            n_centers = type_counts[center_type]
            if n_centers > 0:
                t = sums[center_type]
                if t is None:  # no neighbors anywhere in the frame
                    t = r.new_zeros(n_centers, 4, width)
                s_rms = self.s_rms[:, center_type, None]
                a_std = self.a_std[:, center_type, None]
                scale = torch.cat([s_rms, a_std.expand(-1, 3)], dim=1)  # (1, 4)
                scale = scale * self.n_norm[:, center_type, None]
                t = t.view(1, n_centers, 4, width) / scale[:, None, :, None]
                t = t.view(n_centers, 4, width)
                d = torch.bmm(t.transpose(1, 2), t[:, :, : self.axis_neuron])
                d = d.view(1, n_centers, width * self.axis_neuron)
                parts.append(net(d).squeeze(-1))
        return torch.cat(parts, dim=1)


def export_torchscript(model: DeepPot, path: str | os.PathLike) -> Path:
    """Write ``model`` as a TorchScript module (see the module docstring); returns the path.

    Load with ``torch.jit.load(path)`` (Python) or ``torch::jit::load`` (C++); the model's
    hyper-parameters travel as the archive's extra file ``hparams.json``.
    """
    if not isinstance(model, DeepPot):
        raise TypeError(f"export_torchscript needs a DeepPot, got {type(model).__name__}")
    scripted = torch.jit.script(ScriptableDeepPot(model).eval())
    extra = {HPARAMS_FILE: json.dumps(model.hparams)}
    return atomic_write(path, lambda tmp: torch.jit.save(scripted, str(tmp), _extra_files=extra))
