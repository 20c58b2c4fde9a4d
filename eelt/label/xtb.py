"""GFN-xTB through tblite's ASE calculator: fast real labels, for molecules (GFN2-xTB) and
periodic cells (GFN1-xTB), where PySCF's molecular DFT does not apply."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ase import Atoms

from eelt.label.base import LabelError, label_with, one_line

METHODS = ("GFN2-xTB", "GFN1-xTB", "IPEA1-xTB")


@dataclass(frozen=True)
class XTBLabeler:
    """Energy (eV), forces (eV/A) and, for fully periodic cells, stress (eV/A^3) from tblite.

    ``spin`` is 2S (unpaired electrons), ``charge`` in e, ``electronic_temperature_K`` the
    Fermi smearing, ``accuracy`` tblite's (lower is tighter). An SCC that does not converge in
    ``max_iterations`` is a failure (kind scf_not_converged), never a label."""

    name: ClassVar[str] = "xtb"

    method: str = "GFN2-xTB"
    charge: int = 0
    spin: int = 0
    accuracy: float = 1.0
    electronic_temperature_K: float = 300.0
    max_iterations: int = 250

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"XTBLabeler.method must be one of {METHODS}, got {self.method!r}")

    def settings(self) -> dict:
        return {
            "labeler": self.name,
            "method": self.method,
            "charge": self.charge,
            "spin": self.spin,
            "accuracy": self.accuracy,
            "electronic_temperature_K": self.electronic_temperature_K,
            "max_iterations": self.max_iterations,
        }

    def calculator(self):
        from tblite.ase import TBLite

        return TBLite(
            method=self.method,
            charge=self.charge,
            multiplicity=self.spin + 1,
            accuracy=self.accuracy,
            electronic_temperature=self.electronic_temperature_K,
            max_iterations=self.max_iterations,
            verbosity=0,
        )

    def __call__(self, atoms: Atoms) -> Atoms:
        if atoms.pbc.any() and not atoms.pbc.all():
            raise LabelError("xtb labeler: a cell must be periodic in all three directions or none")
        try:
            return label_with(self.calculator(), atoms, self.method)
        except LabelError:
            raise
        except Exception as err:  # tblite raises its own errors for SCC failures and bad input
            text = one_line(err)
            kind = "scf_not_converged" if "converge" in text.lower() else "error"
            raise LabelError(f"{self.method} failed: {text}", kind=kind) from None
