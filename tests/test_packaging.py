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


def _imports() -> dict[str, set[str]]:
    """Every eelt module and the eelt modules it imports (lazy imports inside functions count)."""
    import ast

    modules = {}
    for path in (ROOT / "eelt").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                names = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                target = resolve(name) if name.startswith("eelt") else None
                if target and target != module:
                    edges[module].add(target)
    return edges


def test_no_import_circle_in_eelt():
    edges = _imports()
    circles, state = [], {}

    def visit(module: str, path: list[str]) -> None:  # depth-first search for back edges
        state[module] = "open"
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                circles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert circles == []


STAGES = ("eelt.explore", "eelt.examine", "eelt.label", "eelt.train", "eelt.model")
ABOVE_STAGES = ("eelt.orchestration", "eelt.tools", "eelt.cli", "eelt.terminal", "eelt.server")


def test_stage_packages_never_import_the_orchestration_or_the_tools():
    offenders = [
        f"{m} -> {t}"
        for m, targets in _imports().items()
        if m.startswith(STAGES)
        for t in targets
        if t.startswith(ABOVE_STAGES)
    ]
    assert offenders == []


def test_orchestration_never_imports_the_tools_or_the_cli():
    above = ("eelt.tools", "eelt.cli", "eelt.terminal", "eelt.server")
    offenders = [
        f"{m} -> {t}"
        for m, targets in _imports().items()
        if m.startswith("eelt.orchestration")
        for t in targets
        if t.startswith(above)
    ]
    assert offenders == []


def test_loading_a_config_imports_no_torch():
    code = "import sys, eelt.config; sys.exit(int('torch' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
