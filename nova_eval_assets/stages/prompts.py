"""preprocessed_prompts: what inference will see, per validated row (BYOM preprocessing applied)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from nova_eval_assets import lineage, storage
from nova_eval_assets.byom import pipeline as byom
from nova_eval_assets.dataset import image_sha256
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import LoadedRecipe
from nova_eval_assets.stages.schemas import IMAGES_FIELD, PROMPTS_SCHEMA

# ---------------------------------------------------------------- preprocessed_prompts


def image_columns(images: pa.ChunkedArray | pa.Array) -> dict[str, pa.Array]:
    """``image_count`` and ``image_sha256`` of a column of data-URI lists (null: no image)."""
    lists = images.to_pylist()
    return {
        "image_count": pa.array([len(uris or ()) for uris in lists], pa.int32()),
        "image_sha256": pa.array(
            [[image_sha256(uri) for uri in uris or ()] for uris in lists], pa.list_(pa.string())
        ),
    }


def build_prompts(loaded: LoadedRecipe) -> dict[str, Any]:
    """The prompts inference will see: system, prompt, gold and images per validated row
    (with each row's image count and image hashes, which the outputs keep instead).

    Streamed: the validated rows are read, preprocessed and written batch by batch
    (:func:`storage.batch_rows`), and the content hash is computed over the batches and
    recorded in the file's footer, where inference reads it (lineage.py)."""
    layout = EvalLayout.for_recipe(loaded)
    preprocessing = byom.Preprocessing(loaded)
    content = lineage.ContentHasher(PROMPTS_SCHEMA)
    rows = 0
    with storage.parquet_writer(layout.prompts, PROMPTS_SCHEMA) as writer:
        batches = storage.iter_parquet_batches(layout.validated, batch_size=storage.batch_rows())
        for batch in batches:
            prompts = preprocessing.apply(_prompt_rows(batch))
            writer.write_table(prompts)
            content.update(prompts)
            rows += prompts.num_rows
        sha256 = content.hexdigest()  # inference records it (lineage.py)
        lineage.record_lineage(writer, {"stage": "prompts", "sha256": sha256})
    processed = preprocessing.summary()
    byom.check_preprocess_rate(loaded, processed, rows)
    return {"rows": rows, "path": layout.prompts, "sha256": sha256, **processed}


def _prompt_rows(rows: pa.RecordBatch) -> pa.Table:
    """A batch of validated rows as rows of the prompts table (not yet preprocessed)."""
    images = (
        rows["images"]
        if "images" in rows.schema.names  # validated before images were a field: none
        else pa.nulls(rows.num_rows, IMAGES_FIELD.type)
    )
    return pa.table(
        {
            "row_index": rows["row_index"],
            "line": rows["line"],
            "system": rows["system"],
            "prompt": rows["query"],
            "gold": rows["response"],
            "metadata": rows["metadata"],
            "preprocess_error": pa.nulls(rows.num_rows, pa.string()),
            "preprocess_seconds": pa.nulls(rows.num_rows, pa.float64()),
            "images": images,
            **image_columns(images),
        },
        schema=PROMPTS_SCHEMA,
    )
