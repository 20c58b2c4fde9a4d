"""ASE's EMT potential as a labeler: a cheap stand-in for DFT in tests and demos."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ase import Atoms
from ase.calculators.emt import EMT, parameters

from eelt.label.base import LabelError, label_with


@dataclass(frozen=True)
class EMTLabeler:
    """Energy (eV), forces (eV/Angstrom) and, for fully periodic cells, stress (eV/Angstrom^3)."""

    name: ClassVar[str] = "emt"

    def settings(self) -> dict:
        return {"labeler": self.name}

    def __call__(self, atoms: Atoms) -> Atoms:
        unknown = sorted(set(atoms.get_chemical_symbols()) - set(parameters))
        if unknown:
            raise LabelError(
                f"EMT has no parameters for {', '.join(unknown)}; it knows {', '.join(parameters)}"
            )
        return label_with(EMT(), atoms, "EMT")
