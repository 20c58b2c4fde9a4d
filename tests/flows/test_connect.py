"""Prefect's API checked before a run: an API that does not answer, or an ephemeral server that
does not come up in time, is one PrefectUnavailable line, and leaves no server process."""

import os
import socket
import subprocess
import sys

CONNECT = """
import psutil
from flows.connect import PrefectUnavailable, connect
try:
    connect({timeout})
except PrefectUnavailable as e:
    print("unavailable:", e)
else:
    print("connected")
print("children:", len(psutil.Process().children(recursive=True)))
"""


def connect_in_a_process(timeout_s: float | None, **env: str) -> list[str]:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **env}
    if "PREFECT_API_URL" not in env or not env["PREFECT_API_URL"]:
        env.pop("PREFECT_API_URL", None)
    proc = subprocess.run([sys.executable, "-c", CONNECT.format(timeout=timeout_s)],
                          capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()


def test_an_api_url_that_does_not_answer(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = f"http://127.0.0.1:{port}/api"
    assert connect_in_a_process(None, PREFECT_API_URL=api) == [
        f"unavailable: the Prefect API at {api} (PREFECT_API_URL) does not answer",
        "children: 0",
    ]


def test_an_ephemeral_server_that_does_not_come_up_in_time(tmp_path):
    lines = connect_in_a_process(0.05, PREFECT_API_URL="", PREFECT_HOME=str(tmp_path))
    assert lines == [
        "unavailable: Prefect's ephemeral server did not answer within 0.05 s "
        "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS); a busy machine?",
        "children: 0",  # the server it started is stopped
    ]
