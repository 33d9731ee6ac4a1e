"""Does a constrained answer fit in `inference.max_new_tokens`? (`nova-eval validate`)

An answer that reaches ``max_new_tokens`` is cut, and a cut JSON document does not parse.
This module builds, from a `ResponseFormat`, its longest valid answer (where the format
bounds it) and its shortest one, counts their tokens, and words a warning for each that does
not fit:

* **json_schema**: the longest instance takes, for each value, the enum or const value with
  the most tokens, every property of an object whose ``additionalProperties`` is false,
  ``maxItems`` items, the longer of an integer's two bounds, ``false``, and strings of
  ``maxLength`` characters; the shortest takes the fewest tokens, only required properties,
  ``minItems`` items and ``minLength`` characters.  A string without ``maxLength``, an
  array without ``maxItems``, a number, an object open to other properties or a schema
  this module does not read (``allOf``, ``not``, ``prefixItems``, recursion ...) leaves the
  longest unbounded, and only the shortest is checked.  Instances are written as the
  engines write them: compact, with ``", "`` and ``": "``, properties in schema order.
* **choice**: the choice with the most tokens, and the one with the fewest.
* **regex**: not checked.

**Counting.** The hf and vllm engines' tokenizer (the one the engine loads, read from the
model folder or the GGUF file without loading weights) counts the JSON and the fixed values;
each character of free text (a string bounded by ``maxLength``) counts as one token, the
most it can take for ASCII text (a token is at least a character; escapes and characters
outside ASCII can take more).  The served engines' tokenizer is not read: there the longest
answer is estimated at one token per character and the shortest at
`CHARS_PER_TOKEN_TYPICAL` characters a token, and the warning says so.

This module imports no Dagster; transformers is imported when a tokenizer is loaded.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .constraints import ITEM_SEPARATOR, KEY_SEPARATOR, ResponseFormat

#: engines that load the model's tokenizer in process
TOKENIZER_ENGINES = ("hf", "vllm")
#: the served engines' estimate of the shortest answer: English text averages about four
#: characters a token in BPE vocabularies
CHARS_PER_TOKEN_TYPICAL = 4
#: nesting deeper than this (a recursive $ref) is not followed
MAX_DEPTH = 32

if TYPE_CHECKING:
    from nova_eval_assets.recipe import Recipe


class FreeText(str):
    """A string of free text in an instance: written as one placeholder character (so the
    tokenizer sees the quotes as they are around text), counted as `length` tokens."""

    length: int

    def __new__(cls, length: int) -> FreeText:
        text = super().__new__(cls, "x" if length else "")
        text.length = length
        return text


@dataclass(frozen=True)
class Instance:
    """A valid answer: `value` is JSON (a `ResponseFormat.json_schema` answer) or, with
    `raw`, the answer's text itself (a choice)."""

    value: Any
    raw: bool = False

    def text(self, full: bool = False) -> str:
        """The answer as the engines write it; `full`: each free string at its whole length
        (to check the instance against the constraint), else one placeholder character."""
        if self.raw:
            return self.value
        value = _filled(self.value) if full else self.value
        return json.dumps(value, ensure_ascii=False, separators=(ITEM_SEPARATOR, KEY_SEPARATOR))

    @property
    def free_text_length(self) -> int:
        """Characters of free text (the free strings' whole lengths)."""
        return sum(_free_lengths(self.value))

    @property
    def free_chars_not_written(self) -> int:
        """Characters of free text beyond the placeholders in `text()`."""
        return sum(max(length - 1, 0) for length in _free_lengths(self.value))


@dataclass(frozen=True)
class TokenCounter:
    """Counts an instance's tokens: `most` (the longest answer) and `least` (the shortest);
    `source` says how, for the messages."""

    most: Callable[[Instance], int]
    least: Callable[[Instance], int]
    source: str
    exact: bool  # counted with the model's tokenizer (else estimated from characters)


def tokenizer_counter(tokenizer: Any, model: str) -> TokenCounter:
    """Counts with `tokenizer` (the JSON and fixed values), one token per free character."""

    def count(instance: Instance) -> int:
        ids = tokenizer.encode(instance.text(), add_special_tokens=False)
        return len(ids) + instance.free_chars_not_written

    return TokenCounter(count, count, f"the tokenizer of {model}", exact=True)


def character_counter() -> TokenCounter:
    """The served engines' estimate: at most one token per character, typically a quarter."""

    def most(instance: Instance) -> int:
        return len(instance.text(full=True))

    def least(instance: Instance) -> int:
        return math.ceil(len(instance.text(full=True)) / CHARS_PER_TOKEN_TYPICAL)

    return TokenCounter(most, least, "characters", exact=False)


@functools.lru_cache(maxsize=4)
def _load_tokenizer(folder: str, gguf_file: str | None) -> Any:
    from transformers import AutoTokenizer

    if gguf_file is not None:  # the tokenizer the GGUF conversion saves (engines/models.py)
        return AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    return AutoTokenizer.from_pretrained(folder)


def model_tokenizer(model_name_or_path: str) -> Any:
    """The tokenizer the hf engine loads for a model, without its weights and without
    converting a GGUF: a GGUF's converted folder when there is one (conversions are renamed
    into place whole), else the GGUF file's (about 8 s for the bundled model on 2 cores).
    Raises `ModelResolutionError` for a model that does not resolve."""
    from .models import converted_dir, resolve_model

    resolved = resolve_model(model_name_or_path)
    if not resolved.is_gguf:
        return _load_tokenizer(str(resolved.path), None)
    converted = converted_dir(resolved)
    if (converted / "tokenizer.json").is_file():
        return _load_tokenizer(str(converted), None)
    return _load_tokenizer(str(resolved.path.parent), resolved.path.name)


def engine_counter(engine: str, model_name_or_path: str) -> TokenCounter:
    """The counter for a recipe's engine: the model's tokenizer, or the character estimate."""
    if engine in TOKENIZER_ENGINES:
        return tokenizer_counter(model_tokenizer(model_name_or_path), model_name_or_path)
    return character_counter()


# ---------------------------------------------------------------- bounds


def answer_bounds(
    response_format: ResponseFormat, counter: TokenCounter
) -> tuple[Instance | None, Instance | None]:
    """(longest, shortest) valid answers by `counter`'s tokens; None where the format does
    not bound it (or this module does not read it)."""
    if response_format.type == "choice":
        choices = [Instance(c, raw=True) for c in response_format.choices]
        if not choices:
            return None, None
        return max(choices, key=counter.most), min(choices, key=counter.least)
    if response_format.type != "json_schema":
        return None, None
    schema = response_format.schema
    longest = _Walker(schema, counter.most, longest=True).instance(schema, 0)
    shortest = _Walker(schema, counter.least, longest=False).instance(schema, 0)
    return (
        None if longest is None else Instance(longest[0]),
        None if shortest is None else Instance(shortest[0]),
    )


class _Walker:
    """Builds the longest (or shortest) instance of a JSON schema; `instance` returns
    ``(value,)`` or None (unbounded, or not read here)."""

    def __init__(self, root: Any, count: Callable[[Instance], int], longest: bool) -> None:
        self.root = root
        self.count = count
        self.longest = longest

    def cost(self, value: Any) -> int:
        return self.count(Instance(value))

    def pick(self, values: Sequence[Any]) -> tuple[Any] | None:
        if not values:  # an empty enum: no valid answer to measure
            return None
        choose = max if self.longest else min
        return (choose(values, key=self.cost),)

    def instance(self, schema: Any, depth: int) -> tuple[Any] | None:
        if depth > MAX_DEPTH:
            return None
        if schema is True or schema == {}:  # any JSON value
            return None if self.longest else (0,)
        if not isinstance(schema, dict):
            return None
        if "$ref" in schema:
            target = self.resolve(schema["$ref"])
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            return None if target is None else self.instance({**target, **rest}, depth + 1)
        if any(key in schema for key in ("allOf", "not", "if", "prefixItems")):
            return None
        if "const" in schema:
            return (schema["const"],)
        if "enum" in schema:
            return self.pick(schema["enum"])
        for key in ("anyOf", "oneOf"):
            if key in schema:
                rest = {k: v for k, v in schema.items() if k != key}
                return self.alternatives([{**rest, **b} for b in schema[key]], depth)
        types = schema.get("type")
        if isinstance(types, list):
            return self.alternatives([{**schema, "type": t} for t in types], depth)
        if types is None:
            types = "object" if "properties" in schema else "array" if "items" in schema else None
        if types is None:
            return None if self.longest else (0,)
        build = {
            "object": self.object,
            "array": self.array,
            "string": self.string,
            "integer": self.integer,
            "number": self.number,
            "boolean": lambda s, d: (False,) if self.longest else (True,),
            "null": lambda s, d: (None,),
        }.get(types)
        return None if build is None else build(schema, depth)

    def alternatives(self, schemas: Sequence[Any], depth: int) -> tuple[Any] | None:
        built = [self.instance(s, depth + 1) for s in schemas]
        if any(b is None for b in built):
            return None  # a branch not bounded (or not read) leaves the choice open
        return self.pick([b[0] for b in built])

    def resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return None
        node = self.root
        for part in ref.lstrip("#").strip("/").split("/") if ref != "#" else []:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def object(self, schema: dict, depth: int) -> tuple[Any] | None:
        properties = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        closed = schema.get("additionalProperties") is False and not schema.get("patternProperties")
        if self.longest and not closed:
            return None
        if not required <= set(properties):
            return None  # a required name without a schema: any value
        value: dict[str, Any] = {}
        for name, sub in properties.items():
            if not self.longest and name not in required:
                continue
            built = self.instance(sub, depth + 1)
            if built is None:
                return None
            value[name] = built[0]
        return (value,)

    def array(self, schema: dict, depth: int) -> tuple[Any] | None:
        count = schema.get("maxItems") if self.longest else schema.get("minItems", 0)
        if count is None:
            return None
        if count == 0:
            return ([],)
        built = self.instance(schema.get("items", True), depth + 1)
        return None if built is None else ([built[0]] * count,)

    def string(self, schema: dict, depth: int) -> tuple[Any] | None:
        if self.longest:
            limit = schema.get("maxLength")
            return None if limit is None else (FreeText(limit),)
        return ("x" * schema.get("minLength", 0),)

    def integer(self, schema: dict, depth: int) -> tuple[Any] | None:
        low, high = _integer_range(schema)
        if self.longest:
            if low is None or high is None:
                return None
            return (max((low, high), key=lambda n: len(str(n))),)
        return (_closest_to_zero(low, high),)

    def number(self, schema: dict, depth: int) -> tuple[Any] | None:
        if self.longest:
            return None  # digits after the point are not bounded
        low, high = _integer_range(schema)
        return (_closest_to_zero(low, high),)


def _integer_range(schema: dict) -> tuple[int | None, int | None]:
    low = schema.get("minimum")
    if "exclusiveMinimum" in schema and not isinstance(schema["exclusiveMinimum"], bool):
        low = math.floor(schema["exclusiveMinimum"]) + 1
    high = schema.get("maximum")
    if "exclusiveMaximum" in schema and not isinstance(schema["exclusiveMaximum"], bool):
        high = math.ceil(schema["exclusiveMaximum"]) - 1
    return (
        None if low is None else math.ceil(low),
        None if high is None else math.floor(high),
    )


def _closest_to_zero(low: int | None, high: int | None) -> int:
    if low is not None and low > 0:
        return low
    if high is not None and high < 0:
        return high
    return 0


def _filled(value: Any) -> Any:
    if isinstance(value, FreeText):
        return "x" * value.length
    if isinstance(value, dict):
        return {k: _filled(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_filled(v) for v in value]
    return value


def _free_lengths(value: Any) -> list[int]:
    if isinstance(value, FreeText):
        return [value.length]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _free_lengths(v)]
    if isinstance(value, list):
        return [n for v in value for n in _free_lengths(v)]
    return []


# ---------------------------------------------------------------- warnings


def budget_warnings(
    response_format: ResponseFormat, max_new_tokens: int, counter: TokenCounter
) -> list[str]:
    """What `nova-eval validate` warns about a constrained answer that does not fit in
    `max_new_tokens` (empty: it fits, or the format is not bounded)."""
    longest, shortest = answer_bounds(response_format, counter)
    most = None if longest is None else counter.most(longest)
    least = None if shortest is None else counter.least(shortest)
    where = "inference.response_format"
    if least is not None and least > max_new_tokens:
        longest_note = "" if most is None else f" (the longest needs {_needs(most, counter)})"
        return [
            f"{where}: even the shortest valid answer needs {_needs(least, counter, typical=True)}"
            f" but inference.max_new_tokens is {max_new_tokens}: every answer is cut and fails "
            f"to parse ({_how(counter, typical=True)}); raise inference.max_new_tokens to at "
            f"least {least}{longest_note}"
        ]
    if most is not None and most > max_new_tokens:
        free = longest.free_text_length
        free_note = (
            f", each of its {free} characters of free text as one token"
            if free and counter.exact
            else ""
        )
        return [
            f"{where}: the longest valid answer needs {_needs(most, counter)} but "
            f"inference.max_new_tokens is {max_new_tokens}: longer answers are cut and fail to "
            f"parse ({_how(counter)}{free_note}); raise inference.max_new_tokens to at least "
            f"{most}, or bound the format tighter (maxLength, fewer or shorter values)"
        ]
    return []


def _needs(tokens: int, counter: TokenCounter, typical: bool = False) -> str:
    if counter.exact:
        return f"{tokens} tokens"
    return f"about {tokens} tokens" if typical else f"up to {tokens} tokens"


def _how(counter: TokenCounter, typical: bool = False) -> str:
    if counter.exact:
        return f"counted with {counter.source}"
    rate = f"{CHARS_PER_TOKEN_TYPICAL} characters a token" if typical else "a token a character"
    return f"estimated from its characters at {rate}: the served model's tokenizer is not read"


def recipe_budget_warnings(recipe: Recipe) -> list[str]:
    """`budget_warnings` for a gen_qa recipe's response format, engine and model (empty for
    other tasks: a judge's budget and model are its own). Raises `ModelResolutionError`
    for a local model that does not resolve."""
    response_format = recipe.response_format
    if response_format is None or recipe.evaluation.is_judge:
        return []
    if response_format.type == "regex":  # not bounded here: load no tokenizer
        return []
    counter = engine_counter(recipe.inference.engine, recipe.run.model_name_or_path)
    return budget_warnings(response_format, recipe.inference.generation_tokens, counter)


__all__ = [
    "CHARS_PER_TOKEN_TYPICAL",
    "Instance",
    "TokenCounter",
    "answer_bounds",
    "budget_warnings",
    "character_counter",
    "engine_counter",
    "model_tokenizer",
    "recipe_budget_warnings",
    "tokenizer_counter",
]
