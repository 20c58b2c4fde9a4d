"""Test-wide settings: Prefect state in a temp dir, no analytics, servers on loopback."""

import os
import tempfile

import pytest

os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="eelt-prefect-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("PREFECT_API_URL", None)
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def one_torch_thread():
    """Tiny systems gain nothing from threads; on a busy 2-core box OpenMP spinning costs 4x."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
