"""The executors stages submit to: a local Dask cluster bound to loopback, a thread pool."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eelt.config import ExecutionConfig
from eelt.orchestration.execution import (
    BATCH_MALLOC_EXPORTS,
    MALLOC_VARIABLE,
    jobqueue_cluster,
    open_executor,
)


def _worker_environment() -> tuple[str | None, str | None]:
    return os.environ.get(MALLOC_VARIABLE), os.environ.get("OMP_NUM_THREADS")


def test_local_workers_keep_glibc_malloc_defaults(monkeypatch):
    # as left behind by an earlier default Dask cluster in this process
    monkeypatch.setenv(MALLOC_VARIABLE, "65536")
    cfg = ExecutionConfig(kind="local", n_workers=1, dashboard_address=None)
    with open_executor(cfg) as executor:
        malloc, omp = executor.submit(_worker_environment).result(timeout=60)
        address = executor._client.scheduler.address
    assert malloc is None  # Dask's 65536 made torch training 1.5x slower
    assert omp == "1"  # one OpenMP thread per single-threaded worker, as Dask sets it
    assert address.startswith("tcp://127.0.0.1:")


WORKER_REPORT = """
import os, sys
from distributed import Client, LocalCluster

if __name__ == "__main__":
    with LocalCluster(n_workers=1, processes=True, host="127.0.0.1", dashboard_address=None) as c:
        with Client(c) as client:
            print(*client.submit(lambda: [os.environ.get(k) for k in sys.argv[1:]]).result())
"""


def test_batch_job_exports_reach_dask_workers(tmp_path):
    # what the job script of a batch worker exports first; then a plain Dask nanny starts it
    script = tmp_path / "report.py"
    script.write_text(WORKER_REPORT)
    exports = dict(line.removeprefix("export ").split("=", 1) for line in BATCH_MALLOC_EXPORTS)
    names = sorted(exports)
    command = [sys.executable, str(script), *names]
    plain = subprocess.run(command, capture_output=True, text=True, timeout=120)
    env = {**os.environ, **exports}
    fixed = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert "65536" in plain.stdout.split()  # Dask's default, the slow one
    assert fixed.stdout.split() == [exports[k] for k in names], fixed.stderr[-2000:]


def _job_script(cfg) -> str:
    cluster = jobqueue_cluster(cfg)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


def test_batch_job_script_starts_with_the_export():
    script = _job_script(ExecutionConfig(kind="slurm", n_workers=1, dashboard_address=None))
    for line in BATCH_MALLOC_EXPORTS:
        assert script.index(line) < script.index("distributed.cli.dask_worker")


@pytest.mark.parametrize(
    "kind, lines",
    [
        ("slurm", ["#SBATCH -A chem", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=8G"]),
        ("pbs", ["#PBS -A chem", "#PBS -l select=1:ncpus=8:mem=8192MB"]),
        ("lsf", ['#BSUB -P "chem"', "#BSUB -n 8"]),
        ("sge", ["#$ -P chem"]),
    ],
)
def test_job_scripts_ask_for_every_core_a_worker_uses(kind, lines):
    from eelt.config import ExecutionConfig

    cfg = ExecutionConfig(
        kind=kind, threads_per_worker=2, threads_per_job=4, memory_per_worker="8GiB",
        account="chem",
    )  # fmt: skip
    script = _job_script(cfg)
    for line in lines:
        assert line in script.splitlines(), script
    assert "--nthreads 2" in script  # two tasks at a time, each DFT job on 4 threads


def test_kind_dask_uses_a_running_scheduler_and_leaves_it_running(tmp_path):
    from ase.build import bulk
    from distributed import Client, LocalCluster

    from eelt.config import ExecutionConfig
    from eelt.label import EMTLabeler, label_frames
    from eelt.orchestration.execution import open_executor

    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:  # fmt: skip
        cfg = ExecutionConfig(kind="dask", scheduler_address=cluster.scheduler_address)
        with open_executor(cfg) as executor:
            report = label_frames([bulk("Cu", cubic=True)], EMTLabeler(), executor, tmp_path)
        assert report.n_computed == 1
        with Client(cluster.scheduler_address) as client:  # still up, its worker too
            assert len(client.scheduler_info()["workers"]) == 1
    with pytest.raises(ValueError, match="kind 'dask' needs scheduler_address"):
        ExecutionConfig(kind="dask")


def _timed_job(k: int, out: str) -> str:
    """Sleep 0.3 s; record (start, end) in a file; return the worker's name."""
    import time as _time

    from distributed import get_worker

    start = _time.time()
    _time.sleep(0.3)
    Path(out, f"{k}.txt").write_text(f"{start} {_time.time()}")
    return str(get_worker().name)


def test_gpu_jobs_go_only_to_workers_with_gpu_slots(tmp_path):
    from distributed import Client, LocalCluster

    from eelt.orchestration.execution import gpu_executor

    # one worker with 2 GPU slots (one GPU, jobs_per_gpu 2) and 4 threads, and one worker
    # with none: GPU jobs run on the first, at most 2 at once
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=4, processes=True, host="127.0.0.1",
            dashboard_address=None, resources={"GPU": 2},
        ) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        plain = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address,
             "--nthreads", "4", "--name", "no-gpu", "--host", "127.0.0.1", "--no-dashboard"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            client.wait_for_workers(2, timeout=60)
            executor = gpu_executor(client.get_executor())
            futures = [executor.submit(_timed_job, k, str(tmp_path)) for k in range(6)]
            names = [f.result(timeout=60) for f in futures]
        finally:
            plain.terminate()
            plain.wait(timeout=30)
    assert "no-gpu" not in names and len(set(names)) == 1
    spans = [tuple(map(float, (tmp_path / f"{k}.txt").read_text().split())) for k in range(6)]
    peak = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert peak == 2  # two jobs share the GPU, never more


@pytest.mark.parametrize(
    "kind, line",
    [
        ("slurm", "#SBATCH --gres=gpu:2"),
        ("pbs", "#PBS -l select=1:ncpus=1:ngpus=2:mem=4096MB"),
        ("lsf", '#BSUB -gpu "num=2"'),
        ("sge", "#$ -l gpu=2"),
    ],
)
def test_gpu_workers_ask_their_scheduler_for_gpus(kind, line):
    from eelt.config import ExecutionConfig

    script = _job_script(ExecutionConfig(kind=kind, gpus_per_worker=2, jobs_per_gpu=4))
    assert line in script.splitlines(), script
    assert "--resources GPU=8" in script  # 2 GPUs x 4 jobs each


def test_closing_the_cluster_drops_only_the_slow_worker_exit_warning(caplog):
    from eelt.orchestration.execution import _quiet_worker_exit

    nanny = logging.getLogger("distributed.nanny")
    with caplog.at_level(logging.WARNING, logger="distributed.nanny"), _quiet_worker_exit():
        nanny.warning("Worker process still alive after %.1f seconds, killing", 4.0)
        nanny.warning("Restarting worker")
    nanny.warning("Worker process still alive after 4.0 seconds, killing")  # outside: kept
    assert [r.getMessage() for r in caplog.records] == [
        "Restarting worker",
        "Worker process still alive after 4.0 seconds, killing",
    ]
