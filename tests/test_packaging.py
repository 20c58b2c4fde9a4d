"""The project's own files: Dockerfile lint, lint of the code, examples in the repo."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfiles_pass_hadolint(dockerfile):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    proc = subprocess.run(
        [hadolint, str(ROOT / "docker" / dockerfile)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_file_wires_server_scheduler_workers_and_runs_volume():
    import yaml

    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"prefect", "scheduler", "worker", "eelt"} <= set(services)
    assert "tcp://scheduler:8786" in services["worker"]["entrypoint"]
    assert "runs:/home/eelt/runs" in services["worker"]["volumes"]
    assert "runs:/home/eelt/runs" in services["eelt"]["volumes"]
    # published ports only on the host's loopback
    for service in services.values():
        assert all(p.startswith("127.0.0.1:") for p in service.get("ports", []))


def test_domain_layer_never_imports_prefect():
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "eelt").rglob("*.py")
        if any(
            line.lstrip().startswith(("import prefect", "from prefect"))
            for line in p.read_text().splitlines()
        )
    ]
    assert offenders == []
