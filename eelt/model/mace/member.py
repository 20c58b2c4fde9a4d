"""One MACE member: a mace-torch ScaleShiftMACE with its architecture as plain data; energies,
forces (by autograd, in mace-torch) and virials of frames; checkpoints that
``torch.load(weights_only=True)`` reads; warm starts and fine-tuning from a user's MACE file.

Energies in eV, forces in eV/Angstrom, virials in eV (virial = -stress x volume).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols
from mace import data as mdata
from mace.tools.torch_geometric import Batch

from eelt.atomic import atomic_write
from eelt.model.mace.architecture import (
    BUILD_LOCK,
    architecture_of,
    build_module,
    new_architecture,
    single_head,
)
from eelt.model.mace.graphs import atomic_data, collate
from eelt.model.mace.statistics import MaceStatistics

FORMAT = "eelt-mace-1"  # what a member file holds (see MaceMember.save)
PRECISIONS = {"float32": torch.float32, "float64": torch.float64}


class MaceMember:
    """A mace-torch ScaleShiftMACE (``module``) and what rebuilds it: its ``architecture``
    (plain data), the ``seed`` of its first weights and where its E0s came from."""

    def __init__(
        self,
        module: torch.nn.Module,
        architecture: Mapping[str, Any],
        seed: int = 0,
        E0s_source: str = "average",
    ) -> None:
        self.module = module
        self.architecture = dict(architecture)
        self.seed = int(seed)
        self.E0s_source = str(E0s_source)

    # ------------------------------------------------------------------ what it is
    @property
    def type_map(self) -> list[str]:
        """Element symbols in the order of the model's element index."""
        return [chemical_symbols[z] for z in self.architecture["atomic_numbers"]]

    @property
    def rcut_A(self) -> float:
        return float(self.architecture["r_max"])

    @property
    def dtype(self) -> torch.dtype:
        return next(self.module.parameters()).dtype

    @property
    def precision(self) -> str:
        return "float64" if self.dtype == torch.float64 else "float32"

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def E0s_eV(self) -> dict[str, float]:
        """Isolated-atom energies per element (eV), as the model adds them."""
        energies = self.module.atomic_energies_fn.atomic_energies.detach().reshape(-1)
        return {s: float(e) for s, e in zip(self.type_map, energies.tolist(), strict=True)}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(
        cls,
        section: Any,
        type_map: Sequence[str],
        seed: int = 0,
        precision: str | None = None,
        statistics: MaceStatistics | None = None,
    ) -> MaceMember:
        """A new member from a ``train.model`` section of kind mace, its weights drawn from
        ``seed``; ``statistics`` of the training frames (E0s, neighbors, scale, shift; without
        them: neutral ones); ``precision`` overrides the section's."""
        stats = statistics or MaceStatistics.neutral(type_map, section.E0s)
        arch = new_architecture(
            section,
            [atomic_numbers[s] for s in type_map],
            [stats.E0s_eV[s] for s in type_map],
            stats.avg_num_neighbors,
            stats.scale_eV,
            stats.shift_eV,
        )
        source = "average" if section.E0s == "average" else "config"
        module = build_module(arch, seed).to(PRECISIONS[precision or section.precision])
        return cls(module, architecture_of(module), seed, source)

    @classmethod
    def from_base_model(
        cls, path: str | os.PathLike, type_map: Sequence[str], precision: str
    ) -> MaceMember:
        """A user's MACE model file (mace-torch's whole-module format, such as a foundation
        model) to fine-tune from, in ``precision``: its architecture and weights (a multi-head
        model reduced to one head). The file is unpickled: it must come from a trusted source.
        ValueError when it lacks an element of ``type_map``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"base_model {path} does not exist")
        with BUILD_LOCK:  # unpickling e3nn modules runs torch.fx: one thread at a time
            module = torch.load(path, map_location="cpu", weights_only=False)
            if isinstance(module, Mapping):
                raise ValueError(f"base_model {path} is a checkpoint, not a whole MACE model")
            try:
                module = single_head(module)
                member = cls._rebuilt(architecture_of(module), module.state_dict(), precision)
            except (AttributeError, KeyError, RuntimeError, ValueError) as err:
                raise ValueError(
                    f"base_model {path}: mace-torch cannot rebuild this model ({err})"
                ) from None
        member.E0s_source = f"base_model {path}"
        member.check_elements(type_map, f"base_model {path}")
        return member

    @classmethod
    def warm_start(
        cls, path: str | os.PathLike, type_map: Sequence[str], precision: str
    ) -> MaceMember:
        """A previous ensemble's member to train on from: checkpoint ``path`` in
        ``precision``; FileNotFoundError when it is missing, ValueError when it lacks an
        element of ``type_map`` (its own element table may be larger: a fine-tuned
        foundation model)."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"init_from checkpoint {path} does not exist")
        member = cls.load(path).with_precision(precision)
        member.check_elements(type_map, f"init_from {path}")
        return member

    def check_elements(self, type_map: Sequence[str], what: str) -> None:
        """ValueError naming ``what`` when an element of ``type_map`` is not in the model."""
        missing = [s for s in type_map if s not in self.type_map]
        if missing:
            raise ValueError(
                f"{what} has no element {', '.join(missing)} (its elements: {self.type_map})"
            )

    @classmethod
    def _rebuilt(
        cls, arch: Mapping[str, Any], state: Mapping[str, torch.Tensor], precision: str, **kw
    ) -> MaceMember:
        module = build_module(arch)
        module.load_state_dict(state)
        return cls(module.to(PRECISIONS[precision]), arch, **kw)

    def set_E0s(self, E0s_eV: Mapping[str, float], source: str) -> None:
        """Replace the isolated-atom energies of the elements in ``E0s_eV`` (eV)."""
        buffer = self.module.atomic_energies_fn.atomic_energies
        flat = buffer.view(-1)
        with torch.no_grad():
            for symbol, energy in E0s_eV.items():
                flat[self.type_map.index(symbol)] = float(energy)
        self.architecture["atomic_energies"] = buffer.detach().cpu().tolist()
        self.E0s_source = source

    def with_precision(self, precision: str) -> MaceMember:
        """A copy in ``precision`` ("float32"/"float64"), same device."""
        module = copy.deepcopy(self.module).to(PRECISIONS[precision])
        return MaceMember(module, self.architecture, self.seed, self.E0s_source)

    def to(self, device: torch.device | str) -> MaceMember:
        self.module.to(device)
        return self

    # ------------------------------------------------------------------ evaluation
    def graphs(
        self,
        frames: Sequence[Atoms],
        energies_eV: Sequence[float] | None = None,
        forces_eV_per_A: Sequence[Any] | None = None,
    ) -> list[mdata.AtomicData]:
        """The frames as mace-torch graphs for this model (its elements, r_max, dtype), with
        reference energies and forces where given."""
        zs = self.architecture["atomic_numbers"]
        return [
            atomic_data(
                atoms,
                zs,
                self.rcut_A,
                self.dtype,
                None if energies_eV is None else energies_eV[i],
                None if forces_eV_per_A is None else forces_eV_per_A[i],
            )
            for i, atoms in enumerate(frames)
        ]

    def evaluate(
        self, batch: Batch, virial: bool = False, training: bool = False
    ) -> dict[str, torch.Tensor]:
        """energy (F,) eV, forces (N, 3) eV/A and with ``virial`` virial (F, 3, 3) eV of a
        batch; ``training`` keeps the graph for a backward pass through the forces."""
        with torch.enable_grad():  # forces are a gradient, also under a caller's no_grad
            out = self.module(
                batch.to_dict(), training=training, compute_force=True, compute_virials=virial
            )
        result = {"energy": out["energy"], "forces": out["forces"]}
        if virial:
            result["virial"] = out["virials"]
        return result

    def predict(self, frames: Sequence[Atoms], virial: bool = False) -> dict[str, torch.Tensor]:
        """energy (F,) eV, forces (N, 3) eV/A of the frames' atoms in order and, with
        ``virial``, virial (F, 3, 3) eV (zero for frames without a cell); detached."""
        batch = collate(self.graphs(frames), self.device)
        return {k: v.detach() for k, v in self.evaluate(batch, virial=virial).items()}

    # ------------------------------------------------------------------ files
    def checkpoint(self) -> dict:
        """What ``save`` writes: plain data and CPU tensors only."""
        return {
            "format": FORMAT,
            "hparams_json": json.dumps(
                {
                    "architecture": self.architecture,
                    "seed": self.seed,
                    "E0s_source": self.E0s_source,
                    "E0s_eV": self.E0s_eV,
                    "precision": self.precision,
                }
            ),
            "state_dict": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the member (architecture as JSON, state_dict), loadable with
        ``torch.load(weights_only=True)``; atomic."""
        checkpoint = self.checkpoint()
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: torch.device | str = "cpu") -> MaceMember:
        """Rebuild a member that ``save`` wrote, on ``map_location``."""
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
            raise ValueError(f"{path} is not a MACE member file of eelt ({FORMAT})")
        hparams = json.loads(checkpoint["hparams_json"])
        member = cls._rebuilt(
            hparams["architecture"],
            checkpoint["state_dict"],
            hparams["precision"],
            seed=hparams["seed"],
            E0s_source=hparams["E0s_source"],
        )
        return member.to(map_location)

    def mace_module(self) -> torch.nn.Module:
        """A copy of the mace-torch module on the CPU, in eval mode: what mace-torch's own
        tools (MACECalculator, its LAMMPS export) load from a whole-module file."""
        return copy.deepcopy(self.module).to("cpu").eval()
