"""A user error found inside the Prefect flow reaches the console as one line, exit 2: no
traceback, no Prefect state lines, no retry of the stage that failed."""

import subprocess
import sys

import yaml

from tests.loop_config import cu_start, tiny_config

BROKEN_CV = """
def cv(positions, cell):
    raise ValueError("this collective variable is broken")
"""


def test_error_inside_the_flow_is_one_line(tmp_path):
    (tmp_path / "mycvs.py").write_text(BROKEN_CV)
    cfg = tiny_config(cu_start(tmp_path), loop={"max_iterations": 1})
    data = cfg.model_dump(mode="json")
    data["system"]["structures"] = ["cu4.extxyz"]
    stage = data["explore"]["stages"][0]
    stage["biases"] = [{"kind": "metadynamics", "cvs": [{"kind": "torch", "function": "mycvs:cv"}],
                        "sigma": [0.1], "height_eV": 0.01, "pace_steps": 5}]  # fmt: skip
    (tmp_path / "eelt.yaml").write_text(yaml.safe_dump(data))
    proc = subprocess.run(
        [sys.executable, "-m", "eelt.cli", "run", "eelt.yaml", "--run-dir", "run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "every walker of iteration 0 failed" in errors[0]
    assert "this collective variable is broken" in errors[0]
    assert "Traceback" not in proc.stderr and "Finished in state" not in proc.stderr
    assert "Retry" not in proc.stderr
    # finished work is kept: the initial labels and ensemble
    assert (tmp_path / "run" / "init" / "train" / "report.json").is_file()
