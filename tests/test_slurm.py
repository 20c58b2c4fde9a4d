"""Labels and the tiny loop on a real Slurm (pytest -m slurm): Dask workers as batch jobs.

Where Slurm is not running, the set-up starts a single-node Slurm with .ci/install-slurm.sh
when the user is root (CI, a fresh machine); otherwise the tests skip, saying why.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from ase.build import bulk

from eelt.config import ExecutionConfig
from eelt.label import EMTLabeler, label_frames
from eelt.orchestration.execution import open_executor

pytestmark = pytest.mark.slurm
INSTALL = Path(__file__).resolve().parent.parent / ".ci" / "install-slurm.sh"


def _slurm_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    done = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    return done.returncode == 0 and any(
        s.strip().rstrip("*") in ("idle", "mix", "alloc") for s in done.stdout.split()
    )


@pytest.fixture(scope="module", autouse=True)
def slurm():
    if _slurm_up():
        return
    if os.geteuid() != 0:
        pytest.skip("Slurm is not running and installing it needs root (.ci/install-slurm.sh)")
    done = subprocess.run([str(INSTALL)], capture_output=True, text=True, timeout=900)
    if done.returncode != 0 or not _slurm_up():
        pytest.skip(f"Slurm could not be started here: {(done.stderr or done.stdout)[-300:]}")


def _slurm_execution(**kw) -> ExecutionConfig:
    return ExecutionConfig(
        kind="slurm", n_workers=1, threads_per_worker=1, memory_per_worker="2GiB",
        walltime="00:15:00", **kw,
    )  # fmt: skip


def test_labels_through_a_slurm_cluster(tmp_path):
    frames = []
    for seed in range(4):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.05, seed=seed)
        frames.append(atoms)
    with open_executor(_slurm_execution(), tmp_path / "logs") as executor:
        report = label_frames(frames, EMTLabeler(), executor, tmp_path / "labels")
    assert report.failed == [] and report.n_computed == 4
    for frame, labeled in zip(frames, report.labeled, strict=True):
        assert labeled.get_potential_energy() == pytest.approx(
            EMTLabeler()(frame).get_potential_energy(), abs=1e-9
        )
    # the workers really were Slurm jobs: their output files are in the log directory
    assert list((tmp_path / "logs").glob("*.out")) or list((tmp_path / "logs").glob("*.err"))


def test_the_tiny_loop_runs_on_slurm(tmp_path):
    from eelt.orchestration.context import RunContext
    from eelt.orchestration.runs import prepare_run, run_loop
    from tests.loop_config import cu_start, tiny_config

    cfg = tiny_config(
        cu_start(tmp_path),
        execution=_slurm_execution().model_dump(),
        loop={"max_iterations": 1},
    )
    run = prepare_run(cfg, tmp_path, tmp_path / "run")
    with open_executor(cfg.execution, tmp_path / "logs") as executor:
        state = run_loop(RunContext(run, executor))
    assert state["status"] == "max_iterations" and len(state["iterations"]) == 1
    assert state["n_labels"] > 0


def test_adaptive_scaling_starts_jobs_for_the_work(tmp_path):
    frames = [bulk("Cu", "fcc", a=3.6 + 0.01 * k, cubic=True) for k in range(3)]
    cfg = _slurm_execution().model_copy(update={"min_jobs": 0, "max_jobs": 2})
    with open_executor(cfg, tmp_path / "logs") as executor:
        report = label_frames(frames, EMTLabeler(), executor, tmp_path / "labels")
    assert report.failed == [] and report.n_computed == 3
