"""label_frames on a real Dask cluster of worker processes: labelers and jobs must pickle."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

import dask
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from distributed import Client, LocalCluster

from eelt.label import EMTLabeler, label_frames


@pytest.fixture(scope="module")
def client():
    # a job that kills its worker fails at once (no re-run elsewhere), and a worker holds one
    # task at a time, so a dying worker takes down no innocent queued job
    settings = {
        "distributed.scheduler.allowed-failures": 0,
        "distributed.scheduler.worker-saturation": 1.0,
    }
    with dask.config.set(settings):
        with (
            LocalCluster(
                processes=True,
                n_workers=2,
                threads_per_worker=1,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client


def copper_frames(n: int) -> list[Atoms]:
    frames = []
    for seed in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
        atoms.rattle(stdev=0.05, seed=seed)
        frames.append(atoms)
    return frames


def test_emt_over_dask_processes(client, tmp_path):
    frames = copper_frames(6)
    silicon = bulk("Si", "diamond", a=5.43)  # EMT has no silicon: the LabelError travels back
    report = label_frames([*frames, silicon], EMTLabeler(), client.get_executor(), tmp_path)
    assert [f["index"] for f in report.failed] == [6]
    assert report.failed[0]["reason"].startswith("LabelError: EMT has no parameters for Si")
    assert report.n_computed == 6
    assert len(list(tmp_path.glob("*.extxyz"))) == 6
    for frame, labeled in zip(frames, report.labeled, strict=True):
        direct = EMTLabeler()(frame)
        assert labeled.get_potential_energy() == pytest.approx(
            direct.get_potential_energy(), abs=1e-9
        )
        np.testing.assert_allclose(labeled.get_forces(), direct.get_forces(), atol=1e-8)
    again = label_frames(frames, EMTLabeler(), client.get_executor(), tmp_path)
    assert again.n_computed == 0 and again.n_cached == 6


@dataclass(frozen=True)
class KillsItsWorker:
    """EMT, except that the frame with walker 1 ends its worker process abruptly."""

    name: ClassVar[str] = "killer-emt"

    def settings(self) -> dict:
        return {"labeler": self.name}

    def __call__(self, atoms: Atoms) -> Atoms:
        if atoms.info.get("walker") == 1:
            os._exit(1)
        return EMTLabeler()(atoms)


def test_dead_worker_is_a_failure_not_a_crash(client, tmp_path):
    frames = copper_frames(3)
    for walker, frame in enumerate(frames):
        frame.info["walker"] = walker
    report = label_frames(frames, KillsItsWorker(), client.get_executor(), tmp_path)
    assert [f["index"] for f in report.failed] == [1]
    assert report.failed[0]["reason"].startswith("KilledWorker:")
    assert report.failed[0]["kind"] == "worker_lost"
    assert len(report.labeled) == 2 and report.n_computed == 2


@dataclass(frozen=True)
class KillsItsWorkerOnce:
    """EMT; the first job of the frame with walker 1 kills its worker process with SIGKILL
    (a marker file remembers it), as a scheduler pre-empting a node would."""

    marker: str
    name: ClassVar[str] = "killer-once-emt"

    def settings(self) -> dict:
        return {"labeler": self.name}

    def __call__(self, atoms: Atoms) -> Atoms:
        import signal

        if atoms.info.get("walker") == 1 and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return EMTLabeler()(atoms)


def test_a_job_whose_worker_is_killed_runs_again_elsewhere(tmp_path):
    # Dask's default: a task whose worker dies is run again, up to allowed-failures (3) times
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 3}),
        LocalCluster(
            processes=True, n_workers=2, threads_per_worker=1, host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        frames = copper_frames(4)
        for walker, frame in enumerate(frames):
            frame.info["walker"] = walker
        marker = tmp_path / "killed-once"
        labels = tmp_path / "labels"
        report = label_frames(
            frames, KillsItsWorkerOnce(str(marker)), client.get_executor(), labels
        )
    assert marker.exists()  # a worker did die
    assert report.failed == [] and report.n_computed == 4
    assert len(list(labels.glob("*.extxyz"))) == 4  # each label stored once
    for frame, labeled in zip(frames, report.labeled, strict=True):
        assert labeled.get_potential_energy() == pytest.approx(
            EMTLabeler()(frame).get_potential_energy(), abs=1e-9
        )
