"""A local Prefect server for watching runs: where it keeps its state, how `eelt run` finds it.

`eelt server` starts `prefect server start` on 127.0.0.1 with its SQLite database under the
user's data directory (``$XDG_DATA_HOME/eelt``, default ``~/.local/share/eelt``), analytics off,
and ``PREFECT_UI_API_URL`` naming its own port (without it, a UI on a non-default port cannot
reach its API). It leaves ``server.json`` there; `eelt run` reads it and, when that server
answers, sends its flow runs there, unless ``PREFECT_API_URL`` is set. With neither, runs use
Prefect's ephemeral server.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from pathlib import Path

from eelt import atomic

HOST = "127.0.0.1"


def data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "eelt"


def discovery_file() -> Path:
    return data_dir() / "server.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def server_environment(port: int) -> dict[str, str]:
    """The environment `prefect server start` runs with (on top of the caller's)."""
    url = f"http://{HOST}:{port}/api"
    home = data_dir() / "prefect"
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_API_HOST": HOST,
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_UI_API_URL": url,
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def record_server(port: int, pid: int) -> None:
    atomic.write_json(discovery_file(), {"api_url": f"http://{HOST}:{port}/api", "pid": pid})


def healthy(api_url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout_s) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def running_server() -> str | None:
    """The API URL of a running `eelt server`, or None."""
    path = discovery_file()
    if not path.is_file():
        return None
    try:
        api_url = json.loads(path.read_text())["api_url"]
    except (OSError, ValueError, KeyError):
        return None
    return api_url if healthy(api_url) else None
