"""The ensemble as an ASE calculator: mean energy, forces, stress, plus the members' spread."""

from __future__ import annotations

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
from eelt.model.ensemble import Ensemble
from eelt.model.neighbors import build_graph, collate


class EnsembleCalculator(Calculator):
    """Mean of the members (eV, eV/A, eV/A^3) and DeePMD's deviation measures in ``results``.

    Extra results: energy_std (eV), forces_std (N,) eV/A, max_devi_f and avg_devi_f (eV/A),
    devi_e (eV/atom), member_energies (K,) eV, member_forces (K, N, 3) eV/A. Stress, and the
    virial deviation max_devi_v / avg_devi_v (eV/atom), only for cells with a periodic
    direction and a nonzero volume.
    """

    implemented_properties = [ENERGY, "free_energy", FORCES, STRESS]

    def __init__(self, ensemble: Ensemble, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ensemble = ensemble

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | tuple[str, ...] = (ENERGY,),
        system_changes: list[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        model = self.ensemble
        graph = build_graph(atoms, model.type_map, model.rcut_A)
        batch = collate([graph], dtype=model.dtype, device=model.device)
        volume = abs(atoms.cell.volume) if atoms.pbc.any() else 0.0
        out = model(batch, virial=volume > 0)
        energies = out["energy"][:, 0].cpu().double().numpy()
        forces = out["forces"].cpu().double().numpy()
        forces_std = force_deviation(forces)
        self.results = {
            ENERGY: float(energies.mean()),
            "free_energy": float(energies.mean()),
            FORCES: forces.mean(0),
            "energy_std": float(energies.std()),
            FORCES_STD: forces_std,
            MAX_DEVI_F: float(forces_std.max()) if len(atoms) else 0.0,
            AVG_DEVI_F: float(forces_std.mean()) if len(atoms) else 0.0,
            DEVI_E: float((energies / max(len(atoms), 1)).std()),
            "member_energies": energies,
            "member_forces": forces,
        }
        if volume > 0:
            virials = out["virial"][:, 0].cpu().double().numpy()  # (K, 3, 3) eV
            self.results[STRESS] = full_3x3_to_voigt_6_stress(-virials.mean(0) / volume)
            devi_v = (virials / len(atoms)).std(axis=0)  # eV/atom, per component
            self.results[MAX_DEVI_V] = float(devi_v.max())
            self.results[AVG_DEVI_V] = float(devi_v.mean())
