"""The whole labeling killed halfway (SIGKILL to the `eelt run` process), then the same command
again: only the unfinished DFT jobs run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from ase.build import molecule

pytestmark = pytest.mark.slow


def test_sigkill_during_labeling_then_resume_runs_only_unfinished_jobs(tmp_path):
    molecule("H2O").write(tmp_path / "h2o.xyz")
    config = {
        "name": "kill",
        "system": {"structures": ["h2o.xyz"]},
        "init": {"n_perturbed": 23, "position_sigma_A": 0.05},
        "explore": {"stages": [{"temperatures_K": [300], "n_steps": 20, "max_iterations": 1}]},
        "label": {"kind": "pyscf", "xc": "pbe", "basis": "def2-svp"},
        "train": {"ensemble_size": 2, "steps": 20, "warm_steps": 10, "batch_size": 2,
                  "model": {"rcut_A": 4.0, "embedding_widths": [4, 8], "axis_neuron": 2,
                            "fitting_widths": [16]}},
        "execution": {"kind": "local", "n_workers": 2},
        "loop": {"max_iterations": 1},
    }  # fmt: skip
    (tmp_path / "eelt.yaml").write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "runs" / "kill"
    labels = run_dir / "labels"
    cmd = [
        sys.executable,
        "-m",
        "eelt.cli",
        "run",
        "eelt.yaml",
        "--plain",
        "--run-dir",
        str(run_dir),
    ]
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    # its own process group, so the Dask workers die with it as on a node failure
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        n_done = len(list(labels.glob("*.extxyz"))) if labels.is_dir() else 0
        if n_done >= 6:
            break
        assert proc.poll() is None, "eelt run ended before it was killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = {p.name for p in labels.glob("*.extxyz")}
    assert 6 <= len(kept) < 24, len(kept)
    assert not (run_dir / "init" / "label" / "report.json").exists()

    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    report = json.loads((run_dir / "init" / "label" / "report.json").read_text())
    assert report["n_cached"] == len(kept)  # every label finished before the kill is reused
    assert report["n_computed"] == 24 - len(kept)  # only the unfinished jobs ran
    assert {p.name for p in labels.glob("*.extxyz")} >= kept
