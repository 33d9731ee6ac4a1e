"""Reading a recipe's YAML without trusting it.

A recipe comes from a user, so reading one costs time and memory in proportion to its size,
and every problem says on which line it is:

- the file is at most :data:`MAX_RECIPE_BYTES` of UTF-8 text;
- YAML aliases (``*name``) and merge keys (``<<``) are refused: a few lines of anchors and
  aliases expand to gigabytes (the "billion laughs"), and Nova's recipes use none;
- containers nest at most :data:`MAX_NESTING` levels;
- a key written twice in one mapping is an error (YAML itself keeps the last silently).

The result holds the line of every key, so a problem found later, by the recipe model, names
its line too. Nothing here knows the recipe's keys (recipe.py does).
"""

from __future__ import annotations

import codecs
import reprlib
from dataclasses import dataclass
from typing import Any

import yaml

MAX_RECIPE_BYTES = 4 * 1024 * 1024
MAX_NESTING = 64
#: how much of a value an error message shows
SHOWN_CHARS = 100

# libyaml's parser when PyYAML has it (several times faster), the Python one otherwise
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxdict, _repr.maxlist, _repr.maxtuple, _repr.maxset = 3, 4, 6, 6, 6
_repr.maxstring = _repr.maxother = _repr.maxlong = SHOWN_CHARS


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to about :data:`SHOWN_CHARS` characters, in time and memory
    bounded whatever the value's size (only its first items are looked at)."""
    return clip(_repr.repr(value))


def clip(text: str, limit: int = SHOWN_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RecipeTextError(ValueError):
    """Why a recipe's text cannot be read; ``line`` is 1-based (None: the whole file)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True)
class RecipeDocument:
    """A recipe file's data, and the line of each key: ``("run", "name") -> 2``; items of a
    list are keyed by their index (``("analysis", "compare_with", "0")``)."""

    data: Any
    key_lines: dict[tuple[str, ...], int]

    def line_of(self, loc: tuple[str, ...]) -> int | None:
        """The line of ``loc``'s deepest key present in the file (None: none is)."""
        for end in range(len(loc), 0, -1):
            line = self.key_lines.get(loc[:end])
            if line is not None:
                return line
        return None


def decode_recipe(raw: bytes) -> str:
    """A recipe file's bytes as text: at most MAX_RECIPE_BYTES, UTF-8."""
    if len(raw) > MAX_RECIPE_BYTES:
        raise RecipeTextError(
            f"larger than {MAX_RECIPE_BYTES // 1024**2} MiB; a recipe is a few kilobytes of YAML"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        utf16 = raw[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
        raise RecipeTextError(
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at byte offset {exc.start} "
            f"({exc.reason}); save the recipe as UTF-8"
            + (" (this file is UTF-16)" if utf16 else ""),
            line,
        ) from None


def read_yaml(text: str) -> RecipeDocument:
    """The data of a recipe's YAML text, and the line of each key."""
    try:
        return _read(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        context = f"{exc.context}: " if exc.context else ""
        raise RecipeTextError(
            f"not valid YAML: {clip(context + str(exc.problem), 300)}"
            + (f" (column {mark.column + 1})" if mark else ""),
            mark.line + 1 if mark else None,
        ) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        # the reader stops at the first such character (its position is in bytes for
        # libyaml, in characters for the Python reader)
        line = text.count("\n", 0, text.find(chr(exc.character))) + 1
        raise RecipeTextError(
            f"not valid YAML: character #x{exc.character:04x} is not allowed ({exc.reason})",
            line,
        ) from None
    except yaml.YAMLError as exc:
        raise RecipeTextError(f"not valid YAML: {clip(str(exc), 300)}") from None
    except RecursionError:  # the Python parser, on nesting deeper than Python's stack
        raise RecipeTextError(f"nested more than {MAX_NESTING} levels deep") from None


def _read(text: str) -> RecipeDocument:
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return RecipeDocument(None, {})
        key_lines = _index_keys(root, loader)
        return RecipeDocument(loader.construct_document(root), key_lines)
    finally:
        loader.dispose()


def _index_keys(root: yaml.Node, loader: Any) -> dict[tuple[str, ...], int]:
    """Walk the document once (so its cost is its size): the line of every key, refusing
    aliases (a node met twice), merge keys, deep nesting and duplicate keys."""
    lines: dict[tuple[str, ...], int] = {}
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[str, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:  # an alias: the composer hands back the anchored node
            raise RecipeTextError(
                f"{_dotted(path)}: YAML aliases (*name) are not allowed in a recipe; "
                "write the value out",
                _nearest_line(lines, path),
            )
        seen.add(id(node))
        lines.setdefault(path, node.start_mark.line + 1)
        if len(path) >= MAX_NESTING and isinstance(node, yaml.CollectionNode):
            raise RecipeTextError(
                f"{_dotted(path)}: nested more than {MAX_NESTING} levels deep",
                lines[path],
            )
        children: list[tuple[yaml.Node, tuple[str, ...]]] = []
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}  # keyed as the mapping's dict will be
            for key_node, value_node in node.value:
                line = key_node.start_mark.line + 1
                if key_node.tag == _MERGE_TAG:
                    raise RecipeTextError(
                        "YAML merge keys (<<) are not allowed in a recipe; write the keys out",
                        line,
                    )
                if not isinstance(key_node, yaml.ScalarNode):
                    continue  # a list or mapping as a key: construction refuses it
                key = loader.construct_object(key_node)
                name = (*path, str(key))  # as the recipe model's errors name it
                if key in first_line:
                    raise RecipeTextError(
                        f"duplicate key '{_dotted(name)}' (first on line {first_line[key]}); "
                        "a key may appear once in its section",
                        line,
                    )
                first_line[key] = line
                lines[name] = line
                children.append((value_node, name))
        elif isinstance(node, yaml.SequenceNode):
            children = [(item, (*path, str(index))) for index, item in enumerate(node.value)]
        stack.extend(reversed(children))  # reversed: visited in document order
    return lines


def _nearest_line(lines: dict[tuple[str, ...], int], path: tuple[str, ...]) -> int | None:
    return RecipeDocument(None, lines).line_of(path)


def _dotted(path: tuple[str, ...]) -> str:
    return clip(".".join(path) or "(top level)")
