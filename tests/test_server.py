"""`eelt server` starts a real Prefect server on a free loopback port; `eelt run` finds it by
itself and its flow run lands there, COMPLETED."""

import json
import subprocess
import sys
import urllib.request

import pytest
import yaml

from tests.eelt_server import eelt_server

pytestmark = pytest.mark.slow


def test_eelt_run_finds_a_running_eelt_server(tmp_path):
    from tests.loop_config import cu_start, tiny_config

    with eelt_server(tmp_path) as (api, env):
        assert (
            json.loads((tmp_path / "data" / "eelt" / "server.json").read_text())["api_url"] == api
        )
        cfg = tiny_config(cu_start(tmp_path), loop={"max_iterations": 1})
        data = cfg.model_dump(mode="json")
        (tmp_path / "eelt.yaml").write_text(yaml.safe_dump(data))
        run = subprocess.run(
            [sys.executable, "-m", "eelt.cli", "run", "eelt.yaml", "--run-dir", "run"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        request = urllib.request.Request(
            f"{api}/flow_runs/filter", data=b"{}", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            runs = json.loads(response.read())
        names = {(r["name"], r["state_type"]) for r in runs}
        assert ("cu-test", "COMPLETED") in names, names
