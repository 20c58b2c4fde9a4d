"""A real `eelt server` for tests: started on a free loopback port with its data under a temp
dir, stopped (its whole process group) at the end."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from eelt.server import free_port, healthy


@contextmanager
def eelt_server(tmp: Path, startup_s: float = 180) -> Iterator[tuple[str, dict[str, str]]]:
    """Yield (API URL, environment for eelt commands that should find this server)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"XDG_DATA_HOME": str(tmp / "data"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "eelt.cli", "server", "--port", str(port)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + startup_s
        while not healthy(api) and time.monotonic() < deadline:
            assert server.poll() is None, "eelt server ended"
            time.sleep(0.5)
        assert healthy(api), f"eelt server did not answer within {startup_s} s"
        yield api, env
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
