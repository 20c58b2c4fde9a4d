"""K MACE members evaluated on the same frames (one graph per frame, shared): what MD and the
examination run; each member exported in mace-torch's own format."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from ase import Atoms

from eelt.atomic import atomic_write, write_json
from eelt.model.deeppot import checkpoint_paths
from eelt.model.deviation import Deviation, frame_deviation
from eelt.model.mace.graphs import collate
from eelt.model.mace.member import MaceMember

FAMILY = "mace"
FAMILY_FILE = "family.json"  # beside the members: {"family": "mace", ...}


def check_compatible(members: Sequence[MaceMember]) -> None:
    """ValueError naming the first member whose elements, cutoff or precision differ from
    member 0's: members share one graph per frame."""
    first = members[0]
    for k, member in enumerate(members[1:], start=1):
        for name in ("type_map", "rcut_A", "dtype"):
            if getattr(member, name) != getattr(first, name):
                raise ValueError(
                    f"ensemble member {k} has {name}={getattr(member, name)}, "
                    f"member 0 has {getattr(first, name)}"
                )


class MaceEnsemble:
    """K MACE members; their weights do not train here (requires_grad off)."""

    def __init__(self, members: Sequence[MaceMember]) -> None:
        if not members:
            raise ValueError("a MaceEnsemble needs at least one member")
        check_compatible(members)
        self.members = list(members)
        for member in self.members:
            member.module.eval().requires_grad_(False)
        self.type_map = members[0].type_map
        self.rcut_A = members[0].rcut_A

    @property
    def n_members(self) -> int:
        return len(self.members)

    @property
    def dtype(self) -> torch.dtype:
        return self.members[0].dtype

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    @classmethod
    def load(
        cls, directory: str | os.PathLike, map_location: torch.device | str = "cpu"
    ) -> MaceEnsemble:
        """Members from ``directory/model-<k>.pt`` in order of k."""
        return cls([MaceMember.load(p, map_location) for p in checkpoint_paths(directory)])

    def to(self, device: torch.device | str) -> MaceEnsemble:
        for member in self.members:
            member.to(device)
        return self

    def predict(
        self, frames: Sequence[Atoms], virial: bool = False, members: Sequence[int] | None = None
    ) -> dict[str, torch.Tensor]:
        """The chosen ``members`` (None: all) on ``frames``: energy (K', F) eV, forces
        (K', N, 3) eV/A of the frames' atoms in order and, with ``virial``, virial
        (K', F, 3, 3) eV (zero without a cell); detached."""
        chosen = range(self.n_members) if members is None else [int(k) for k in members]
        if not chosen:
            raise ValueError("predict needs at least one member")
        for k in chosen:
            if not 0 <= k < self.n_members:
                raise ValueError(f"member {k} is not in 0..{self.n_members - 1}")
        batch = collate(self.members[0].graphs(frames), self.device)
        outs = [self.members[k].evaluate(batch, virial=virial) for k in chosen]
        return {key: torch.stack([out[key].detach() for out in outs]) for key in outs[0]}

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
        """Each member as ``out_dir/model-<k>.model`` (a whole mace-torch module, what
        ``mace.calculators.MACECalculator(model_paths=...)`` loads) and ``out_dir/ensemble.json``
        (elements, cutoff, E0s); returns the paths, JSON last."""
        out_dir = Path(out_dir)
        paths = []
        for k, member in enumerate(self.members):
            module = member.mace_module()
            path = out_dir / f"model-{k}.model"
            paths.append(atomic_write(path, lambda p, module=module: torch.save(module, p)))
        summary = {
            "family": FAMILY,
            "format": "mace-torch whole-module files (torch.save of a ScaleShiftMACE)",
            "members": [p.name for p in paths],
            "type_map": self.type_map,
            "rcut_A": self.rcut_A,
            "precision": self.members[0].precision,
            "E0s_eV": self.members[0].E0s_eV,
        }
        paths.append(write_json(out_dir / "ensemble.json", summary))
        return paths
