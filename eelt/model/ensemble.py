"""An ensemble of DeepPot models evaluated together (a snapshot of the members' weights)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from ase import Atoms

from eelt.model.deeppot import DeepPot, check_same_architecture, checkpoint_paths
from eelt.model.deviation import Deviation, frame_deviation
from eelt.model.export import export_members
from eelt.model.neighbors import Batch, build_graph, collate
from eelt.model.stack import MemberStack, stack_arguments, stacked_state

# Largest per-pair tensor (elements) for which members are evaluated together. On CPU the
# work is compute-bound and bigger batched tensors only fall out of cache (measured best at
# 2**20: 8 MB in float64); on an accelerator, batching members saves kernel launches.
MEMBER_GROUP_ELEMENTS = 2**20
ACCELERATOR_GROUP_ELEMENTS = 2**26


class Ensemble(MemberStack):
    """K members sharing batch, neighbor list and pair geometry; nets run as batched matmuls.

    The members' weights are copied (stacked) at construction; later changes to a member do
    not reach the ensemble.
    """

    def __init__(self, members: list[DeepPot]) -> None:
        if not members:
            raise ValueError("an Ensemble needs at least one member")
        check_same_architecture(members)
        super().__init__(**stack_arguments(members))
        self.load_state_dict(stacked_state(members))
        self.requires_grad_(False)
        self.to(members[0].device)
        self.member_hparams = [dict(member.hparams) for member in members]

    @classmethod
    def load(cls, directory: str | os.PathLike, map_location: torch.device | str = "cpu"):
        """Members from ``directory/model-<k>.pt`` in order of k."""
        return cls([DeepPot.load(path, map_location) for path in checkpoint_paths(directory)])

    def forward(
        self, batch: Batch, virial: bool = False, n_members: int | None = None
    ) -> dict[str, torch.Tensor]:
        """energy (K, F) eV, atom_energy (K, N), forces (K, N, 3) eV/A, virial (K, F, 3, 3) eV.

        K is ``n_members`` (the first ones; None: all). Members run together in groups whose
        widest per-pair tensor stays below MEMBER_GROUP_ELEMENTS (CPU) or
        ACCELERATOR_GROUP_ELEMENTS.
        """
        n_members = self.n_members if n_members is None else int(n_members)
        if not 1 <= n_members <= self.n_members:
            raise ValueError(f"n_members must be in 1..{self.n_members}, got {n_members}")
        widest = self.embedding[0].weights[-1].shape[-1]
        per_member = max(1, batch.n_atoms * sum(batch.sel) * widest)
        budget = MEMBER_GROUP_ELEMENTS if self.device.type == "cpu" else ACCELERATOR_GROUP_ELEMENTS
        group = max(1, budget // per_member)
        outs = [
            self.evaluate(batch, True, virial, False, members=slice(k, min(k + group, n_members)))
            for k in range(0, n_members, group)
        ]
        return {key: torch.cat([out[key] for out in outs]).detach() for key in outs[0]}

    def members(self) -> list[DeepPot]:
        """The members as DeepPot models (copies), in order."""
        models = []
        for k, hparams in enumerate(self.member_hparams):
            model = DeepPot(**hparams)
            model.load_state_dict(self.member_state(k))
            models.append(model.to(self.device))
        return models

    def predict(
        self, frames: Sequence[Atoms], virial: bool = False, members: Sequence[int] | None = None
    ) -> dict[str, torch.Tensor]:
        """Each member (of ``members``; None: all) on ``frames``: energy (K, F) eV, forces
        (K, N, 3) eV/A of the frames' atoms in order and, with ``virial``, virial (K, F, 3, 3)
        eV (zero without a cell)."""
        graphs = [build_graph(atoms, self.type_map, self.rcut_A) for atoms in frames]
        first = None if members is None else max(members) + 1
        out = self(collate(graphs, self.dtype, self.device), virial=virial, n_members=first)
        keep = slice(None) if members is None else list(members)
        return {key: value[keep] for key, value in out.items() if key != "atom_energy"}

    def deviation(self, frames: Sequence[Atoms], eps_eV_per_A: float) -> list[Deviation]:
        """The members' force deviation (absolute, and relative with ``eps_eV_per_A``) and
        energy deviation on each frame."""
        out = self.predict(frames)
        energies = out["energy"].double().cpu().numpy()
        forces = out["forces"].double().cpu().numpy()
        deviations, start = [], 0
        for f, atoms in enumerate(frames):
            stop = start + len(atoms)
            deviations.append(frame_deviation(energies[:, f], forces[:, start:stop], eps_eV_per_A))
            start = stop
        return deviations

    def export(self, out_dir: str | os.PathLike) -> list[Path]:
        """Each member as ``out_dir/model-<k>.pth`` (TorchScript, see export.py) and
        ``out_dir/ensemble.json``; returns the paths, JSON last."""
        return export_members(self.members(), out_dir)
