"""PLUMED as a bias of a walker, where a PLUMED kernel is installed.

The Python wrapper on PyPI (``pip install plumed``) loads the kernel named by ``PLUMED_KERNEL``
(``libplumedKernel.so`` from a PLUMED build or conda-forge). The walker's ensemble stays the
calculator: PLUMED only adds its bias, the way ASE's own PLUMED calculator drives it (same
units: PLUMED input in nm, kJ/mol, ps; eelt converts positions, masses, box and forces).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms, units
from ase.units import fs, kJ, mol, nm

PS = 1000.0 * fs


def plumed_kernel_error() -> str | None:
    """Why PLUMED cannot run here (no wrapper, no kernel), or None when it can."""
    try:
        import plumed
    except ImportError:
        return "the plumed Python package is not installed (pip install plumed)"
    try:
        plumed.Plumed()
    except Exception as err:  # the wrapper raises RuntimeError without a kernel
        return f"no PLUMED kernel ({err})"
    return None


class PlumedBias:
    """A PLUMED input as a bias: energy (eV) and forces (eV/A) at each MD step's positions.

    ``script`` is the PLUMED input (lines); ``timestep_fs`` and ``temperature_K`` are told to
    PLUMED (its kBT, for well-tempered metadynamics). The step is the walker's, so PLUMED's own
    PACE/STRIDE count MD steps. Hills and COLVAR files are written where the script says,
    relative to the walker's working directory.
    """

    def __init__(self, script: str, atoms: Atoms, timestep_fs: float, temperature_K: float):
        import plumed

        if (why := plumed_kernel_error()) is not None:
            raise RuntimeError(f"plumed bias: {why}")
        self.natoms = len(atoms)
        self.masses = atoms.get_masses().astype(float)
        self.pbc = bool(atoms.pbc.any())
        self._plumed = plumed.Plumed()
        cmd = self._plumed.cmd
        cmd("setMDEnergyUnits", mol / kJ)
        cmd("setMDLengthUnits", 1 / nm)
        cmd("setMDTimeUnits", 1 / PS)
        cmd("setMDChargeUnits", 1.0)
        cmd("setMDMassUnits", 1.0)
        cmd("setNatoms", self.natoms)
        cmd("setMDEngine", "eelt")
        cmd("setTimestep", float(timestep_fs * fs))
        cmd("setKbT", float(units.kB * temperature_K))
        cmd("init")
        for line in script.splitlines():
            if line.strip():
                cmd("readInputLine", line)

    def bias(self, positions: np.ndarray, cell: np.ndarray, step: int) -> tuple[float, np.ndarray]:
        """PLUMED's bias energy (eV) and forces (N, 3) eV/A at ``positions`` for MD ``step``."""
        cmd = self._plumed.cmd
        forces = np.zeros((self.natoms, 3))
        virial = np.zeros((3, 3))
        energy = np.zeros((1,))
        cmd("setStep", int(step))
        if self.pbc:
            cmd("setBox", np.ascontiguousarray(cell, dtype=float))
        cmd("setPositions", np.ascontiguousarray(positions, dtype=float))
        cmd("setMasses", self.masses)
        cmd("setForces", forces)
        cmd("setVirial", virial)
        cmd("prepareCalc")
        cmd("performCalc")
        cmd("getBias", energy)
        return float(energy[0]), forces

    def close(self) -> None:
        self._plumed.finalize()
