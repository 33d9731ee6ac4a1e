"""The Nova-compatible export: ``inference_output.jsonl`` and the details Parquet.

Details cells are Python-literal strings, as lighteval writes them and as analysis
notebooks read them back with ``ast.literal_eval``. This export sits beside our typed
tables (Arrow lists and structs); it does not replace them.

Images are never copied here: when any row has images, every row of both files also
carries ``image_count`` and ``image_sha256`` (the sha256 of each decoded image, in order;
in the details, inside ``specifics``). Without images both files are as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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


def _image_values(row: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    return {name: (row[name] or 0) if name == "image_count" else row[name] for name in fields}


def inference_output_rows(examples: str | pa.Table, images: list[str]) -> Iterator[dict[str, Any]]:
    for batch in _batches(examples, [*_INFERENCE_OUTPUT_COLUMNS, *images]):
        for row in batch.to_pylist():
            yield {
                "prompt": row["prompt"],
                "inference": row["prediction"],
                "gold": row["gold"],
                "metadata": row["metadata"],
                **_image_values(row, images),
            }


def details_table(batch: pa.RecordBatch | pa.Table, images: list[str]) -> pa.Table:
    """The details Parquet columns of some examples, each cell a Python-literal string."""
    columns: dict[str, list[str]] = {name: [] for name in DETAILS_COLUMNS}
    for row in batch.select([*_DETAILS_SOURCE_COLUMNS, *images]).to_pylist():
        columns["example"].append(row["prompt"])
        columns["gold"].append(row["gold"])
        columns["predictions"].append(repr([row["prediction"]]))
        columns["metrics"].append(repr(dict(row["metrics"] or [])))
        columns["specifics"].append(
            repr({"metadata": row["metadata"], **_image_values(row, images)})
        )
        columns["pred_logprobs"].append(
            repr([[token_top_dict(token["top"]) for token in row["token_logprobs"] or []]])
        )
    return pa.table(columns, schema=DETAILS_SCHEMA)


def write_nova_export(
    examples: str | pa.Table, results_dir: str, model: str, stamp: str
) -> dict[str, str]:
    """Write both files under ``results_dir`` from the examples (examples.parquet is read in
    record batches of :func:`storage.batch_rows` rows, and both files written batch by
    batch); ``model`` (run.model_name_or_path as written) names the details folder through
    safe_name, so no model name leads outside it."""
    inference_path = storage.join(results_dir, "inference_output.jsonl")
    details_path = storage.join(
        results_dir, "details", safe_name(model), stamp, details_file_name(stamp)
    )
    images = image_fields(examples)
    storage.write_jsonl(inference_path, inference_output_rows(examples, images))
    with storage.parquet_writer(details_path, DETAILS_SCHEMA) as writer:
        for batch in _batches(examples, [*_DETAILS_SOURCE_COLUMNS, *images]):
            writer.write_table(details_table(batch, images))
    return {"inference_output": inference_path, "details": details_path}
