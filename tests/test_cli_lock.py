"""The command line and a run directory in use: `eelt run` and `eelt baseline` refuse with one
line and exit 2, writing nothing; `eelt status` names the holder and counts its session; a
Prefect API that does not answer costs one warning line, and the run goes on without Prefect."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from tests.test_cli import write_config

runner = CliRunner()

HOLD = """
import sys, time
from eelt.orchestration import timing
from eelt.orchestration.lock import acquire
held = acquire(sys.argv[1], "eelt run")
with timing.Session(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def hold():
    """Start a process that holds a run directory, as `eelt run` does (lock, then a session)."""
    procs = []

    def start(root):
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], stdout=subprocess.PIPE,
                                text=True)  # fmt: skip
        assert proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def tree(root):
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_run_refuses_a_directory_in_use(tmp_path, hold):
    from eelt.cli import app

    config = write_config(tmp_path)
    root = tmp_path / "run"
    proc = hold(root)
    before = tree(root)
    result = runner.invoke(app, ["run", str(config), "--plain", "--run-dir", str(root)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {root} is in use by eelt run (pid {proc.pid} on host ")
    assert tree(root) == before  # nothing written


def test_baseline_refuses_a_directory_in_use(tmp_path, hold):
    from eelt.cli import app

    root = tmp_path / "run"
    proc = hold(root)
    before = tree(root)
    result = runner.invoke(app, ["baseline", str(root)])
    assert result.exit_code == 2
    assert f"is in use by eelt run (pid {proc.pid}" in result.output
    assert tree(root) == before


def test_status_counts_the_session_under_way(plain_run_dir, hold):
    from eelt.cli import app

    finished = json.loads(runner.invoke(app, ["status", str(plain_run_dir), "--json"]).output)
    assert finished["time"]["n_sessions"] == 1 and "held_by" not in finished
    proc = hold(plain_run_dir)
    time.sleep(1.0)
    state = json.loads(runner.invoke(app, ["status", str(plain_run_dir), "--json"]).output)
    assert state["held_by"]["pid"] == proc.pid
    assert state["held_by"]["host"] == socket.gethostname()
    t = state["time"]
    assert t["n_sessions"] == 2
    assert t["run_wall_s"] >= finished["time"]["run_wall_s"] + 0.9
    assert t["run_wall_s"] <= finished["time"]["run_wall_s"] + 60
    assert t["wall_over_dft_wall"] == pytest.approx(t["run_wall_s"] / t["dft_wall_s"])
    table = runner.invoke(app, ["status", str(plain_run_dir)])
    assert "in 2 session(s)" in table.output
    assert f"in use now by eelt run (pid {proc.pid} on host" in table.output
    proc.kill()  # a holder killed outright: its session no longer counts
    proc.wait()
    after = json.loads(runner.invoke(app, ["status", str(plain_run_dir), "--json"]).output)
    assert "held_by" not in after and after["time"]["n_sessions"] == 1


@pytest.fixture(scope="module")
def plain_run_dir(tmp_path_factory):
    from eelt.cli import app

    tmp = tmp_path_factory.mktemp("status")
    config = write_config(tmp, loop={"max_iterations": 1})
    result = runner.invoke(
        app, ["run", str(config), "--plain", "--quiet", "--run-dir", str(tmp / "run")]
    )
    assert result.exit_code == 0, result.output
    assert not (tmp / "run" / "eelt.lock").exists()
    return tmp / "run"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is


def test_an_unanswering_prefect_api_costs_one_warning_and_the_run_goes_on(tmp_path):
    write_config(tmp_path, loop={"max_iterations": 1})
    api = f"http://127.0.0.1:{closed_port()}/api"
    proc = subprocess.run(
        [sys.executable, "-m", "eelt.cli", "run", "eelt.yaml", "--run-dir", "run", "--quiet"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PREFECT_API_URL": api},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(
        f"warning: the Prefect API at {api} (PREFECT_API_URL) does not answer"
    )
    assert "running without Prefect" in lines[0] and "eelt server" in lines[0]
    assert "--plain" in lines[0]
    assert "max_iterations" in proc.stdout
