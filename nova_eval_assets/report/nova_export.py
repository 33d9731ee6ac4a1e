"""The Nova-compatible export: ``inference_output.jsonl`` and the details Parquet.

Details cells are Python-literal strings, as lighteval writes them and as analysis
notebooks read them back with ``ast.literal_eval``. This export sits beside our typed
tables (Arrow lists and structs); it does not replace them.

Images are never copied here: when any row has images, every row of both files also
carries ``image_count`` and ``image_sha256`` (the sha256 of each decoded image, in order;
in the details, inside ``specifics``). Without images both files are as before.

Speed: the cells are exactly ``repr`` of the Python values (``repr([prediction])``,
``repr(dict(metrics))``, ...), but they are built column-wise: ``repr`` once per distinct
token text of a batch (logprobs: Arrow's cast to string where it writes repr's text), then
Arrow string kernels join the pieces the way ``repr`` of a dict or list does
(``'{' + ', '.join(f'{k!r}: {v!r}') + '}'``). A dict per token through ``to_pylist()``
cost most of the report stage at a million rows. Groups the joins cannot express (a
repeated key, a null struct or list inside ``token_logprobs``) are computed the plain
Python way, so every cell stays as before. The JSONL lines are json.dumps's, written
value by value.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import islice, pairwise
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nova_eval_assets import storage
from nova_eval_assets.layout import safe_name

NOVA_TASK_KEY = "custom|gen_qa_gen_qa|0"
DETAILS_COLUMNS = ("example", "gold", "predictions", "metrics", "specifics", "pred_logprobs")


def details_file_name(stamp: str, task_key: str = NOVA_TASK_KEY) -> str:
    return f"details_{task_key}_{stamp}.parquet"


def token_top_dict(top: list[dict[str, Any]]) -> dict[str, float]:
    """One generated token's top list as ``{token: logprob}``, most likely first.

    Two vocabulary entries can decode to the same text (partial UTF-8 bytes, say); the
    later one is then keyed by its text with a numbered suffix ``'<text>#2'`` so the dict
    keeps exactly ``top_logprobs`` entries.
    """
    mapping: dict[str, float] = {}
    for entry in top:
        key, n = entry["token"], 1
        while key in mapping:
            n += 1
            key = f"{entry['token']}#{n}"
        mapping[key] = entry["logprob"]
    return mapping


IMAGE_FIELDS = ("image_count", "image_sha256")
DETAILS_SCHEMA = pa.schema([(name, pa.string()) for name in DETAILS_COLUMNS])
_INFERENCE_OUTPUT_COLUMNS = ["prompt", "prediction", "gold", "metadata"]
_DETAILS_SOURCE_COLUMNS = ["prompt", "gold", "prediction", "metrics", "metadata", "token_logprobs"]
# The cell pieces are joined as large strings (64-bit offsets): one batch's cells can pass
# 2 GiB (long generations, 20 top tokens each); the details column is cut into chunks below
# that, as pa.array cuts a list of str.
_TEXT = pa.large_string()
_CHUNK_BYTES = 1 << 30
# json.dumps(row, ensure_ascii=False) writes each str value with this very function
_json_string = json.encoder.encode_basestring  # type: ignore[attr-defined]


def _batches(examples: str | pa.Table, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """``columns`` of the examples (a table, or examples.parquet read in batches)."""
    if isinstance(examples, pa.Table):
        yield from examples.select(columns).to_batches(max_chunksize=storage.batch_rows())
    else:
        yield from storage.iter_parquet_batches(examples, columns, storage.batch_rows())


def image_fields(examples: str | pa.Table) -> list[str]:
    """The image columns to export: both when any row has an image, else none."""
    names = (
        examples.column_names
        if isinstance(examples, pa.Table)
        else storage.parquet_schema(examples).names
    )
    if not all(name in names for name in IMAGE_FIELDS):
        return []
    for batch in _batches(examples, ["image_count"]):
        if (pc.max(batch.column("image_count")).as_py() or 0) > 0:
            return list(IMAGE_FIELDS)
    return []


def _image_columns(batch: pa.RecordBatch | pa.Table, fields: list[str]) -> dict[str, list[Any]]:
    """The image values of each row, as the files show them (no count: 0)."""
    columns = {name: batch.column(name).to_pylist() for name in fields}
    if "image_count" in columns:
        columns["image_count"] = [count or 0 for count in columns["image_count"]]
    return columns


def _json_values(array: pa.Array | pa.ChunkedArray) -> list[str]:
    """Each value as json.dumps(..., ensure_ascii=False) writes it inside a row."""
    values = array.to_pylist()
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return ["null" if value is None else _json_string(value) for value in values]
    return [json.dumps(value, ensure_ascii=False) for value in values]


def inference_output_lines(batch: pa.RecordBatch | pa.Table, images: list[str]) -> list[str]:
    """The batch's lines of inference_output.jsonl, each exactly
    ``json.dumps({"prompt", "inference", "gold", "metadata", *images}, ensure_ascii=False)``
    plus a newline (as storage.write_jsonl writes them), one value at a time."""
    keys = ["prompt", "inference", "gold", "metadata", *images]
    columns = [_json_values(batch.column(name)) for name in _INFERENCE_OUTPUT_COLUMNS]
    columns += [
        [json.dumps(value, ensure_ascii=False) for value in values]
        for values in _image_columns(batch, images).values()
    ]
    heads = [f"{json.dumps(key)}: " for key in keys]
    return [
        "{" + ", ".join(head + value for head, value in zip(heads, row, strict=True)) + "}\n"
        for row in zip(*columns, strict=True)
    ]


def _array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _lengths(lists: pa.Array) -> np.ndarray:
    """Entries per list (a null list: 0, as ``list_flatten`` emits nothing for it)."""
    return pc.list_value_length(lists).fill_null(0).to_numpy().astype(np.int64)


def _distinct_ids(values: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Per value, the index of its distinct value (null: one past the last), and the
    distinct values. Floats are told apart by their bits, so -0.0 is not 0.0."""
    float64 = pa.types.is_float64(values.type)
    encoded = pc.dictionary_encode(values.view(pa.int64()) if float64 else values)
    distinct = encoded.dictionary.view(pa.float64()) if float64 else encoded.dictionary
    ids = encoded.indices.fill_null(len(distinct)).to_numpy().astype(np.int64)
    return ids, distinct


# Non-integral floats this size: Arrow's cast to string writes exactly repr's text
# (both the shortest digits that read back, both in fixed notation); repr itself writes
# scientific notation below 1e-4, and Arrow does above about 1e10.
_CAST_LIKE_REPR = (1e-4, 1e6)


def _float64_reprs(values: pa.Array) -> pa.Array:
    """``repr`` of each float64 (null: 'None'): Arrow's cast where its text is repr's
    (most logprobs), repr for the rest; tests/test_nova_export_cells.py checks the two."""
    x = values.to_numpy(zero_copy_only=False)  # null: nan
    size = np.abs(x)
    cast = (size >= _CAST_LIKE_REPR[0]) & (size < _CAST_LIKE_REPR[1]) & (x != np.trunc(x))
    texts = pc.cast(values, _TEXT)
    if cast.all():
        return texts
    rest = values.filter(pa.array(~cast)).to_pylist()
    reprs = pa.array(["None" if v is None else repr(v) for v in rest], _TEXT)
    return pc.replace_with_mask(texts, pa.array(~cast), reprs)


def _reprs(values: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """``repr`` of each value (worked out once per distinct value), and the ids of
    :func:`_distinct_ids` (equal ids: equal keys)."""
    ids, distinct = _distinct_ids(values)
    if pa.types.is_float64(distinct.type):
        texts = _float64_reprs(distinct)
    else:
        texts = pa.array([repr(value) for value in distinct.to_pylist()], _TEXT)
    texts = pa.concat_arrays([texts, pa.array(["None"], _TEXT)])
    return texts.take(pa.array(ids)), ids


def _value_reprs(values: pa.Array) -> pa.Array:
    """``repr`` of each value. Float64s that are mostly distinct (served models'
    logprobs) skip the dictionary: hashing them costs more than formatting them all."""
    if pa.types.is_float64(values.type):
        sample = values.slice(0, 4096)
        if pc.count_distinct(sample).as_py() * 2 > len(sample):
            return _float64_reprs(values)
    return _reprs(values)[0]


def _groups_with_repeats(lengths: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The groups (consecutive runs of ``lengths`` entries) in which some id repeats."""
    group_of = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    if len(ids) == 0:
        return group_of[:0]
    width = int(ids.max()) + 1
    # (group, id) as one number; already ordered by group, so the sort only orders
    # within groups (a stable sort: runs, fast)
    keys = np.sort(group_of * width + ids, kind="stable")
    repeated = keys[1:][keys[1:] == keys[:-1]]
    return np.unique(repeated // width)


def _text(value: str) -> pa.Scalar:
    return pa.scalar(value, _TEXT)


def _join_groups(
    items: pa.Array, lengths: np.ndarray, separator: str, left: str, right: str
) -> pa.Array:
    """Per group of ``lengths`` consecutive items: ``left + separator.join(items) + right``."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    lists = pa.ListArray.from_arrays(pa.array(offsets), items)
    joined = pc.binary_join(lists, _text(separator))
    return pc.binary_join_element_wise(_text(left), joined, _text(right), _text(""))


def _dict_reprs(
    keys: pa.Array, values: pa.Array, lengths: np.ndarray
) -> tuple[pa.Array, np.ndarray]:
    """Per group of ``lengths`` (key, value) entries, ``repr`` of the dict of its entries,
    valid where its keys are distinct; and the groups with a repeated key (to redo)."""
    key_texts, key_ids = _reprs(keys)
    value_texts = _value_reprs(values)
    items = pc.binary_join_element_wise(key_texts, value_texts, _text(": "))
    return _join_groups(items, lengths, ", ", "{", "}"), _groups_with_repeats(lengths, key_ids)


def _patched(cells: pa.Array, redo: dict[int, str]) -> pa.Array:
    """``cells`` with the cells at the keys of ``redo`` replaced by its values."""
    if not redo:
        return cells
    at = sorted(redo)
    mask = np.zeros(len(cells), dtype=bool)
    mask[at] = True
    return pc.replace_with_mask(cells, pa.array(mask), pa.array([redo[i] for i in at], _TEXT))


def _string_column(cells: pa.Array) -> pa.ChunkedArray:
    """Large-string cells as strings, in chunks of at most _CHUNK_BYTES (or one cell)."""
    sizes = pc.binary_length(cells).fill_null(0).to_numpy()
    bounds, size = [0], 0
    if int(sizes.sum()) > _CHUNK_BYTES:  # rare: only then a loop over the rows
        for row, cell in enumerate(sizes.tolist()):
            if size + cell > _CHUNK_BYTES and row > bounds[-1]:
                bounds.append(row)
                size = 0
            size += cell
    bounds.append(len(cells))
    chunks = [cells.slice(a, b - a).cast(pa.string()) for a, b in pairwise(bounds)]
    return pa.chunked_array(chunks, pa.string())


def _top_dicts(
    texts: pa.Array, logprobs: pa.Array, per_token: np.ndarray, tokens: np.ndarray
) -> dict[int, str]:
    """``repr(token_top_dict(top))`` of some tokens, their entries read in one take."""
    sizes = per_token[tokens]
    starts = (np.cumsum(per_token) - per_token)[tokens]
    at = pa.array(np.repeat(starts - (np.cumsum(sizes) - sizes), sizes) + np.arange(sizes.sum()))
    pairs = zip(texts.take(at).to_pylist(), logprobs.take(at).to_pylist(), strict=True)
    return {
        token: repr(token_top_dict([{"token": t, "logprob": v} for t, v in islice(pairs, size)]))
        for token, size in zip(tokens.tolist(), sizes.tolist(), strict=True)
    }


def _pred_logprobs_cells(column: pa.Array) -> pa.Array:
    """Per row ``repr([[token_top_dict(token["top"]) for token in token_logprobs or []]])``."""
    per_row = _lengths(column)
    tokens = pc.list_flatten(column)
    tops = pc.struct_field(tokens, "top")  # null where the token struct is null
    per_token = _lengths(tops)
    entries = pc.list_flatten(tops)
    texts, logprobs = pc.struct_field(entries, "token"), pc.struct_field(entries, "logprob")
    token_cells, repeats = _dict_reprs(texts, logprobs, per_token)
    if len(repeats):  # the numbered-suffix rule, exactly as token_top_dict applies it
        token_cells = _patched(token_cells, _top_dicts(texts, logprobs, per_token, repeats))
    cells = _join_groups(token_cells, per_row, ", ", "[[", "]]")
    # A null token, top list or top entry made the plain code raise; keep it so.
    row_of_token = np.repeat(np.arange(len(per_row), dtype=np.int64), per_row)
    odd_tokens: set[int] = set()
    if tokens.null_count or tops.null_count:
        odd_tokens.update(np.flatnonzero(pc.is_null(tops).to_numpy(zero_copy_only=False)))
    if entries.null_count:
        token_of_entry = np.repeat(np.arange(len(per_token), dtype=np.int64), per_token)
        null_entries = pc.is_null(entries).to_numpy(zero_copy_only=False)
        odd_tokens.update(token_of_entry[null_entries])
    redo: dict[int, str] = {}
    for row in sorted({int(row_of_token[t]) for t in odd_tokens}):
        value = column[row].as_py() or []
        redo[row] = repr([[token_top_dict(token["top"]) for token in value]])
    return _patched(cells, redo)


def _metrics_cells(column: pa.Array) -> pa.Array:
    """Per row ``repr(dict(metrics or []))``."""
    lists = column
    if pa.types.is_map(column.type):  # the list kernels take a map as its list of entries
        entry = pa.struct([column.type.key_field, column.type.item_field])
        lists = column.cast(pa.list_(entry))
    per_row = _lengths(lists)
    entries = pc.list_flatten(lists)
    keys, values = pc.struct_field(entries, [0]), pc.struct_field(entries, [1])
    cells, repeats = _dict_reprs(keys, values, per_row)
    # dict() keeps a repeated key at its first place with its last value
    return _patched(cells, {int(row): repr(dict(column[int(row)].as_py())) for row in repeats})


def details_table(batch: pa.RecordBatch | pa.Table, images: list[str]) -> pa.Table:
    """The details Parquet columns of some examples, each cell a Python-literal string."""
    image_columns = _image_columns(batch, images)
    image_items = [
        [f", {name!r}: {value!r}" for value in values] for name, values in image_columns.items()
    ]
    specifics = [
        "{'metadata': " + repr(metadata) + "".join(extra) + "}"
        for metadata, *extra in zip(batch.column("metadata").to_pylist(), *image_items, strict=True)
    ]
    columns = {
        "example": batch.column("prompt").cast(pa.string()),
        "gold": batch.column("gold").cast(pa.string()),
        "predictions": [f"[{value!r}]" for value in batch.column("prediction").to_pylist()],
        "metrics": _string_column(_metrics_cells(_array(batch.column("metrics")))),
        "specifics": specifics,
        "pred_logprobs": _string_column(
            _pred_logprobs_cells(_array(batch.column("token_logprobs")))
        ),
    }
    return pa.table(columns, schema=DETAILS_SCHEMA)


def write_nova_export(
    examples: str | pa.Table,
    results_dir: str,
    model: str,
    stamp: str,
    task_key: str = NOVA_TASK_KEY,
) -> dict[str, str]:
    """Write both files under ``results_dir`` from the examples (examples.parquet is read
    once, in record batches of :func:`storage.batch_rows` rows, and both files written batch
    by batch); ``model`` (run.model_name_or_path as written) names the details folder
    through safe_name, so no model name leads outside it."""
    inference_path = storage.join(results_dir, "inference_output.jsonl")
    details_path = storage.join(
        results_dir, "details", safe_name(model), stamp, details_file_name(stamp, task_key)
    )
    images = image_fields(examples)
    columns = [*dict.fromkeys([*_INFERENCE_OUTPUT_COLUMNS, *_DETAILS_SOURCE_COLUMNS]), *images]
    with (
        storage.atomic_output(inference_path) as jsonl,
        storage.parquet_writer(details_path, DETAILS_SCHEMA) as writer,
    ):
        for batch in _batches(examples, columns):
            jsonl.write("".join(inference_output_lines(batch, images)).encode("utf-8"))
            writer.write_table(details_table(batch, images))
    return {"inference_output": inference_path, "details": details_path}
