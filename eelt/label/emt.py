"""ASE's EMT potential as a labeler: a cheap stand-in for DFT in tests and demos."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from ase import Atoms
from ase.calculators.emt import EMT, parameters
from ase.calculators.singlepoint import SinglePointCalculator

from eelt import keys
from eelt.label.base import LabelError


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
        work = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        work.calc = EMT()
        results = {keys.ENERGY: work.get_potential_energy(), keys.FORCES: work.get_forces()}
        if atoms.pbc.all():
            results[keys.STRESS] = work.get_stress(voigt=True)
        for key, value in results.items():
            if not np.all(np.isfinite(value)):
                raise LabelError(f"EMT returned a non-finite {key}")
        out = atoms.copy()
        out.calc = SinglePointCalculator(out, **results)
        return out
