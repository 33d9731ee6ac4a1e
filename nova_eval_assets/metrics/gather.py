"""Per-example values gathered from record batches for the aggregates.

An aggregate over a streamed table must see the float64 arrays it would see over the whole
table at once (same values, same order), so that its numpy reductions give the same bits:
:class:`MetricValues` keeps each metric's values of the rows that have it, in row order
(8 bytes per row and metric, never a Python object per row), and :class:`StatsRows` the
per-example BLEU sufficient statistics as a (rows, 10) matrix (80 bytes per row).

Given a ``capacity`` (at most that many rows will be added), both write the batches into
arrays of that many rows, and the whole column is a view of their first rows: no
per-batch chunks beside their concatenation, which held the values twice (at a million
rows some 200 MB more in the report stage) and left the chunks' freed heap resident. Rows
never written are never touched, so cost no memory. Without one, or past it, they keep
chunks and join them once.
"""

from __future__ import annotations

from collections.abc import Container

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .gen_qa import N_BLEU_STATS

_MAP_ENTRIES = pa.list_(pa.struct([("key", pa.string()), ("value", pa.float64())]))


def map_entries(maps: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """The keys (dictionary-encoded, dictionary in first-seen order) and float64 values of
    every entry of a map<string, double> column, in row order; a null value is NaN."""
    flat = pc.list_flatten(maps.cast(_MAP_ENTRIES))
    keys = pc.dictionary_encode(pc.struct_field(flat, "key"))
    values = pc.struct_field(flat, "value").to_numpy(zero_copy_only=False)
    return keys, values


class _Rows:
    """Rows of float64 (each of shape ``shape``) added batch by batch: written into one
    array of ``capacity`` rows (see the module's docstring), else kept as chunks;
    :meth:`array` gives them all as one array."""

    def __init__(self, capacity: int | None, shape: tuple[int, ...] = ()) -> None:
        self._filled = np.empty((capacity, *shape)) if capacity else None
        self._rows = 0
        self._chunks: list[np.ndarray] = []  # without a capacity, or past it
        self._shape = shape

    def add(self, values: np.ndarray) -> None:
        end = self._rows + len(values)
        if self._filled is not None and end <= len(self._filled):
            self._filled[self._rows : end] = values
            self._rows = end
            return
        if self._filled is not None:  # past the capacity: chunks from here on
            self._chunks.append(self._filled[: self._rows].copy())
            self._filled, self._rows = None, 0
        # a copy (unless one already), so the chunk keeps no batch's buffers alive
        self._chunks.append(values if values.flags.owndata else values.copy())

    def array(self) -> np.ndarray:
        """Every row added, as one array, not copied: chunks are joined once (later calls
        give the same rows)."""
        if self._filled is not None:
            return self._filled[: self._rows]
        if not self._chunks:
            return np.zeros((0, *self._shape))
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0]


class MetricValues:
    """Each metric's values, in row order, over the batches added; ``capacity``: at most
    this many rows are added (see the module's docstring)."""

    def __init__(self, capacity: int | None = None) -> None:
        self._capacity = capacity
        self._values: dict[str, _Rows] = {}

    def add(self, maps: pa.Array, skip: Container[str] = ()) -> None:
        """Add the entries of one batch's map column, but those named in ``skip``."""
        keys, values = map_entries(maps)
        codes = keys.indices.to_numpy(zero_copy_only=False)
        for code, name in enumerate(keys.dictionary.to_pylist()):
            if name not in skip:
                rows = self._values.get(name)
                if rows is None:
                    rows = self._values[name] = _Rows(self._capacity)
                rows.add(values[codes == code])

    def names(self) -> list[str]:
        """Every metric seen, in first-seen order."""
        return list(self._values)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: rows.array() for name, rows in self._values.items()}


class StatsRows:
    """The per-example BLEU sufficient statistics of the batches added, as (rows, 10);
    ``capacity``: at most this many rows are added (see the module's docstring)."""

    def __init__(self, capacity: int | None = None) -> None:
        self._rows = _Rows(capacity, (N_BLEU_STATS,))

    def add(self, stats: pa.Array) -> None:
        values = pc.list_flatten(stats).to_numpy(zero_copy_only=False)
        self._rows.add(values.astype(np.float64, copy=False).reshape(-1, N_BLEU_STATS))

    def matrix(self) -> np.ndarray:
        """The rows as one array, not copied: later calls give the same rows."""
        return self._rows.array()
