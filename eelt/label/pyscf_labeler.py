"""PySCF Kohn-Sham DFT on molecules: energy and analytic forces, on CPU or (gpu4pyscf) GPU."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import Bohr, Hartree

from eelt import keys
from eelt.label.base import LabelError, one_line
from eelt.label.dispatch import LABEL_THREADS

DEVICES = ("auto", "cpu", "gpu")
DISPERSIONS = ("d3bj", "d3zero", "d3bjm", "d3zerom", "d4")
SCF_ATTEMPTS = keys.SCF_ATTEMPTS

# The SCF fallback chain. Every attempt starts afresh from an initial guess: measured on a
# stretched water (O-H 2.2 A, PBE/STO-3G), a second-order solver started from the damped
# attempt's unconverged density converged to a state 12.8 eV above the ground state, the
# same solver from the guess to the ground state.
FALLBACKS = (
    {"name": "default"},
    {"name": "damped, level shift", "damp": 0.5, "level_shift_Ha": 0.3, "cycles_factor": 2},
    {"name": "second order (newton)", "newton": True},
    {"name": "atom guess, second order", "newton": True, "init_guess": "atom"},
)


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


class _Timeout(Exception):
    """Raised from the SCF callback when a job has run past its timeout."""


@dataclass(frozen=True)
class PySCFLabeler:
    """RKS (spin 0) or UKS Kohn-Sham DFT; ``spin`` is 2S = N_alpha - N_beta, ``charge`` in e.

    ``device``: "cpu", "gpu" (gpu4pyscf, error if missing) or "auto" (GPU when available).
    The device is not part of ``settings()``: CPU and GPU labels of one method are interchangeable.
    An SCF that does not converge is tried again down :data:`FALLBACKS` (more cycles with
    damping and a level shift, a second-order solver, an atomic guess; each from scratch) when
    ``scf_fallbacks``; only a converged SCF gives a label, and every attempt is recorded
    (``info["scf_attempts"]`` of the label, or the failure's ``attempts``). The fallbacks change
    how the SCF gets there, not where it converges, so they are not part of ``settings()``.
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
    dispersion: str | None = None  # "d3bj", "d3zero", "d3bjm", "d3zerom", "d4" (pyscf-dispersion)
    device: Literal["auto", "cpu", "gpu"] = "auto"
    scf_fallbacks: bool = True
    # where and how long a job runs, not what it computes (not in settings()):
    threads: int | None = None  # OpenMP and BLAS threads per job; None: the process's own
    max_memory_MB: float | None = None  # PySCF's memory cap; None: PySCF's default
    timeout_s: float | None = None  # an SCF still running after this long is given up

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"PySCFLabeler.device must be one of {DEVICES}, got {self.device!r}")
        if self.spin < 0:
            raise ValueError(f"PySCFLabeler.spin (2S) must be >= 0, got {self.spin}")
        if self.dispersion is not None and self.dispersion not in DISPERSIONS:
            raise ValueError(
                f"PySCFLabeler.dispersion must be one of {DISPERSIONS} or None, got "
                f"{self.dispersion!r}"
            )

    @property
    def method(self) -> str:
        """Short name of the method, e.g. "RKS pbe/def2-svp" or "RKS pbe-d3bj/def2-svp"."""
        disp = f"-{self.dispersion}" if self.dispersion else ""
        return f"{'RKS' if self.spin == 0 else 'UKS'} {self.xc}{disp}/{self.basis}"

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
            **({"dispersion": self.dispersion} if self.dispersion else {}),
        }

    def n_threads(self) -> int:
        """Threads PySCF computes with in this process (OpenMP), as it reports them."""
        from pyscf import lib

        return int(lib.num_threads())

    def __call__(self, atoms: Atoms) -> Atoms:
        """Label ``atoms`` with ``threads`` OpenMP and BLAS threads (a Dask nanny starts workers
        with OMP_NUM_THREADS=1, which PySCF would otherwise keep)."""
        if self.threads is None:
            return self._label(atoms)
        from pyscf import lib
        from threadpoolctl import threadpool_limits

        before = lib.num_threads()
        lib.num_threads(self.threads)
        try:
            with threadpool_limits(limits=self.threads):
                return self._label(atoms)
        finally:
            lib.num_threads(before)

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

    def _label(self, atoms: Atoms) -> Atoms:
        from pyscf import gto

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
            if self.max_memory_MB is not None:
                mol.max_memory = float(self.max_memory_MB)
        except Exception as err:
            raise LabelError(
                f"PySCF cannot build the molecule ({atoms.get_chemical_formula()}, "
                f"charge {self.charge}, spin {self.spin}, basis {self.basis}): {one_line(err)}"
            ) from None

        mf, attempts = self._converged_scf(mol, use_gpu)
        try:
            energy_Ha = float(mf.e_tot)
            grad_Ha_per_Bohr = _to_numpy(mf.nuc_grad_method().kernel())
        except Exception as err:
            raise LabelError(
                f"{self.method} gradient failed: {type(err).__name__}: {one_line(err)}",
                attempts=attempts,
            ) from None

        energy_eV = energy_Ha * Hartree
        forces_eV_per_A = -grad_Ha_per_Bohr.reshape(len(atoms), 3) * (Hartree / Bohr)
        if not np.isfinite(energy_eV) or not np.all(np.isfinite(forces_eV_per_A)):
            raise LabelError(f"{self.method} returned a non-finite energy or forces")
        out = atoms.copy()
        out.calc = SinglePointCalculator(
            out, **{keys.ENERGY: energy_eV, keys.FORCES: forces_eV_per_A}
        )
        out.info[SCF_ATTEMPTS] = json.dumps(attempts)
        out.info[LABEL_THREADS] = self.n_threads()  # as PySCF ran it, not as configured
        return out

    def _scf(self, mol):
        from pyscf import dft

        mf = dft.RKS(mol) if self.spin == 0 else dft.UKS(mol)
        mf.xc = self.xc
        mf.grids.level = self.grid_level
        if self.density_fit:
            mf = mf.density_fit()
        mf.conv_tol = self.conv_tol
        mf.max_cycle = self.max_cycle
        if self.max_memory_MB is not None:
            mf.max_memory = float(self.max_memory_MB)
        if self.dispersion:
            mf.disp = self.dispersion  # energy and analytic gradient (pyscf-dispersion)
        return mf

    def _converged_scf(self, mol, use_gpu: bool):
        """A converged SCF object and the attempts it took; LabelError (kind
        scf_not_converged, the attempts listed) when none converges."""
        attempts: list[dict] = []
        started = time.perf_counter()

        def deadline(_envs: dict) -> None:  # PySCF calls it after every SCF cycle
            if self.timeout_s is not None and time.perf_counter() - started > self.timeout_s:
                raise _Timeout

        chain = FALLBACKS if self.scf_fallbacks else FALLBACKS[:1]
        for step in chain:
            start = time.perf_counter()
            mf = self._scf(mol)
            mf.max_cycle = self.max_cycle * step.get("cycles_factor", 1)
            if "damp" in step:
                mf.damp = step["damp"]
                mf.level_shift = step["level_shift_Ha"]
            if "init_guess" in step:
                mf.init_guess = step["init_guess"]
            record = {"attempt": step["name"], "max_cycle": mf.max_cycle}
            try:
                if use_gpu:
                    mf = mf.to_gpu()
                if step.get("newton"):
                    mf = mf.newton()
                mf.callback = deadline
                mf.kernel()
                record |= {"converged": bool(mf.converged), "energy_Ha": float(mf.e_tot)}
            except _Timeout:
                attempts.append(
                    record | {"converged": False, "wall_s": time.perf_counter() - start}
                )
                raise LabelError(
                    f"{self.method} SCF still running after label.timeout_s={self.timeout_s:g} s "
                    f"({len(attempts)} attempts)",
                    kind="timeout",
                    attempts=attempts,
                ) from None
            except MemoryError:
                raise LabelError(
                    f"{self.method} ran out of memory (max_memory {mf.max_memory:.0f} MB)",
                    kind="out_of_memory",
                    attempts=attempts,
                ) from None
            except Exception as err:
                record |= {"converged": False, "error": f"{type(err).__name__}: {one_line(err)}"}
                attempts.append(record | {"wall_s": time.perf_counter() - start})
                if len(attempts) == 1 and "error" in record:
                    # the functional, basis or molecule itself is at fault: no fallback helps
                    raise LabelError(
                        f"{self.method} failed: {record['error']}", attempts=attempts
                    ) from None
                continue
            attempts.append(record | {"wall_s": time.perf_counter() - start})
            if mf.converged:
                return mf, attempts
        tried = "; ".join(
            f"{a['attempt']} ({a['max_cycle']} cycles{', ' + a['error'] if 'error' in a else ''})"
            for a in attempts
        )
        raise LabelError(
            f"{self.method} SCF not converged within max_cycle={self.max_cycle} "
            f"(conv_tol={self.conv_tol}) after {len(attempts)} attempts: {tried}",
            kind="scf_not_converged",
            attempts=attempts,
        )
