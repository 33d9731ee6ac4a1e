"""Materialize a recipe's whole graph in the project's Dagster instance (the CLI's `run`).

Three kinds of runs, as a user would launch them from the UI: the unpartitioned
preparation (dataset and prompts, with the blocking validation check), one run per replica
partition, then the aggregate. Every run is recorded in the instance, so `make ui` shows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from tqdm import tqdm

from nova_eval_assets import progress, stages, storage
from nova_eval_assets.assets.analysis import materialize_analysis
from nova_eval_assets.assets.evaluation import build_evaluation_assets
from nova_eval_assets.assets.tables import materialize_tables
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import LoadedRecipe

# The progress bar tells the story on the terminal; the full event log is in the instance.
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class EvaluationRun:
    report: dict[str, Any] | None
    message: str = ""
    run_ids: list[str] = field(default_factory=list)


def run_evaluation(
    loaded: LoadedRecipe,
    instance: dg.DagsterInstance | None = None,
    show_progress: bool = True,
    quiet_logs: bool = True,
) -> EvaluationRun:
    instance = instance or dg.DagsterInstance.get()
    name = loaded.name
    definitions = build_evaluation_assets(loaded)
    outcome = EvaluationRun(report=None)

    def materialize(stages_: list[str], partition: str | None = None) -> dg.ExecuteInProcessResult:
        selection = dg.AssetSelection.assets(*(dg.AssetKey([name, s]) for s in stages_))
        result = dg.materialize(
            definitions,
            instance=instance,
            selection=selection,
            partition_key=partition,
            raise_on_error=False,
            run_config=QUIET_CONSOLE if quiet_logs else None,
            tags={"recipe": name, "launched_by": "nova-eval-cli"},
        )
        outcome.run_ids.append(result.run_id)
        return result

    prepared = materialize(["validated_dataset", "preprocessed_prompts"])
    layout = EvalLayout.for_recipe(loaded)
    validation = storage.read_json(layout.validation_report)
    if not validation["ok"] and validation["policy"] == "fail":
        outcome.message = "The dataset is invalid (dataset.on_invalid: fail):\n"
        outcome.message += validation["report"]
        return outcome
    if not prepared.success:
        outcome.message = _failure(prepared)
        return outcome

    total = validation["valid_rows"]
    bar = tqdm(total=total, desc="generating", unit="row", disable=not show_progress)
    finished_before: dict[str, int] = {}

    def on_progress(stage: str, done: int, _total: int) -> None:
        bar.update(done - finished_before.get(stage, 0))
        finished_before[stage] = done

    with bar, progress.listening(on_progress):
        for replica in range(loaded.recipe.run.replicas):
            bar.set_postfix_str(f"replica {replica + 1}/{loaded.recipe.run.replicas}")
            result = materialize(["inference_outputs", "postprocessed_metrics"], str(replica))
            if not result.success:
                outcome.message = _failure(result)
                return outcome

    result = materialize(["aggregated_report"])
    if not result.success:
        outcome.message = _failure(result)
        return outcome
    # the run's rows into the Athena-ready tables, and their DDL (assets/tables.py)
    tables = materialize_tables(
        loaded,
        instance,
        run_config=QUIET_CONSOLE if quiet_logs else None,
        tags={"recipe": name, "launched_by": "nova-eval-cli"},
    )
    outcome.run_ids += tables.run_ids
    if tables.message:
        outcome.message = tables.message
        return outcome
    # confidence, calibration, strata and failures; the HTML report (assets/analysis.py)
    analysis = materialize_analysis(
        loaded,
        instance,
        run_config=QUIET_CONSOLE if quiet_logs else None,
        tags={"recipe": name, "launched_by": "nova-eval-cli"},
    )
    outcome.run_ids += analysis.run_ids
    if analysis.message:
        outcome.message = analysis.message
        return outcome
    outcome.report = stages.read_latest_report(loaded)
    outcome.report["paths"]["tables"] = tables.root
    if analysis.report:
        outcome.report["paths"]["analysis_report"] = analysis.report
    return outcome


def _failure(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            return f"{event.step_key} failed:\n{event.step_failure_data.error.to_string()}"
    return f"run {result.run_id} failed"
