"""An ensemble of DeepPot models evaluated together (a snapshot of the members' weights)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from eelt.model.deeppot import DeepPot
from eelt.model.neighbors import Batch
from eelt.model.stack import MemberStack, stack_arguments, stacked_state

ARCHITECTURE = ("type_map", "rcut_A", "rcut_smth_A", "embedding_widths", "axis_neuron")
ARCHITECTURE += ("fitting_widths", "precision")
CHECKPOINT = re.compile(r"model-(\d+)\.pt")
# Largest per-pair tensor (elements) for which members are evaluated together. On CPU the
# work is compute-bound and bigger batched tensors only fall out of cache (measured best at
# 2**20: 8 MB in float64); on an accelerator, batching members saves kernel launches.
MEMBER_GROUP_ELEMENTS = 2**20
ACCELERATOR_GROUP_ELEMENTS = 2**26


def checkpoint_paths(directory: str | os.PathLike) -> list[Path]:
    """``directory/model-<k>.pt`` in order of k; FileNotFoundError when there is none."""
    found = []
    for path in Path(directory).glob("model-*.pt"):
        match = CHECKPOINT.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    if not found:
        raise FileNotFoundError(f"no model-<k>.pt checkpoints in {directory}")
    return [path for _, path in sorted(found)]


def check_same_architecture(members: list[DeepPot]) -> None:
    """ValueError naming the first member whose architecture differs from member 0's."""
    first = members[0].hparams
    for k, member in enumerate(members[1:], start=1):
        for name in ARCHITECTURE:
            if member.hparams[name] != first[name]:
                raise ValueError(
                    f"ensemble member {k} has {name}={member.hparams[name]}, "
                    f"member 0 has {first[name]}"
                )


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
