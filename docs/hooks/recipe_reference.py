"""MkDocs hook: the recipe reference, generated from the pydantic recipe model at build time.

mkdocs.yml names this file under ``hooks:``. On the page that holds the marker
``<!-- recipe-reference -->`` (docs/recipe-reference.md) the marker is replaced by one
Markdown table per recipe section, walked from ``nova_eval_assets.recipe.Recipe``: each
key with its type, default, range or allowed values (from ``Literal`` types and the
``Field`` constraints in ``field.metadata``), and whether Nova defines it. Nova's keys are
read, at build time too, from the verbatim Nova recipes in ``tests/recipes/nova/*.yaml``:
a key present there is "Nova", any other "extension". So the page follows the model and
the recipes whenever either changes, and cannot drift from them.

    .venv/bin/python docs/hooks/recipe_reference.py   # print the generated Markdown
"""

from __future__ import annotations

import enum
import inspect
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[2]
NOVA_RECIPES = ROOT / "tests" / "recipes" / "nova"
MARKER = "<!-- recipe-reference -->"


def nova_keys(folder: Path = NOVA_RECIPES) -> set[str]:
    """Every dotted key (sections and leaves) of the Nova recipes in ``folder``."""
    keys: set[str] = set()

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                dotted = f"{prefix}{key}"
                keys.add(dotted)
                walk(value, dotted + ".")

    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise FileNotFoundError(f"no Nova recipes in {folder}")
    for path in files:
        walk(yaml.safe_load(path.read_text(encoding="utf-8")), "")
    return keys


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The nested section model of a field (``Section`` or ``Section | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _without_none(annotation: Any) -> tuple[Any, bool]:
    """The annotation without ``None`` and whether ``None`` (null) is allowed."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        nullable = len(args) < len(typing.get_args(annotation))
        if len(args) == 1:
            return args[0], nullable
        return typing.Union[tuple(args)], nullable  # noqa: UP007 (built at run time)
    return annotation, False


def _type_name(annotation: Any) -> str:
    annotation, _ = _without_none(annotation)
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return "any"
    if origin is typing.Literal:
        kinds = {type(value).__name__ for value in typing.get_args(annotation)}
        return " or ".join(sorted(kinds)).replace("str", "string")
    if origin in (list, tuple, set):
        (item, *_) = typing.get_args(annotation) or (Any,)
        return f"list of {_type_name(item)}"
    if origin is dict:
        key, value = typing.get_args(annotation) or (str, Any)
        if value is Any:
            return "mapping"
        return f"mapping of {_type_name(key)} to {_type_name(value)}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if _section_model(annotation) is not None:
        return "section"
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _code(value: Any) -> str:
    """A value as YAML writes it, in a code span (and safe inside a table cell)."""
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = f'"{value}"' if value == "" else value
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(str(item) for item in value) + "]"
    elif isinstance(value, dict):
        text = "{}" if not value else str(value)
    else:
        text = repr(value)
    return "`" + text.replace("|", "\\|") + "`"


def _default(field: Any) -> str:
    if field.default_factory is not None:
        return _code(field.default_factory())
    if field.default is PydanticUndefined:
        return "required"
    if isinstance(field.default, BaseModel):
        return "its keys' defaults"
    return _code(field.default)


def _bound(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _allowed(field: Any) -> str:
    """Allowed values (``Literal``) or the range, length and pattern constraints."""
    annotation, nullable = _without_none(field.annotation)
    parts: list[str] = []
    if typing.get_origin(annotation) is typing.Literal:
        parts.append(", ".join(_code(value) for value in typing.get_args(annotation)))
    lower = upper = ""
    min_len = max_len = None
    for item in field.metadata:
        for attr, symbol in (("ge", "≥"), ("gt", ">")):
            if getattr(item, attr, None) is not None:
                lower = f"{symbol} {_bound(getattr(item, attr))}"
        for attr, symbol in (("le", "≤"), ("lt", "<")):
            if getattr(item, attr, None) is not None:
                upper = f"{symbol} {_bound(getattr(item, attr))}"
        if getattr(item, "min_length", None) is not None:
            min_len = item.min_length
        if getattr(item, "max_length", None) is not None:
            max_len = item.max_length
        if getattr(item, "pattern", None) is not None:
            parts.append(f"matches {_code(item.pattern)}")
    if lower and upper:
        flip = {"≥": "≤", ">": "<"}
        symbol, low = lower.split(" ", 1)
        parts.append(f"{low} {flip[symbol]} x {upper}")
    elif lower or upper:
        parts.append(f"x {lower or upper}")
    if min_len is not None and max_len is not None:
        parts.append(f"length {min_len} to {max_len}")
    elif min_len is not None:
        parts.append("non-empty" if min_len == 1 else f"length ≥ {min_len}")
    elif max_len is not None:
        parts.append(f"length ≤ {max_len}")
    if annotation is bool:
        parts.append("`true`, `false`")
    if nullable and parts:
        parts.append("or `null`")
    return "; ".join(parts) or ("any, or `null`" if nullable else "any")


def _doc(model: type[BaseModel]) -> str:
    """The section model's docstring, as Markdown (``x`` -> `x`), or nothing."""
    doc = model.__doc__
    if not doc or doc == BaseModel.__doc__ or "__doc__" not in vars(model):
        return ""
    return re.sub(r"``([^`]+)``", r"`\1`", " ".join(inspect.cleandoc(doc).split()))


def sections(
    model: type[BaseModel] | None = None, prefix: str = "", field: Any = None
) -> list[tuple[str, type[BaseModel], Any, list[tuple[str, Any]]]]:
    """(dotted section, its model, the field that holds it, its keys as (dotted key, field))
    for every section, in declaration order, depth first. A key is what a recipe writes
    (the field's alias, when it has one)."""
    if model is None:
        from nova_eval_assets.recipe import Recipe

        model = Recipe
    leaves: list[tuple[str, Any]] = []
    nested: list[tuple[str, type[BaseModel], Any]] = []
    for name, child in model.model_fields.items():
        key = f"{prefix}{child.alias or name}"
        section = _section_model(child.annotation)
        if section is not None:
            nested.append((key, section, child))
        else:
            leaves.append((key, child))
    found = [(prefix.rstrip("."), model, field, leaves)] if prefix else []
    for key, section, child in nested:
        found.extend(sections(section, key + ".", child))
    return found


def render(nova: set[str] | None = None) -> str:
    """The generated reference: one table per section of the recipe model."""
    nova = nova_keys() if nova is None else nova
    out: list[str] = []
    for dotted, model, field, leaves in sections():
        note = [f"Section defined by: **{'Nova' if dotted in nova else 'extension'}**."]
        if field.is_required():
            note.append("Required.")
        elif isinstance(field.default, BaseModel):
            note.append("May be left out: its keys then take their defaults.")
        else:
            note.append("May be left out.")
        doc = _doc(model)
        if doc:
            note.append(doc)
        out += [f"### `{dotted}`", "", " ".join(note), ""]
        out += [
            "| key | type | default | range / allowed values | defined by |",
            "|---|---|---|---|---|",
        ]
        for key, leaf in leaves:
            out.append(
                f"| `{key}` | {_type_name(leaf.annotation)} | {_default(leaf)} "
                f"| {_allowed(leaf)} | {'Nova' if key in nova else 'extension'} |"
            )
        out.append("")
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs event: replace the marker with the generated tables."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render())


if __name__ == "__main__":
    print(render())
