"""The ensemble as an ASE calculator: mean energy, forces, stress, plus the members' spread."""

from __future__ import annotations

from typing import Literal

from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from eelt.keys import (
    AVG_DEVI_F,
    AVG_DEVI_V,
    DEVI_E,
    ENERGY,
    FORCES,
    FORCES_STD,
    MAX_DEVI_F,
    MAX_DEVI_V,
    STRESS,
)
from eelt.model.deviation import force_deviation

FORCES_FROM = ("mean", "first")


class EnsembleCalculator(Calculator):
    """Mean of the members (eV, eV/A, eV/A^3) and DeePMD's deviation measures in ``results``,
    for an ensemble of any model family (eelt.model.family.FamilyEnsemble).

    Extra results: energy_std (eV), forces_std (N,) eV/A, max_devi_f and avg_devi_f (eV/A),
    devi_e (eV/atom), member_energies (K,) eV, member_forces (K, N, 3) eV/A. Stress, and the
    virial deviation max_devi_v / avg_devi_v (eV/atom), only for cells with a periodic
    direction and a nonzero volume.

    ``forces_from="first"`` is the way DeePMD-kit's LAMMPS plugin runs a model deviation: energy,
    forces and stress are member 0's, and a calculation evaluates only member 0 unless
    :meth:`request_deviation` was called before it; then all members run and the deviations
    are in ``results``. An MD run that dumps every n steps pays for the ensemble once per dump.
    """

    implemented_properties = [ENERGY, "free_energy", FORCES, STRESS]

    def __init__(self, ensemble, forces_from: Literal["mean", "first"] = "mean", **kwargs) -> None:
        super().__init__(**kwargs)
        if forces_from not in FORCES_FROM:
            raise ValueError(f"forces_from must be 'mean' or 'first', got {forces_from!r}")
        self.ensemble = ensemble
        self.forces_from = forces_from
        self._deviation_requested = False

    def request_deviation(self) -> None:
        """Evaluate every member in the next calculation (with ``forces_from="first"``; with
        "mean" every calculation does)."""
        self._deviation_requested = True

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | tuple[str, ...] = (ENERGY,),
        system_changes: list[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        volume = abs(atoms.cell.volume) if atoms.pbc.any() else 0.0
        first_only = self.forces_from == "first" and not self._deviation_requested
        self._deviation_requested = False
        out = self.ensemble.predict([atoms], virial=volume > 0, members=[0] if first_only else None)
        energies = out["energy"][:, 0].cpu().double().numpy()
        forces = out["forces"].cpu().double().numpy()
        virials = out["virial"][:, 0].cpu().double().numpy() if volume > 0 else None  # eV
        # the prediction that drives: member 0's (DeePMD's way) or the members' mean
        first = self.forces_from == "first"
        energy = float(energies[0] if first else energies.mean())
        self.results = {
            ENERGY: energy,
            "free_energy": energy,
            FORCES: forces[0] if first else forces.mean(0),
        }
        if virials is not None:
            virial = virials[0] if first else virials.mean(0)
            self.results[STRESS] = full_3x3_to_voigt_6_stress(-virial / volume)
        if first_only:
            return
        forces_std = force_deviation(forces)
        self.results |= {
            "energy_std": float(energies.std()),
            FORCES_STD: forces_std,
            MAX_DEVI_F: float(forces_std.max()) if len(atoms) else 0.0,
            AVG_DEVI_F: float(forces_std.mean()) if len(atoms) else 0.0,
            DEVI_E: float((energies / max(len(atoms), 1)).std()),
            "member_energies": energies,
            "member_forces": forces,
        }
        if virials is not None:
            devi_v = (virials / len(atoms)).std(axis=0)  # eV/atom, per component
            self.results[MAX_DEVI_V] = float(devi_v.max())
            self.results[AVG_DEVI_V] = float(devi_v.mean())
