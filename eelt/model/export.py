"""Members exported as TorchScript files that run without eelt (torch.jit.load, torch::jit::load).

The exported module's forward takes plain tensors of one frame:
positions (N, 3) Angstrom, types (N,) long (indices into the model's type map), cell (3, 3)
Angstrom (zeros without periodicity), and a full pair list: pair_i, pair_j (P,) long and
shift (P, 3) integer cell shifts, r_ij = x_j - x_i + shift @ cell, both i->j and j->i (what
``build_graph``, vesin ``"ijS"`` or ase's neighbor_list give). Pairs beyond rcut contribute
exactly zero, so a Verlet list with a skin is fine. It returns energy () eV, forces (N, 3)
eV/A and virial (3, 3) eV, in the model's precision; grad mode must be on (forces are
autograd's). ``get_type_map()`` and ``get_rcut()`` (Angstrom) travel in the file, and the
hyper-parameters as the archive's extra file ``hparams.json``.

Why TorchScript: the exported module is the model's own code, scripted. It subclasses
MemberStack and its forward only lays the pair list out densely and packs the nets
(packing.layout_packings), then calls ``MemberStack.evaluate_frames``, the tensor-only core
that training, MD and evaluation run too (switched environment, embedding, descriptor,
fitting, forces and virial by autograd). torch.export
(2.13) cannot hold that core: it does not trace ``torch.autograd.grad`` ("fake tensor in the
exported program constant's list", pytorch/pytorch#125984), ``torch.func.grad`` traces but
the program does not save ("Cannot access storage of TensorWrapper"), and the dense layout
has data-dependent shapes (per-type counts and slots) at every step. TorchScript is
deprecated in torch 2.13 but keeps autograd and data-dependent shapes and loads in Python
and C++ (DeePMD-kit's frozen PyTorch models, which LAMMPS runs, are TorchScript too).
The pair list -> dense layout step exists twice, numpy in collate and torch here (see
``dense_neighbors_torch``); a test holds them equal.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch

from eelt.atomic import atomic_write, write_json
from eelt.model.deeppot import DeepPot, check_same_architecture, checkpoint_paths
from eelt.model.packing import layout_packings
from eelt.model.stack import MemberStack

HPARAMS_FILE = "hparams.json"  # extra file in the archive: DeepPot's hyper-parameters
EXPORT_SUFFIX = ".pth"  # DeePMD-kit's suffix for TorchScript models; checkpoints are .pt
ENSEMBLE_FILE = "ensemble.json"  # export_ensemble's summary: files, type map, rcut, precision


def dense_neighbors_torch(
    types: torch.Tensor, pair_i: torch.Tensor, pair_j: torch.Tensor, n_types: int
) -> tuple[torch.Tensor, list[int], list[int], torch.Tensor]:
    """neighbors.dense_neighbors in torch, for TorchScript: (center_order, type_counts, sel,
    slot). collate keeps the numpy one: torch's stable sort is 3-4x slower on CPU."""
    n_atoms, n_pairs, device = types.shape[0], pair_i.shape[0], types.device
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
    slot = rank_of[pair_i] * int(sel.sum()) + offset[neighbor_type] + rank
    type_counts: list[int] = torch.bincount(types, minlength=n_types).tolist()
    sel_list: list[int] = sel.tolist()
    return order, type_counts, sel_list, slot


class ExportedDeepPot(MemberStack):
    """One DeepPot's energy, forces and virial for one frame given as plain tensors."""

    def __init__(self, model: DeepPot) -> None:
        if not isinstance(model, DeepPot):
            raise TypeError(f"export needs a DeepPot, got {type(model).__name__}")
        hparams = model.hparams
        super().__init__(
            n_members=1,
            type_map=hparams["type_map"],
            rcut_A=hparams["rcut_A"],
            rcut_smth_A=hparams["rcut_smth_A"],
            embedding_widths=hparams["embedding_widths"],
            axis_neuron=hparams["axis_neuron"],
            fitting_widths=hparams["fitting_widths"],
            dtype=model.dtype,
            generator=None,
        )
        self.load_state_dict(model.state_dict())
        self.requires_grad_(False)
        self.to(model.device)

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
        n_types = len(self.type_map)
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
        if not torch.is_grad_enabled():
            raise RuntimeError("forces need autograd: do not call under no_grad/inference_mode")
        pair_i = pair_i.to(torch.long)
        pair_j = pair_j.to(torch.long)

        # the dense layout of neighbors.collate, for one frame
        order, type_counts, sel, slot = dense_neighbors_torch(types, pair_i, pair_j, n_types)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(n_atoms, device=order.device)
        nbr_i = order.repeat_interleave(sum(sel))
        nbr_j = nbr_i.clone()
        nbr_j[slot] = pair_j
        nbr_shift = torch.zeros(nbr_i.shape[0], 3, dtype=dtype, device=positions.device)
        nbr_shift[slot] = shift.to(dtype)
        nbr_mask = torch.zeros(nbr_i.shape[0], dtype=torch.bool, device=positions.device)
        nbr_mask[slot] = True

        pairs, centers = layout_packings(
            type_counts, sel, n_types, 1, self.pack_costs, positions.device, None
        )
        out = self.evaluate_frames(
            positions,
            cell.to(dtype).unsqueeze(0),
            torch.zeros_like(types),
            1,
            types[order],
            inverse,
            nbr_i,
            nbr_j,
            nbr_shift,
            nbr_mask,
            pairs,
            centers,
            0,
            1,
            True,
            True,
            False,
            False,
        )
        return out["energy"][0, 0].detach(), out["forces"][0], out["virial"][0, 0]


def export_torchscript(model: DeepPot, path: str | os.PathLike) -> Path:
    """Write ``model`` as a TorchScript module (see the module docstring); returns the path.

    Load with ``torch.jit.load(path)`` (Python) or ``torch::jit::load`` (C++); the model's
    hyper-parameters travel as the archive's extra file ``hparams.json``.
    """
    with warnings.catch_warnings():  # TorchScript's deprecation: see the module docstring
        warnings.filterwarnings("ignore", "`torch.jit", DeprecationWarning)
        scripted = torch.jit.script(ExportedDeepPot(model).eval())
        extra = {HPARAMS_FILE: json.dumps(model.hparams)}
        return atomic_write(
            path, lambda tmp: torch.jit.save(scripted, str(tmp), _extra_files=extra)
        )


def export_ensemble(models_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Each ``models_dir/model-<k>.pt`` as ``out_dir/model-<k>.pth`` (export_members); what
    ``eelt export-model MODELS_DIR --out DIR`` runs."""
    return export_members([DeepPot.load(path) for path in checkpoint_paths(models_dir)], out_dir)


def export_members(members: list[DeepPot], out_dir: str | os.PathLike) -> list[Path]:
    """Member k as ``out_dir/model-<k>.pth`` (export_torchscript), plus ``out_dir/ensemble.json``:
    the files, type map, rcut_A and precision. Returns the paths, JSON last."""
    check_same_architecture(members)
    out_dir = Path(out_dir)
    paths = [
        export_torchscript(member, out_dir / f"model-{k}{EXPORT_SUFFIX}")
        for k, member in enumerate(members)
    ]
    hparams = members[0].hparams
    summary = {
        "format": "torchscript",
        "members": [path.name for path in paths],
        "type_map": hparams["type_map"],
        "rcut_A": hparams["rcut_A"],
        "precision": hparams["precision"],
        "torch_version": torch.__version__,
    }
    return [*paths, write_json(out_dir / ENSEMBLE_FILE, summary)]
