"""The executors stages submit to: a local Dask cluster bound to loopback, a thread pool."""

import os

from eelt.config import ExecutionConfig
from eelt.execution import MALLOC_VARIABLE, open_executor


def _worker_environment() -> tuple[str | None, str | None]:
    return os.environ.get(MALLOC_VARIABLE), os.environ.get("OMP_NUM_THREADS")


def test_local_workers_keep_glibc_malloc_defaults():
    cfg = ExecutionConfig(kind="local", n_workers=1, dashboard_address=None)
    with open_executor(cfg) as executor:
        malloc, omp = executor.submit(_worker_environment).result(timeout=60)
        address = executor._client.scheduler.address
    assert malloc is None  # Dask's 65536 made torch training 1.5x slower
    assert omp == "1"  # one OpenMP thread per single-threaded worker, as Dask sets it
    assert address.startswith("tcp://127.0.0.1:")
