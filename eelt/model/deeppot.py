"""One DeepPot-SE (se_e2_a) model: energy, forces and virial of batched frames; checkpoints."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from ase import Atoms

from eelt.atomic import atomic_write
from eelt.model.neighbors import Batch, build_graph, collate
from eelt.model.stack import PRECISIONS, STAT_NAMES, MemberStack
from eelt.model.statistics import energy_shift, environment_statistics

# hyper-parameters that members evaluated or trained together must share
ARCHITECTURE = ("type_map", "rcut_A", "rcut_smth_A", "embedding_widths", "axis_neuron")
ARCHITECTURE += ("fitting_widths", "precision")
CHECKPOINT = re.compile(r"model-(\d+)\.pt")


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


def check_same_architecture(members: Sequence[DeepPot]) -> None:
    """ValueError naming the first member whose architecture differs from member 0's."""
    first = members[0].hparams
    for k, member in enumerate(members[1:], start=1):
        for name in ARCHITECTURE:
            if member.hparams[name] != first[name]:
                raise ValueError(
                    f"ensemble member {k} has {name}={member.hparams[name]}, "
                    f"member 0 has {first[name]}"
                )


class DeepPot(MemberStack):
    """DeepPot-SE: per-pair embedding nets, per-element fitting nets, energy = sum of atoms."""

    def __init__(
        self,
        type_map: Sequence[str],
        rcut_A: float = 6.0,
        rcut_smth_A: float = 0.5,
        embedding_widths: Sequence[int] = (25, 50, 100),
        axis_neuron: int = 16,
        fitting_widths: Sequence[int] = (240, 240, 240),
        precision: str = "float64",
        seed: int = 0,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {sorted(PRECISIONS)}")
        super().__init__(
            n_members=1,
            type_map=type_map,
            rcut_A=rcut_A,
            rcut_smth_A=rcut_smth_A,
            embedding_widths=embedding_widths,
            axis_neuron=axis_neuron,
            fitting_widths=fitting_widths,
            dtype=PRECISIONS[precision],
            generator=torch.Generator().manual_seed(int(seed)),
        )
        self.hparams = {
            "type_map": list(type_map),
            "rcut_A": float(rcut_A),
            "rcut_smth_A": float(rcut_smth_A),
            "embedding_widths": [int(w) for w in embedding_widths],
            "axis_neuron": int(axis_neuron),
            "fitting_widths": [int(w) for w in fitting_widths],
            "precision": precision,
            "seed": int(seed),
        }

    @classmethod
    def from_config(
        cls, section: Any, type_map: Sequence[str], seed: int = 0, precision: str | None = None
    ) -> DeepPot:
        """A new model from the config's model section (eelt.config.ModelConfig: rcut_A,
        rcut_smth_A, embedding_widths, axis_neuron, fitting_widths, precision), its weights
        drawn from ``seed``; ``precision`` overrides the section's (training precision)."""
        return cls(
            list(type_map),
            rcut_A=section.rcut_A,
            rcut_smth_A=section.rcut_smth_A,
            embedding_widths=tuple(section.embedding_widths),
            axis_neuron=section.axis_neuron,
            fitting_widths=tuple(section.fitting_widths),
            precision=section.precision if precision is None else precision,
            seed=seed,
        )

    @classmethod
    def warm_start(
        cls, path: str | os.PathLike, type_map: Sequence[str], precision: str
    ) -> DeepPot:
        """A previous ensemble's member to train on from: checkpoint ``path`` in ``precision``;
        FileNotFoundError when it is missing, ValueError when its type_map is not ``type_map``."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"init_from checkpoint {path} does not exist")
        model = cls.load(path).with_precision(precision)
        if list(model.type_map) != list(type_map):
            raise ValueError(
                f"init_from {path} has type_map {list(model.type_map)}, expected {list(type_map)}"
            )
        return model

    def set_statistics(self, frames: list[Atoms]) -> None:
        """Environment statistics per element and, if the frames have energies, the energy shift."""
        if not frames:
            raise ValueError("set_statistics needs at least one frame")
        graphs = [build_graph(atoms, self.type_map, self.rcut_A) for atoms in frames]
        stats = environment_statistics(graphs, len(self.type_map), self.rcut_smth_A, self.rcut_A)
        shift = energy_shift(frames, self.type_map)
        if shift is not None:
            stats["energy_shift"] = shift
        with torch.no_grad():
            for name, value in stats.items():
                getattr(self, name).copy_(torch.as_tensor(value).reshape(1, -1))

    def statistics(self) -> dict[str, list[float]]:
        """The normalisation buffers per element (s in 1/Angstrom, shift in eV), for reports."""
        return {name: getattr(self, name)[0].tolist() for name in (*STAT_NAMES, "energy_shift")}

    def with_precision(self, precision: str) -> DeepPot:
        """A copy in ``precision`` ("float32"/"float64"), weights and statistics cast, same device."""
        model = DeepPot(**{**self.hparams, "precision": precision})
        model.load_state_dict(self.state_dict())  # copy_ casts each tensor
        return model.to(self.device)

    def forward(
        self, batch: Batch, forces: bool = True, virial: bool = False, create_graph: bool = False
    ) -> dict[str, torch.Tensor]:
        """energy (F,) eV, atom_energy (N,), forces (N, 3) eV/A, virial (F, 3, 3) eV."""
        out = self.evaluate(batch, forces=forces, virial=virial, create_graph=create_graph)
        return {key: value[0] for key, value in out.items()}

    def predict(self, frames: Sequence[Atoms], virial: bool = False) -> dict[str, torch.Tensor]:
        """energy (F,) eV, forces (N, 3) eV/A of the frames' atoms in order and, with
        ``virial``, virial (F, 3, 3) eV (zero for frames without a cell); detached."""
        graphs = [build_graph(atoms, self.type_map, self.rcut_A) for atoms in frames]
        batch = collate(graphs, self.dtype, self.device)
        with torch.no_grad():
            out = self(batch, forces=True, virial=virial)
        return {key: value for key, value in out.items() if key != "atom_energy"}

    def save(self, path: str | os.PathLike) -> None:
        """Write hparams (JSON) and state_dict (CPU tensors), loadable with weights_only=True."""
        checkpoint = {
            "hparams_json": json.dumps(self.hparams),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: torch.device | str = "cpu") -> DeepPot:
        """Rebuild a model saved by ``save`` on ``map_location``."""
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        model = cls(**json.loads(checkpoint["hparams_json"]))
        model.load_state_dict(checkpoint["state_dict"])
        return model.to(map_location)
