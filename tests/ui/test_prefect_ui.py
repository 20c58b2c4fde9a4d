"""What a scientist sees in the Prefect UI: a real `eelt server` on a free loopback port, a
short EMT run sent to it by `eelt run`, then its artifacts through the API and in headless
Chromium (the flow run pages, the Artifacts tab, a plot rendered from its data URI)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.eelt_server import eelt_server
from tests.ui.browser import Browser, chromium_path

pytestmark = pytest.mark.ui

if chromium_path() is None and not os.environ.get("EELT_REQUIRE_CHROMIUM"):
    pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)


def _post(api: str, path: str, body: dict) -> list[dict]:
    request = urllib.request.Request(
        f"{api}/{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """An eelt server and a finished 2-iteration EMT run on it: (ui url, api url, tmp dir)."""
    from tests.loop_config import cu_start, tiny_config

    tmp = tmp_path_factory.mktemp("ui")
    with eelt_server(tmp) as (api, env):
        ui = api.removesuffix("/api")
        cfg = tiny_config(cu_start(tmp), name="cu-ui", loop={"max_iterations": 2})
        (tmp / "eelt.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        run = subprocess.run(
            [sys.executable, "-m", "eelt.cli", "run", "eelt.yaml", "--run-dir", "run"],
            cwd=tmp, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        # only eelt's own lines on the console: no Prefect state lines, no tracebacks
        assert "Finished in state" not in run.stderr and "Traceback" not in run.stderr
        yield ui, api, tmp, env


def test_api_lists_the_run_and_its_artifacts(finished_run):
    _, api, _, _ = finished_run
    runs = {r["name"]: r for r in _post(api, "flow_runs/filter", {})}
    for name in ("cu-ui", "cu-ui-iteration-000", "cu-ui-iteration-001"):
        assert runs[name]["state_type"] == "COMPLETED", (name, runs.get(name))
    artifacts = _post(api, "artifacts/filter", {})
    by_key = {}
    for a in artifacts:
        by_key.setdefault(a["key"], []).append(a)
    for it in ("000", "001"):
        table = by_key[f"cu-ui-iteration-{it}"][0]
        assert table["type"] == "table" and "accurate ratio" in str(table["data"])
        assert table["flow_run_id"] == runs[f"cu-ui-iteration-{it}"]["id"]
        plots = by_key[f"cu-ui-iteration-{it}-plots"][0]
        assert plots["type"] == "markdown" and plots["data"].count("data:image/png;base64,") == 3
        for stage in ("explore", "label", "train"):
            progress = by_key[f"cu-ui-iter-{it}-{stage}"][0]
            assert progress["type"] == "progress" and float(progress["data"]) == 100.0
    # the run-level history: a new version after every iteration, the last with both rows
    history = sorted(by_key["cu-ui-history"], key=lambda a: a["created"])
    assert len(history) >= 2
    assert history[-1]["flow_run_id"] == runs["cu-ui"]["id"]
    assert "| 1 | 0 |" in history[-1]["data"] and "data:image/png;base64," in history[-1]["data"]


def test_ui_shows_the_artifacts_of_the_flow_runs(finished_run, tmp_path):
    ui, api, tmp, _ = finished_run
    runs = {r["name"]: r for r in _post(api, "flow_runs/filter", {})}
    artifacts = {a["key"]: a for a in _post(api, "artifacts/filter", {})}
    shots = Path(os.environ.get("EELT_UI_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with Browser(height=1300) as browser:
        # the iteration's flow run page, Artifacts tab: its table, plots and progress
        browser.open(f"{ui}/runs/flow-run/{runs['cu-ui-iteration-001']['id']}")
        browser.wait_for_text(["cu-ui-iteration-001", "Artifacts"])
        assert browser.click("#artifacts")
        # (the progress artifacts belong to the stage task runs: the API test checks them)
        wanted = ["cu-ui-iteration-001", "cu-ui-iteration-001-plots",
                  "examination, labels and training", "deviation histogram"]  # fmt: skip
        text = browser.wait_for_text(wanted, timeout_s=60)
        browser.screenshot(shots / "iteration-artifacts.png")
        missing = [w for w in wanted if w not in text]
        assert not missing, (missing, text[:2000])

        # the run's page: the history artifact
        browser.open(f"{ui}/runs/flow-run/{runs['cu-ui']['id']}")
        browser.wait_for_text(["cu-ui", "Artifacts"])
        assert browser.click("#artifacts")
        text = browser.wait_for_text(["cu-ui-history"], timeout_s=60)
        browser.screenshot(shots / "run-artifacts.png")
        assert "cu-ui-history" in text

        # the plots artifact's own page: the three images decoded and drawn
        browser.open(f"{ui}/artifacts/artifact/{artifacts['cu-ui-iteration-001-plots']['id']}")
        browser.wait_for_text(["Learning curves of the new ensemble"], timeout_s=60)
        drawn = 0
        for _ in range(60):
            drawn = browser.evaluate(
                "Array.from(document.images).filter(i => i.src.startsWith('data:image/png') "
                "&& i.complete && i.naturalWidth > 100).length"
            )
            if drawn >= 3:
                break
            time.sleep(0.5)
        browser.screenshot(shots / "iteration-plots.png")
        assert drawn == 3
    for name in ("iteration-artifacts.png", "run-artifacts.png", "iteration-plots.png"):
        assert (shots / name).stat().st_size > 10_000
    if os.environ.get("EELT_UI_SCREENSHOTS"):
        shutil.copy(tmp / "eelt.yaml", shots / "eelt.yaml")


def test_a_deployment_started_from_the_api_runs_and_resumes(finished_run):
    """`eelt serve` registers eelt/NAME; a flow run created on the server (what the UI's Run
    button does) is executed by it and resumes the run directory where it stopped."""
    _, api, tmp, env = finished_run
    serve = subprocess.Popen(
        [sys.executable, "-m", "eelt.cli", "serve", "eelt.yaml", "--run-dir", "run"],
        cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        deployment = None
        while deployment is None and time.monotonic() < deadline:
            assert serve.poll() is None, serve.stdout.read()
            found = [d for d in _post(api, "deployments/filter", {}) if d["name"] == "cu-ui"]
            deployment = found[0] if found else None
            time.sleep(1)
        assert deployment is not None
        assert deployment["parameters"]["run_dir"] == str((tmp / "run").resolve())
        flow_run = _post(api, f"deployments/{deployment['id']}/create_flow_run", {})
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{api}/flow_runs/{flow_run['id']}", timeout=20) as r:
                state = json.loads(r.read())["state_type"]
            if state in ("COMPLETED", "FAILED", "CRASHED"):
                break
            time.sleep(1)
        assert state == "COMPLETED"
        # the run had finished: the deployment's run resumed it and recomputed nothing
        assert not (tmp / "run" / "iter-002").exists()
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=60)
