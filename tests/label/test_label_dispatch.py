"""label_frames over a thread pool: cache by content hash, incremental writes, failures."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from eelt.label import EMTLabeler, LabelError, PySCFLabeler, frame_hash, label_frames


def copper_frames(n: int) -> list[Atoms]:
    frames = []
    for seed in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(stdev=0.05, seed=seed)
        atoms.info["walker"] = seed
        frames.append(atoms)
    return frames


@pytest.fixture
def pool():
    with ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


def test_labels_all_caches_and_reuses(pool, tmp_path):
    frames = copper_frames(4)
    frames.append(frames[1].copy())  # a duplicate within the call is computed once
    progress = []
    report = label_frames(
        frames, EMTLabeler(), pool, tmp_path, lambda d, t: progress.append((d, t))
    )

    assert report.failed == [] and report.n_computed == 4 and report.n_cached == 0
    assert progress[0] == (0, 4) and progress[-1] == (4, 4) and len(progress) == 5
    assert len(report.labeled) == 5
    hashes = [frame_hash(f, EMTLabeler().settings()) for f in frames]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{h}.extxyz" for h in set(hashes))
    for frame, labeled, h in zip(frames, report.labeled, hashes, strict=True):
        np.testing.assert_array_equal(labeled.positions, frame.positions)  # input order
        assert labeled.info["label_hash"] == h and labeled.info["walker"] == frame.info["walker"]
        assert frame.calc is None
        direct = EMTLabeler()(frame)
        assert labeled.get_potential_energy() == pytest.approx(
            direct.get_potential_energy(), abs=1e-9
        )
        np.testing.assert_allclose(labeled.get_forces(), direct.get_forces(), atol=1e-8)
        np.testing.assert_allclose(labeled.get_stress(), direct.get_stress(), atol=1e-9)
        stored = ase.io.read(tmp_path / f"{h}.extxyz")
        assert stored.get_potential_energy() == labeled.get_potential_energy()

    again = label_frames(frames, EMTLabeler(), pool, tmp_path)
    assert again.n_computed == 0 and again.n_cached == 4 and again.failed == []
    for first, second in zip(report.labeled, again.labeled, strict=True):
        assert first.get_potential_energy() == second.get_potential_energy()
        np.testing.assert_array_equal(first.get_forces(), second.get_forces())
        np.testing.assert_array_equal(first.get_stress(), second.get_stress())
        np.testing.assert_array_equal(first.positions, second.positions)


def test_failures_are_reported_and_others_succeed(pool, tmp_path):
    frames = copper_frames(3)
    frames.insert(1, bulk("Si", "diamond", a=5.43))  # EMT has no silicon
    frames.append(frames[1].copy())
    report = label_frames(frames, EMTLabeler(), pool, tmp_path)

    assert [f["index"] for f in report.failed] == [1, 4]
    bad_hash = frame_hash(frames[1], EMTLabeler().settings())
    for failure in report.failed:
        assert failure["hash"] == bad_hash
        assert failure["reason"].startswith("LabelError: EMT has no parameters for Si")
        assert "\n" not in failure["reason"]
    assert report.n_computed == 3 and len(report.labeled) == 3
    assert [lab.info["walker"] for lab in report.labeled] == [0, 1, 2]
    assert not (tmp_path / f"{bad_hash}.extxyz").exists()
    assert len(list(tmp_path.glob("*.extxyz"))) == 3


@dataclass(frozen=True)
class ExplodingOnSmallFrames:
    """EMT, except that frames of fewer than 4 atoms raise an arbitrary (non-Label) error."""

    name: ClassVar[str] = "exploding-emt"

    def settings(self) -> dict:
        return {"labeler": self.name}

    def __call__(self, atoms: Atoms) -> Atoms:
        if len(atoms) < 4:
            raise ZeroDivisionError("boom\nsecond line")
        return EMTLabeler()(atoms)


def test_any_exception_is_a_one_line_failure(pool, tmp_path):
    frames = [*copper_frames(2), bulk("Cu")]
    report = label_frames(frames, ExplodingOnSmallFrames(), pool, tmp_path)
    assert report.failed == [
        {
            "index": 2,
            "hash": frame_hash(frames[2], {"labeler": "exploding-emt"}),
            "reason": "ZeroDivisionError: boom second line",
            "kind": "error",
        }
    ]
    assert len(report.labeled) == 2 and report.n_computed == 2


@dataclass(frozen=True)
class WaitsForAnotherLabel:
    """EMT; the frame with ``waiting_walker`` finishes only once ``path`` exists (or fails)."""

    path: Path
    waiting_walker: int
    name: ClassVar[str] = "waiting-emt"

    def settings(self) -> dict:
        return {"labeler": self.name}

    def __call__(self, atoms: Atoms) -> Atoms:
        if atoms.info["walker"] == self.waiting_walker:
            deadline = time.monotonic() + 20
            while not self.path.exists():
                if time.monotonic() > deadline:
                    raise LabelError(f"{self.path.name} was not written while others ran")
                time.sleep(0.01)
        return EMTLabeler()(atoms)


def test_each_label_is_written_as_soon_as_its_job_returns(pool, tmp_path):
    frames = copper_frames(2)
    first_path = tmp_path / f"{frame_hash(frames[1], {'labeler': 'waiting-emt'})}.extxyz"
    labeler = WaitsForAnotherLabel(path=first_path, waiting_walker=0)
    report = label_frames(frames, labeler, pool, tmp_path)
    assert report.failed == [] and report.n_computed == 2


def test_hash_covers_geometry_cell_pbc_and_settings():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    settings = EMTLabeler().settings()
    base = frame_hash(atoms, settings)
    assert len(base) == 64 and frame_hash(atoms.copy(), dict(settings)) == base
    moved = atoms.copy()
    moved.positions[0, 0] += 1e-12
    strained = atoms.copy()
    strained.cell[0, 0] += 1e-9
    open_z = atoms.copy()
    open_z.pbc = [True, True, False]
    silver = atoms.copy()
    silver.numbers[0] = 47
    variants = [moved, strained, open_z, silver]
    assert len({base, *(frame_hash(v, settings) for v in variants)}) == 5
    assert frame_hash(atoms, PySCFLabeler().settings()) != base
    assert frame_hash(atoms, PySCFLabeler(basis="sto-3g").settings()) != frame_hash(
        atoms, PySCFLabeler().settings()
    )


def test_changed_settings_label_again(pool, tmp_path):
    frames = copper_frames(2)
    label_frames(frames, ExplodingOnSmallFrames(), pool, tmp_path)
    report = label_frames(frames, EMTLabeler(), pool, tmp_path)
    assert report.n_cached == 0 and report.n_computed == 2
    assert len(list(tmp_path.glob("*.extxyz"))) == 4


def test_unreadable_label_file_is_computed_again(pool, tmp_path):
    frames = copper_frames(1)
    h = frame_hash(frames[0], EMTLabeler().settings())
    (tmp_path / f"{h}.extxyz").write_text("not an extxyz file\n")
    report = label_frames(frames, EMTLabeler(), pool, tmp_path)
    assert report.n_computed == 1 and report.n_cached == 0
    assert ase.io.read(tmp_path / f"{h}.extxyz").get_potential_energy() == pytest.approx(
        EMTLabeler()(frames[0]).get_potential_energy(), abs=1e-9
    )


def test_not_a_frame_is_a_clear_error(pool, tmp_path):
    with pytest.raises(TypeError, match=r"frames\[1\] is str"):
        label_frames([bulk("Cu"), "Cu"], EMTLabeler(), pool, tmp_path)


def test_frame_calculator_and_arrays_do_not_leak_into_the_label(pool, tmp_path):
    frame = copper_frames(1)[0]
    frame.arrays["forces_std"] = np.full(len(frame), 0.3)
    frame.calc = SinglePointCalculator(frame, energy=123.0, forces=np.ones((len(frame), 3)))
    report = label_frames([frame], EMTLabeler(), pool, tmp_path)
    labeled = report.labeled[0]
    direct = EMTLabeler()(frame)
    assert labeled.get_potential_energy() == pytest.approx(direct.get_potential_energy(), abs=1e-9)
    np.testing.assert_allclose(labeled.get_forces(), direct.get_forces(), atol=1e-8)
    np.testing.assert_array_equal(labeled.arrays["forces_std"], 0.3)
    assert frame.get_potential_energy() == 123.0
    stored = ase.io.read(tmp_path / f"{labeled.info['label_hash']}.extxyz")
    assert "forces_std" not in stored.arrays and "walker" not in stored.info


@dataclass(frozen=True)
class SlowLabeler:
    """EMT that takes a known time with a known thread count, to check the core-hour record."""

    name: ClassVar[str] = "slow-emt"
    sleep_s: float = 0.2

    def settings(self) -> dict:
        return {"labeler": self.name}

    def n_threads(self) -> int:
        return 3

    def __call__(self, atoms: Atoms) -> Atoms:
        time.sleep(self.sleep_s)
        return EMTLabeler()(atoms)


def test_each_label_keeps_its_jobs_wall_time_and_threads(pool, tmp_path):
    frames = copper_frames(2)
    report = label_frames(frames, SlowLabeler(), pool, tmp_path)
    # 2 jobs of >= 0.2 s on 3 threads: >= 1.2 core-seconds
    assert report.core_hours_computed == pytest.approx(report.core_hours)
    assert 1.2 / 3600 <= report.core_hours < 3.0 / 3600
    stored = ase.io.read(next(tmp_path.glob("*.extxyz")))
    assert stored.info["label_threads"] == 3 and stored.info["label_wall_s"] >= 0.2
    again = label_frames(frames, SlowLabeler(), pool, tmp_path)
    # cached labels bring their cost along; none was computed this time
    assert again.n_computed == 0 and again.core_hours_computed == 0.0
    assert again.core_hours == pytest.approx(report.core_hours)


@dataclass(frozen=True)
class HungryOnce:
    """EMT; a job with less than 1000 MB of memory cap runs out of memory."""

    max_memory_MB: float = 600.0
    name: ClassVar[str] = "hungry-emt"

    def settings(self) -> dict:
        return {"labeler": self.name}

    def __call__(self, atoms: Atoms) -> Atoms:
        if self.max_memory_MB < 1000.0:
            raise MemoryError("cannot allocate")
        return EMTLabeler()(atoms)


def test_out_of_memory_is_retried_once_with_more_memory(pool, tmp_path):
    frames = copper_frames(2)
    report = label_frames(frames, HungryOnce(), pool, tmp_path)  # 600 -> 1200 MB: labeled
    assert report.failed == [] and report.n_computed == 2
    hopeless = label_frames(copper_frames(1), HungryOnce(max_memory_MB=100.0), pool, tmp_path / "b")
    (failure,) = hopeless.failed
    assert failure["kind"] == "out_of_memory" and failure["retried"]
