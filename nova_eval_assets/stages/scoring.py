"""postprocessed_metrics: per-example metrics of one replica."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

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

_SCORED_COLUMNS = ["row_index", "prompt", "gold", "prediction", "error", "preprocess_error"]


def score_replica(loaded: LoadedRecipe, replica: int) -> dict[str, Any]:
    """Per-example built-in metrics for one replica; rows whose inference failed are kept,
    marked unscored, and left out of the aggregates. Read, scored and written in record
    batches of :func:`storage.batch_rows` rows."""
    layout = EvalLayout.for_recipe(loaded)
    replicas = loaded.recipe.run.replicas
    source = layout.inference(replica, replicas)
    inference_version = (lineage.read_lineage(source) or {}).get("data_version")
    # which inference output these metrics score (the aggregate checks it: lineage.py)
    recorded = {"stage": "metrics", "inference_data_version": inference_version}
    schema = lineage.with_lineage(METRICS_SCHEMA.empty_table(), recorded).schema
    extras = byom.ReplicaExtras(loaded)
    rows = scored_rows = 0
    path = layout.metrics(replica, replicas)
    with storage.parquet_writer(path, schema) as writer:
        for batch in storage.iter_parquet_batches(
            source, _SCORED_COLUMNS, batch_size=storage.batch_rows()
        ):
            table = _score_batch(batch.to_pylist(), extras)
            writer.write_table(table)
            rows += table.num_rows
            scored_rows += int(pc.sum(table["scored"]).as_py() or 0)
    return {
        "replica": replica,
        "rows": rows,
        "scored": scored_rows,
        "path": path,
        "inference_data_version": inference_version,
        **extras.summary(),
    }


def _score_batch(outputs: list[dict[str, Any]], extras: byom.ReplicaExtras) -> pa.Table:
    metrics, stats, scored = [], [], []
    for row in outputs:
        ok = row["error"] is None and row["preprocess_error"] is None
        scored.append(ok)
        metrics.append(list(example_metrics(row["gold"], row["prediction"]).items()) if ok else [])
        stats.append(bleu_sufficient_stats(row["gold"], row["prediction"]) if ok else None)
    columns = extras.score(outputs, scored, metrics)
    metrics = [m + c for m, c in zip(metrics, columns["custom_metrics"], strict=True)]
    return pa.table(
        {
            "row_index": [row["row_index"] for row in outputs],
            "scored": scored,
            "metrics": metrics,
            "bleu_stats": stats,
            **columns,
        },
        schema=METRICS_SCHEMA,
    )
