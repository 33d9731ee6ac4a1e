"""preprocessed_prompts: what inference will see, per validated row (BYOM preprocessing applied)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from nova_eval_assets import lineage, storage
from nova_eval_assets.byom import pipeline as byom
from nova_eval_assets.dataset import (
    image_sha256,
)
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
    (with each row's image count and image hashes, which the outputs keep instead)."""
    layout = EvalLayout.for_recipe(loaded)
    rows = storage.read_parquet(layout.validated)
    images = (
        rows["images"]
        if "images" in rows.column_names  # validated before images were a field: none
        else pa.nulls(rows.num_rows, IMAGES_FIELD.type)
    )
    prompts = pa.table(
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
    prompts, processed = byom.apply_preprocessing(loaded, prompts)
    content = lineage.table_sha256(prompts)  # inference records it (lineage.py)
    prompts = lineage.with_lineage(prompts, {"stage": "prompts", "sha256": content})
    storage.write_parquet(layout.prompts, prompts)
    byom.check_preprocess_rate(loaded, processed, prompts.num_rows)
    return {"rows": prompts.num_rows, "path": layout.prompts, "sha256": content, **processed}
