"""postprocessed_metrics: per-example metrics of one replica."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from nova_eval_assets import lineage, storage
from nova_eval_assets.byom import pipeline as byom
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.metrics import (
    bleu_sufficient_stats,
    example_metrics,
)
from nova_eval_assets.recipe import LoadedRecipe
from nova_eval_assets.stages.schemas import METRICS_SCHEMA

# ---------------------------------------------------------------- postprocessed_metrics


def score_replica(loaded: LoadedRecipe, replica: int) -> dict[str, Any]:
    """Per-example built-in metrics for one replica; rows whose inference failed are kept,
    marked unscored, and left out of the aggregates."""
    layout = EvalLayout.for_recipe(loaded)
    replicas = loaded.recipe.run.replicas
    source = storage.read_parquet(
        layout.inference(replica, replicas),
        columns=["row_index", "prompt", "gold", "prediction", "error", "preprocess_error"],
    )
    inference_version = (lineage.table_lineage(source) or {}).get("data_version")
    outputs = source.to_pylist()
    metrics, stats, scored = [], [], []
    for row in outputs:
        ok = row["error"] is None and row["preprocess_error"] is None
        scored.append(ok)
        metrics.append(list(example_metrics(row["gold"], row["prediction"]).items()) if ok else [])
        stats.append(bleu_sufficient_stats(row["gold"], row["prediction"]) if ok else None)
    extras, processed = byom.score_extras(loaded, outputs, scored, metrics)
    metrics = [m + c for m, c in zip(metrics, extras["custom_metrics"], strict=True)]
    table = pa.table(
        {
            "row_index": [row["row_index"] for row in outputs],
            "scored": scored,
            "metrics": metrics,
            "bleu_stats": stats,
            **extras,
        },
        schema=METRICS_SCHEMA,
    )
    path = layout.metrics(replica, replicas)
    # which inference output these metrics score (the aggregate checks it: lineage.py)
    recorded = {"stage": "metrics", "inference_data_version": inference_version}
    storage.write_parquet(path, lineage.with_lineage(table, recorded))
    return {
        "replica": replica,
        "rows": table.num_rows,
        "scored": sum(scored),
        "path": path,
        "inference_data_version": inference_version,
        **processed,
    }
