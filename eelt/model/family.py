"""What a model family provides to take part in the loop: a member model and an ensemble of
members, each a runtime-checkable Protocol.

A family is built from its own config section, predicts energies and forces (and the virial
of cells) of a batch of frames with forces by autograd, saves members loadable with
``torch.load(weights_only=True)``, warm-starts from a previous ensemble's member files, and
exports the ensemble in its own ecosystem's format; its ensemble reports the members' force
deviation (absolute and relative) and energy deviation. DeepPot-SE (eelt.model.DeepPot and
eelt.model.Ensemble) is the first family.

Frames come as ASE Atoms, the loop's common currency; how a family lays them out for its
network (neighbor lists, graphs, padding) is its own business. Energies in eV, forces in
eV/Angstrom, virials in eV, lengths in Angstrom.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from ase import Atoms

from eelt.model.deviation import Deviation


@runtime_checkable
class FamilyMember(Protocol):
    """One trained (or new) model of a family."""

    type_map: list[str]  # element symbols, in the order of the model's element index
    rcut_A: float  # cutoff radius: atoms farther apart do not interact

    @classmethod
    def from_config(
        cls, section: Any, type_map: Sequence[str], seed: int = 0, precision: str | None = None
    ) -> FamilyMember:
        """A new model from the family's config section, its weights drawn from ``seed``;
        ``precision`` ("float32"/"float64") overrides the section's."""
        ...

    def predict(self, frames: Sequence[Atoms], virial: bool = False) -> dict[str, torch.Tensor]:
        """energy (F,) eV and forces (N, 3) eV/A of the frames' atoms in order, forces by
        autograd of the energy; with ``virial``, virial (F, 3, 3) eV (zero without a cell)."""
        ...

    def save(self, path: str | os.PathLike) -> None:
        """Write the model to ``path`` so that ``load`` rebuilds it, readable with
        ``torch.load(weights_only=True)``."""
        ...

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: torch.device | str = "cpu") -> Any:
        """The model ``save`` wrote, on ``map_location``."""
        ...

    @classmethod
    def warm_start(
        cls, path: str | os.PathLike, type_map: Sequence[str], precision: str
    ) -> FamilyMember:
        """A previous ensemble's member file ready to train on from, in ``precision``;
        FileNotFoundError when it is missing, ValueError when its elements are not
        ``type_map``."""
        ...


@runtime_checkable
class FamilyEnsemble(Protocol):
    """K members of one family evaluated together: what MD and the examination run."""

    type_map: list[str]
    rcut_A: float

    @property
    def n_members(self) -> int: ...

    @classmethod
    def load(cls, directory: str | os.PathLike, map_location: torch.device | str = "cpu") -> Any:
        """The members a training wrote into ``directory``, in order."""
        ...

    def predict(
        self, frames: Sequence[Atoms], virial: bool = False, members: Sequence[int] | None = None
    ) -> dict[str, torch.Tensor]:
        """Each member of ``members`` (None: all; MD that steps on member 0 asks for [0]) on
        ``frames``: energy (K, F) eV, forces (K, N, 3) eV/A, with ``virial`` virial
        (K, F, 3, 3) eV; as FamilyMember.predict per member."""
        ...

    def deviation(self, frames: Sequence[Atoms], eps_eV_per_A: float) -> list[Deviation]:
        """Per frame, the members' force deviation (absolute, and relative to the mean force
        with ``eps_eV_per_A``) and energy deviation (eelt.model.deviation)."""
        ...

    def export(self, out_dir: str | os.PathLike) -> list[Path]:
        """The members in the family's own ecosystem's format, in ``out_dir``; the paths."""
        ...
