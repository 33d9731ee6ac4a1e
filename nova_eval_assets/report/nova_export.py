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


def image_fields(table: pa.Table) -> list[str]:
    """The image columns to export: both when any row has an image, else none."""
    if not all(name in table.column_names for name in IMAGE_FIELDS):
        return []
    counts = table["image_count"].to_pylist()
    return list(IMAGE_FIELDS) if any(counts) else []


def _image_values(row: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    return {name: (row[name] or 0) if name == "image_count" else row[name] for name in fields}


def inference_output_rows(table: pa.Table) -> Iterator[dict[str, Any]]:
    images = image_fields(table)
    for row in table.select(["prompt", "prediction", "gold", "metadata", *images]).to_pylist():
        yield {
            "prompt": row["prompt"],
            "inference": row["prediction"],
            "gold": row["gold"],
            "metadata": row["metadata"],
            **_image_values(row, images),
        }


def details_table(table: pa.Table) -> pa.Table:
    """The details Parquet columns, each cell a Python-literal string."""
    images = image_fields(table)
    rows = table.select(
        ["prompt", "gold", "prediction", "metrics", "metadata", "token_logprobs", *images]
    ).to_pylist()
    columns: dict[str, list[str]] = {name: [] for name in DETAILS_COLUMNS}
    for row in rows:
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
    return pa.table(columns, schema=pa.schema([(name, pa.string()) for name in DETAILS_COLUMNS]))


def write_nova_export(table: pa.Table, results_dir: str, model: str, stamp: str) -> dict[str, str]:
    """Write both files under ``results_dir``; ``model`` (run.model_name_or_path as written)
    names the details folder through safe_name, so no model name leads outside it."""
    inference_path = storage.join(results_dir, "inference_output.jsonl")
    details_path = storage.join(
        results_dir, "details", safe_name(model), stamp, details_file_name(stamp)
    )
    storage.write_jsonl(inference_path, inference_output_rows(table))
    storage.write_parquet(details_path, details_table(table))
    return {"inference_output": inference_path, "details": details_path}
