"""What a labeler is: a picklable callable that puts a reference energy and forces on a frame."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ase import Atoms

FAILURE_KINDS = ("scf_not_converged", "worker_lost", "out_of_memory", "timeout", "error")


class LabelError(RuntimeError):
    """A frame that could not be labeled; the message is one line naming the reason.

    ``kind`` is one of FAILURE_KINDS; ``attempts`` what was tried (e.g. the SCF fallback chain,
    one dict per attempt). Both survive pickling (a Dask worker raises, the client reads)."""

    def __init__(self, message: str, kind: str = "error", attempts: list[dict] | None = None):
        super().__init__(message)
        self.kind = kind
        self.attempts = list(attempts or [])

    def __reduce__(self):
        return (type(self), (str(self), self.kind, self.attempts))


@runtime_checkable
class Labeler(Protocol):
    """Reference method for frames (DFT, or EMT in tests); instances must be picklable for Dask."""

    name: str

    def settings(self) -> dict:
        """JSON-able description of everything that changes the numbers (part of the label hash)."""
        ...

    def __call__(self, atoms: Atoms) -> Atoms:
        """A new Atoms (same order) with a SinglePointCalculator: energy (eV), forces (eV/Angstrom),
        [stress (eV/Angstrom^3) for periodic frames]; raises LabelError on failure."""
        ...


def one_line(text: str, limit: int = 400) -> str:
    """Collapse a (possibly multi-line) message to one line of at most ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def label_with(calculator, atoms: Atoms, name: str) -> Atoms:
    """A copy of ``atoms`` labeled by an ASE ``calculator``: energy (eV), forces (eV/A) and, for
    fully periodic cells, stress (eV/A^3); non-finite values are a LabelError naming ``name``.
    The calculator's own exceptions pass through."""
    import numpy as np
    from ase.calculators.singlepoint import SinglePointCalculator

    from eelt import keys

    work = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    work.calc = calculator
    results = {keys.ENERGY: work.get_potential_energy(), keys.FORCES: work.get_forces()}
    if atoms.pbc.all():
        results[keys.STRESS] = work.get_stress(voigt=True)
    for key, value in results.items():
        if not np.all(np.isfinite(value)):
            raise LabelError(f"{name} returned a non-finite {key}")
    out = atoms.copy()
    out.calc = SinglePointCalculator(out, **results)
    return out
