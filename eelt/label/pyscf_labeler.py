"""PySCF Kohn-Sham DFT on molecules: energy and analytic forces, on CPU or (gpu4pyscf) GPU."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import Bohr, Hartree

from eelt import keys
from eelt.label.base import LabelError, one_line

DEVICES = ("auto", "cpu", "gpu")


def gpu_available() -> bool:
    """True when gpu4pyscf imports and CuPy sees at least one CUDA device."""
    try:
        import cupy
        import gpu4pyscf  # noqa: F401

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _to_numpy(value: Any) -> np.ndarray:
    """CuPy arrays (gpu4pyscf) to NumPy; NumPy arrays and floats pass through."""
    if hasattr(value, "get") and not isinstance(value, np.ndarray):
        value = value.get()
    return np.asarray(value, dtype=np.float64)


@dataclass(frozen=True)
class PySCFLabeler:
    """RKS (spin 0) or UKS Kohn-Sham DFT; ``spin`` is 2S = N_alpha - N_beta, ``charge`` in e.

    ``device``: "cpu", "gpu" (gpu4pyscf, error if missing) or "auto" (GPU when available).
    The device is not part of ``settings()``: CPU and GPU labels of one method are interchangeable.
    """

    name: ClassVar[str] = "pyscf"

    xc: str = "pbe"
    basis: str = "def2-svp"
    charge: int = 0
    spin: int = 0
    conv_tol: float = 1e-9
    max_cycle: int = 100
    grid_level: int = 3
    density_fit: bool = False
    device: Literal["auto", "cpu", "gpu"] = "auto"

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"PySCFLabeler.device must be one of {DEVICES}, got {self.device!r}")
        if self.spin < 0:
            raise ValueError(f"PySCFLabeler.spin (2S) must be >= 0, got {self.spin}")

    @property
    def method(self) -> str:
        """Short name of the method, e.g. "RKS pbe/def2-svp"."""
        return f"{'RKS' if self.spin == 0 else 'UKS'} {self.xc}/{self.basis}"

    def settings(self) -> dict:
        return {
            "labeler": self.name,
            "xc": self.xc,
            "basis": self.basis,
            "charge": self.charge,
            "spin": self.spin,
            "conv_tol": self.conv_tol,
            "max_cycle": self.max_cycle,
            "grid_level": self.grid_level,
            "density_fit": self.density_fit,
        }

    def n_threads(self) -> int:
        """Threads PySCF computes with in this process (OpenMP)."""
        from pyscf import lib

        return int(lib.num_threads())

    def _use_gpu(self) -> bool:
        if self.device == "cpu":
            return False
        available = gpu_available()
        if self.device == "gpu" and not available:
            raise LabelError(
                "PySCF labeler device='gpu' needs gpu4pyscf and a CUDA device; none found "
                "(install eelt[gpu] or set device to 'auto' or 'cpu')"
            )
        return available

    def __call__(self, atoms: Atoms) -> Atoms:
        from pyscf import dft, gto

        if atoms.pbc.any():
            raise LabelError("PySCF labeler handles molecules only; frame has a periodic cell")
        if not np.all(np.isfinite(atoms.positions)):
            raise LabelError("frame has non-finite positions")
        use_gpu = self._use_gpu()
        geometry = [
            (s, tuple(p))
            for s, p in zip(atoms.get_chemical_symbols(), atoms.positions, strict=True)
        ]
        try:
            mol = gto.M(
                atom=geometry,
                unit="Angstrom",
                basis=self.basis,
                charge=self.charge,
                spin=self.spin,
                verbose=0,
                output=None,
            )
        except Exception as err:
            raise LabelError(
                f"PySCF cannot build the molecule ({atoms.get_chemical_formula()}, "
                f"charge {self.charge}, spin {self.spin}, basis {self.basis}): {one_line(err)}"
            ) from None

        mf = dft.RKS(mol) if self.spin == 0 else dft.UKS(mol)
        mf.xc = self.xc
        mf.grids.level = self.grid_level
        if self.density_fit:
            mf = mf.density_fit()
        mf.conv_tol = self.conv_tol
        mf.max_cycle = self.max_cycle
        try:
            if use_gpu:
                mf = mf.to_gpu()
            energy_Ha = float(mf.kernel())
            if not mf.converged:
                raise LabelError(
                    f"{self.method} SCF not converged within max_cycle={self.max_cycle} "
                    f"(conv_tol={self.conv_tol})"
                )
            grad_Ha_per_Bohr = _to_numpy(mf.nuc_grad_method().kernel())
        except LabelError:
            raise
        except Exception as err:
            raise LabelError(
                f"{self.method} failed: {type(err).__name__}: {one_line(err)}"
            ) from None

        energy_eV = energy_Ha * Hartree
        forces_eV_per_A = -grad_Ha_per_Bohr.reshape(len(atoms), 3) * (Hartree / Bohr)
        if not np.isfinite(energy_eV) or not np.all(np.isfinite(forces_eV_per_A)):
            raise LabelError(f"{self.method} returned a non-finite energy or forces")
        out = atoms.copy()
        out.calc = SinglePointCalculator(
            out, **{keys.ENERGY: energy_eV, keys.FORCES: forces_eV_per_A}
        )
        return out
