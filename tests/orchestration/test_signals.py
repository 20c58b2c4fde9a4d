"""SIGTERM and SIGINT to a real `eelt run` (plain with a local Dask cluster, through Prefect, and
on a thread pool): it stops within seconds with one line and exit 143 or 130, leaves no process
behind, releases the run directory and records the session as interrupted; the same command
then finishes the run without computing a stored label again."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from typer.testing import CliRunner

from eelt.cli import app
from tests.loop_config import cu_start, tiny_config

INFO = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO ")  # eelt's progress lines in a pipe
STOPPED = re.compile(
    r"interrupted at (init|iter-000)( label| train| explore| examine| calibrate)?; "
    r"run the same command to resume"
)
STOP_WITHIN_S = 15.0


def write_config(tmp_path: Path, kind: str) -> Path:
    cfg = tiny_config(cu_start(tmp_path), loop={"max_iterations": 1})
    data = cfg.model_dump(mode="json")
    data["system"]["structures"] = ["cu4.extxyz"]
    data["execution"] = {"kind": kind, "n_workers": 2}
    path = tmp_path / "eelt.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def command(*extra: str) -> list[str]:
    return [sys.executable, "-m", "eelt.cli", "run", "eelt.yaml", "--run-dir", "run", *extra]


def start(tmp_path: Path, *extra: str) -> subprocess.Popen:
    # its own process group: what is left of it afterwards is easy to find
    return subprocess.Popen(command(*extra), cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for(proc: subprocess.Popen, root: Path, pattern: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not list(root.glob(pattern)):
        if proc.poll() is not None:
            pytest.fail(f"eelt run ended (exit {proc.returncode}) before {pattern}: "
                        f"{proc.stderr.read()[-3000:]}")  # fmt: skip
        assert time.monotonic() < deadline, f"no {pattern} after {timeout_s} s"
        time.sleep(0.05)


def left_in_group(pgid: int, wait_s: float = 5.0) -> list[str]:
    """Processes of the group still running after ``wait_s`` seconds (multiprocessing's
    resource tracker ends by itself just after the run's process)."""
    deadline = time.monotonic() + wait_s
    while True:
        left = []
        for p in psutil.process_iter(["pid", "status", "cmdline"]):
            try:
                if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                    left.append(f"{p.pid}: {' '.join(p.info['cmdline'] or [])[:120]}")
            except (ProcessLookupError, psutil.Error):
                pass
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def stop(proc: subprocess.Popen, root: Path, signum: int, twice: bool = False) -> tuple[str, float]:
    """Send ``signum`` (``twice``: a second one at once), check what the issue asks of a stop;
    return the line and the seconds from the signal to the exit."""
    t0 = time.monotonic()
    os.kill(proc.pid, signum)
    if twice:
        time.sleep(0.05)
        os.kill(proc.pid, signum)
    _, stderr = proc.communicate(timeout=120)
    stop_s = time.monotonic() - t0
    try:
        assert proc.returncode == 128 + signum, stderr[-3000:]
        lines = [line for line in stderr.splitlines() if not INFO.match(line)]
        assert len(lines) == 1, stderr[-3000:]  # no traceback, no Prefect or Dask lines
        assert STOPPED.fullmatch(lines[0]), lines[0]
        assert stop_s < STOP_WITHIN_S
        assert left_in_group(proc.pid) == []
        assert not (root / "eelt.lock").exists()
        session = json.loads((root / "timing.json").read_text())["sessions"][-1]
        assert session["ended"] == "interrupted"
        assert session["signal"] == signal.Signals(signum).name
        assert lines[0] == f"interrupted at {session['at']}; run the same command to resume"
    finally:
        for line in left_in_group(proc.pid, wait_s=0):
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
    return lines[0], stop_s


def labels(root: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (root / "labels").glob("*.extxyz")}


def test_sigterm_stops_a_plain_run_on_dask_and_the_same_command_finishes_it(tmp_path):
    write_config(tmp_path, "local")
    root = tmp_path / "run"
    proc = start(tmp_path, "--plain")
    wait_for(proc, root, "iter-000/explore/*.summary.json")
    # while it runs, `eelt status` counts its session and names it
    status = CliRunner().invoke(app, ["status", str(root), "--json"])
    assert status.exit_code == 0, status.output
    state = json.loads(status.output)
    assert state["held_by"]["pid"] == proc.pid and state["held_by"]["command"] == "eelt run"
    assert state["time"]["n_sessions"] == 1 and state["time"]["run_wall_s"] > 0

    line, stop_s = stop(proc, root, signal.SIGTERM)
    print(f"stopped in {stop_s:.2f} s: {line}")
    before = labels(root)
    assert before  # the initial labels at least

    again = subprocess.run(command("--plain", "--quiet"), cwd=tmp_path, capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    after = labels(root)
    assert {name: after[name] for name in before} == before  # none computed and written again
    reports = [json.loads(p.read_text()) for p in root.glob("*/label/report.json")]
    assert len(after) == sum(r["n_labeled"] + r["n_test_labeled"] for r in reports)
    sessions = json.loads((root / "timing.json").read_text())["sessions"]
    assert [s["ended"] for s in sessions] == ["interrupted", "finished"]


def test_sigterm_stops_a_prefect_run_and_its_ephemeral_server(tmp_path):
    write_config(tmp_path, "local")
    root = tmp_path / "run"
    proc = start(tmp_path)
    wait_for(proc, root, "init/label/report.json")
    children = [c.cmdline() for c in psutil.Process(proc.pid).children()]
    assert any("uvicorn" in " ".join(c) for c in children)  # Prefect's ephemeral server
    line, stop_s = stop(proc, root, signal.SIGTERM)
    print(f"stopped in {stop_s:.2f} s: {line}")


def test_sigint_twice_stops_a_run_on_threads_at_once(tmp_path):
    write_config(tmp_path, "threads")
    root = tmp_path / "run"
    proc = start(tmp_path, "--plain")
    wait_for(proc, root, "init/label/report.json")
    line, stop_s = stop(proc, root, signal.SIGINT, twice=True)
    print(f"stopped in {stop_s:.2f} s: {line}")


# --- the stop itself, in this process ---------------------------------------------------------


@pytest.fixture
def stop_on_signals():
    from eelt.orchestration.interrupt import StopOnSignals

    hard = []
    with StopOnSignals(hard.append, grace_s=60) as stopper:
        yield stopper, hard
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # given back


def test_a_signal_raises_stopped_and_a_second_one_stops_at_once(stop_on_signals):
    from eelt.orchestration.interrupt import Stopped, signal_of

    stopper, hard = stop_on_signals
    with pytest.raises(Stopped) as info:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert signal_of(info.value) == signal.SIGTERM and stopper.signum == signal.SIGTERM
    assert isinstance(info.value, KeyboardInterrupt)  # libraries treat it as Ctrl-C
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.1)
    assert hard == [signal.SIGINT]  # the hard stop, not a second exception


def test_a_swallowed_stop_is_raised_again_before_the_next_stage(stop_on_signals, tmp_path):
    from eelt.orchestration import timing
    from eelt.orchestration.interrupt import Stopped

    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    except BaseException:  # as a bare except in some library does
        pass
    ran = []
    with pytest.raises(Stopped):
        timing.timed(tmp_path, "train", tmp_path / "report.json", 1, lambda: ran.append(1))
    assert ran == [] and timing.interrupted_at() == f"{tmp_path.name} train"


def test_a_stop_in_a_weakref_callback_is_raised_again_without_a_trace(stop_on_signals, capfd):
    import weakref

    from eelt.orchestration.interrupt import Stopped

    class Thing:
        pass

    def callback(ref):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)  # the handler raises here, where Python can only drop it

    thing = Thing()
    ref = weakref.ref(thing, callback)
    with pytest.raises(Stopped):
        del thing
        time.sleep(5)
    assert ref() is None
    assert "Exception ignored" not in capfd.readouterr().err


class LibraryTermination(BaseException):
    """As Prefect's TerminationSignal: a library's own exception for SIGTERM."""

    def __init__(self, signal: int):
        self.signal = signal


def test_a_library_stop_that_python_drops_becomes_a_stop(stop_on_signals, capfd):
    import weakref

    from eelt.orchestration.interrupt import Stopped

    stopper, hard = stop_on_signals

    class Thing:
        pass

    def callback(ref):  # where a library's SIGTERM handler raised its exception
        raise LibraryTermination(signal.SIGTERM)

    thing = Thing()
    ref = weakref.ref(thing, callback)
    with pytest.raises(Stopped) as info:
        del thing
        time.sleep(5)
    assert ref() is None and info.value.signum == signal.SIGTERM
    assert stopper.signum == signal.SIGTERM and hard == []  # noted as the first signal
    assert "Exception ignored" not in capfd.readouterr().err
