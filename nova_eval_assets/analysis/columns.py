"""Reading the typed examples table column-wise, in record batches.

The examples table is ``<run>/eval_results/examples.parquet`` (or the same columns as an
Arrow table): the inference columns plus ``scored``, ``metrics`` (map of metric name to
value, built-in and custom) and ``bleu_stats``. From a Parquet file only the leaves the
analysis needs are decoded: of ``token_logprobs`` the token text and log probability of
each generated token and the log probabilities of its top alternatives, never their
texts (the largest column of the file).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import suppress
from queue import Empty, Queue
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nova_eval_assets import storage

TOKEN_LEAVES = [
    "token_logprobs.list.element.token",
    "token_logprobs.list.element.logprob",
    "token_logprobs.list.element.top.list.element.logprob",
    # inference.response_format: label_confidence and forced_tokens (absent in older files)
    "token_logprobs.list.element.constrained_logprob",
    "token_logprobs.list.element.forced",
]
_METRIC_ENTRY = pa.list_(pa.struct([("key", pa.string()), ("value", pa.float64())]))
T = TypeVar("T")


def iter_batches(
    source: str | pa.Table, columns: list[str], batch_size: int | None = None
) -> Iterator[pa.RecordBatch]:
    """Batches of ``columns`` (``token_logprobs`` read as its needed leaves) of a table or
    Parquet file, of ``batch_size`` rows (default :func:`storage.batch_rows`); columns the
    source lacks are left out."""
    if batch_size is None:
        batch_size = storage.batch_rows()
    if isinstance(source, pa.Table):
        present = [c for c in columns if c in source.column_names]
        yield from source.select(present).to_batches(max_chunksize=batch_size)
        return
    names = set(storage.parquet_schema(source).names)
    leaves: list[str] = []
    for column in columns:
        if column not in names:
            continue
        leaves.extend(TOKEN_LEAVES if column == "token_logprobs" else [column])
    yield from prefetched(storage.iter_parquet_batches(source, leaves, batch_size))


def prefetched(batches: Iterator[T], ahead: int = 1) -> Iterator[T]:
    """The same batches, the next ones decoded (and whatever else ``batches`` does to
    them) in a background thread while the caller works on the current one (Parquet
    decoding releases the GIL)."""
    queue: Queue[Any] = Queue(maxsize=ahead)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                if stop.is_set():
                    return
                queue.put(batch)
            queue.put(done)
        except BaseException as exc:  # handed to the consumer
            queue.put(exc)

    worker = threading.Thread(target=produce, name="parquet-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = queue.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            with suppress(Empty):
                queue.get(timeout=0.05)
        worker.join()


def numbers(array: pa.Array, fill: float = np.nan) -> np.ndarray:
    return pc.fill_null(array.cast(pa.float64()), fill).to_numpy(zero_copy_only=False)


def flags(array: pa.Array) -> np.ndarray:
    return pc.fill_null(array.cast(pa.bool_()), False).to_numpy(zero_copy_only=False)


def metric_columns(metrics: pa.Array) -> dict[str, np.ndarray]:
    """``{name: values}`` from a map<string, double> column, NaN where a row lacks it."""
    n = len(metrics)
    entries = metrics.cast(_METRIC_ENTRY)
    flat = pc.list_flatten(entries)
    if len(flat) == 0:
        return {}
    parents = pc.list_parent_indices(entries).to_numpy(zero_copy_only=False)
    keys = pc.dictionary_encode(pc.struct_field(flat, "key"))
    values = numbers(pc.struct_field(flat, "value"))
    codes = keys.indices.to_numpy(zero_copy_only=False)
    out: dict[str, np.ndarray] = {}
    for code, name in enumerate(keys.dictionary.to_pylist()):
        pick = codes == code
        column = np.full(n, np.nan)
        column[parents[pick]] = values[pick]
        out[name] = column
    return out


def stats_matrix(bleu_stats: pa.Array, width: int = 10) -> np.ndarray:
    """The per-example BLEU statistics as (n, width), NaN rows where missing."""
    n = len(bleu_stats)
    lengths = pc.fill_null(pc.list_value_length(bleu_stats), 0).to_numpy(zero_copy_only=False)
    out = np.full((n, width), np.nan)
    values = numbers(pc.list_flatten(bleu_stats))
    whole = lengths == width
    if whole.all() or (lengths[~whole] == 0).all():
        out[whole] = values.reshape(-1, width)
        return out
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    for row in np.flatnonzero(whole):
        out[row] = values[starts[row] : starts[row] + width]
    return out


def merge_metric_batches(
    parts: list[dict[str, np.ndarray]], sizes: list[int]
) -> dict[str, np.ndarray]:
    """Concatenate per-batch metric dicts whose keys may differ (NaN where absent)."""
    names: dict[str, None] = {}
    for part in parts:
        names.update(dict.fromkeys(part))
    return {
        name: np.concatenate(
            [part.get(name, np.full(size, np.nan)) for part, size in zip(parts, sizes, strict=True)]
        )
        if parts
        else np.zeros(0)
        for name in names
    }
