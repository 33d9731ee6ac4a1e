"""The built-in per-example metrics of record batches, as Arrow columns, here or in worker
processes.

- :func:`builtin_metric_columns`: one batch (``gold``, ``prediction``, ``scored``) to its
  ``metrics`` and ``bleu_stats`` columns: gen_qa's metrics, or those of the benchmark task
  the batch's schema names (:func:`for_task`; a benchmark's rows have no BLEU statistics).
- :class:`ScoringWorkers`: the same in ``n`` worker processes, batches in, columns out, in
  order. Each worker is ``python -m nova_eval_assets.metrics.batch_scoring``, a fresh
  interpreter that imports only the metrics (:mod:`nova_eval_assets.worker_process`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

import pyarrow as pa

from nova_eval_assets.metrics.gen_qa import bleu_sufficient_stats, example_metrics
from nova_eval_assets.tasks.base import RowScore, ScoreInput, TaskOptions
from nova_eval_assets.tasks.registry import benchmark_task
from nova_eval_assets.worker_process import (
    WorkerProcess,
    arrow_batch,
    arrow_payload,
    serve_channel,
)

METRICS_TYPE = pa.map_(pa.string(), pa.float64())
BLEU_STATS_TYPE = pa.list_(pa.float64())
INPUT_SCHEMA = pa.schema(
    [("gold", pa.string()), ("prediction", pa.string()), ("scored", pa.bool_())]
)
OUTPUT_SCHEMA = pa.schema(
    [("metrics", METRICS_TYPE), ("bleu_stats", BLEU_STATS_TYPE), ("score_note", pa.string())]
)


#: schema metadata of a batch scored by a benchmark task: its name, and "nova" for compat
TASK_KEY, COMPAT_KEY = b"nova_eval.task", b"nova_eval.compat"
#: the generated tokens' log probabilities (inference output's), where captured
TOKENS_COLUMN = "token_logprobs"
RECORD_COLUMN = "inspect_record"  # evaluation.task inspect: the scores Inspect gave


def for_task(batch: pa.RecordBatch, task: str, options: TaskOptions) -> pa.RecordBatch:
    """``batch`` marked to be scored by the benchmark ``task`` (here or in a worker)."""
    compat = b"nova" if options.compat_nova else b""
    return batch.replace_schema_metadata({TASK_KEY: task.encode(), COMPAT_KEY: compat})


def no_builtin_metrics(rows: int) -> pa.RecordBatch:
    """Empty metric columns for ``rows`` rows (rft_eval: the reward function scores them)."""
    return pa.record_batch(
        [
            pa.array([[]] * rows, METRICS_TYPE),
            pa.nulls(rows, BLEU_STATS_TYPE),
            pa.nulls(rows, pa.string()),
        ],
        schema=OUTPUT_SCHEMA,
    )


def builtin_metric_columns(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``metrics`` (name -> value) and ``bleu_stats`` of each row of ``batch``, whose
    columns are ``gold``, ``prediction`` and ``scored``; an unscored row gets an empty map
    and null statistics."""
    marked = batch.schema.metadata or {}
    if marked.get(TASK_KEY):
        return _task_metric_columns(batch, marked[TASK_KEY].decode(), marked.get(COMPAT_KEY))
    metrics: list[list[tuple[str, float]]] = []
    stats: list[list[float] | None] = []
    for gold, pred, scored in zip(
        batch.column("gold").to_pylist(),
        batch.column("prediction").to_pylist(),
        batch.column("scored").to_pylist(),
        strict=True,
    ):
        if scored:
            metrics.append(list(example_metrics(gold, pred).items()))
            stats.append(bleu_sufficient_stats(gold, pred))
        else:
            metrics.append([])
            stats.append(None)
    return pa.record_batch(
        [
            pa.array(metrics, METRICS_TYPE),
            pa.array(stats, BLEU_STATS_TYPE),
            pa.nulls(batch.num_rows, pa.string()),
        ],
        schema=OUTPUT_SCHEMA,
    )


def _task_metric_columns(batch: pa.RecordBatch, name: str, compat: bytes | None) -> pa.RecordBatch:
    task = benchmark_task(name)
    if task is None:
        raise ValueError(f"no benchmark task named {name!r}")
    scored = batch.column("scored").to_pylist()
    tokens = (
        batch.column(TOKENS_COLUMN).to_pylist()
        if TOKENS_COLUMN in batch.schema.names
        else [None] * batch.num_rows
    )
    records = (
        batch.column(RECORD_COLUMN).to_pylist()
        if RECORD_COLUMN in batch.schema.names
        else [None] * batch.num_rows
    )
    inputs = [
        ScoreInput(
            output=prediction or "",
            target=gold,
            tokens=None if not generated else [_token_top(token) for token in generated],
            record=record,
        )
        for prediction, gold, generated, record, ok in zip(
            batch.column("prediction").to_pylist(),
            batch.column("gold").to_pylist(),
            tokens,
            records,
            scored,
            strict=True,
        )
        if ok
    ]
    values = iter(task.score(inputs, TaskOptions(compat_nova=compat == b"nova")))
    metrics: list[list[tuple[str, float]]] = []
    notes: list[str | None] = []
    for ok in scored:
        row = next(values) if ok else RowScore({})
        row = row if isinstance(row, RowScore) else RowScore(row)
        metrics.append(list(row.metrics.items()))
        notes.append(row.note)
    return pa.record_batch(
        [
            pa.array(metrics, METRICS_TYPE),
            pa.nulls(batch.num_rows, BLEU_STATS_TYPE),
            pa.array(notes, pa.string()),
        ],
        schema=OUTPUT_SCHEMA,
    )


def _token_top(token: dict) -> tuple[str, list[tuple[str, float]]]:
    return token["token"], [(t["token"], t["logprob"]) for t in token.get("top") or ()]


class ScoringWorkers:
    """``n`` worker processes computing :func:`builtin_metric_columns`; a context manager
    that ends them on leaving."""

    def __init__(self, n: int):
        self.workers = [WorkerProcess(__name__, "scoring") for _ in range(n)]

    def __enter__(self) -> ScoringWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self.workers:
            worker.close(kill=exc[0] is not None)

    def map(
        self, batches: Iterable[pa.RecordBatch]
    ) -> Iterator[tuple[pa.RecordBatch, pa.RecordBatch]]:
        """Each batch with its metric columns, in order. Batches go to the workers in turn,
        one at a time each: a worker's previous answer is read before it gets the next batch,
        so no pipe ever fills both ways, and at most ``n`` batches are out at once."""
        pending: deque[pa.RecordBatch] = deque()
        n, sent = len(self.workers), 0
        for batch in batches:
            worker = self.workers[sent % n]
            if len(pending) == n:  # this worker holds the oldest batch out
                yield pending.popleft(), arrow_batch(worker.receive().payload)
            worker.send("B", payload=arrow_payload(_scorer_input(batch)))
            pending.append(batch)
            sent += 1
        for k in range(sent - len(pending), sent):
            yield pending.popleft(), arrow_batch(self.workers[k % n].receive().payload)


def _scorer_input(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The columns a scorer reads, with the batch's task mark."""
    extra = [name for name in (TOKENS_COLUMN, RECORD_COLUMN) if name in batch.schema.names]
    names = [*INPUT_SCHEMA.names, *extra]
    return batch.select(names).replace_schema_metadata(batch.schema.metadata)


def _serve() -> None:
    """The worker's loop: batches in, their columns out, until the parent closes stdin."""
    messages, send = serve_channel()
    for message in messages:
        batch = arrow_batch(message.payload)
        send("R", payload=arrow_payload(builtin_metric_columns(batch)))


if __name__ == "__main__":
    _serve()
