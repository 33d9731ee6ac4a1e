"""Every metric broken down by every metadata field found in the data.

Metadata is the per-example ``metadata`` string, usually a JSON object such as
``{"difficulty": "easy", "priority": "high"}``. Each key found in any row is a field; its
values (strings as they are, other JSON values as JSON text) are the strata. Rows without
the key (or with a null value) fall in the stratum ``(missing)``, which is reported like
any other. A metadata string that is not a JSON object is a value of the field
``metadata`` itself. Each distinct metadata string is parsed once (many distinct ones,
say with an id, by Arrow's JSON reader when that gives the same values).

When any row has images, ``image_count`` (the row's number of images, from the examples
table's column, not from metadata) is a field too, its values the counts as text
(:func:`image_count_field`); a metadata field of the same name takes precedence.

A field with more than ``max_values`` distinct values (an id, a free-text note) is not
stratified; a note says so. Strata smaller than ``min_size`` are reported with
``small: true`` rather than dropped.

Per stratum and metric: ``n`` (rows where the metric is defined, i.e. not NaN), the mean
and its standard error (sample std, ddof=1, / sqrt(n); 0.0 for n == 1, null for n == 0),
the same definitions as the aggregated report. A corpus metric (``bleu``) is computed
from the stratum's summed sufficient statistics, with a bootstrap standard error
(:mod:`resampling`). The first rows of the result are the whole evaluation
(field ``(all)``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from nova_eval_assets.analysis.resampling import bootstrap
from nova_eval_assets.metrics.stats import bleu_from_stats_batch

MISSING = "(missing)"
ALL = "(all)"


@dataclass(frozen=True)
class StratumField:
    name: str
    codes: np.ndarray  # int64 per row: index into ``values``
    values: list[str]


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _python_fields(uniques: pa.Array) -> dict[str, pa.Array]:
    per_unique: list[dict[str, str]] = []
    names: dict[str, None] = {}
    for text in uniques.to_pylist():
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        entries = (
            {k: v if type(v) is str else _value_text(v) for k, v in obj.items() if v is not None}
            if isinstance(obj, dict)
            else {"metadata": text}
        )
        per_unique.append(entries)
        names.update(dict.fromkeys(entries))
    return {name: pa.array([e.get(name) for e in per_unique], pa.string()) for name in names}


def _arrow_fields(uniques: pa.Array) -> dict[str, pa.Array] | None:
    """Fast path for many distinct metadata strings: Arrow's JSON reader, when every one
    is a plain JSON object whose values are strings, integers or booleans (their JSON
    text is then what Arrow's cast to string gives); None sends all to Python."""
    trimmed = pc.utf8_trim_whitespace(uniques)
    plain = pc.and_(
        pc.and_(pc.starts_with(trimmed, "{"), pc.ends_with(trimmed, "}")),
        pc.invert(pc.match_substring_regex(uniques, r"[\x00-\x1f]|\\u")),
    )
    if not pc.all(pc.fill_null(plain, False)).as_py():
        return None
    offsets = pa.array([0, len(uniques)], pa.int32())
    data = pc.binary_join(pa.ListArray.from_arrays(offsets, uniques), "\n")[0].as_buffer()
    try:
        table = pj.read_json(
            pa.BufferReader(data),
            read_options=pj.ReadOptions(block_size=max(1 << 20, data.size + 1)),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(uniques):
        return None
    out = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        kind = column.type
        if pa.types.is_string(kind):
            out[name] = column.combine_chunks()
        elif pa.types.is_integer(kind) or pa.types.is_boolean(kind):
            out[name] = pc.cast(column, pa.string()).combine_chunks()
        else:
            return None
    return out


def metadata_fields(
    metadata: pa.Array | pa.ChunkedArray, max_values: int = 50
) -> tuple[list[StratumField], list[str]]:
    """The metadata fields worth stratifying by, and notes on the ones that are not."""
    if isinstance(metadata, pa.ChunkedArray):
        metadata = metadata.combine_chunks()
    encoded = metadata if pa.types.is_dictionary(metadata.type) else pc.dictionary_encode(metadata)
    uniques = encoded.dictionary
    valid = encoded.indices.is_valid().to_numpy(zero_copy_only=False)
    index = encoded.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    used = np.unique(index[valid])
    if len(used) < len(uniques):  # a dictionary array's rows need not use all its values
        uniques, index = uniques.take(pa.array(used)), np.searchsorted(used, index)
    columns = _arrow_fields(uniques) if len(uniques) >= 1000 else None
    if columns is None:
        columns = _python_fields(uniques)
    fields, notes = [], []
    for name, column in columns.items():
        encoded_values = column.dictionary_encode()
        distinct = len(encoded_values.dictionary)
        if distinct > max_values:
            notes.append(
                f"metadata field '{name}' has {distinct} distinct values; not stratified "
                f"(analysis.max_strata_per_field: {max_values})"
            )
            continue
        unique_codes = encoded_values.indices.fill_null(-1).to_numpy(zero_copy_only=False)
        codes = np.where(valid, unique_codes.astype(np.int64)[index], -1)
        labels = encoded_values.dictionary.to_pylist()
        if (codes < 0).any():
            codes = np.where(codes < 0, len(labels), codes)
            labels.append(MISSING)
        fields.append(StratumField(name, codes, labels))
    return fields, notes


def image_count_field(counts: np.ndarray | None, max_values: int = 50) -> StratumField | None:
    """The rows' image counts as a stratum field; None when no row has an image (a text
    dataset) or there are more than ``max_values`` distinct counts."""
    if counts is None or len(counts) == 0 or not np.any(counts > 0):
        return None
    distinct, codes = np.unique(np.asarray(counts, dtype=np.int64), return_inverse=True)
    if len(distinct) > max_values:
        return None
    return StratumField("image_count", codes.astype(np.int64), [str(v) for v in distinct])


def _grouped(codes: np.ndarray, values: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """n, mean and stderr per code, over the finite values."""
    keep = np.isfinite(values)
    c, v = codes[keep], values[keep]
    n = np.bincount(c, minlength=k)
    total = np.bincount(c, weights=v, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / n
        squares = np.bincount(c, weights=(v - mean[c]) ** 2, minlength=k)
        stderr = np.sqrt(squares / (n - 1)) / np.sqrt(n)
    stderr = np.where(n == 1, 0.0, stderr)
    return n, mean, stderr


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def stratify(
    metrics: Mapping[str, np.ndarray],
    fields: list[StratumField],
    min_size: int = 30,
    corpus_stats: Mapping[str, np.ndarray] | None = None,
    rounds: int = 1000,
    seed: int = 1234,
) -> list[dict[str, Any]]:
    """Rows ``{field, value, metric, n, mean, stderr, small}``: the whole evaluation first
    (field ``(all)``), then every field's strata in order of first appearance.

    ``metrics`` maps a name to per-row values (NaN where undefined); ``corpus_stats`` maps
    a corpus metric (``bleu``) to per-row sufficient statistics (n x 10; NaN rows are left
    out)."""
    columns = [*metrics.values(), *(corpus_stats or {}).values()]
    n_rows = len(columns[0]) if columns else 0
    everything = StratumField(ALL, np.zeros(n_rows, dtype=np.int64), [ALL])
    rows: list[dict[str, Any]] = []
    for field in [everything, *fields]:
        k = len(field.values)
        for name, values in metrics.items():
            n, mean, stderr = _grouped(field.codes, np.asarray(values, dtype=np.float64), k)
            for i, value in enumerate(field.values):
                rows.append(
                    {
                        "field": field.name,
                        "value": value,
                        "metric": name,
                        "n": int(n[i]),
                        "mean": _number(mean[i]) if n[i] else None,
                        "stderr": _number(stderr[i]) if n[i] else None,
                        "small": bool(n[i] < min_size),
                    }
                )
        for name, stats in (corpus_stats or {}).items():
            stats = np.asarray(stats, dtype=np.float64)
            usable = np.isfinite(stats).all(axis=1)
            for i, value in enumerate(field.values):
                members = usable & (field.codes == i)
                # every row (the whole of a fully scored run): the statistics themselves, not
                # a copy of 80 bytes a row; same rows, same layout, so the same sums
                part = stats if stats.flags.c_contiguous and members.all() else stats[members]
                result = bootstrap(part, bleu_from_stats_batch, rounds, seed)
                rows.append(
                    {
                        "field": field.name,
                        "value": value,
                        "metric": name,
                        "n": int(part.shape[0]),
                        "mean": _number(result.estimate) if part.shape[0] else None,
                        "stderr": _number(result.stderr) if part.shape[0] else None,
                        "small": bool(part.shape[0] < min_size),
                    }
                )
    return rows
