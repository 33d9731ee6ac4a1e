"""The stages of a gen_qa evaluation as plain functions.

Each stage reads what the previous one wrote (through :mod:`storage`), writes its own
output atomically, and returns a small summary dict. The Dagster assets call these and
nothing else; the CLI and tests can call them directly.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nova_eval_assets import lineage, resume, storage
from nova_eval_assets.byom import pipeline as byom
from nova_eval_assets.dataset import (
    SCHEMAS,
    DatasetError,
    DatasetFileError,
    ValidationOutcome,
    image_sha256,
    shard_ranges,
    validate_dataset,
)
from nova_eval_assets.engines import create_engine
from nova_eval_assets.engines.base import Engine, GenerationRequest, SamplingSettings
from nova_eval_assets.engines.reasoning import check_recipe_reasoning
from nova_eval_assets.engines.server import ManagedServer, managed_model_id
from nova_eval_assets.engines.vision import check_engine_requests
from nova_eval_assets.layout import EvalLayout, timestamp
from nova_eval_assets.metrics import (
    PER_EXAMPLE_METRICS,
    aggregate_gen_qa,
    bleu_sufficient_stats,
    example_metrics,
)
from nova_eval_assets.recipe import LoadedRecipe
from nova_eval_assets.report.coverage import coverage_markdown, coverage_section
from nova_eval_assets.report.nova_export import write_nova_export
from nova_eval_assets.report.results import (
    classification_markdown,
    processor_markdown,
    results_document,
    summary_markdown,
)

ProgressCallback = Callable[[int, int], None]

TOP_TOKEN = pa.struct([("token", pa.string()), ("logprob", pa.float64())])
TOKEN_LOGPROB = pa.struct(
    [
        ("token", pa.string()),
        ("logprob", pa.float64()),
        ("top", pa.list_(TOP_TOKEN)),
        # inference.response_format: renormalized over the allowed tokens; the model's top
        # token was not allowed (null without a constraint)
        ("constrained_logprob", pa.float64()),
        ("forced", pa.bool_()),
    ]
)
PROMPT_COLUMNS = [
    pa.field("row_index", pa.int64(), nullable=False),
    pa.field("line", pa.int64()),
    pa.field("system", pa.string()),
    pa.field("prompt", pa.string()),
    pa.field("gold", pa.string()),
    pa.field("metadata", pa.string()),
    pa.field("preprocess_error", pa.string()),  # BYOM: why preprocessing failed for the row
    pa.field("preprocess_seconds", pa.float64()),
]
# What outputs keep of a row's images: how many, and the sha256 (hex) of each decoded image,
# in order. The images themselves (data URIs) are in the validated and prompts tables only.
IMAGE_COLUMNS = [
    pa.field("image_count", pa.int32()),
    pa.field("image_sha256", pa.list_(pa.string())),
]
IMAGES_FIELD = pa.field("images", pa.list_(pa.string()))  # data URIs, in order; null: none
PROMPTS_SCHEMA = pa.schema([*PROMPT_COLUMNS, IMAGES_FIELD, *IMAGE_COLUMNS])
INFERENCE_SCHEMA = pa.schema(
    [
        *PROMPT_COLUMNS,
        *IMAGE_COLUMNS,
        pa.field("replica", pa.int32()),
        pa.field("prediction", pa.string()),  # the answer (without reasoning), as scored
        pa.field("reasoning", pa.string()),  # inference.reasoning_effort: the model's thinking
        pa.field("finish_reason", pa.string()),
        pa.field("error", pa.string()),
        pa.field("prompt_tokens", pa.int32()),
        pa.field("completion_tokens", pa.int32()),
        # the row's generation budget: inference.max_new_tokens, or less when the prompt
        # leaves less of the model's context
        pa.field("max_new_tokens", pa.int32()),
        pa.field("latency_s", pa.float64()),
        pa.field("token_logprobs", pa.list_(TOKEN_LOGPROB)),
    ]
)
METRICS_SCHEMA = pa.schema(
    [
        pa.field("row_index", pa.int64(), nullable=False),
        pa.field("scored", pa.bool_()),
        pa.field("metrics", pa.map_(pa.string(), pa.float64())),
        pa.field("bleu_stats", pa.list_(pa.float64())),
        # BYOM: the postprocessor's metrics (also merged into `metrics`) or its error
        pa.field("custom_metrics", pa.map_(pa.string(), pa.float64())),
        pa.field("postprocess_error", pa.string()),
        pa.field("postprocess_seconds", pa.float64()),
        # classification extension: labels read from gold and prediction
        pa.field("gold_label", pa.string()),
        pa.field("predicted_label", pa.string()),
        pa.field("label_valid", pa.bool_()),
        pa.field("label_problem", pa.string()),
    ]
)


def sha256_of(location: str) -> str:
    return storage.sha256(location)


def sampling_settings(loaded: LoadedRecipe) -> SamplingSettings:
    inference = loaded.recipe.inference
    return SamplingSettings(
        max_new_tokens=inference.generation_tokens,
        temperature=inference.temperature,
        top_k=inference.top_k,
        top_p=inference.top_p,
        top_logprobs=inference.top_logprobs,
        seed=inference.seed,
        reasoning_effort=inference.reasoning_effort,
        response_format=loaded.recipe.response_format,
    )


# ---------------------------------------------------------------- validated_dataset


def run_validation(loaded: LoadedRecipe) -> tuple[ValidationOutcome, dict[str, Any]]:
    """Validate the dataset and write the valid rows, the rejected rows and the report.

    Under ``dataset.on_invalid: fail`` an invalid dataset is reported (the report file is
    written) but no rows are handed on; callers raise :class:`DatasetError` from the outcome.
    A dataset with no valid row (empty, only blank lines, every row rejected) is handed on
    under no policy; under ``skip`` this raises :class:`DatasetError` once the report is
    written, so the run stops here rather than in a later stage.
    """
    recipe = loaded.recipe
    layout = EvalLayout.for_recipe(loaded)
    source = loaded.resolve_data_path()
    try:
        outcome = validate_dataset(
            source,
            SCHEMAS[recipe.evaluation.task],
            metadata_format=recipe.dataset.metadata_format,
            limit=recipe.run.limit,
            max_line_bytes=recipe.dataset.max_line_bytes,
        )
    except DatasetFileError as exc:
        # an older run's report and rows must not stand in for this dataset's
        for stale in (layout.validation_report, layout.validated, layout.rejected_rows):
            storage.delete(stale)
        raise DatasetFileError(exc.location, exc.problem + dataset_path_hint(loaded)) from exc
    strict_failure = not outcome.ok and (recipe.dataset.on_invalid == "fail" or outcome.no_rows)
    summary: dict[str, Any] = {
        "source": source,
        "dataset_sha256": sha256_of(source),
        "lines_read": outcome.lines_read,
        "valid_rows": 0 if strict_failure else outcome.table.num_rows,
        "rejected_rows": len(outcome.rejected),
        "problems": [str(p) for p in outcome.problems[:20]],
        "problem_count": len(outcome.problems),
        "policy": recipe.dataset.on_invalid,
        "ok": outcome.ok,
        "no_rows": outcome.no_rows,  # nothing to evaluate: invalid under either policy
        "report": outcome.report(),
        "validated_path": layout.validated,
        "rejected_path": layout.rejected_rows,
    }
    storage.write_json(layout.validation_report, summary)
    storage.write_jsonl(layout.rejected_rows, (r.as_record() for r in outcome.rejected))
    if not strict_failure:
        storage.write_parquet(layout.validated, outcome.table)
    elif storage.exists(layout.validated):
        storage.delete(layout.validated)  # never leave an older run's rows to be picked up
    if outcome.no_rows and recipe.dataset.on_invalid == "skip":
        raise DatasetError(outcome)  # "skip" keeps the valid rows, and there are none
    return outcome, summary


def dataset_path_hint(loaded: LoadedRecipe) -> str:
    """Which recipe key named an unreadable dataset file, and what to change."""
    run = loaded.recipe.run
    if run.reads_training_channel:
        return (
            f"\n  {loaded.path}: run.data_s3_path is empty, which reads the one .jsonl file of "
            "SageMaker's training channel; fix that file, or set run.data_s3_path to the dataset"
        )
    configured = run.data_s3_path or ""
    relative = not storage.is_remote(configured) and not Path(configured).expanduser().is_absolute()
    where = f", relative to the recipe's folder {loaded.path.parent}" if relative else ""
    return (
        f"\n  {loaded.path}: run.data_s3_path is {configured!r}{where}; set it to the path "
        "of the dataset's .jsonl file (or its s3:// URI)"
    )


def validate_or_raise(loaded: LoadedRecipe) -> dict[str, Any]:
    outcome, summary = run_validation(loaded)
    if not outcome.ok and loaded.recipe.dataset.on_invalid == "fail":
        raise DatasetError(outcome)
    return summary


# ---------------------------------------------------------------- preprocessed_prompts


def image_columns(images: pa.ChunkedArray | pa.Array) -> dict[str, pa.Array]:
    """``image_count`` and ``image_sha256`` of a column of data-URI lists (null: no image)."""
    lists = images.to_pylist()
    return {
        "image_count": pa.array([len(uris or ()) for uris in lists], pa.int32()),
        "image_sha256": pa.array(
            [[image_sha256(uri) for uri in uris or ()] for uris in lists], pa.list_(pa.string())
        ),
    }


def build_prompts(loaded: LoadedRecipe) -> dict[str, Any]:
    """The prompts inference will see: system, prompt, gold and images per validated row
    (with each row's image count and image hashes, which the outputs keep instead)."""
    layout = EvalLayout.for_recipe(loaded)
    rows = storage.read_parquet(layout.validated)
    images = (
        rows["images"]
        if "images" in rows.column_names  # validated before images were a field: none
        else pa.nulls(rows.num_rows, IMAGES_FIELD.type)
    )
    prompts = pa.table(
        {
            "row_index": rows["row_index"],
            "line": rows["line"],
            "system": rows["system"],
            "prompt": rows["query"],
            "gold": rows["response"],
            "metadata": rows["metadata"],
            "preprocess_error": pa.nulls(rows.num_rows, pa.string()),
            "preprocess_seconds": pa.nulls(rows.num_rows, pa.float64()),
            "images": images,
            **image_columns(images),
        },
        schema=PROMPTS_SCHEMA,
    )
    prompts, processed = byom.apply_preprocessing(loaded, prompts)
    content = lineage.table_sha256(prompts)  # inference records it (lineage.py)
    prompts = lineage.with_lineage(prompts, {"stage": "prompts", "sha256": content})
    storage.write_parquet(layout.prompts, prompts)
    byom.check_preprocess_rate(loaded, processed, prompts.num_rows)
    return {"rows": prompts.num_rows, "path": layout.prompts, "sha256": content, **processed}


# ---------------------------------------------------------------- inference_outputs


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


def engine_options(loaded: LoadedRecipe) -> dict[str, Any]:
    """The recipe's inference keys as :func:`create_engine` options: the one place where each
    engine's keys are mapped (hf, bedrock and vllm add theirs here)."""
    inference = loaded.recipe.inference
    options: dict[str, Any] = {}
    if inference.engine == "openai":
        options.update(
            endpoint=inference.endpoint,
            api_key_env=inference.api_key_env,
            concurrency=inference.concurrency,
            timeout_s=inference.timeout_s,
            max_retries=inference.max_retries,
        )
    elif inference.engine == "bedrock":
        options.update(
            region=inference.region,
            endpoint_url=inference.endpoint,
            concurrency=inference.concurrency,
            timeout_s=inference.timeout_s,
            max_retries=inference.max_retries,
        )
    elif inference.engine == "vllm":
        options.update(dtype=inference.dtype, tensor_parallel_size=inference.tensor_parallel_size)
    elif inference.engine == "hf" and inference.dtype != "auto":
        options.update(dtype=inference.dtype)  # auto: the engine's default (bf16 CUDA, fp32 CPU)
    return options


def recipe_model_id(loaded: LoadedRecipe) -> str:
    """The model identity lineage records, without loading the model or starting a server
    (an external server's comes from the engine: :func:`load_engine`)."""
    server = loaded.recipe.inference.server
    if loaded.recipe.inference.engine == "openai" and server is not None:
        return managed_model_id(server.command, lineage.model_id(loaded))
    return lineage.model_id(loaded)


def open_engine(
    loaded: LoadedRecipe, replica: int, stack: contextlib.ExitStack, model_id: str
) -> Engine:
    """The replica's engine; with ``inference.server``, the server it starts first (stopped
    when `stack` closes: on success, on failure and on SIGTERM)."""
    server = loaded.recipe.inference.server
    if loaded.recipe.inference.engine != "openai" or server is None:
        return load_engine(loaded)
    layout = EvalLayout.for_recipe(loaded)
    replicas = loaded.recipe.run.replicas
    log = layout.stage("inference", f"replicas-{replicas}", f"replica-{replica}.server.log")
    model = loaded.recipe.run.model_name_or_path
    managed = stack.enter_context(
        ManagedServer(
            server.command,
            model,
            port=server.port,
            startup_timeout_s=server.startup_timeout_s,
            env=server.env,
            log_location=log,
        )
    )
    options = {**engine_options(loaded), "endpoint": managed.url, "identity": model_id}
    return create_engine("openai", model, **options)


_ENGINES: dict[tuple[str, ...], Engine] = {}


def load_engine(loaded: LoadedRecipe) -> Engine:
    """One engine per (engine, model, options) per process: loading a model is the slow part.
    Without options the key is ``(engine, model)``."""
    options = engine_options(loaded)
    engine, model = loaded.recipe.inference.engine, loaded.recipe.run.model_name_or_path
    key: tuple[str, ...] = (engine, model)
    if options:
        key += (json.dumps(options, sort_keys=True, default=str),)
    if key not in _ENGINES:
        _ENGINES[key] = create_engine(engine, model, **options)
    return _ENGINES[key]


# ---------------------------------------------------------------- postprocessed_metrics


def score_replica(loaded: LoadedRecipe, replica: int) -> dict[str, Any]:
    """Per-example built-in metrics for one replica; rows whose inference failed are kept,
    marked unscored, and left out of the aggregates."""
    layout = EvalLayout.for_recipe(loaded)
    replicas = loaded.recipe.run.replicas
    source = storage.read_parquet(
        layout.inference(replica, replicas),
        columns=["row_index", "prompt", "gold", "prediction", "error", "preprocess_error"],
    )
    inference_version = (lineage.table_lineage(source) or {}).get("data_version")
    outputs = source.to_pylist()
    metrics, stats, scored = [], [], []
    for row in outputs:
        ok = row["error"] is None and row["preprocess_error"] is None
        scored.append(ok)
        metrics.append(list(example_metrics(row["gold"], row["prediction"]).items()) if ok else [])
        stats.append(bleu_sufficient_stats(row["gold"], row["prediction"]) if ok else None)
    extras, processed = byom.score_extras(loaded, outputs, scored, metrics)
    metrics = [m + c for m, c in zip(metrics, extras["custom_metrics"], strict=True)]
    table = pa.table(
        {
            "row_index": [row["row_index"] for row in outputs],
            "scored": scored,
            "metrics": metrics,
            "bleu_stats": stats,
            **extras,
        },
        schema=METRICS_SCHEMA,
    )
    path = layout.metrics(replica, replicas)
    # which inference output these metrics score (the aggregate checks it: lineage.py)
    recorded = {"stage": "metrics", "inference_data_version": inference_version}
    storage.write_parquet(path, lineage.with_lineage(table, recorded))
    return {
        "replica": replica,
        "rows": table.num_rows,
        "scored": sum(scored),
        "path": path,
        "inference_data_version": inference_version,
        **processed,
    }


# ---------------------------------------------------------------- aggregated_report


def collect_replicas(loaded: LoadedRecipe) -> pa.Table:
    """Every replica's inference and metrics joined, in global row order."""
    layout = EvalLayout.for_recipe(loaded)
    replicas = loaded.recipe.run.replicas
    parts = []
    for replica in range(replicas):
        inference = storage.read_parquet(layout.inference(replica, replicas))
        metrics = storage.read_parquet(layout.metrics(replica, replicas))
        if inference["row_index"] != metrics["row_index"]:
            raise RuntimeError(
                f"replica {replica}: metrics do not match inference outputs; rematerialize "
                "postprocessed_metrics for this partition"
            )
        for name in METRICS_SCHEMA.names[1:]:
            inference = inference.append_column(name, metrics[name])
        parts.append(inference)
    table = pa.concat_tables(parts)
    order = np.argsort(table["row_index"].to_numpy(), kind="stable")
    return table.take(pa.array(order))


def aggregate_metrics(table: pa.Table) -> dict[str, float]:
    scored = table.filter(table["scored"])
    per_example: dict[str, list[float]] = {name: [] for name in PER_EXAMPLE_METRICS}
    custom = set(byom.custom_metric_names(table)) if "custom_metrics" in table.column_names else ()
    for row_metrics in scored["metrics"].to_pylist():
        for name, value in row_metrics:
            if name not in custom:  # custom metrics: processor.aggregation, below
                per_example.setdefault(name, []).append(value)
    stats = np.array(scored["bleu_stats"].to_pylist(), dtype=np.float64)
    return aggregate_gen_qa(per_example, stats if len(stats) else None)


def aggregate_all(loaded: LoadedRecipe, table: pa.Table) -> dict[str, float]:
    """Built-in metrics (means, corpus BLEU), then custom metrics with the recipe's
    ``processor.aggregation``, each with ``_stderr``."""
    return {**aggregate_metrics(table), **byom.custom_aggregates(loaded, table)}


def _span(values: list[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}..{high}"


def inference_warnings(loaded: LoadedRecipe, table: pa.Table) -> list[str]:
    """What the run's results should warn about: today, max_new_tokens clipped to the
    model's context (the engine records each row's budget in `max_new_tokens`)."""
    if "max_new_tokens" not in table.column_names:
        return []
    requested = loaded.recipe.inference.generation_tokens
    rows = table.select(["prompt_tokens", "max_new_tokens", "finish_reason"]).to_pylist()
    clipped = [
        r
        for r in rows
        if r["finish_reason"] != "error"  # a prompt that fills the context is an error row
        and r["max_new_tokens"] is not None
        and r["max_new_tokens"] < requested
    ]
    if not clipped:
        return []
    # a clipped row's budget is what its prompt left: prompt + budget is the context
    context = _span([r["prompt_tokens"] + r["max_new_tokens"] for r in clipped])
    budgets = _span([r["max_new_tokens"] for r in clipped])
    share = f"{len(clipped)} of {len(rows)} rows"
    if requested >= max(r["prompt_tokens"] + r["max_new_tokens"] for r in clipped):
        return [
            f"inference.max_new_tokens {requested} exceeds the model's context of {context} "
            f"tokens; clipped to {budgets} tokens per row ({share}; prompt + answer must fit)"
        ]
    return [
        f"inference.max_new_tokens {requested} plus the prompt exceeds the model's context of "
        f"{context} tokens for {share}; clipped to {budgets} tokens (prompt + answer must fit)"
    ]


def inference_engine_section(loaded: LoadedRecipe) -> dict[str, Any]:
    """What ran the model (engine, dtype, device, ...) as the replicas recorded it; with
    replicas that differ (e.g. CPU and GPU nodes), each replica's under ``replicas``."""
    layout, replicas = EvalLayout.for_recipe(loaded), loaded.recipe.run.replicas
    recorded = [
        (lineage.read_lineage(layout.inference(r, replicas)) or {}).get("engine")
        or {"engine": loaded.recipe.inference.engine}
        for r in range(replicas)
    ]
    if all(entry == recorded[0] for entry in recorded):
        return recorded[0]
    return {"engine": loaded.recipe.inference.engine, "replicas": recorded}


def write_report(loaded: LoadedRecipe, started_at: float | None = None) -> dict[str, Any]:
    """Fan in every replica: the results JSON, the Nova export and our typed examples table."""
    layout = EvalLayout.for_recipe(loaded)
    recipe = loaded.recipe
    # never aggregate a mix: every replica from the same prompts, model and settings
    replicas_check = lineage.check_replicas(loaded)
    if not replicas_check.ok:
        raise lineage.StaleReplicasError(replicas_check.message(loaded))
    run_lineage = {**(replicas_check.run or {}), "replica_versions": replicas_check.data_versions}
    table = lineage.with_lineage(collect_replicas(loaded), {"stage": "report", **run_lineage})
    metrics = aggregate_all(loaded, table)
    coverage = coverage_section(table)
    processor = byom.processor_section(loaded, table)
    classification = byom.classification_section(loaded, table)
    validation = storage.read_json(layout.validation_report)
    stamp = timestamp()
    counts = {
        "examples": table.num_rows,
        "scored": int(pc.sum(table["scored"]).as_py() or 0),
        "inference_errors": int(pc.sum(pc.equal(table["finish_reason"], "error")).as_py() or 0),
        "rejected_rows": validation["rejected_rows"],
        "replicas": recipe.run.replicas,
    }
    if processor is not None:
        counts["processor_errors"] = processor["processor_errors"]
    config_general = {
        "recipe_name": recipe.run.name,
        "recipe_path": str(loaded.path),
        "model_name": recipe.run.model_name_or_path,
        "model_type": recipe.run.model_type,
        "task": recipe.evaluation.task,
        "strategy": recipe.evaluation.strategy,
        "dataset": {"path": validation["source"], "sha256": validation["dataset_sha256"]},
        "inference": recipe.inference.model_dump(),
        "timestamp": stamp,
        "total_generated_tokens": int(pc.sum(table["completion_tokens"]).as_py() or 0),
        "total_evaluation_time_secondes": (
            round(time.time() - started_at, 3) if started_at is not None else None
        ),
        **{f"num_{k}": v for k, v in counts.items()},
        "coverage": coverage,
        "lineage": run_lineage,
        "inference_engine": inference_engine_section(loaded),
    }
    if processor is not None:
        config_general["processor"] = processor
    if recipe.notes:
        config_general["notes"] = recipe.notes
    warnings = inference_warnings(loaded, table)
    config_general["warnings"] = warnings
    document = results_document(metrics, config_general)
    if classification is not None:
        document["classification"] = classification
    results_path = layout.result(f"results_{stamp}.json")
    storage.write_json(results_path, document)
    paths = write_nova_export(table, layout.results_dir, recipe.run.model_name_or_path, stamp)
    examples_path = layout.result("examples.parquet")
    storage.write_parquet(examples_path, table)
    paths.update(results=results_path, examples=examples_path, rejected_rows=layout.rejected_rows)
    clean = document["results"]["all"]
    summary = summary_markdown(clean, counts) + coverage_markdown(coverage)
    summary += "".join(f"\nNote: {note}\n" for note in recipe.notes)
    summary += "".join(f"\nWarning: {warning}\n" for warning in warnings)
    if processor is not None:
        summary += processor_markdown(processor)
    if classification is not None:
        summary += "\n" + classification_markdown(classification)
    report = {
        "metrics": clean,
        "counts": counts,
        "paths": paths,
        "summary_markdown": summary,
        "coverage": coverage,
        "lineage": run_lineage,
        "warnings": warnings,
    }
    if processor is not None:
        report["processor"] = processor
    if classification is not None:
        report["classification"] = classification
    storage.write_json(layout.latest_report, report)
    byom.check_report_rate(loaded, processor, table.num_rows)
    return report


def read_latest_report(loaded: LoadedRecipe) -> dict[str, Any]:
    """What the last :func:`write_report` of this recipe returned."""
    return storage.read_json(EvalLayout.for_recipe(loaded).latest_report)
