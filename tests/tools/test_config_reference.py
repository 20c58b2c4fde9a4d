"""The configuration reference page: current with eelt/config.py, complete, and readable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field

import eelt.config
from eelt.config import Section
from eelt.tools.config_reference import COMMAND, Table, render, render_table, tables

PAGE = Path(__file__).resolve().parents[2] / "docs" / "config-reference.md"


def config_classes() -> set[type[BaseModel]]:
    """Every config class defined in eelt/config.py."""
    return {
        value
        for value in vars(eelt.config).values()
        if isinstance(value, type)
        and issubclass(value, BaseModel)
        and value is not Section
        and value.__module__ == "eelt.config"
    }


def test_page_matches_the_config():
    assert PAGE.read_text() == render(), (
        f"docs/config-reference.md is out of date with eelt/config.py; run: {COMMAND}"
    )


def test_every_field_of_every_config_class_has_a_row():
    found = tables()
    assert {t.model for t in found} == config_classes()
    shown = {}
    for table in found:
        shown.setdefault(table.model, set()).update(table.fields)
    for model in config_classes():
        from_bases = set().union(*(shown.get(base, set()) for base in model.__mro__[1:]))
        missing = set(model.model_fields) - shown[model] - from_bases
        assert not missing, f"{model.__name__}: no row for {sorted(missing)}"

    chunks = render().split("\n## ")[1:]
    assert len(chunks) == len(found)
    for table, chunk in zip(found, chunks, strict=True):
        heading = chunk.splitlines()[0]
        assert heading == (f"`{table.path}`" if table.path else "Top level")
        rows = [line for line in chunk.splitlines() if line.startswith("| `")]
        assert [row.split("`")[1] for row in rows] == list(table.fields)


def test_sections_and_kinds_are_named_by_their_yaml_path():
    paths = [t.path for t in tables()]
    for path in (
        "system",
        "explore.stages[]",
        "explore.stages[].biases[] (kind: metadynamics)",
        "explore.stages[].biases[].cvs[]",
        "label (every kind)",
        "label (kind: pyscf)",
        "train.model (kind: deeppot)",
        "train.model (kind: mace)",
        "loop",
        "execution",
    ):
        assert path in paths
    pyscf = next(t for t in tables() if t.path == "label (kind: pyscf)")
    assert "xc" in pyscf.fields and "timeout_s" not in pyscf.fields  # policy: in every kind's


class Demo(BaseModel):
    mode: Literal["a", "b"] = "a"
    fraction: Annotated[float, Field(gt=0, le=1)] = Field(default=0.5, description="a | share")
    widths: list[Annotated[int, Field(gt=0)]] = Field(default=[2, 3], min_length=1)
    bounds: tuple[float, float] | None = None
    path: str = Field(pattern=r"^x+$")
    walltime: str = "01:00:00"


def test_a_table_shows_types_defaults_bounds_and_descriptions():
    text = render_table(Table("demo", Demo, tuple(Demo.model_fields)))
    rows = text.splitlines()[-6:]
    assert rows == [
        "| `mode` | str | `a` | `a`, `b` |  |",
        "| `fraction` | float | `0.5` | > 0; <= 1 | a \\| share |",
        "| `widths` | list[int] | `[2, 3]` | at least 1 item; items > 0 |  |",
        "| `bounds` | [float, float] \\| null | `null` |  |  |",
        "| `path` | str | required | pattern `^x+$` |  |",
        "| `walltime` | str | `01:00:00` |  |  |",
    ]


def test_rendering_imports_no_torch():
    code = "import sys, eelt.tools.config_reference; assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
