"""inference_outputs: one replica's shard through the engine, block by block (checkpointed)."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from nova_eval_assets import lineage, resume, storage
from nova_eval_assets.dataset import (
    shard_ranges,
)
from nova_eval_assets.engines.base import Engine, GenerationRequest, SamplingSettings
from nova_eval_assets.engines.collector import collector_paused
from nova_eval_assets.engines.cpu_threads import available_cores, process_share
from nova_eval_assets.engines.models import cache_root
from nova_eval_assets.engines.openai import OpenAIEngine
from nova_eval_assets.engines.reasoning import check_recipe_reasoning
from nova_eval_assets.engines.vision import check_engine_requests
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import LoadedRecipe
from nova_eval_assets.stages.engine_setup import (
    inspect_engine,
    load_engine,
    open_engine,
    recipe_model_id,
    sampling_settings,
)
from nova_eval_assets.stages.generation_table import build_requests, generation_columns
from nova_eval_assets.stages.generation_workers import GenerationWorkers, client_processes
from nova_eval_assets.stages.prompts import image_columns
from nova_eval_assets.stages.schemas import (
    IMAGES_FIELD,
    INFERENCE_SCHEMA,
)

# ---------------------------------------------------------------- inference_outputs

ProgressCallback = Callable[[int, int], None]


def replica_range(num_rows: int, replica: int, replicas: int, block: int) -> tuple[int, int]:
    if not 0 <= replica < replicas:
        raise ValueError(f"replica {replica} is outside 0..{replicas - 1}")
    return shard_ranges(num_rows, replicas, block)[replica]


def external_engine(loaded: LoadedRecipe) -> Engine | None:
    """The engine of a server the recipe names but does not start (its identity is what the
    server serves, /v1/models); None for every other engine, known without loading it."""
    inference = loaded.recipe.inference
    if inference.engine == "openai" and inference.server is None:
        return load_engine(loaded)  # cached: the stage's own engine
    return None


def shard_lineage(loaded: LoadedRecipe, replica: int, engine: Engine | None) -> dict[str, Any]:
    """What a replica's output records: its ``data_version`` keys the block checkpoints and
    the reuse check (``engine``: :func:`external_engine`'s, or the caller's)."""
    model_id = engine.model_id if engine is not None else recipe_model_id(loaded)
    prompts_sha256 = lineage.prompts_hash(EvalLayout.for_recipe(loaded).prompts)  # its footer
    return lineage.inference_lineage(loaded, replica, prompts_sha256, model_id)


def rows_kept(loaded: LoadedRecipe, replica: int, reuse: bool) -> int:
    """Rows of ``replica``'s shard that :func:`run_inference` will not generate: the whole
    shard when its output is reused, else the rows of its finished block checkpoints. Call
    it once the stage has begun (the engine is loaded then) and before a block of this run
    is checkpointed."""
    path = EvalLayout.for_recipe(loaded).inference(replica, loaded.recipe.run.replicas)
    output_there = reuse and storage.exists(path)
    checkpointed = storage.list_files(resume.checkpoint_root(path), resume.CHECKPOINT_SUFFIX)
    if not output_there and not checkpointed:
        return 0  # the common case: nothing to read
    key = shard_lineage(loaded, replica, external_engine(loaded))["data_version"]
    if output_there and (lineage.read_lineage(path) or {}).get("data_version") == key:
        return storage.parquet_rows(path)
    return resume.BlockCheckpoints(path, key).finished_rows()


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
    replicas = loaded.recipe.run.replicas
    path = layout.inference(replica, replicas)
    if engine is None:
        engine = external_engine(loaded)
    recorded = shard_lineage(loaded, replica, engine)
    previous = lineage.read_lineage(path) if reuse else None
    if previous is not None and previous.get("data_version") == recorded["data_version"]:
        tally = ShardTally()
        for batch in storage.iter_parquet_batches(path, columns=list(ShardTally.COLUMNS)):
            tally.add(batch)
        if on_batch is not None:
            on_batch(tally.rows, tally.rows)
        summary = _inference_summary(tally, recorded, path, reused=True)
        check_error_rate(loaded, summary)
        return summary
    with contextlib.ExitStack() as stack:  # a managed server lives as long as this block
        if engine is None:
            check_recipe_reasoning(loaded.recipe)  # from the chat template, before the weights
            engine = open_engine(loaded, replica, stack, recorded["model_id"])
        elif loaded.recipe.evaluation.inspect_specs and engine.name != "inspect":
            engine = inspect_engine(loaded, engine)  # an external server answers the task
        summary = _generate_shard(loaded, replica, engine, layout.prompts, path, recorded, on_batch)
    check_error_rate(loaded, summary)  # after the rows are written: they stay recorded
    return summary


def _generate_shard(
    loaded: LoadedRecipe,
    replica: int,
    engine: Engine,
    prompts: str,
    path: str,
    recorded: dict[str, Any],
    on_batch: ProgressCallback | None,
) -> dict[str, Any]:
    """The replica's shard of the prompts file, read and generated block by block
    (checkpointed), and written to its output file as the blocks finish: memory holds a
    block and a row group (:func:`storage.batch_rows`), never the shard."""
    replicas = loaded.recipe.run.replicas
    # Shards start on the engine's batching blocks, so the replica count never changes
    # which rows are batched together (and so never changes the results).
    batch_size = loaded.recipe.inference.batch_size or engine.default_batch_size
    block = engine.block_size(batch_size)
    start, end = replica_range(storage.parquet_rows(prompts), replica, replicas, block)
    shard_rows = end - start
    settings = sampling_settings(loaded)
    check_settings = getattr(engine, "check_settings", None)
    if check_settings is not None:  # e.g. reasoning on a model without a thinking switch
        check_settings(settings)
    if _shard_has_images(prompts, start, end):
        # a model without vision is refused before the first block, not after some
        check_engine_requests(engine, ShardRequests(prompts, start, end, block))
    checkpoints = resume.BlockCheckpoints(path, recorded["data_version"])
    tally = ShardTally()
    blocks, resumed, elapsed, generated_now = 0, 0, 0.0, 0
    group_rows = storage.batch_rows()
    schema = lineage.schema_with_lineage(INFERENCE_SCHEMA, recorded)
    with contextlib.ExitStack() as stack, storage.parquet_writer(path, schema) as writer:
        cores = available_cores
        if isinstance(engine, OpenAIEngine):  # its client processes share the cores with
            share = process_share(cache_root() / ".cpu-engines")  # replicas side by side
            share.acquire()
            stack.callback(share.release)
            cores = share.threads
        processes = client_processes(loaded.recipe.inference, engine, shard_rows, cores)
        if processes > 1:
            start_block = stack.enter_context(GenerationWorkers(engine, processes)).start
        else:

            def start_block(*args: Any) -> Callable[[], dict[str, pa.Array]]:
                return functools.partial(generate_columns, engine, *args)  # run when collected

        def progress(offset: int) -> ProgressCallback | None:
            if on_batch is None:
                return None
            return lambda done, _total: on_batch(offset + done, shard_rows)

        def started_blocks() -> Iterator[tuple[int, pa.Table, pa.Table | Callable]]:
            """Each block with its checkpoint, or what collects its generation."""
            for index, rows in enumerate(iter_row_blocks(prompts, start, end, block)):
                part = checkpoints.load(index, rows["row_index"].combine_chunks())
                if part is None:
                    yield (
                        index,
                        rows,
                        start_block(rows, settings, batch_size, progress(index * block)),
                    )
                else:
                    yield index, rows, part

        finished: list[pa.Table] = []  # blocks not yet written, up to one row group
        # the next block is started before this one is collected: worker processes go on
        # generating while this process checkpoints and writes
        for index, rows, started in one_ahead(started_blocks()):
            if callable(started):
                began = time.perf_counter()
                part = inference_block(rows, replica, started())
                elapsed += time.perf_counter() - began
                generated_now += pc.sum(part["completion_tokens"]).as_py() or 0
                checkpoints.save(index, part)
            else:
                part = started
                resumed += 1
                if on_batch is not None:
                    on_batch(index * block + rows.num_rows, shard_rows)
            blocks += 1
            tally.add(part)
            finished.append(part)
            if sum(p.num_rows for p in finished) >= group_rows:
                writer.write_table(pa.concat_tables(finished))
                finished = []
        if finished:
            writer.write_table(pa.concat_tables(finished))
        # what ran the model (dtype, device, ...), beside the lineage: write_report reads it
        runtime = getattr(engine, "runtime", None)
        engine_info = runtime() if callable(runtime) else {"engine": loaded.recipe.inference.engine}
        lineage.record_lineage(writer, {**recorded, "engine": engine_info})
    checkpoints.clear()
    summary = _inference_summary(tally, recorded, path, reused=False)
    summary.update(
        row_range=[start, end],
        resumed_blocks=resumed,
        blocks=blocks,
        client_processes=processes,
        seconds=round(elapsed, 3),
    )
    summary["tokens_per_second"] = round(generated_now / elapsed, 2) if elapsed > 0 else None
    return summary


def one_ahead(items: Iterator[Any]) -> Iterator[Any]:
    """`items` in order, each given out once the one after it has been taken (started)."""
    held: list[Any] = []
    for item in items:
        if held:
            yield held.pop()
        held.append(item)
    yield from held


def iter_row_blocks(
    location: str, start: int, end: int, block: int, columns: list[str] | None = None
) -> Iterator[pa.Table]:
    """Rows ``start..end`` of a Parquet file in tables of ``block`` rows (the last may be
    shorter), decoding only the row groups that hold them."""
    held = None  # rows read, not yet yielded
    batches = storage.iter_parquet_batches(location, columns, block, rows=(start, end))
    for batch in batches:
        rows = pa.Table.from_batches([batch])
        held = rows if held is None else pa.concat_tables([held, rows])
        while held.num_rows >= block:
            yield held.slice(0, block)
            held = held.slice(block)
    if held is not None and held.num_rows:
        yield held


class ShardRequests:
    """The engine's requests for rows ``start..end`` of a prompts file, re-read block by
    block at each iteration: an engine's check of the requests' images (``check_requests``)
    sees every row without the shard's images held in memory."""

    def __init__(self, prompts: str, start: int, end: int, block: int):
        self.prompts, self.start, self.end, self.block = prompts, start, end, block

    def __iter__(self) -> Iterator[GenerationRequest]:
        names = storage.parquet_schema(self.prompts).names
        columns = [n for n in ("row_index", "prompt", "system", "images") if n in names]
        for rows in iter_row_blocks(self.prompts, self.start, self.end, self.block, columns):
            yield from build_requests(rows)


def _shard_has_images(prompts: str, start: int, end: int) -> bool:
    """Whether a row of the shard has images (read from the image_count column only)."""
    if "image_count" not in storage.parquet_schema(prompts).names:
        return False  # a prompts table written before images were a field
    blocks = iter_row_blocks(prompts, start, end, storage.batch_rows(), ["image_count"])
    return any(pc.max(rows["image_count"]).as_py() for rows in blocks)


# the collector is off while the block's generations live, and they die with this call
@collector_paused()
def generate_columns(
    engine: Engine,
    rows: pa.Table,
    settings: SamplingSettings,
    batch_size: int,
    on_batch: ProgressCallback | None,
) -> dict[str, pa.Array]:
    """Rows of the prompts table through the engine in this process: their generation
    columns (:func:`generation_columns`)."""
    generations = engine.generate(build_requests(rows), settings, batch_size, on_batch=on_batch)
    return generation_columns(generations)


def inference_block(rows: pa.Table, replica: int, generated: dict[str, pa.Array]) -> pa.Table:
    """One block of a shard as rows of the inference table: the prompt rows (their image
    count and hashes, not their images) with the block's generation columns."""
    columns: dict[str, Any] = {
        name: rows[name] for name in rows.column_names if name != IMAGES_FIELD.name
    }
    if "image_count" not in columns:  # a prompts table written before images were a field
        if IMAGES_FIELD.name in rows.column_names:
            images = rows[IMAGES_FIELD.name].combine_chunks().cast(IMAGES_FIELD.type)
        else:
            images = pa.nulls(rows.num_rows, IMAGES_FIELD.type)
        columns.update(image_columns(images))
    columns["replica"] = pa.array([replica] * rows.num_rows, pa.int32())
    columns.update(generated)
    return pa.table({name: columns[name] for name in INFERENCE_SCHEMA.names}).cast(INFERENCE_SCHEMA)


class ShardTally:
    """Running counts of a replica's output, part by part: rows, error rows, generated
    tokens and the row-index range."""

    COLUMNS = ("row_index", "finish_reason", "completion_tokens")  # what it reads

    def __init__(self) -> None:
        self.rows = self.errors = self.generated_tokens = 0
        self.low: int | None = None
        self.high: int | None = None

    def add(self, part: pa.Table | pa.RecordBatch) -> None:
        if not part.num_rows:
            return
        self.rows += part.num_rows
        self.errors += int(pc.sum(pc.equal(part["finish_reason"], "error")).as_py() or 0)
        self.generated_tokens += int(pc.sum(part["completion_tokens"]).as_py() or 0)
        low, high = pc.min(part["row_index"]).as_py(), pc.max(part["row_index"]).as_py()
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)

    @property
    def row_range(self) -> list[int]:
        return [self.low, self.high + 1] if self.rows else []


def _inference_summary(
    tally: ShardTally, recorded: dict[str, Any], path: str, reused: bool
) -> dict[str, Any]:
    return {
        "replica": recorded["replica"],
        "rows": tally.rows,
        "row_range": tally.row_range,
        "errors": tally.errors,
        "generated_tokens": tally.generated_tokens,
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
    example = None
    for batch in storage.iter_parquet_batches(summary["path"], columns=["error"]):
        failed = batch["error"].drop_null()
        if len(failed):
            example = failed[0].as_py()
            break
    raise InferenceErrorRateError(
        f"replica {summary['replica']}: {errors} of {rows} rows failed "
        f"({errors / rows:.1%}), above inference.max_error_rate {limit:g}; the rows are "
        f"recorded with their errors in {summary['path']}"
        + (f"; first error: {example}" if example else "")
    )
