"""The asset graph of one gen_qa recipe: thin wiring around :mod:`nova_eval_assets.stages`.

validated_dataset -> preprocessed_prompts -> inference_outputs[replica]
    -> postprocessed_metrics[replica] -> aggregated_report

Keys are prefixed and grouped by the recipe's ``run.name``. The recipe file is the whole
configuration, so materializing from the UI needs no launch config.
"""

from typing import Any

import dagster as dg
from dagster import AssetExecutionContext

from nova_eval_assets import lineage, progress, stages
from nova_eval_assets.assets.automation import (
    aggregate_condition,
    dataset_file_key,
    model_checkpoint_key,
    replica_condition,
)
from nova_eval_assets.assets.validation import (
    build_preflight_checks,
    build_validation_check,
    validation_metadata,
)
from nova_eval_assets.byom.pipeline import processor_fingerprint
from nova_eval_assets.recipe import LoadedRecipe

RECOMPUTE_TAG = "nova_eval/recompute"  # "true": regenerate even when the lineage is unchanged


def replica_partitions(replicas: int) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition([str(i) for i in range(replicas)])


def _md_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(none)"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
    return "\n".join(lines)


def _processor_metadata(summary: dict[str, Any], stage: str) -> dict[str, Any]:
    """BYOM counts and timings of one stage (nothing when the processor is off for it)."""
    if f"{stage}_errors" not in summary:
        return {}
    listed = summary.get(f"{stage}_first_errors") or []
    return {
        "processor": summary["processor"],
        f"{stage}_errors": summary[f"{stage}_errors"],
        f"{stage}_seconds": summary[f"{stage}_seconds"],
        f"{stage}_first_errors": dg.MetadataValue.md(
            _md_table([{"row_index": e["row_index"], "error": e["error"]} for e in listed])
        ),
    }


def build_evaluation_assets(loaded: LoadedRecipe) -> list[Any]:
    recipe = loaded.recipe
    name = loaded.key  # Dagster-safe run.name
    partitions = replica_partitions(recipe.run.replicas)
    tags = {"recipe": loaded.name}

    def key(stage: str) -> dg.AssetKey:
        return dg.AssetKey([name, stage])

    # an Inspect task's file is not imported to describe its assets
    inspect_specs = recipe.evaluation.inspect_specs
    benchmark = None if inspect_specs else recipe.evaluation.benchmark
    rows_from = (
        f"Samples of the Inspect tasks {', '.join(inspect_specs)}."
        if inspect_specs
        else f"Rows of {recipe.run.data_s3_path} that pass gen_qa validation."
        if benchmark is None
        else f"Rows of the {benchmark.name} benchmark made prompts ({benchmark.description})."
    )

    @dg.asset(
        key=key("validated_dataset"),
        # the observable dataset file (assets/automation.py): none for a benchmark that reads
        # the hub or a package
        deps=[dataset_file_key(loaded)] if loaded.dataset_file() is not None else [],
        group_name=name,
        code_version=lineage.digest(
            recipe.dataset, recipe.run.data_s3_path, recipe.run.limit, recipe.evaluation
        ),
        description=rows_from,
        kinds={"python", "parquet"},
        tags=tags,
    )
    def validated_dataset(context: AssetExecutionContext) -> dg.MaterializeResult:
        outcome, summary = stages.run_validation(loaded)
        if outcome.problems:
            context.log.warning(outcome.report())
        return dg.MaterializeResult(
            data_version=dg.DataVersion(summary["sha256"]),  # the valid rows' content hash
            metadata=validation_metadata(summary),
        )

    dataset_is_valid = build_validation_check(
        loaded,
        validated_dataset,
        "Every dataset line is valid, or rejected rows are allowed by the recipe.",
    )

    @dg.asset(
        key=key("preprocessed_prompts"),
        deps=[validated_dataset],
        group_name=name,
        code_version=lineage.digest(recipe.processor, processor_fingerprint(loaded)),
        description="The system prompt, prompt and gold that inference sees, per row.",
        kinds={"python", "parquet"},
        tags=tags,
    )
    def preprocessed_prompts() -> dg.MaterializeResult:
        summary = stages.build_prompts(loaded)
        return dg.MaterializeResult(
            data_version=dg.DataVersion(summary["sha256"]),  # the prompts' content hash
            metadata={
                "rows": summary["rows"],
                "path": dg.MetadataValue.path(summary["path"]),
                **_processor_metadata(summary, "preprocess"),
            },
        )

    @dg.asset(
        key=key("inference_outputs"),
        deps=[preprocessed_prompts, model_checkpoint_key(loaded)],
        partitions_def=partitions,
        group_name=name,
        code_version=lineage.inference_code_version(loaded),
        automation_condition=replica_condition(loaded),
        description="Model outputs with token log probabilities, one partition per replica.",
        kinds={"pytorch", "parquet"},
        tags=tags,
    )
    def inference_outputs(context: AssetExecutionContext) -> dg.MaterializeResult:
        replica = int(context.partition_key)
        reuse = context.run.tags.get(RECOMPUTE_TAG, "").lower() != "true"
        reports = progress.ReplicaProgress(loaded, replica, reuse)

        def on_batch(done: int, total: int) -> None:
            line = reports.update(done, total)  # one per block generated here
            if line is not None:
                context.log.info(line)

        summary = stages.run_inference(loaded, replica, on_batch=on_batch, reuse=reuse)
        if summary["reused"]:
            context.log.info(f"replica {replica}: prompts, model and settings unchanged; reused")
        elif summary["resumed_blocks"]:
            context.log.info(
                f"replica {replica}: resumed, {summary['resumed_blocks']} of "
                f"{summary['blocks']} blocks were checkpointed"
            )
        return dg.MaterializeResult(
            # prompts content + checkpoint hash + settings: same inputs, same outputs
            data_version=dg.DataVersion(summary["data_version"]),
            metadata={
                "rows": summary["rows"],
                "row_range": str(summary["row_range"]),
                "reused": summary["reused"],
                "resumed_blocks": summary["resumed_blocks"],
                "prompts_sha256": summary["lineage"]["prompts_sha256"],
                "inference_errors": summary["errors"],
                "generated_tokens": summary["generated_tokens"],
                "seconds": summary["seconds"],
                "tokens_per_second": summary["tokens_per_second"],
                "model_id": summary["model_id"],
                "path": dg.MetadataValue.path(summary["path"]),
            },
        )

    metrics_version = lineage.digest(
        recipe.processor,
        recipe.evaluation,
        recipe.classification,
        processor_fingerprint(loaded),
    )

    @dg.asset(
        key=key("postprocessed_metrics"),
        deps=[inference_outputs],
        partitions_def=partitions,
        group_name=name,
        code_version=metrics_version,
        automation_condition=replica_condition(loaded),
        description="Per-example metrics for one replica.",
        kinds={"python", "parquet"},
        tags=tags,
    )
    def postprocessed_metrics(context: AssetExecutionContext) -> dg.MaterializeResult:
        summary = stages.score_replica(loaded, int(context.partition_key))
        scored_version = summary["inference_data_version"]
        return dg.MaterializeResult(
            data_version=dg.DataVersion(lineage.digest(scored_version, metrics_version)),
            metadata={
                "rows": summary["rows"],
                "scored": summary["scored"],
                "path": dg.MetadataValue.path(summary["path"]),
                **_processor_metadata(summary, "postprocess"),
            },
        )

    report_version = lineage.digest(recipe.evaluation, recipe.processor, recipe.classification)

    @dg.asset(
        key=key("aggregated_report"),
        deps=[postprocessed_metrics],
        group_name=name,
        code_version=report_version,
        # only when every replica of one run is materialized (assets/automation.py)
        automation_condition=aggregate_condition(loaded),
        description="Aggregated metrics over every replica, the results JSON and exports.",
        kinds={"python", "parquet"},
        tags=tags,
    )
    def aggregated_report(context: AssetExecutionContext) -> dg.MaterializeResult:
        report = stages.write_report(loaded)  # refuses a mix of replicas from different runs
        context.log.info("\n" + report["summary_markdown"])
        metrics = report["metrics"]
        coverage = report["coverage"]
        replica_versions = report["lineage"]["replica_versions"]
        return dg.MaterializeResult(
            data_version=dg.DataVersion(
                lineage.digest(replica_versions, metrics_version, report_version)
            ),
            metadata={
                "summary": dg.MetadataValue.md(report["summary_markdown"]),
                "rows_covered": coverage["scored_rows"],
                "rows_total": coverage["rows"],
                "model_id": report["lineage"].get("model_id") or "",
                **{k: v for k, v in metrics.items() if v is not None},
                **{f"num_{k}": v for k, v in report["counts"].items()},
                "paths": dg.MetadataValue.md(
                    _md_table([{"file": k, "location": v} for k, v in report["paths"].items()])
                ),
                "results_json": dg.MetadataValue.path(report["paths"]["results"]),
                **{
                    f"classification_{k}": report["classification"][k]
                    for k in ("accuracy", "macro_f1", "micro_f1", "invalid_rate")
                    if report.get("classification") and report["classification"][k] is not None
                },
            },
        )

    return [
        validated_dataset,
        dataset_is_valid,
        *build_preflight_checks(loaded, validated_dataset),
        preprocessed_prompts,
        inference_outputs,
        postprocessed_metrics,
        aggregated_report,
    ]
