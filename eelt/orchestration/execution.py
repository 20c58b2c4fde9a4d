"""Where jobs run: a ``concurrent.futures.Executor`` over a Dask cluster or a thread pool.

Stages submit plain eelt functions (a DFT job, an MD walker, a training member) to the
executor; the same science runs on a laptop (local Dask cluster) or on a batch
scheduler through dask-jobqueue. Every server binds to ``execution.host``
(127.0.0.1 by default).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from eelt.config import ExecutionConfig

log = logging.getLogger(__name__)

JOBQUEUE_CLUSTERS = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
}


# Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which turns off glibc's
# dynamic mmap threshold: every large torch tensor is then mapped and unmapped anew, and a
# training step took 1.5x as long (measured: 150 steps of ethanol 17.2 s against 11.3 s;
# a large trim threshold alone is as slow). A local cluster unsets it (None in Dask's config);
# a batch job, whose worker reads Dask's defaults, sets both thresholds high (12.5 s), and the
# nanny passes the job's own value on.
MALLOC_VARIABLE = "MALLOC_TRIM_THRESHOLD_"
KEEP_GLIBC_MALLOC = {f"distributed.nanny.pre-spawn-environ.{MALLOC_VARIABLE}": None}
BATCH_MALLOC_EXPORTS = (
    f"export {MALLOC_VARIABLE}={64 * 2**20}",
    f"export MALLOC_MMAP_THRESHOLD_={32 * 2**20}",  # glibc's largest
)


def _worker_resources(cfg: ExecutionConfig) -> dict[str, float]:
    """What a worker advertises: one GPU slot per job that may share its GPUs."""
    return {"GPU": cfg.gpus_per_worker * cfg.jobs_per_gpu} if cfg.gpus_per_worker else {}


def gpu_executor(executor: Executor) -> Executor:
    """An executor over the same Dask cluster whose jobs each take one GPU slot, so they run
    only on workers that advertise a GPU (at most jobs_per_gpu at once per GPU); on a thread
    pool, the executor itself."""
    client = getattr(executor, "_client", None)
    if client is None:
        return executor
    return client.get_executor(resources={"GPU": 1})


def jobqueue_cluster(cfg: ExecutionConfig, log_dir: Path | None = None):
    """A dask-jobqueue cluster for ``cfg.kind`` (not yet scaled)."""
    import dask_jobqueue

    cls = getattr(dask_jobqueue, JOBQUEUE_CLUSTERS[cfg.kind])
    resources = _worker_resources(cfg)
    worker_extra_args = [f"--resources GPU={resources['GPU']}"] if resources else []
    dashboard = cfg.dashboard_address if cfg.dashboard_address is not None else None
    scheduler_options = {"host": cfg.host}
    if dashboard is not None:
        scheduler_options["dashboard_address"] = dashboard
    kwargs = dict(
        cores=cfg.threads_per_worker,
        processes=1,
        memory=cfg.memory_per_worker,
        walltime=cfg.walltime,
        queue=cfg.queue,
        account=cfg.account,
        job_extra_directives=[*cfg.job_extra_directives, *_gpu_directives(cfg)],
        job_script_prologue=[*BATCH_MALLOC_EXPORTS, *cfg.job_script_prologue],
        worker_extra_args=worker_extra_args,
        scheduler_options=scheduler_options,
        log_directory=str(log_dir) if log_dir else None,
    )
    if cfg.python:
        kwargs["python"] = cfg.python
    if cfg.kind in ("lsf", "sge"):  # their schedulers call the account a project
        kwargs["project"] = kwargs.pop("account")
    kwargs |= _job_cores(cfg)
    return cls(**kwargs)


def _gpu_directives(cfg: ExecutionConfig) -> list[str]:
    """The scheduler's own request for gpus_per_worker GPUs (unless the user wrote one)."""
    n = cfg.gpus_per_worker
    if not n or any("gpu" in d.lower() for d in cfg.job_extra_directives):
        return []
    return {"slurm": [f"--gres=gpu:{n}"], "lsf": [f'-gpu "num={n}"'], "sge": [f"-l gpu={n}"]}.get(
        cfg.kind, []
    )


def _job_cores(cfg: ExecutionConfig) -> dict:
    """Each batch job asks for threads_per_worker x threads_per_job cores: a worker runs
    threads_per_worker tasks at once, a DFT job computes on threads_per_job of them."""
    n = cfg.threads_per_worker * cfg.threads_per_job
    if cfg.kind == "pbs" and cfg.gpus_per_worker:  # PBS asks for GPUs in its select statement
        from dask.utils import parse_bytes
        from dask_jobqueue.pbs import pbs_format_bytes_ceil

        memory = pbs_format_bytes_ceil(parse_bytes(cfg.memory_per_worker))
        return {"resource_spec": f"select=1:ncpus={n}:ngpus={cfg.gpus_per_worker}:mem={memory}"}
    if n == cfg.threads_per_worker:
        return {}
    if cfg.kind == "slurm":
        return {"job_cpu": n}
    if cfg.kind == "lsf":
        return {"ncpus": n}
    if cfg.kind == "pbs":
        from dask.utils import parse_bytes
        from dask_jobqueue.pbs import pbs_format_bytes_ceil

        memory = pbs_format_bytes_ceil(parse_bytes(cfg.memory_per_worker))
        return {"resource_spec": f"select=1:ncpus={n}:mem={memory}"}
    # SGE has no core count of its own: a parallel environment in job_extra_directives
    return {}


def local_cluster(cfg: ExecutionConfig):
    """A Dask LocalCluster of worker processes listening on ``cfg.host`` only."""
    import dask
    from distributed import LocalCluster

    # an earlier Dask nanny in this process left its value in os.environ (nannies set their
    # pre-spawn variables in the parent process), where new workers would inherit it
    dask_value = dask.config.get(f"distributed.nanny.pre-spawn-environ.{MALLOC_VARIABLE}", None)
    if dask_value is not None and os.environ.get(MALLOC_VARIABLE) == str(dask_value):
        del os.environ[MALLOC_VARIABLE]
    with dask.config.set(KEEP_GLIBC_MALLOC):
        return LocalCluster(
            n_workers=cfg.n_workers,
            threads_per_worker=cfg.threads_per_worker,
            processes=True,
            host=cfg.host,
            dashboard_address=cfg.dashboard_address,
            memory_limit=cfg.memory_per_worker,
            resources=_worker_resources(cfg) or None,
        )


def _silence_dask() -> None:
    """Nothing Dask says while an abandoned cluster closes reaches the console (closing a local
    cluster restores the log level Dask had before it, so a level would not hold)."""
    logger = logging.getLogger("distributed")
    for handler in logger.handlers:
        handler.addFilter(lambda record: False)
    logger.propagate = False


class _SlowExitFilter(logging.Filter):
    """Drops the nanny's word that a worker process, asked to end, took a few seconds (one
    that used torch ends slowly; the nanny then ends it, and nothing is lost)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "still alive after" not in record.getMessage()


@contextmanager
def _quiet_worker_exit() -> Iterator[None]:
    logger, quiet = logging.getLogger("distributed.nanny"), _SlowExitFilter()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def _kill_local_workers(cluster) -> None:
    """A stopped run: end the local workers' processes at once (their jobs are abandoned; what
    they finished is on disk), so that closing the cluster neither waits for busy workers nor
    lets them log the cancelled jobs."""
    import signal

    for nanny in list(cluster.workers.values()):
        pid = getattr(nanny, "pid", None)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


@contextmanager
def open_executor(cfg: ExecutionConfig, log_dir: Path | None = None) -> Iterator[Executor]:
    """Yield an Executor for ``cfg`` and shut everything down afterwards."""
    if cfg.kind == "threads":
        pool = ThreadPoolExecutor(max_workers=cfg.n_workers * cfg.threads_per_worker)
        stopped = False
        try:
            yield pool
        except BaseException as e:
            stopped = not isinstance(e, Exception)  # a signal: do not wait for jobs in flight
            raise
        finally:
            pool.shutdown(wait=not stopped, cancel_futures=stopped)
        return

    from distributed import Client

    if cfg.kind == "dask":  # a scheduler someone else runs: connect, never shut it down
        with Client(cfg.scheduler_address) as client:
            log.info("Dask scheduler %s (%d workers)", cfg.scheduler_address,
                     len(client.scheduler_info()["workers"]))  # fmt: skip
            yield client.get_executor()
        return

    cluster = local_cluster(cfg) if cfg.kind == "local" else jobqueue_cluster(cfg, log_dir)
    try:
        if cfg.kind != "local" and cfg.max_jobs is not None:
            # Dask asks the scheduler for jobs while work waits and lets idle ones go
            cluster.adapt(minimum_jobs=cfg.min_jobs, maximum_jobs=cfg.max_jobs)
        elif cfg.kind != "local":
            cluster.scale(jobs=cfg.n_workers)
        with Client(cluster) as client:
            log.info(
                "Dask scheduler %s, dashboard %s", client.scheduler.address, client.dashboard_link
            )
            try:
                yield client.get_executor()
            except BaseException as e:
                if not isinstance(e, Exception):  # a signal: the cluster is abandoned
                    _silence_dask()
                    if cfg.kind == "local":
                        _kill_local_workers(cluster)
                raise
    finally:
        with _quiet_worker_exit():
            cluster.close()
