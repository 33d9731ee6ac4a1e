"""The small interface every inference back end implements.

An engine turns prompts into generations with token-level log probabilities.
It knows nothing about datasets, recipes, shards or Dagster: the caller hands it
a list of `GenerationRequest`s and gets back one `Generation` per request, in
the same order.

Replica invariance: engines group requests into fixed-size *blocks* of
consecutive requests (`block_size(batch_size)`), and a row's batch-mates are
chosen only from its own block.  A caller that starts every shard on a block
boundary therefore gets the same batches, and so the same outputs, whatever
the number of shards.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from .constraints import ResponseFormat

#: How many batches make up one block (see `block_size`).
BLOCK_BATCHES = 4

#: The most entries a top-logprobs list may have (the Nova recipe allows 0..20).
MAX_TOP_LOGPROBS = 20

#: Nova's `inference.reasoning_effort` levels (None: reasoning off).
REASONING_EFFORTS = ("low", "medium", "high")


def block_size(batch_size: int) -> int:
    """Rows per block for a given batch size: ``batch_size * 4``.

    The engine sorts the rows of a block by prompt length and cuts batches from
    it, so a row's batch (and its padding) depends only on the rows in its block.
    Shards that start on a multiple of this number reproduce the batches of an
    unsharded run exactly.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return batch_size * BLOCK_BATCHES


@dataclass(frozen=True)
class GenerationRequest:
    row_index: int  # global row position in the dataset
    prompt: str
    system: str | None = None
    # images shown with the prompt, in order: validated data URIs
    # (``data:image/<format>;base64,<data>``, dataset.py); empty for text
    images: tuple[str, ...] = ()
    # earlier turns of the conversation, before `prompt` (the last user turn): (role, text)
    # with role "user" or "assistant" (an Inspect task's solver that talks to the model twice)
    history: tuple[tuple[str, str], ...] = ()

    def turns(self) -> list[dict[str, str]]:
        """The history as chat messages ({role, content}), oldest first."""
        return [{"role": role, "content": text} for role, text in self.history]


def row_seed(seed: int, row_index: int) -> int:
    """A row's sampling seed: a hash of (settings.seed, row_index), so a row draws the same
    random stream whatever its batch, replica or engine, and two rows (a problem's samples,
    evaluation.samples) draw apart."""
    digest = hashlib.sha256(f"nova-eval:{seed}:{row_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_k: int = -1  # -1 = off
    top_p: float = 1.0
    top_logprobs: int = 0  # 0..20, 0 = no top list (chosen token logprob still recorded)
    seed: int = 1234
    # None = off; else the model thinks first (engines/reasoning.py) and `Generation.text`
    # is only the answer
    reasoning_effort: str | None = None
    # None = free text; else the output follows this format (engines/constraints.py)
    response_format: ResponseFormat | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k != -1 and self.top_k < 1:
            raise ValueError(f"top_k must be -1 (off) or >= 1, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise ValueError(
                f"top_logprobs must be in 0..{MAX_TOP_LOGPROBS} (0 = off), got {self.top_logprobs}"
            )
        if self.reasoning_effort is not None and self.reasoning_effort not in REASONING_EFFORTS:
            raise ValueError(
                f"reasoning_effort must be null or one of {', '.join(REASONING_EFFORTS)}, "
                f"got {self.reasoning_effort!r}"
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class TokenLogprob:
    """One generated token.

    `token` is the token's decoded text piece (``tokenizer.decode([id])``, e.g.
    ``' the'``), not the raw vocabulary entry (``'Ġthe'``).  A token that holds
    only part of a multi-byte UTF-8 character decodes to U+FFFD on its own; the
    generation's `text` is decoded from all ids at once and is exact.
    `top` is empty when `SamplingSettings.top_logprobs` is 0.  `token_id` (an
    addition to the Nova fields) is the vocabulary id, for exact re-scoring.
    Under `SamplingSettings.response_format`, `constrained_logprob` is the token's log
    probability renormalized over the tokens the constraint allowed at that step, and
    `forced` says the model's own top token was not allowed (None: no constraint, or the
    engine does not know).
    """

    token: str
    logprob: float  # chosen token, from the RAW distribution (log_softmax of unprocessed logits)
    top: list[tuple[str, float]] = field(default_factory=list)  # raw top tokens, descending
    token_id: int | None = None
    constrained_logprob: float | None = None
    forced: bool | None = None


@dataclass
class Generation:
    """The output for one request.

    `tokens` and `text` stop before the end-of-turn token (EOS / ``<|im_end|>``),
    which is therefore in neither; `completion_tokens == len(tokens)`.
    `latency_s` is this row's share of its batch's wall time (batch time divided
    by the number of rows in the batch), so summing it over rows gives the total
    generation time.

    With `SamplingSettings.reasoning_effort` set, `text` is the answer only and
    `reasoning` the model's reasoning (None: it wrote no reasoning block), while
    `tokens` stay every generated token, reasoning first.  `max_new_tokens` is the
    generation budget this row had: the requested one, or less when prompt plus
    answer would not fit the model's context (None: the engine does not say).
    """

    row_index: int
    text: str
    tokens: list[TokenLogprob]
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    finish_reason: str  # "stop" | "length" | "error"
    error: str | None = None
    reasoning: str | None = None
    max_new_tokens: int | None = None
    # evaluation.task inspect: the row's Inspect record (JSON: its scores and samples)
    inspect_record: str | None = None

    @classmethod
    def failed(
        cls,
        row_index: int,
        error: str,
        *,
        prompt_tokens: int = 0,
        latency_s: float = 0.0,
        max_new_tokens: int | None = None,
    ) -> Generation:
        """A row that produced nothing: ``finish_reason="error"`` and why."""
        return cls(
            row_index=row_index,
            text="",
            tokens=[],
            prompt_tokens=prompt_tokens,
            completion_tokens=0,
            latency_s=latency_s,
            finish_reason="error",
            error=error,
            max_new_tokens=max_new_tokens,
        )


@runtime_checkable
class Engine(Protocol):
    name: str
    model_id: str  # stable identity of the weights, e.g. "sha256:<hex>"
    default_batch_size: int

    def block_size(self, batch_size: int) -> int: ...

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        settings: SamplingSettings,
        batch_size: int | None = None,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> list[Generation]:
        """Results in the same order as `requests`.

        `on_batch(done_rows, total_rows)` is called after each batch.
        """
        ...
