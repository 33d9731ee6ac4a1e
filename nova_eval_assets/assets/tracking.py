"""The MLflow asset of one recipe: thin wiring around :mod:`nova_eval_assets.tracking`.

``<name>/aggregated_report (+ <name>/analysis_report) -> <name>/mlflow_run`` for gen_qa,
``<name>/judge_results -> <name>/mlflow_run`` for judge recipes; only when tracking is
configured (``run.mlflow_tracking_uri`` or ``$MLFLOW_TRACKING_URI`` when the definitions
load). Each materialization logs one MLflow run; its id and URL are the asset's metadata.
"""

from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext

from nova_eval_assets import lineage, tracking
from nova_eval_assets.assets.automation import FOLLOWUP_TAG, followup_condition
from nova_eval_assets.assets.in_process import InProcessRuns, failure_message
from nova_eval_assets.recipe import LoadedRecipe

STAGE = "mlflow_run"


def mlflow_run_key(loaded: LoadedRecipe) -> dg.AssetKey:
    return dg.AssetKey([loaded.key, STAGE])


def upstream_keys(loaded: LoadedRecipe) -> list[dg.AssetKey]:
    """What the MLflow run logs: the results (and the analysis report when there is one)."""
    recipe = loaded.recipe
    if recipe.evaluation.is_judge:
        return [dg.AssetKey([loaded.key, "judge_results"])]
    keys = [dg.AssetKey([loaded.key, "aggregated_report"])]
    if recipe.analysis.enabled:
        keys.append(dg.AssetKey([loaded.key, "analysis_report"]))
    return keys


def tracking_metadata(tracked: tracking.TrackedRun) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "mlflow_run_id": tracked.run_id,
        "mlflow_experiment": tracked.experiment_name,
        "mlflow_experiment_id": tracked.experiment_id,
        "mlflow_run_name": tracked.run_name,
        "tracking_uri": tracked.tracking_uri,
        "metrics_logged": len(tracked.metrics),
        "artifacts": dg.MetadataValue.md("\n".join(f"- {a}" for a in tracked.artifacts)),
    }
    if tracked.url:
        metadata["mlflow_run_url"] = dg.MetadataValue.url(tracked.url)
    return metadata


def build_tracking_assets(loaded: LoadedRecipe) -> list[Any]:
    """``<name>/mlflow_run``, or nothing when tracking is not configured."""
    if not tracking.is_configured(loaded):
        return []
    return [_mlflow_asset(loaded)]


def _mlflow_asset(loaded: LoadedRecipe) -> dg.AssetsDefinition:
    run = loaded.recipe.run
    uri = tracking.redact(tracking.tracking_uri(loaded) or "")

    @dg.asset(
        key=mlflow_run_key(loaded),
        deps=upstream_keys(loaded),
        group_name=loaded.key,
        automation_condition=followup_condition(),  # after each evaluation (automation.py)
        code_version=lineage.digest(uri, run.mlflow_experiment_name, run.mlflow_run_name),
        description=(
            f"The evaluation logged as one MLflow run on {uri}: the recipe as params, "
            "every aggregated metric and its stderr, the results JSON, details Parquet and "
            "analysis report as artifacts."
        ),
        kinds={"mlflow"},
        tags={"recipe": loaded.name, FOLLOWUP_TAG: "true"},
    )
    def mlflow_run(context: AssetExecutionContext) -> dg.MaterializeResult:
        try:
            tracked = tracking.log_evaluation(
                loaded, tracking.latest_report(loaded), dagster_run_id=context.run_id
            )
        except tracking.TrackingError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        if tracked is None:  # the environment variable went away since the definitions loaded
            raise dg.Failure(description=f"MLflow tracking is not configured for {loaded.name}")
        context.log.info(f"MLflow run {tracked.run_id}: {tracked.url or tracked.tracking_uri}")
        return dg.MaterializeResult(metadata=tracking_metadata(tracked))

    return mlflow_run


@dataclass
class TrackingRun:
    message: str = ""  # why it failed; empty on success or without tracking
    run_id: str | None = None
    url: str | None = None
    experiment: str | None = None


def _failure_description(result: dg.ExecuteInProcessResult) -> str:
    """The one-line description a step raised as ``dg.Failure``, else the whole error."""
    for event in result.all_events:
        failure = event.step_failure_data if event.is_step_failure else None
        if failure and failure.user_failure_data and failure.user_failure_data.description:
            return failure.user_failure_data.description
    return failure_message(result)


def materialize_tracking(loaded: LoadedRecipe, runs: InProcessRuns) -> TrackingRun:
    """Materialize ``<name>/mlflow_run`` as one of ``runs`` (the CLI's ``run``, after the
    report and the analysis); nothing when tracking is not configured."""
    if not tracking.is_configured(loaded):
        return TrackingRun()
    # the CLI prints the one-line failure; the traceback stays in the instance's event log
    result = runs.materialize([_mlflow_asset(loaded)], quiet_level="CRITICAL")
    if not result.success:
        return TrackingRun(message=_failure_description(result))
    (event,) = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    url = metadata.get("mlflow_run_url")
    return TrackingRun(
        run_id=metadata["mlflow_run_id"].value,
        url=url.value if url is not None else None,
        experiment=metadata["mlflow_experiment"].value,
    )
