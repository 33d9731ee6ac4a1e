"""inference_outputs: one replica's shard through the engine, block by block (checkpointed)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from nova_eval_assets import lineage, resume, storage
from nova_eval_assets.dataset import (
    shard_ranges,
)
from nova_eval_assets.engines.base import Engine, GenerationRequest, SamplingSettings
from nova_eval_assets.engines.reasoning import check_recipe_reasoning
from nova_eval_assets.engines.vision import check_engine_requests
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import LoadedRecipe
from nova_eval_assets.stages.engine_setup import (
    load_engine,
    open_engine,
    recipe_model_id,
    sampling_settings,
)
from nova_eval_assets.stages.prompts import image_columns
from nova_eval_assets.stages.schemas import IMAGES_FIELD, INFERENCE_SCHEMA

# ---------------------------------------------------------------- inference_outputs

ProgressCallback = Callable[[int, int], None]


def replica_range(num_rows: int, replica: int, replicas: int, block: int) -> tuple[int, int]:
    if not 0 <= replica < replicas:
        raise ValueError(f"replica {replica} is outside 0..{replicas - 1}")
    return shard_ranges(num_rows, replicas, block)[replica]


def run_inference(
    loaded: LoadedRecipe,
    replica: int,
    engine: Engine | None = None,
    on_batch: ProgressCallback | None = None,
    reuse: bool = False,
) -> dict[str, Any]:
    """Generate for one replica's shard and write its typed Parquet.

    Each finished block of the shard is checkpointed (:mod:`nova_eval_assets.resume`), so a
    rerun after a crash generates only the blocks that were not finished. The output records
    its lineage (prompts content hash, model checkpoint hash, inference code version); with
    ``reuse``, an existing output with the same lineage is kept instead of regenerated.
    """
    layout = EvalLayout.for_recipe(loaded)
    prompts = storage.read_parquet(layout.prompts)
    replicas = loaded.recipe.run.replicas
    path = layout.inference(replica, replicas)
    inference = loaded.recipe.inference
    if engine is None and inference.engine == "openai" and inference.server is None:
        engine = load_engine(loaded)  # its identity is what the server serves (/v1/models)
    model_id = engine.model_id if engine is not None else recipe_model_id(loaded)
    recorded = lineage.inference_lineage(loaded, replica, lineage.prompts_hash(prompts), model_id)
    previous = lineage.read_lineage(path) if reuse else None
    if previous is not None and previous.get("data_version") == recorded["data_version"]:
        table = storage.read_parquet(path)
        if on_batch is not None:
            on_batch(table.num_rows, table.num_rows)
        summary = _inference_summary(table, recorded, path, reused=True)
        check_error_rate(loaded, summary)
        return summary
    with contextlib.ExitStack() as stack:  # a managed server lives as long as this block
        if engine is None:
            check_recipe_reasoning(loaded.recipe)  # from the chat template, before the weights
            engine = open_engine(loaded, replica, stack, model_id)
        summary = _generate_shard(loaded, replica, engine, prompts, path, recorded, on_batch)
    check_error_rate(loaded, summary)  # after the rows are written: they stay recorded
    return summary


def _generate_shard(
    loaded: LoadedRecipe,
    replica: int,
    engine: Engine,
    prompts: pa.Table,
    path: str,
    recorded: dict[str, Any],
    on_batch: ProgressCallback | None,
) -> dict[str, Any]:
    """The replica's shard block by block (checkpointed), then its output file."""
    replicas = loaded.recipe.run.replicas
    # Shards start on the engine's batching blocks, so the replica count never changes
    # which rows are batched together (and so never changes the results).
    batch_size = loaded.recipe.inference.batch_size or engine.default_batch_size
    block = engine.block_size(batch_size)
    start, end = replica_range(prompts.num_rows, replica, replicas, block)
    shard = prompts.slice(start, end - start)
    settings = sampling_settings(loaded)
    check_settings = getattr(engine, "check_settings", None)
    if check_settings is not None:  # e.g. reasoning on a model without a thinking switch
        check_settings(settings)
    if "image_count" in shard.column_names and pc.max(shard["image_count"]).as_py():
        # a model without vision is refused before the first block, not after some
        check_engine_requests(engine, build_requests(shard))
    checkpoints = resume.BlockCheckpoints(path, recorded["data_version"])
    parts, resumed, elapsed, generated_now = [], 0, 0.0, 0
    for index, offset in enumerate(range(0, shard.num_rows, block)):
        rows = shard.slice(offset, block)
        part = checkpoints.load(index, rows["row_index"].combine_chunks())
        if part is None:
            progress = (
                None
                if on_batch is None
                else lambda done, _total, offset=offset: on_batch(offset + done, shard.num_rows)
            )
            started = time.perf_counter()
            part = _generate_block(engine, rows, replica, settings, batch_size, progress)
            elapsed += time.perf_counter() - started
            generated_now += pc.sum(part["completion_tokens"]).as_py() or 0
            checkpoints.save(index, part)
        else:
            resumed += 1
            if on_batch is not None:
                on_batch(offset + rows.num_rows, shard.num_rows)
        parts.append(part)
    table = pa.concat_tables(parts) if parts else INFERENCE_SCHEMA.empty_table()
    # what ran the model (dtype, device, ...), beside the lineage: write_report reads it
    runtime = getattr(engine, "runtime", None)
    engine_info = runtime() if callable(runtime) else {"engine": loaded.recipe.inference.engine}
    storage.write_parquet(path, lineage.with_lineage(table, {**recorded, "engine": engine_info}))
    checkpoints.clear()
    summary = _inference_summary(table, recorded, path, reused=False)
    summary.update(
        row_range=[start, end],
        resumed_blocks=resumed,
        blocks=len(parts),
        seconds=round(elapsed, 3),
    )
    summary["tokens_per_second"] = round(generated_now / elapsed, 2) if elapsed > 0 else None
    return summary


def build_requests(rows: pa.Table) -> list[GenerationRequest]:
    """The engine's requests for rows of the prompts table, images (data URIs) included."""
    names = ["row_index", "prompt", "system", "images"]
    return [
        GenerationRequest(
            row_index=row["row_index"],
            prompt=row["prompt"],
            system=row["system"],
            images=tuple(row.get("images") or ()),
        )
        for row in rows.select([n for n in names if n in rows.column_names]).to_pylist()
    ]


def _generate_block(
    engine: Engine,
    rows: pa.Table,
    replica: int,
    settings: SamplingSettings,
    batch_size: int,
    on_batch: ProgressCallback | None,
) -> pa.Table:
    """One block of a shard through the engine, as rows of the inference table (which
    keeps each row's image count and hashes, not its images)."""
    requests = build_requests(rows)
    generations = engine.generate(requests, settings, batch_size, on_batch=on_batch)
    columns: dict[str, Any] = rows.to_pydict()
    images = columns.pop("images", None)  # never copied into the outputs
    if "image_count" not in columns:  # a prompts table written before images were a field
        columns.update(image_columns(pa.array(images or [None] * rows.num_rows, IMAGES_FIELD.type)))
    columns["replica"] = [replica] * rows.num_rows
    columns["prediction"] = [g.text for g in generations]
    columns["reasoning"] = [g.reasoning for g in generations]
    columns["finish_reason"] = [g.finish_reason for g in generations]
    columns["error"] = [g.error for g in generations]
    columns["prompt_tokens"] = [g.prompt_tokens for g in generations]
    columns["completion_tokens"] = [g.completion_tokens for g in generations]
    columns["max_new_tokens"] = [g.max_new_tokens for g in generations]
    columns["latency_s"] = [g.latency_s for g in generations]
    columns["token_logprobs"] = [
        [
            {
                "token": t.token,
                "logprob": t.logprob,
                "top": [{"token": tok, "logprob": lp} for tok, lp in t.top],
                "constrained_logprob": t.constrained_logprob,
                "forced": t.forced,
            }
            for t in g.tokens
        ]
        for g in generations
    ]
    return pa.table(columns, schema=INFERENCE_SCHEMA)


def _inference_summary(
    table: pa.Table, recorded: dict[str, Any], path: str, reused: bool
) -> dict[str, Any]:
    row_index = table["row_index"]
    return {
        "replica": recorded["replica"],
        "rows": table.num_rows,
        "row_range": (
            [pc.min(row_index).as_py(), pc.max(row_index).as_py() + 1] if table.num_rows else []
        ),
        "errors": int(pc.sum(pc.equal(table["finish_reason"], "error")).as_py() or 0),
        "generated_tokens": int(pc.sum(table["completion_tokens"]).as_py() or 0),
        "seconds": 0.0,
        "tokens_per_second": None,
        "model_id": recorded["model_id"],
        "path": path,
        "reused": reused,
        "resumed_blocks": 0,
        "lineage": recorded,
        "data_version": recorded["data_version"],
    }


class InferenceErrorRateError(RuntimeError):
    """More rows failed than ``inference.max_error_rate`` allows (the rows are recorded)."""


def check_error_rate(loaded: LoadedRecipe, summary: dict[str, Any]) -> None:
    limit = loaded.recipe.inference.max_error_rate
    rows, errors = summary["rows"], summary["errors"]
    if limit is None or rows == 0 or errors / rows <= limit:
        return
    first = storage.read_parquet(summary["path"], columns=["error"]).filter(
        pc.invert(pc.is_null(pc.field("error")))
    )
    example = first["error"][0].as_py() if first.num_rows else None
    raise InferenceErrorRateError(
        f"replica {summary['replica']}: {errors} of {rows} rows failed "
        f"({errors / rows:.1%}), above inference.max_error_rate {limit:g}; the rows are "
        f"recorded with their errors in {summary['path']}"
        + (f"; first error: {example}" if example else "")
    )
