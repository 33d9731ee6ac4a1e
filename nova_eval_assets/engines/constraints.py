"""Constrained decoding: `inference.response_format` (our extension) for the engines.

A `ResponseFormat` is one of

* ``json_schema``: the output is a JSON document valid under a JSON Schema (enums,
  ``maxLength``, ``pattern``, nested objects ...), written compactly with the separators of
  Python's ``json.dumps`` (``", "`` and ``": "``) and properties in schema order;
* ``regex``: the whole output matches a regular expression (Rust ``regex`` syntax: no
  look-around, no back-references);
* ``choice``: the output is exactly one of a list of strings.

The hf engine enforces it token by token with llguidance (`TokenMatchers`): before each
step a matcher per row computes which vocabulary tokens keep the output valid, the engine
chooses among those, and the end-of-turn token is allowed only where the output is
complete.  llguidance was chosen over xgrammar, measured on the bundled model's 49,152-token
vocabulary and the classification schema: masks for a batch of 32 in 0.8 ms per step
(xgrammar 0.5 ms) with no compile step (xgrammar 0.7 s per schema), a 7.6 MB wheel without
dependencies (xgrammar pulls triton, 1 GB, that a CPU install never uses), and schema
errors with the library's own message.  The openai engine sends the same format as the
server's structured-output fields (engines/openai.py).

Log probabilities stay those of the raw distribution; each token also gets
``constrained_logprob`` (its log probability renormalized over the tokens the constraint
allowed at that step: the distribution the engine sampled from, before temperature) and
``forced`` (the constraint overrode the model's own top choice).

This module imports no Dagster; llguidance and torch are imported when a matcher is made.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

FORMAT_TYPES = ("json_schema", "regex", "choice")
#: the separators of json.dumps, so constrained JSON looks like the datasets' gold answers
ITEM_SEPARATOR, KEY_SEPARATOR = ", ", ": "
#: the free-text fields of the classification shorthand and their length bounds in characters:
#: a bound makes every constrained answer end (the closing quote is forced there), so with
#: max_new_tokens >= the bounds' sum plus ~40 tokens of JSON and label (a token is at least
#: a character) no answer is cut. The gold answers of the bundled support tickets have
#: thoughts of 162 and descriptions of 87 characters (medians).
CLASSIFICATION_TEXT_FIELDS = {"thought": 200, "description": 100}


class ResponseFormatError(ValueError):
    """A response format the grammar library cannot compile (the library's message)."""


@dataclass(frozen=True)
class ResponseFormat:
    type: Literal["json_schema", "regex", "choice"]
    schema_json: str | None = None  # json_schema: the schema as JSON text (key order kept)
    pattern: str | None = None  # regex
    choices: tuple[str, ...] = field(default_factory=tuple)  # choice

    @classmethod
    def json_schema(cls, schema: dict[str, Any]) -> ResponseFormat:
        return cls("json_schema", schema_json=json.dumps(schema, ensure_ascii=False))

    @classmethod
    def regex(cls, pattern: str) -> ResponseFormat:
        return cls("regex", pattern=pattern)

    @classmethod
    def choice(cls, choices: Iterable[str]) -> ResponseFormat:
        return cls("choice", choices=tuple(choices))

    @property
    def schema(self) -> dict[str, Any] | None:
        return json.loads(self.schema_json) if self.schema_json is not None else None

    def describe(self) -> dict[str, Any]:
        """JSON-ready, for results and lineage."""
        if self.type == "json_schema":
            return {"type": self.type, "schema": self.schema}
        if self.type == "regex":
            return {"type": self.type, "pattern": self.pattern}
        return {"type": self.type, "choices": list(self.choices)}

    def grammar(self) -> str:
        """The llguidance grammar (serialized) of this format."""
        from llguidance import LLMatcher

        if self.type == "json_schema":
            return LLMatcher.grammar_from_json_schema(
                self.schema_json,
                defaults={
                    "whitespace_flexible": False,
                    "item_separator": ITEM_SEPARATOR,
                    "key_separator": KEY_SEPARATOR,
                },
            )
        if self.type == "regex":
            return LLMatcher.grammar_from_regex(self.pattern)
        # Lark string literals take JSON's escapes
        alternatives = " | ".join(json.dumps(c, ensure_ascii=False) for c in self.choices)
        return LLMatcher.grammar_from_lark(f"start: {alternatives}")


def classification_schema(label_field: str, labels: Sequence[str]) -> dict[str, Any]:
    """The shorthand ``{type: classification}``: the label first, then the reasoning."""
    properties: dict[str, Any] = {label_field: {"enum": list(labels)}}
    for name, limit in CLASSIFICATION_TEXT_FIELDS.items():
        if name != label_field:
            properties[name] = {"type": "string", "maxLength": limit}
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def compile_error(response_format: ResponseFormat) -> str | None:
    """Why llguidance cannot compile `response_format` (None: it can). Checked against a
    byte-level vocabulary, so no model is needed: what compiles there compiles for every
    tokenizer."""
    from llguidance import LLMatcher, LLTokenizer

    if response_format.type == "choice" and not response_format.choices:
        return "choice needs at least one string"
    try:
        grammar = response_format.grammar()
    except Exception as error:  # the library raises for malformed input
        return str(error)
    failed, messages = LLMatcher.validate_grammar_with_warnings(grammar, LLTokenizer("byte"))
    return "; ".join(m.strip() for m in messages) if failed else None


class TokenMatchers:
    """One llguidance matcher per row of a batch: the allowed tokens before a step, and the
    chosen tokens fed back after it."""

    def __init__(
        self,
        tokenizer: Any,
        response_format: ResponseFormat,
        rows: int,
        vocab_size: int,
        stop_ids: Iterable[int],
    ) -> None:
        import llguidance

        self.stop_ids = sorted(set(stop_ids))
        self.vocab_size = vocab_size
        ll_tokenizer = _ll_tokenizer(tokenizer, vocab_size, tuple(self.stop_ids))
        grammar = response_format.grammar()
        self.matchers = [llguidance.LLMatcher(ll_tokenizer, grammar) for _ in range(rows)]
        for matcher in self.matchers:
            if matcher.is_error():
                raise ResponseFormatError(matcher.get_error())
        self._bitmask = None

    def allowed(self, rows: Sequence[int], device: Any = None):
        """Bool tensor (len(rows) x vocab): the tokens each row may take next. A row whose
        output is complete may take only an end token."""
        import llguidance.torch as lt
        import torch

        if self._bitmask is None or self._bitmask.shape[0] < len(self.matchers):
            self._bitmask = lt.allocate_token_bitmask(len(self.matchers), self.vocab_size)
        bitmask = self._bitmask
        for slot, row in enumerate(rows):
            matcher = self.matchers[row]
            if matcher.is_stopped() or matcher.is_error():
                bitmask[slot].fill_(0)
                for stop in self.stop_ids:  # a finished row may only end
                    bitmask[slot, stop // 32] |= 1 << (stop % 32)
            else:
                lt.fill_next_token_bitmask(matcher, bitmask, slot)
        words = bitmask[: len(rows)]
        bits = torch.arange(32, dtype=torch.int32)
        allowed = ((words[:, :, None] >> bits) & 1).bool().reshape(len(rows), -1)
        allowed = allowed[:, : self.vocab_size]
        return allowed.to(device) if device is not None else allowed

    def advance(self, rows: Sequence[int], token_ids: Sequence[int]) -> None:
        for row, token in zip(rows, token_ids, strict=True):
            matcher = self.matchers[row]
            if matcher.is_stopped() or (token in self.stop_ids and matcher.is_accepting()):
                continue
            if not matcher.consume_token(int(token)):
                raise ResponseFormatError(
                    f"row {row}: token {token} was chosen outside the constraint: "
                    f"{matcher.get_error()}"
                )


_TOKENIZERS: dict[tuple[int, int, tuple[int, ...]], Any] = {}


def _ll_tokenizer(tokenizer: Any, vocab_size: int, stop_ids: tuple[int, ...]):
    """llguidance's view of a transformers tokenizer (built once per tokenizer: ~0.25 s)."""
    import llguidance.hf

    key = (id(tokenizer), vocab_size, stop_ids)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = llguidance.hf.from_tokenizer(
            tokenizer, n_vocab=vocab_size, eos_token=list(stop_ids)
        )
    return _TOKENIZERS[key]
