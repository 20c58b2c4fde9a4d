"""The configuration reference: the run config's pydantic models rendered as markdown.

One table per config class (field, type, default, allowed values or bounds, description), in
the order the classes nest under :class:`eelt.config.RunConfig`. A section shared by several
kinds (the labelers' failure policy) gets its own table, each kind then lists only its own
fields. ``python -m eelt.tools.config_reference > docs/config-reference.md`` writes the page;
a test checks that the page matches what this module renders.
"""

from __future__ import annotations

import inspect
import re
import sys
import types
import typing
from dataclasses import dataclass

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from eelt.config import RunConfig

COMMAND = "python -m eelt.tools.config_reference > docs/config-reference.md"

HEADER = f"""\
# Configuration reference

<!-- Generated from eelt/config.py by `{COMMAND}`; do not edit by hand. -->

Every field of a run's YAML config, section by section, as `eelt validate` checks it: unknown
keys are refused, and a bad value is reported with its field and the allowed values. Units are
in the field names (eV, Angstrom = A, fs, K, bar). Defaults are written as YAML: `null` is an
absent value (None). Fields without a default are required. See
[configuration.md](configuration.md) for what the sections do together.
"""

BOUND_SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


@dataclass(frozen=True)
class Table:
    """One config class under its path in the YAML (``explore.stages[]``), with the fields it
    lists (a kind shows only the fields its shared base does not)."""

    path: str
    model: type[BaseModel]
    fields: tuple[str, ...]


def _is_model(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _strip(annotation: object) -> tuple[object, list]:
    """The bare type of an ``Annotated`` and the constraint objects it carries."""
    if typing.get_origin(annotation) is typing.Annotated:
        bare, *extras = typing.get_args(annotation)
        metadata = []
        for extra in extras:
            metadata.extend(extra.metadata if isinstance(extra, FieldInfo) else [extra])
        return bare, metadata
    return annotation, []


def _union_members(annotation: object) -> list:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return list(typing.get_args(annotation))
    return [annotation]


def _models_in(annotation: object) -> list[type[BaseModel]]:
    """Config classes a field holds, directly, in a list or as a union of kinds."""
    bare, _ = _strip(annotation)
    found = []
    for member in _union_members(bare):
        member, _ = _strip(member)
        if typing.get_origin(member) is list:
            found.extend(_models_in(typing.get_args(member)[0]))
        elif _is_model(member):
            found.append(member)
    return found


def _bounds(metadata: list, bare: object = None) -> list[str]:
    """Readable constraints of a value of type ``bare``: ``> 0``, ``at least 1 item``,
    ``not empty``, ``pattern `^...$```."""
    notes = []
    for item in metadata:
        for name, symbol in BOUND_SYMBOLS.items():
            value = getattr(item, name, None)
            if value is not None:
                notes.append(f"{symbol} {value}")
        min_length = getattr(item, "min_length", None)
        if min_length is not None and bare is str:
            notes.append("not empty" if min_length == 1 else f"at least {min_length} characters")
        elif min_length is not None:
            notes.append(f"at least {min_length} item{'s' if min_length > 1 else ''}")
        pattern = getattr(item, "pattern", None)
        if pattern is not None:
            notes.append(f"pattern `{pattern}`")
    return notes


def _describe_type(annotation: object, metadata: list) -> tuple[str, list[str]]:
    """(type as text, allowed values and bounds as text) of an annotation."""
    bare, inner = _strip(annotation)
    allowed = _bounds(metadata + inner, bare)
    if typing.get_origin(bare) is typing.Literal:
        values = typing.get_args(bare)
        return type(values[0]).__name__, [", ".join(f"`{v}`" for v in values)]
    members = _union_members(bare)
    if len(members) > 1:
        models = [m for m in (_strip(m)[0] for m in members) if _is_model(m)]
        if models:
            kinds = ", ".join(f"`{m.model_fields['kind'].default}`" for m in models)
            return "section", [f"kind: {kinds}"]
        texts = []
        for member in members:
            text, notes = _describe_type(member, [])
            if text not in texts:
                texts.append(text)
            allowed.extend(notes)
        return " | ".join(texts), allowed
    origin = typing.get_origin(bare)
    if origin is list:
        item = typing.get_args(bare)[0]
        if _models_in(item):
            return "list of sections", allowed + _describe_type(item, [])[1]
        text, notes = _describe_type(item, [])
        return f"list[{text}]", allowed + [f"items {note}" for note in notes]
    if origin is tuple:
        items = [_describe_type(item, []) for item in typing.get_args(bare)]
        notes = sorted({note for _, item_notes in items for note in item_notes})
        return (
            "[" + ", ".join(text for text, _ in items) + "]",
            allowed + [f"each {note}" for note in notes],
        )
    if bare is type(None):
        return "null", allowed
    if _is_model(bare):
        return "section", allowed
    return getattr(bare, "__name__", str(bare)), allowed


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(its defaults)"
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000)
    return "`" + text.removesuffix("\n...\n").strip() + "`"


def _prose(text: str | None) -> str:
    """A docstring or description as one markdown paragraph."""
    if not text:
        return ""
    text = " ".join(inspect.cleandoc(text).split())
    text = re.sub(r":\w+:`([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _own_fields(model: type[BaseModel], base: type[BaseModel] | None) -> tuple[str, ...]:
    inherited = set(base.model_fields) if base is not None else set()
    return tuple(name for name in model.model_fields if name not in inherited)


def _shared_base(models: list[type[BaseModel]]) -> type[BaseModel] | None:
    """The nearest base class with fields that every kind of a union derives from, if any."""
    for base in models[0].__mro__[1:]:
        if _is_model(base) and base.model_fields and all(issubclass(m, base) for m in models):
            return base
    return None


def tables(model: type[BaseModel] = RunConfig, path: str = "", title: str = "") -> list[Table]:
    """Every config class under ``model``, depth first in field order, with its YAML path
    (``title`` names a kind: ``label (kind: pyscf)``)."""
    found = [Table(title or path, model, tuple(model.model_fields))]
    for name, field in model.model_fields.items():
        models = _models_in(field.annotation)
        if not models:
            continue
        is_list = "list" in _describe_type(field.annotation, [])[0]
        sub_path = (f"{path}.{name}" if path else name) + ("[]" if is_list else "")
        if len(models) == 1:
            found.extend(tables(models[0], sub_path))
            continue
        base = _shared_base(models)
        if base is not None:
            found.append(Table(f"{sub_path} (every kind)", base, tuple(base.model_fields)))
        for kind in models:
            kind_title = f"{sub_path} (kind: {kind.model_fields['kind'].default})"
            kind_tables = tables(kind, sub_path, kind_title)
            kind_tables[0] = Table(kind_title, kind, _own_fields(kind, base))
            found.extend(kind_tables)
    return found


def render_table(table: Table) -> str:
    """One class as a markdown section: heading, the class docstring, the fields' table."""
    lines = [f"## `{table.path}`" if table.path else "## Top level", ""]
    doc = table.model.__dict__.get("__doc__")
    if doc:
        lines += [_prose(doc), ""]
    lines += [
        "| field | type | default | allowed | description |",
        "|---|---|---|---|---|",
    ]
    for name in table.fields:
        field = table.model.model_fields[name]
        type_text, allowed = _describe_type(field.annotation, list(field.metadata))
        cells = [
            f"`{name}`",
            type_text,
            _default(field),
            "; ".join(allowed),
            _prose(field.description),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def render() -> str:
    """The whole reference page as markdown."""
    return HEADER + "".join("\n" + render_table(t) for t in tables())


if __name__ == "__main__":
    sys.stdout.write(render())
