"""Per-example values gathered from record batches for the aggregates.

An aggregate over a streamed table must see the float64 arrays it would see over the whole
table at once (same values, same order), so that its numpy reductions give the same bits:
:class:`MetricValues` keeps each metric's values of the rows that have it, in row order,
as one float64 array per batch (8 bytes per row and metric, never a Python object per
row), and :class:`StatsRows` the per-example BLEU sufficient statistics as a (rows, 10)
matrix.
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


class MetricValues:
    """Each metric's values, in row order, over the batches added."""

    def __init__(self) -> None:
        self._chunks: dict[str, list[np.ndarray]] = {}

    def add(self, maps: pa.Array, skip: Container[str] = ()) -> None:
        """Add the entries of one batch's map column, but those named in ``skip``."""
        keys, values = map_entries(maps)
        codes = keys.indices.to_numpy(zero_copy_only=False)
        for code, name in enumerate(keys.dictionary.to_pylist()):
            if name not in skip:
                self._chunks.setdefault(name, []).append(values[codes == code])

    def names(self) -> list[str]:
        """Every metric seen, in first-seen order."""
        return list(self._chunks)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(chunks) for name, chunks in self._chunks.items()}


class StatsRows:
    """The per-example BLEU sufficient statistics of the batches added, as (rows, 10)."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []

    def add(self, stats: pa.Array) -> None:
        values = pc.list_flatten(stats).to_numpy(zero_copy_only=False)
        # a copy, so the chunk does not keep the batch's Arrow buffers alive
        self._chunks.append(values.astype(np.float64).reshape(-1, N_BLEU_STATS))

    def matrix(self) -> np.ndarray:
        """The rows as one array, joined once: later calls return the same array."""
        if not self._chunks:
            return np.zeros((0, N_BLEU_STATS))
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0]
