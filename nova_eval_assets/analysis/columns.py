"""Reading the typed examples table column-wise, in record batches.

The examples table is ``<run>/eval_results/examples.parquet`` (or the same columns as an
Arrow table): the inference columns plus ``scored``, ``metrics`` (map of metric name to
value, built-in and custom) and ``bleu_stats``. From a Parquet file only the leaves the
analysis needs are decoded: of ``token_logprobs`` the token text and log probability of
each generated token and the log probabilities of its top alternatives, never their
texts (the largest column of the file).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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
    yield from storage.prefetched(storage.iter_parquet_batches(source, leaves, batch_size))


def row_count(source: str | pa.Table) -> int:
    """Rows of a table or Parquet file (from its footer)."""
    return source.num_rows if isinstance(source, pa.Table) else storage.parquet_rows(source)


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


class FilledColumns:
    """Whole columns of up to ``capacity`` rows, filled batch by batch: a numpy column is
    written into one array of ``capacity`` rows as its batches come, an Arrow column's
    batches are joined once at the end. Not a list of per-batch parts and then their
    concatenation: the two held the columns twice (at a million rows some 300 MB in the
    analysis), and the parts' freed heap stayed resident after. Values and dtypes are
    those of concatenating the parts (a dtype that widens in a later batch widens the
    column, as np.concatenate would)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._arrays: dict[str, np.ndarray] = {}
        self._arrow: dict[str, list[pa.Array]] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._arrays or name in self._arrow

    def numpy_names(self) -> list[str]:
        """The numpy columns, in the order they were first put."""
        return list(self._arrays)

    def put(self, name: str, start: int, values: Any, missing: float | None = None) -> None:
        """``values`` as rows ``start:start + len(values)`` of column ``name``. A numpy
        column is made at its first batch, its other rows ``missing`` (None: left unset, for
        a column every batch writes)."""
        if not isinstance(values, np.ndarray):
            part = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
            self._arrow.setdefault(name, []).append(part)
            return
        if start + len(values) > self.capacity:
            raise ValueError(f"rows {start}..{start + len(values)} past {self.capacity}")
        column = self._arrays.get(name)
        if column is None:
            shape = (self.capacity, *values.shape[1:])
            column = np.empty(shape, values.dtype) if missing is None else np.full(shape, missing)
            self._arrays[name] = column
        elif np.result_type(column.dtype, values.dtype) != column.dtype:
            column = column.astype(np.result_type(column.dtype, values.dtype))
            self._arrays[name] = column
        column[start : start + len(values)] = values

    def get(self, name: str, rows: int | None = None) -> Any:
        """Column ``name``: a numpy column's first ``rows`` rows (default: all), a view; an
        Arrow column's batches joined, once: its batches are let go of then, so that only
        one column's are held beside their join."""
        if name in self._arrays:
            column = self._arrays[name]
            return column if rows is None or rows == len(column) else column[:rows]
        parts = self._arrow.pop(name)
        return parts[0] if len(parts) == 1 else pa.concat_arrays(parts)
