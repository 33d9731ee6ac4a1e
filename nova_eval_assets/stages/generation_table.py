"""Between prompt rows and the inference table: the engine's requests for rows of the
prompts table, and generations as the inference table's generation columns. Kept apart from
the stage so that a generation worker process (stages/generation_workers.py) imports only
this."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from nova_eval_assets.engines.base import Generation, GenerationRequest
from nova_eval_assets.stages.schemas import INFERENCE_SCHEMA, TOKEN_LOGPROB, TOP_TOKEN

#: what a request needs of a prompts row
REQUEST_COLUMNS = ("row_index", "prompt", "system", "images")
#: the inference table's columns an engine fills, in its order
GENERATION_COLUMNS = (
    "prediction",
    "reasoning",
    "finish_reason",
    "error",
    "prompt_tokens",
    "completion_tokens",
    "max_new_tokens",
    "latency_s",
    "token_logprobs",
    "inspect_record",
)


def build_requests(rows: pa.Table) -> list[GenerationRequest]:
    """The engine's requests for rows of the prompts table, images (data URIs) included."""
    return [
        GenerationRequest(
            row_index=row["row_index"],
            prompt=row["prompt"],
            system=row["system"],
            images=tuple(row.get("images") or ()),
        )
        for row in rows.select([n for n in REQUEST_COLUMNS if n in rows.column_names]).to_pylist()
    ]


def generation_columns(generations: list[Generation]) -> dict[str, pa.Array]:
    """The generation columns (:data:`GENERATION_COLUMNS`) of `generations`, in order."""
    values: dict[str, list[Any]] = {
        "prediction": [g.text for g in generations],
        "reasoning": [g.reasoning for g in generations],
        "finish_reason": [g.finish_reason for g in generations],
        "error": [g.error for g in generations],
        "prompt_tokens": [g.prompt_tokens for g in generations],
        "completion_tokens": [g.completion_tokens for g in generations],
        "max_new_tokens": [g.max_new_tokens for g in generations],
        "latency_s": [g.latency_s for g in generations],
        "inspect_record": [g.inspect_record for g in generations],
    }
    columns = {
        name: pa.array(column, INFERENCE_SCHEMA.field(name).type) for name, column in values.items()
    }
    columns["token_logprobs"] = token_logprobs_array(generations)
    return columns


def token_logprobs_array(generations: list[Generation]) -> pa.Array:
    """The block's ``token_logprobs`` column, built from one flat list per field and the
    list offsets: a dict per token and per top entry (and the garbage collector's passes
    over them) cost more than a served engine's requests (bench/client.py)."""
    tokens: list[str] = []
    logprobs: list[float] = []
    constrained: list[float | None] = []
    forced: list[bool | None] = []
    top_tokens: list[str] = []
    top_logprobs: list[float] = []
    row_offsets, top_offsets = [0], [0]
    for generation in generations:
        for token in generation.tokens:
            tokens.append(token.token)
            logprobs.append(token.logprob)
            constrained.append(token.constrained_logprob)
            forced.append(token.forced)
            for text, logprob in token.top:
                top_tokens.append(text)
                top_logprobs.append(logprob)
            top_offsets.append(len(top_tokens))
        row_offsets.append(len(tokens))
    top = pa.StructArray.from_arrays(
        [pa.array(top_tokens, pa.string()), pa.array(top_logprobs, pa.float64())],
        fields=list(TOP_TOKEN),
    )
    structs = pa.StructArray.from_arrays(
        [
            pa.array(tokens, pa.string()),
            pa.array(logprobs, pa.float64()),
            pa.ListArray.from_arrays(pa.array(top_offsets, pa.int32()), top),
            pa.array(constrained, pa.float64()),
            pa.array(forced, pa.bool_()),
        ],
        fields=list(TOKEN_LOGPROB),
    )
    return pa.ListArray.from_arrays(pa.array(row_offsets, pa.int32()), structs)
