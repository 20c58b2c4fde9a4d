import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from eelt.atomic import write_frames
from eelt.train.data import frame_labels, label_frames, read_frames, split_train_validation


def test_split_sizes_disjoint_and_seeded():
    train, val = split_train_validation(40, 0.2, seed=3)
    assert len(val) == 8 and len(train) == 32
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(range(40))
    again = split_train_validation(40, 0.2, seed=3)
    assert np.array_equal(again[1], val)
    assert not np.array_equal(split_train_validation(40, 0.2, seed=4)[1], val)


def test_split_small_sets():
    train, val = split_train_validation(3, 0.05, seed=0)
    assert len(val) == 1 and len(train) == 2  # at least one validation frame
    train, val = split_train_validation(1, 0.5, seed=0)
    assert len(val) == 0 and list(train) == [0]
    train, val = split_train_validation(10, 0.0, seed=0)
    assert len(val) == 0 and len(train) == 10
    with pytest.raises(ValueError, match="validation_fraction"):
        split_train_validation(10, 1.0, seed=0)


def test_split_mostly_stable_when_data_grows():
    _, val_small = split_train_validation(100, 0.1, seed=0)
    train_big, _ = split_train_validation(110, 0.1, seed=0)
    moved = set(val_small) & set(train_big)
    assert len(moved) <= 3  # a fresh permutation would move ~9 of 10


def test_read_frames_labels_and_virial(cu_data):
    frames = read_frames([cu_data])
    assert len(frames) == 40
    atoms = frames[0]
    energy, forces, virial = frame_labels(atoms)
    assert energy == pytest.approx(atoms.get_potential_energy())
    assert np.allclose(forces, atoms.get_forces())
    s = atoms.get_stress(voigt=False)
    assert np.allclose(virial, -s * atoms.get_volume())
    assert np.allclose(virial, virial.T)


def test_missing_labels_and_files_are_named(tmp_path):
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.5]])
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0)
    path = tmp_path / "no_forces.extxyz"
    write_frames(path, [atoms])
    with pytest.raises(ValueError, match=r"no_forces.extxyz frame 0: no reference forces"):
        read_frames([path])
    with pytest.raises(FileNotFoundError, match="missing.extxyz"):
        read_frames([tmp_path / "missing.extxyz"])


def test_unknown_element_is_named(cu_data):
    with pytest.raises(ValueError, match=r"cu.extxyz frame 0: element Cu is not in type_map"):
        read_frames([cu_data], ["Ag"])
    with pytest.raises(ValueError, match="Cu"):
        label_frames(read_frames([cu_data])[:1], ["Ag"], 4.0)
