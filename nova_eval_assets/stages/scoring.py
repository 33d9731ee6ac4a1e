"""postprocessed_metrics: per-example metrics of one replica.

The built-in metrics are pure CPU work, row by row: on a replica of more than
:data:`POOL_MIN_ROWS` rows, worker processes (one per CPU) score the record batches while
this process reads the next ones and adds the classification and BYOM columns; batches are
written in order, and no more than a few are in flight, so memory stays bounded by the
batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from nova_eval_assets import lineage, resume, storage
from nova_eval_assets.byom import pipeline as byom
from nova_eval_assets.engines.cpu_threads import available_cores
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.metrics.batch_scoring import (
    RECORD_COLUMN,
    TOKENS_COLUMN,
    ScoringWorkers,
    builtin_metric_columns,
    for_task,
    no_builtin_metrics,
)
from nova_eval_assets.recipe import LoadedRecipe
from nova_eval_assets.stages.schemas import METRICS_SCHEMA

#: below this many rows a replica is scored in this process: starting workers (a fresh
#: interpreter each, a fraction of a second) would cost more than it saves
POOL_MIN_ROWS = 50_000

if TYPE_CHECKING:
    from nova_eval_assets.judge.deflection import DeflectionJudge

_SCORED_COLUMNS = ["row_index", "prompt", "gold", "prediction", "error", "preprocess_error"]


def score_replica(loaded: LoadedRecipe, replica: int) -> dict[str, Any]:
    """Per-example built-in metrics for one replica; rows whose inference failed are kept,
    marked unscored, and left out of the aggregates. Read, scored and written in record
    batches of :func:`storage.batch_rows` rows."""
    layout = EvalLayout.for_recipe(loaded)
    replicas = loaded.recipe.run.replicas
    source = layout.inference(replica, replicas)
    inference_version = (lineage.read_lineage(source) or {}).get("data_version")
    # which inference output these metrics score (the aggregate checks it: lineage.py)
    recorded = {"stage": "metrics", "inference_data_version": inference_version}
    schema = lineage.with_lineage(METRICS_SCHEMA.empty_table(), recorded).schema
    path = layout.metrics(replica, replicas)
    # a reward function's answers are checkpointed per batch, keyed by what it scores
    reward_key = lineage.digest(inference_version, byom.reward_fingerprint(loaded))
    extras = byom.ReplicaExtras(loaded, resume.BlockCheckpoints(path, reward_key))
    rows = scored_rows = 0
    benchmark = loaded.recipe.evaluation.benchmark
    columns = _SCORED_COLUMNS
    if benchmark is not None and loaded.recipe.inference.top_logprobs > 0:
        columns = [*columns, TOKENS_COLUMN]  # a benchmark's scorer may read them
    if loaded.recipe.evaluation.inspect_specs:
        columns = [*columns, RECORD_COLUMN]  # the scores Inspect's scorers gave
    if extras.rewards is not None:
        columns = [*columns, "system", "metadata"]  # the samples a reward function gets
    batches = (
        _for_benchmark(_with_scored(batch), loaded)
        for batch in storage.iter_parquet_batches(source, columns, batch_size=storage.batch_rows())
    )
    rewards_only = loaded.recipe.evaluation.scored_by_rewards
    workers = 0 if rewards_only else scoring_workers(storage.parquet_rows(source))
    judge = _deflection_judge(loaded)
    with storage.parquet_writer(path, schema) as writer:
        for index, (batch, builtin) in enumerate(_with_metrics(batches, workers, rewards_only)):
            if judge is not None:
                builtin = _judged(batch, builtin, judge)
            table = _score_batch(batch, builtin, extras, index)
            writer.write_table(table)
            rows += table.num_rows
            scored_rows += int(pc.sum(table["scored"]).as_py() or 0)
    if extras.checkpoints is not None:
        extras.checkpoints.clear()
    return {
        "replica": replica,
        "rows": rows,
        "scored": scored_rows,
        "path": path,
        "inference_data_version": inference_version,
        **extras.summary(),
    }


def _deflection_judge(loaded: LoadedRecipe) -> DeflectionJudge | None:
    """strong_reject with a judge section: the judge classifies the responses."""
    if loaded.recipe.evaluation.task != "strong_reject" or loaded.recipe.judge is None:
        return None
    from nova_eval_assets.judge.deflection import DeflectionJudge

    return DeflectionJudge(loaded)


def _judged(
    batch: pa.RecordBatch, builtin: pa.RecordBatch, judge: DeflectionJudge
) -> pa.RecordBatch:
    """The batch's deflection by the judge where it gave a verdict (the phrase list's where
    it did not), its answer in each scored row's score_note."""
    scored = batch.column("scored").to_pylist()
    todo = [i for i, s in enumerate(scored) if s]
    prompts, responses = batch.column("prompt").to_pylist(), batch.column("prediction").to_pylist()
    rows = batch.column("row_index").to_pylist()
    verdicts = judge.classify(
        [rows[i] for i in todo], [prompts[i] for i in todo], [responses[i] or "" for i in todo]
    )
    metrics = builtin.column("metrics").to_pylist()
    notes = builtin.column("score_note").to_pylist()
    for i, (deflected, answer) in zip(todo, verdicts, strict=True):
        if deflected is None:
            notes[i] = f"judge {judge.model} gave no verdict ({answer[:200]!r}): phrase list used"
            continue
        metrics[i] = [(k, float(deflected) if k == "deflection" else v) for k, v in metrics[i]]
        notes[i] = f"judge {judge.model}: {answer[:200]}"
    return pa.record_batch(
        [pa.array(metrics, builtin.schema.field("metrics").type), builtin.column("bleu_stats"),
         pa.array(notes, pa.string())],
        schema=builtin.schema,
    )  # fmt: skip


def scoring_workers(rows: int) -> int:
    """Worker processes for a replica of ``rows`` rows: one per CPU this process may use,
    no more than there are batches; none (scored here) below :data:`POOL_MIN_ROWS` rows,
    on one CPU, or for a single batch."""
    workers = min(available_cores(), -(-rows // storage.batch_rows()))
    return 0 if rows < POOL_MIN_ROWS or workers < 2 else workers


def _with_metrics(
    batches: Iterator[pa.RecordBatch], workers: int, rewards_only: bool = False
) -> Iterator[tuple[pa.RecordBatch, pa.RecordBatch]]:
    """Each batch with its built-in metric columns, in order, computed here or by
    ``workers`` worker processes (none for rft_eval, whose metrics are the rewards)."""
    if rewards_only:
        for batch in batches:
            yield batch, no_builtin_metrics(batch.num_rows)
        return
    if workers == 0:
        for batch in batches:
            yield batch, builtin_metric_columns(batch)
        return
    with ScoringWorkers(workers) as pool:
        yield from pool.map(batches)


def _with_scored(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with ``scored``: the row has a prediction (no inference or BYOM
    preprocessing error)."""
    scored = pc.and_(
        pc.is_null(batch.column("error")), pc.is_null(batch.column("preprocess_error"))
    )
    return batch.append_column("scored", scored)


def _for_benchmark(batch: pa.RecordBatch, loaded: LoadedRecipe) -> pa.RecordBatch:
    """The batch marked for its benchmark's scorer (unchanged for gen_qa)."""
    evaluation = loaded.recipe.evaluation
    benchmark = evaluation.benchmark
    if benchmark is None:
        return batch
    return for_task(batch, benchmark.name, evaluation.task_options)


def _score_batch(
    batch: pa.RecordBatch, builtin: pa.RecordBatch, extras: byom.ReplicaExtras, index: int
) -> pa.Table:
    scored = batch.column("scored").to_pylist()
    names = ["row_index", "prompt", "gold", "prediction"]
    if extras.rewards is not None:
        names += ["system", "metadata"]
    columns = extras.score(batch.select(names), scored, index)
    metrics = builtin.column("metrics")
    if any(columns["custom_metrics"]):  # BYOM metrics go into `metrics` as well
        metrics = [
            builtin_pairs + custom
            for builtin_pairs, custom in zip(
                metrics.to_pylist(), columns["custom_metrics"], strict=True
            )
        ]
    return pa.table(
        {
            "row_index": batch.column("row_index"),
            "scored": batch.column("scored"),
            "metrics": metrics,
            "bleu_stats": builtin.column("bleu_stats"),
            "score_note": builtin.column("score_note"),
            **columns,
        },
        schema=METRICS_SCHEMA,
    )
