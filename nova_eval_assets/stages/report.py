"""aggregated_report: every replica fanned in; the results JSON, the Nova export, our
examples table."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nova_eval_assets import lineage, storage
from nova_eval_assets.byom import pipeline as byom
from nova_eval_assets.layout import EvalLayout, timestamp
from nova_eval_assets.metrics import (
    PER_EXAMPLE_METRICS,
    aggregate_gen_qa,
)
from nova_eval_assets.recipe import LoadedRecipe
from nova_eval_assets.report.coverage import coverage_markdown, coverage_section
from nova_eval_assets.report.nova_export import write_nova_export
from nova_eval_assets.report.results import (
    classification_markdown,
    processor_markdown,
    results_document,
    summary_markdown,
)
from nova_eval_assets.stages.schemas import METRICS_SCHEMA

# ---------------------------------------------------------------- aggregated_report


def collect_replicas(loaded: LoadedRecipe) -> pa.Table:
    """Every replica's inference and metrics joined, in global row order."""
    layout = EvalLayout.for_recipe(loaded)
    replicas = loaded.recipe.run.replicas
    parts = []
    for replica in range(replicas):
        inference = storage.read_parquet(layout.inference(replica, replicas))
        metrics = storage.read_parquet(layout.metrics(replica, replicas))
        if inference["row_index"] != metrics["row_index"]:
            raise RuntimeError(
                f"replica {replica}: metrics do not match inference outputs; rematerialize "
                "postprocessed_metrics for this partition"
            )
        for name in METRICS_SCHEMA.names[1:]:
            inference = inference.append_column(name, metrics[name])
        parts.append(inference)
    table = pa.concat_tables(parts)
    order = np.argsort(table["row_index"].to_numpy(), kind="stable")
    return table.take(pa.array(order))


def aggregate_metrics(table: pa.Table) -> dict[str, float]:
    scored = table.filter(table["scored"])
    per_example: dict[str, list[float]] = {name: [] for name in PER_EXAMPLE_METRICS}
    custom = set(byom.custom_metric_names(table)) if "custom_metrics" in table.column_names else ()
    for row_metrics in scored["metrics"].to_pylist():
        for name, value in row_metrics:
            if name not in custom:  # custom metrics: processor.aggregation, below
                per_example.setdefault(name, []).append(value)
    stats = np.array(scored["bleu_stats"].to_pylist(), dtype=np.float64)
    return aggregate_gen_qa(per_example, stats if len(stats) else None)


def aggregate_all(loaded: LoadedRecipe, table: pa.Table) -> dict[str, float]:
    """Built-in metrics (means, corpus BLEU), then custom metrics with the recipe's
    ``processor.aggregation``, each with ``_stderr``."""
    return {**aggregate_metrics(table), **byom.custom_aggregates(loaded, table)}


def _span(values: list[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}..{high}"


def inference_warnings(loaded: LoadedRecipe, table: pa.Table) -> list[str]:
    """What the run's results should warn about: today, max_new_tokens clipped to the
    model's context (the engine records each row's budget in `max_new_tokens`)."""
    if "max_new_tokens" not in table.column_names:
        return []
    requested = loaded.recipe.inference.generation_tokens
    rows = table.select(["prompt_tokens", "max_new_tokens", "finish_reason"]).to_pylist()
    clipped = [
        r
        for r in rows
        if r["finish_reason"] != "error"  # a prompt that fills the context is an error row
        and r["max_new_tokens"] is not None
        and r["max_new_tokens"] < requested
    ]
    if not clipped:
        return []
    # a clipped row's budget is what its prompt left: prompt + budget is the context
    context = _span([r["prompt_tokens"] + r["max_new_tokens"] for r in clipped])
    budgets = _span([r["max_new_tokens"] for r in clipped])
    share = f"{len(clipped)} of {len(rows)} rows"
    if requested >= max(r["prompt_tokens"] + r["max_new_tokens"] for r in clipped):
        return [
            f"inference.max_new_tokens {requested} exceeds the model's context of {context} "
            f"tokens; clipped to {budgets} tokens per row ({share}; prompt + answer must fit)"
        ]
    return [
        f"inference.max_new_tokens {requested} plus the prompt exceeds the model's context of "
        f"{context} tokens for {share}; clipped to {budgets} tokens (prompt + answer must fit)"
    ]


def inference_engine_section(loaded: LoadedRecipe) -> dict[str, Any]:
    """What ran the model (engine, dtype, device, ...) as the replicas recorded it; with
    replicas that differ (e.g. CPU and GPU nodes), each replica's under ``replicas``."""
    layout, replicas = EvalLayout.for_recipe(loaded), loaded.recipe.run.replicas
    recorded = [
        (lineage.read_lineage(layout.inference(r, replicas)) or {}).get("engine")
        or {"engine": loaded.recipe.inference.engine}
        for r in range(replicas)
    ]
    if all(entry == recorded[0] for entry in recorded):
        return recorded[0]
    return {"engine": loaded.recipe.inference.engine, "replicas": recorded}


def write_report(loaded: LoadedRecipe, started_at: float | None = None) -> dict[str, Any]:
    """Fan in every replica: the results JSON, the Nova export and our typed examples table."""
    layout = EvalLayout.for_recipe(loaded)
    recipe = loaded.recipe
    # never aggregate a mix: every replica from the same prompts, model and settings
    replicas_check = lineage.check_replicas(loaded)
    if not replicas_check.ok:
        raise lineage.StaleReplicasError(replicas_check.message(loaded))
    run_lineage = {**(replicas_check.run or {}), "replica_versions": replicas_check.data_versions}
    table = lineage.with_lineage(collect_replicas(loaded), {"stage": "report", **run_lineage})
    metrics = aggregate_all(loaded, table)
    coverage = coverage_section(table)
    processor = byom.processor_section(loaded, table)
    classification = byom.classification_section(loaded, table)
    validation = storage.read_json(layout.validation_report)
    stamp = timestamp()
    counts = {
        "examples": table.num_rows,
        "scored": int(pc.sum(table["scored"]).as_py() or 0),
        "inference_errors": int(pc.sum(pc.equal(table["finish_reason"], "error")).as_py() or 0),
        "rejected_rows": validation["rejected_rows"],
        "replicas": recipe.run.replicas,
    }
    if processor is not None:
        counts["processor_errors"] = processor["processor_errors"]
    config_general = {
        "recipe_name": recipe.run.name,
        "recipe_path": str(loaded.path),
        "model_name": recipe.run.model_name_or_path,
        "model_type": recipe.run.model_type,
        "task": recipe.evaluation.task,
        "strategy": recipe.evaluation.strategy,
        "dataset": {"path": validation["source"], "sha256": validation["dataset_sha256"]},
        "inference": recipe.inference.public_dump(),
        "timestamp": stamp,
        "total_generated_tokens": int(pc.sum(table["completion_tokens"]).as_py() or 0),
        "total_evaluation_time_secondes": (
            round(time.time() - started_at, 3) if started_at is not None else None
        ),
        **{f"num_{k}": v for k, v in counts.items()},
        "coverage": coverage,
        "lineage": run_lineage,
        "inference_engine": inference_engine_section(loaded),
    }
    if processor is not None:
        config_general["processor"] = processor
    if recipe.notes:
        config_general["notes"] = recipe.notes
    warnings = inference_warnings(loaded, table)
    config_general["warnings"] = warnings
    document = results_document(metrics, config_general)
    if classification is not None:
        document["classification"] = classification
    results_path = layout.result(f"results_{stamp}.json")
    storage.write_json(results_path, document)
    paths = write_nova_export(table, layout.results_dir, recipe.run.model_name_or_path, stamp)
    examples_path = layout.result("examples.parquet")
    storage.write_parquet(examples_path, table)
    paths.update(results=results_path, examples=examples_path, rejected_rows=layout.rejected_rows)
    clean = document["results"]["all"]
    summary = summary_markdown(clean, counts) + coverage_markdown(coverage)
    summary += "".join(f"\nNote: {note}\n" for note in recipe.notes)
    summary += "".join(f"\nWarning: {warning}\n" for warning in warnings)
    if processor is not None:
        summary += processor_markdown(processor)
    if classification is not None:
        summary += "\n" + classification_markdown(classification)
    report = {
        "metrics": clean,
        "counts": counts,
        "paths": paths,
        "summary_markdown": summary,
        "coverage": coverage,
        "lineage": run_lineage,
        "warnings": warnings,
    }
    if processor is not None:
        report["processor"] = processor
    if classification is not None:
        report["classification"] = classification
    storage.write_json(layout.latest_report, report)
    byom.check_report_rate(loaded, processor, table.num_rows)
    return report


def read_latest_report(loaded: LoadedRecipe) -> dict[str, Any]:
    """What the last :func:`write_report` of this recipe returned."""
    return storage.read_json(EvalLayout.for_recipe(loaded).latest_report)
