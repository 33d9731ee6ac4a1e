"""Worker processes for the built-in metrics: answers come back in order whatever the
batch sizes, match the metric functions row for row, and a worker that dies is an error
that says so, not a hang or a short file."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from nova_eval_assets.metrics import bleu_sufficient_stats, example_metrics
from nova_eval_assets.metrics.batch_scoring import ScoringWorkers


def _batch(rng: random.Random, rows: int, start: int) -> pa.RecordBatch:
    words = ["cat", "sat", "on", "the", "mat", "3", "dog", "Ran", "-", "."]
    golds = [
        f"{start + i} " + " ".join(rng.choices(words, k=rng.randint(0, 8))) for i in range(rows)
    ]
    preds = [" ".join(rng.choices(words, k=rng.randint(0, 8))) for _ in range(rows)]
    scored = [rng.random() < 0.8 for _ in range(rows)]
    return pa.record_batch(
        [pa.array(golds, pa.string()), pa.array(preds, pa.string()), pa.array(scored, pa.bool_())],
        names=["gold", "prediction", "scored"],
    )


def test_workers_answer_every_batch_in_order_with_each_rows_metrics() -> None:
    rng = random.Random(7)
    sizes = [5, 0, 17, 1, 9, 30, 2, 11]
    batches, start = [], 0
    for size in sizes:
        batches.append(_batch(rng, size, start))
        start += size
    with ScoringWorkers(3) as workers:
        answered = list(workers.map(iter(batches)))
    assert [batch for batch, _ in answered] == batches
    for batch, columns in answered:
        assert columns.num_rows == batch.num_rows
        for row, metrics, stats in zip(
            batch.to_pylist(),
            columns.column("metrics").to_pylist(),
            columns.column("bleu_stats").to_pylist(),
            strict=True,
        ):
            if row["scored"]:
                assert dict(metrics) == example_metrics(row["gold"], row["prediction"])
                assert stats == bleu_sufficient_stats(row["gold"], row["prediction"])
            else:
                assert metrics == [] and stats is None


def test_a_worker_that_dies_is_an_error_naming_it() -> None:
    rng = random.Random(8)
    batches = [_batch(rng, 10, 10 * i) for i in range(6)]
    with (
        pytest.raises(RuntimeError, match="scoring worker process ended"),
        ScoringWorkers(2) as workers,
    ):
        workers.workers[1].process.kill()
        workers.workers[1].process.wait()
        list(workers.map(iter(batches)))
