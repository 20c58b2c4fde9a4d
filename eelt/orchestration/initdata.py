"""Labeled data a user already has, as initial training data (DP-GEN's ``init_data_sys``) or
as the independent yardstick (``examine.yardstick_data``).

A path is a file any ase.io format reads with energies and forces (extxyz, ...), or a DeePMD
system folder (``type.raw`` and ``set.*/``, npy or raw) read with dpdata. Every frame must carry
a finite energy (eV) and finite forces (eV/A) for every atom; the first that does not is named.
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from eelt.errors import EeltError

WHERE = "init.data"


def _read_deepmd(path: Path, where: str = WHERE) -> list[Atoms]:
    try:
        import dpdata
    except ImportError:
        raise EeltError(
            f"{where}: {path.name}: a DeePMD system needs dpdata (pip install dpdata)"
        ) from None
    fmt = "deepmd/npy" if any(path.glob("set.*/coord.npy")) else "deepmd/raw"
    try:
        system = dpdata.LabeledSystem(str(path), fmt=fmt)
    except Exception as err:  # dpdata raises many kinds for bad folders
        raise EeltError(
            f"{where}: {path.name}: cannot read as {fmt} ({type(err).__name__}: {err})"
        ) from None
    return list(system.to_ase_structure())


def _plain(atoms: Atoms, name: str, where: str = WHERE) -> Atoms:
    """A copy with only its checked labels (energy, forces, stress if any) as a calculator."""
    try:
        energy = float(atoms.get_potential_energy())
        forces = np.asarray(atoms.get_forces(apply_constraint=False), dtype=float)
    except Exception:
        raise EeltError(
            f"{where}: {name}: no energy and forces (a labeled frame is needed)"
        ) from None
    if not np.isfinite(energy):
        raise EeltError(f"{where}: {name}: energy is not finite ({energy})")
    if forces.shape != (len(atoms), 3) or not np.isfinite(forces).all():
        raise EeltError(f"{where}: {name}: forces missing or not finite")
    frame = Atoms(
        numbers=atoms.numbers.copy(),
        positions=atoms.positions.copy(),
        cell=atoms.cell.array.copy(),
        pbc=atoms.pbc.copy(),
    )
    try:
        stress = atoms.get_stress(voigt=True) if atoms.pbc.all() else None
    except Exception:  # no stress in the file: a code that did not compute it
        stress = None
    if stress is not None and not np.isfinite(stress).all():
        stress = None
    labels = {"energy": energy, "forces": forces}
    if stress is not None:
        labels["stress"] = np.asarray(stress, dtype=float)
    frame.calc = SinglePointCalculator(frame, **labels)
    frame.info["source"] = name.split(" frame ")[0]
    return frame


def read_labeled_data(
    paths: list[str], base_dir: Path, type_map: list[str], where: str = WHERE
) -> list[Atoms]:
    """Every frame of ``paths`` (relative to ``base_dir``), labels checked; elements must be in
    ``type_map``; problems name ``where`` (the config field)."""
    frames: list[Atoms] = []
    for name in paths:
        path = (base_dir / name).resolve()
        if path.is_dir():
            got = _read_deepmd(path, where)
        elif path.is_file():
            try:
                got = ase.io.read(path, ":")
            except Exception as err:  # ase.io raises many kinds for unreadable files
                raise EeltError(
                    f"{where}: {name}: cannot read ({type(err).__name__}: {err})"
                ) from None
        else:
            raise EeltError(f"{where}: {name}: no such file or folder (looked in {base_dir})")
        if not got:
            raise EeltError(f"{where}: {name}: holds no frame")
        for k, atoms in enumerate(got):
            frame = _plain(atoms, f"{name} frame {k}", where)
            unknown = sorted(set(frame.get_chemical_symbols()) - set(type_map))
            if unknown:
                raise EeltError(
                    f"{where}: {name} frame {k}: elements {unknown} not in the type map {type_map}"
                )
            frames.append(frame)
    return frames
