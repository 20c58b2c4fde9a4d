"""A run's labeled data, exported for other codes: extxyz (ASE, MACE, NequIP) or DeePMD's npy
layout (DeePMD-kit, through dpdata).

Training frames (``data/user.extxyz``, ``data/init.extxyz``, ``data/iter-*.extxyz``) go to one
set, the held-out test frames (``data/test/``) to another. Units as in the run: energies eV,
forces eV/A, stress eV/A^3; DeePMD's virial is -stress x volume (eV). In the npy layout every
formula is one system (dpdata's MultiSystems), atoms ordered by type, and every system carries
the run's type map, so DeePMD-kit reads them all with one ``type_map``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.data import atomic_numbers
from ase.stress import voigt_6_to_full_3x3_stress

from eelt import atomic, keys
from eelt.errors import EeltError
from eelt.orchestration.rundir import RunDir

FORMATS = ("extxyz", "deepmd")
TRAIN, TEST = "train", "test"


@dataclass(frozen=True)
class WrittenSet:
    """One exported set: its name (train/test), frames, systems (formulas) and where it went."""

    name: str
    n_frames: int
    n_systems: int
    path: Path
    notes: tuple[str, ...] = ()


def read_run_frames(run: RunDir, include_test: bool = True) -> dict[str, list[Atoms]]:
    """The run's labeled frames by set: ``train`` (every training-data file, oldest first) and,
    with ``include_test``, ``test`` (the held-out frames)."""
    if not run.root.is_dir():
        raise EeltError(f"{run.root}: no such run directory")
    if not run.exists():
        raise EeltError(f"{run.root}: not an eelt run directory (no eelt.yaml)")
    sets = {TRAIN: _read(run.data_files())}
    if not sets[TRAIN]:
        raise EeltError(f"{run.root}: no labeled training frames yet (nothing under data/)")
    if include_test:
        sets[TEST] = _read(run.test_data_files())
    return sets


def _read(files: list[Path]) -> list[Atoms]:
    frames = []
    for path in files:
        for k, atoms in enumerate(ase.io.read(path, ":")):
            results = atoms.calc.results if atoms.calc is not None else {}
            if keys.ENERGY not in results or keys.FORCES not in results:
                raise EeltError(f"{path}: frame {k} has no energy and forces")
            frames.append(atoms)
    return frames


def run_type_map(run: RunDir, frames: list[Atoms]) -> list[str]:
    """The run's element order (``system.type_map`` as frozen at its start); every element of
    ``frames`` must be in it."""
    type_map = run.load_config().system.type_map
    present = {s for a in frames for s in a.get_chemical_symbols()}
    if type_map is None:  # a run frozen before type maps were resolved
        return sorted(present, key=atomic_numbers.get)
    missing = sorted(present - set(type_map))
    if missing:
        raise EeltError(f"{run.root}: elements {missing} in the data are not in {type_map}")
    return list(type_map)


def formula_of(atoms: Atoms, type_map: list[str]) -> str:
    """Atom counts in type-map order, as dpdata names a system (``H2O1Cu0``)."""
    counts = Counter(atoms.get_chemical_symbols())
    return "".join(f"{s}{counts.get(s, 0)}" for s in type_map)


def write_extxyz(name: str, frames: list[Atoms], path: Path, type_map: list[str]) -> WrittenSet:
    """All frames in one extxyz file (energy, forces, stress where present), atomically."""
    atomic.write_frames(path, frames)
    n_systems = len({formula_of(a, type_map) for a in frames})
    return WrittenSet(name, len(frames), n_systems, path)


def labeled_systems(frames: list[Atoms], type_map: list[str]):
    """One dpdata LabeledSystem per formula, all with ``type_map`` as atom names, in a
    MultiSystems; and notes on what could not be kept (virials of a formula where only some
    frames have a stress)."""
    import dpdata

    groups: dict[str, list[Atoms]] = {}
    for atoms in frames:
        groups.setdefault(formula_of(atoms, type_map), []).append(atoms)
    systems, notes = [], []
    for formula, group in groups.items():
        periodic = {bool(a.pbc.any()) for a in group}
        if len(periodic) > 1:
            raise EeltError(
                f"formula {formula}: some frames are periodic and some are not; DeePMD's "
                "layout holds one or the other per system"
            )
        with_stress = [keys.STRESS in a.calc.results for a in group]
        virials = all(with_stress)
        if any(with_stress) and not virials:
            notes.append(
                f"{formula}: {sum(with_stress)} of {len(group)} frames have a stress; "
                "virials left out of this system"
            )
        systems.append(dpdata.LabeledSystem(data=_system_data(group, type_map, virials)))
    return dpdata.MultiSystems(*systems, type_map=list(type_map)), notes


def _system_data(frames: list[Atoms], type_map: list[str], virials: bool) -> dict:
    """dpdata's data dict for frames of one formula, atoms sorted by type (stable)."""
    index = {s: i for i, s in enumerate(type_map)}
    types = [np.array([index[s] for s in a.get_chemical_symbols()]) for a in frames]
    orders = [np.argsort(t, kind="stable") for t in types]
    atom_types = types[0][orders[0]]
    data = {
        "atom_names": list(type_map),
        "atom_numbs": [int((atom_types == i).sum()) for i in range(len(type_map))],
        "atom_types": atom_types,
        "orig": np.zeros(3),
        "cells": np.array([a.cell.array for a in frames], dtype=np.float64),
        "coords": np.array([a.positions[o] for a, o in zip(frames, orders, strict=True)]),
        "energies": np.array([a.calc.results[keys.ENERGY] for a in frames], dtype=np.float64),
        "forces": np.array(
            [a.calc.results[keys.FORCES][o] for a, o in zip(frames, orders, strict=True)],
            dtype=np.float64,
        ),
        "nopbc": not frames[0].pbc.any(),
    }
    if virials:
        data["virials"] = np.array([virial(a) for a in frames])
    return data


def virial(atoms: Atoms) -> np.ndarray:
    """DeePMD's virial (eV, 3x3) of a labeled periodic frame: -stress x volume."""
    stress = np.asarray(atoms.calc.results[keys.STRESS], dtype=np.float64)
    if stress.shape == (6,):
        stress = voigt_6_to_full_3x3_stress(stress)
    return -stress * atoms.get_volume()


def write_deepmd(
    name: str, frames: list[Atoms], directory: Path, type_map: list[str]
) -> WrittenSet:
    """DeePMD npy systems (one per formula, float64) under ``directory``, through dpdata's own
    writer; an earlier export there is replaced, anything else there is refused."""
    systems, notes = labeled_systems(frames, type_map)
    _check_replaceable(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        systems.to_deepmd_npy(str(tmp), prec=np.float64)
        old = None
        if directory.exists():
            old = directory.with_name(f"{tmp.name}.old")
            directory.rename(old)
        tmp.rename(directory)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return WrittenSet(name, len(frames), len(systems), directory, tuple(notes))


def _check_replaceable(directory: Path) -> None:
    """``directory`` is absent, empty, or holds only DeePMD systems (an earlier export)."""
    if not directory.exists():
        return
    if not directory.is_dir() or any(
        not (p.is_dir() and (p / "type.raw").is_file()) for p in directory.iterdir()
    ):
        raise EeltError(
            f"{directory}: exists and is not an earlier DeePMD export; choose another --out"
        )


def export_run(
    run_dir: str | Path, fmt: str, out_dir: str | Path, include_test: bool = True
) -> list[WrittenSet]:
    """Write the run's training (and test) frames to ``out_dir``: ``train.extxyz`` /
    ``test.extxyz``, or DeePMD systems under ``train/`` / ``test/``. A set with no frames (a run
    without test frames) is not written."""
    if fmt not in FORMATS:
        raise EeltError(f"--format {fmt!r}: not one of {', '.join(FORMATS)}")
    run = RunDir(run_dir)
    sets = read_run_frames(run, include_test)
    type_map = run_type_map(run, [a for frames in sets.values() for a in frames])
    out_dir = Path(out_dir)
    written = []
    for name, frames in sets.items():
        if not frames:
            written.append(WrittenSet(name, 0, 0, out_dir, ("no frames, nothing written",)))
        elif fmt == "extxyz":
            written.append(write_extxyz(name, frames, out_dir / f"{name}.extxyz", type_map))
        else:
            written.append(write_deepmd(name, frames, out_dir / name, type_map))
    return written
