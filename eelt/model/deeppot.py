"""One DeepPot-SE (se_e2_a) model: energy, forces and virial of batched frames; checkpoints."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import torch
from ase import Atoms

from eelt.atomic import atomic_write
from eelt.model.neighbors import Batch, build_graph
from eelt.model.stack import PRECISIONS, STAT_NAMES, MemberStack
from eelt.model.statistics import energy_shift, environment_statistics


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
