"""Labels from JSON outputs: the value of one field of a JSON object, for a whole column.

A classification gold or prediction is a JSON object such as
``{"class": "software", "thought": ..., "description": ...}``; its label is the value of
the label field (``class``). The rules are those of the classification report
(``classification.json_mode``), re-implemented here column-wise. For each string of a
column :func:`parse_label_column` reports:

- ``json_status``: ``ok`` (the text, apart from surrounding white space, is one JSON
  object), ``embedded`` (it is not, but a JSON object can be decoded from one of its
  ``{``: prose or a Markdown code fence around the object), ``invalid`` (neither) or
  ``missing`` (a null cell);
- ``label``: the label field's value, taken exactly, when the object is usable under the
  JSON mode (``strict``: only ``ok``; ``embedded``: ``ok`` or ``embedded``) and the value
  is a non-empty string; else null.

Each distinct string is parsed once (the column is dictionary-encoded first), so a column
of repeated golds costs one ``json.loads`` per distinct value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

JSON_STATUSES = ("ok", "embedded", "invalid", "missing")
JSON_MODES = ("strict", "embedded")
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class LabelColumn:
    json_status: np.ndarray  # int8 codes into JSON_STATUSES
    label: pa.Array  # string, null where there is no label

    @property
    def has_label(self) -> np.ndarray:
        return self.label.is_valid().to_numpy(zero_copy_only=False)


def parse_object(text: str | None) -> tuple[int, dict[str, Any] | None]:
    """(status code, the object or None) for one output; see the module docstring."""
    if text is None:
        return 3, None
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return 0, value
    start = text.find("{")
    while start >= 0:
        try:
            found, _ = _DECODER.raw_decode(text, start)
        except ValueError:
            found = None
        if isinstance(found, dict):
            return 1, found
        start = text.find("{", start + 1)
    return 2, None


def label_of(obj: dict[str, Any] | None, field: str) -> str | None:
    """The field's value if it is a non-blank string (a lone surrogate, which JSON allows
    but UTF-8 cannot hold, becomes ``?``)."""
    value = obj.get(field) if obj is not None else None
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def _arrow_objects(texts: pa.Array, field: str | None) -> tuple[np.ndarray, pa.Array]:
    """Fast path: which ``texts`` Arrow's JSON reader (RapidJSON, C++) reads as one JSON
    object each, and the label field's string value there.

    Only texts that cannot tell the two parsers apart are tried: trimmed, they start with
    ``{`` and end with ``}``, and they hold no control character (so no raw newline, which
    would split a line) and no ``\\u`` escape (surrogates). A batch the reader rejects (a
    syntax error, a non-string or repeated label field, two objects on one line) is split
    in halves until the culprits are single texts, which are left to Python's ``json``.
    """
    n = len(texts)
    ok = np.zeros(n, dtype=bool)
    trimmed = pc.utf8_trim_whitespace(texts)
    candidate = pc.and_(
        pc.and_(pc.starts_with(trimmed, "{"), pc.ends_with(trimmed, "}")),
        pc.invert(pc.match_substring_regex(texts, r"[\x00-\x1f]|\\u")),
    )
    rows = np.flatnonzero(pc.fill_null(candidate, False).to_numpy(zero_copy_only=False))
    schema = pa.schema([(field, pa.string())] if field is not None else [])
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    found_rows: list[np.ndarray] = []
    found_labels: list[pa.Array] = []
    pending = [rows] if rows.size else []
    while pending:
        part = pending.pop()
        subset = texts.take(pa.array(part))
        offsets = pa.array([0, len(subset)], pa.int32())
        joined = pc.binary_join(pa.ListArray.from_arrays(offsets, subset), "\n")[0]
        data = joined.as_buffer()
        block = max(1 << 20, data.size + 1)
        try:
            table = pj.read_json(
                pa.BufferReader(data),
                read_options=pj.ReadOptions(block_size=block),
                parse_options=options,
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            table = None
        if table is not None and table.num_rows == part.size:
            found_rows.append(part)
            if field is not None:
                found_labels.append(table.column(field).combine_chunks())
        elif part.size > 1:
            half = part.size // 2
            pending += [part[:half], part[half:]]
    if found_rows:
        ok[np.concatenate(found_rows)] = True
    labels = pa.nulls(n, pa.string())
    if found_labels:
        where = np.full(n, -1, dtype=np.int64)
        where[np.concatenate(found_rows)] = np.arange(sum(len(r) for r in found_rows))
        values = pa.concat_arrays(found_labels)
        empty = pc.equal(pc.utf8_trim_whitespace(values), "")
        values = pc.if_else(pc.fill_null(empty, False), pa.scalar(None, pa.string()), values)
        labels = values.take(pa.array(np.where(where >= 0, where, 0)))
        labels = pc.if_else(pa.array(where >= 0), labels, pa.scalar(None, pa.string()))
    return ok, labels


def parse_label_column(
    values: pa.Array | pa.ChunkedArray, field: str | None, json_mode: str = "strict"
) -> LabelColumn:
    """Parse every string of ``values`` once per distinct value; ``field`` None means the
    whole stripped text is the label (JSON status still reported). Texts that are plainly
    one JSON object go through Arrow's C++ JSON reader; the rest through Python's ``json``
    (the same results; :func:`parse_object` is the reference)."""
    if json_mode not in JSON_MODES:
        raise ValueError(f"json_mode must be one of {JSON_MODES}, got {json_mode!r}")
    usable = 1 if json_mode == "embedded" else 0
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    encoded = pc.dictionary_encode(values)
    uniques = encoded.dictionary
    m = len(uniques)
    fast, fast_labels = _arrow_objects(uniques, field)
    statuses = np.zeros(m, dtype=np.int8)
    rest = np.flatnonzero(~fast)
    slow_labels: list[str | None] = []
    for i, text in zip(rest, uniques.take(pa.array(rest)).to_pylist(), strict=True):
        status, obj = parse_object(text)
        statuses[i] = status
        if field is not None:
            slow_labels.append(label_of(obj, field) if status <= usable else None)
    if field is None:
        unique_labels = pc.utf8_trim_whitespace(uniques)
    else:
        where = np.arange(m)
        where[rest] = m + np.arange(rest.size)
        combined = pa.concat_arrays([fast_labels, pa.array(slow_labels, pa.string())])
        unique_labels = combined.take(pa.array(where))
    indices = encoded.indices
    valid = indices.is_valid().to_numpy(zero_copy_only=False)
    idx = indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    json_status = np.where(valid, statuses[idx] if m else 3, 3).astype(np.int8)
    if m:
        label = unique_labels.take(pa.array(idx))
        label = pc.if_else(pa.array(valid), label, pa.scalar(None, pa.string()))
    else:
        label = pa.nulls(len(values), type=pa.string())
    return LabelColumn(json_status=json_status, label=label)


def labels_equal(predicted: pa.Array, gold: pa.Array) -> np.ndarray:
    """1.0 where both labels exist and are equal, 0.0 where they differ or the prediction
    has none, NaN where the gold has no label (nothing to be correct against)."""
    same = pc.fill_null(pc.equal(predicted, gold), False).to_numpy(zero_copy_only=False)
    gold_ok = gold.is_valid().to_numpy(zero_copy_only=False)
    return np.where(gold_ok, same.astype(np.float64), np.nan)
