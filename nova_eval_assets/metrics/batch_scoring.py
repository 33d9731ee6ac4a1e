"""The built-in per-example metrics of record batches, as Arrow columns, here or in worker
processes.

- :func:`builtin_metric_columns`: one batch (``gold``, ``prediction``, ``scored``) to its
  ``metrics`` and ``bleu_stats`` columns.
- :class:`ScoringWorkers`: the same in ``n`` worker processes, batches in, columns out, in
  order. Each worker is ``python -m nova_eval_assets.metrics.batch_scoring``, a fresh
  interpreter that imports only the metrics and talks Arrow IPC over its stdin and stdout:
  no fork of a process running threads (Dagster's), and no re-import of the caller's main
  module as multiprocessing's spawn would do.
"""

from __future__ import annotations

import subprocess
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from typing import IO

import pyarrow as pa

from nova_eval_assets.metrics.gen_qa import bleu_sufficient_stats, example_metrics

METRICS_TYPE = pa.map_(pa.string(), pa.float64())
BLEU_STATS_TYPE = pa.list_(pa.float64())
INPUT_SCHEMA = pa.schema(
    [("gold", pa.string()), ("prediction", pa.string()), ("scored", pa.bool_())]
)
OUTPUT_SCHEMA = pa.schema([("metrics", METRICS_TYPE), ("bleu_stats", BLEU_STATS_TYPE)])


def builtin_metric_columns(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``metrics`` (name -> value) and ``bleu_stats`` of each row of ``batch``, whose
    columns are ``gold``, ``prediction`` and ``scored``; an unscored row gets an empty map
    and null statistics."""
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
        [pa.array(metrics, METRICS_TYPE), pa.array(stats, BLEU_STATS_TYPE)],
        schema=OUTPUT_SCHEMA,
    )


class _Worker:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.sink: IO[bytes] = self.process.stdin
        self.writer = pa.ipc.new_stream(self.sink, INPUT_SCHEMA)
        self.source: IO[bytes] = self.process.stdout
        self.reader: pa.ipc.RecordBatchStreamReader | None = None

    def send(self, batch: pa.RecordBatch) -> None:
        try:
            self.writer.write_batch(batch)
            self.sink.flush()
        except OSError as exc:  # a broken pipe: the worker is gone
            raise self._ended() from exc

    def receive(self) -> pa.RecordBatch:
        try:
            if self.reader is None:
                self.reader = pa.ipc.open_stream(self.source)
            return self.reader.read_next_batch()
        except (StopIteration, OSError, pa.ArrowInvalid) as exc:
            raise self._ended() from exc

    def _ended(self) -> RuntimeError:
        code = self.process.wait()
        return RuntimeError(f"a scoring worker process ended (exit status {code})")

    def close(self) -> None:
        try:
            self.writer.close()
            self.sink.close()
        except (OSError, pa.ArrowException):
            pass  # the worker is gone already
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class ScoringWorkers:
    """``n`` worker processes computing :func:`builtin_metric_columns`; a context manager
    that ends them on leaving."""

    def __init__(self, n: int):
        self.workers = [_Worker() for _ in range(n)]

    def __enter__(self) -> ScoringWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self.workers:
            if exc[0] is not None:
                worker.process.kill()
            worker.close()

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
                yield pending.popleft(), worker.receive()
            worker.send(batch.select(INPUT_SCHEMA.names))
            pending.append(batch)
            sent += 1
        for k in range(sent - len(pending), sent):
            yield pending.popleft(), self.workers[k % n].receive()


def _serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The worker's loop: batches from stdin, their columns to stdout, until stdin ends."""
    writer = pa.ipc.new_stream(stdout, OUTPUT_SCHEMA)
    for batch in pa.ipc.open_stream(stdin):
        writer.write_batch(builtin_metric_columns(batch))
        stdout.flush()
    writer.close()


if __name__ == "__main__":
    _serve(sys.stdin.buffer, sys.stdout.buffer)
