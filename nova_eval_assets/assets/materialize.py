"""Materialize a recipe's whole graph in the project's Dagster instance (the CLI's `run`).

Three kinds of runs, as a user would launch them from the UI: the unpartitioned
preparation (dataset and prompts, with the blocking validation check), one run per replica
partition, then the aggregate. Every run is recorded in the instance, so `make ui` shows it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from nova_eval_assets import progress, stages, storage
from nova_eval_assets.assets.analysis import (
    ComparisonRun,
    materialize_analysis,
    materialize_comparisons,
)
from nova_eval_assets.assets.evaluation import build_evaluation_assets
from nova_eval_assets.assets.in_process import InProcessRuns, exclusive_run, failure_message
from nova_eval_assets.assets.parallel import REPLICA_STAGES, run_replicas, start_fork_server
from nova_eval_assets.assets.tables import materialize_tables
from nova_eval_assets.assets.tracking import materialize_tracking
from nova_eval_assets.assets.validation import preflight_stop, stop_message
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import LoadedRecipe, discover_recipes
from nova_eval_assets.run_lock import LockOwner


@dataclass
class EvaluationRun:
    report: dict[str, Any] | None
    message: str = ""
    run_ids: list[str] = field(default_factory=list)
    # the MLflow step failed (the results are written; report is set), one line per run
    tracking_error: str = ""
    # analysis.compare_with: the paired comparisons materialized after the analysis
    comparisons: list[ComparisonRun] = field(default_factory=list)

    def add_tracking_error(self, message: str) -> None:
        self.tracking_error = "\n".join(filter(None, [self.tracking_error, message]))


def run_evaluation(
    loaded: LoadedRecipe,
    instance: dg.DagsterInstance | None = None,
    show_progress: bool = True,
    quiet_logs: bool = True,
    wait_for_lock: bool = False,
    on_wait: Callable[[LockOwner | None], None] | None = None,
    max_parallel: int | None = 1,
) -> EvaluationRun:
    """Every stage of ``loaded``, holding the lock of its run folder (raises
    :class:`~nova_eval_assets.run_lock.RunLockHeld` when another run holds it, unless
    ``wait_for_lock``; :class:`~nova_eval_assets.assets.in_process.RunInterrupted` on
    SIGINT / SIGTERM). The replica partitions run in up to ``max_parallel`` processes at
    once (None: all of them; 1: one after the other in this process), which needs an
    instance on disk (:mod:`nova_eval_assets.assets.parallel`)."""
    instance = instance or dg.DagsterInstance.get()
    root = EvalLayout.for_recipe(loaded).root
    with exclusive_run(instance, root, loaded.name, wait_for_lock, on_wait):
        return _run_stages(loaded, instance, show_progress, quiet_logs, max_parallel)


def _run_stages(
    loaded: LoadedRecipe,
    instance: dg.DagsterInstance,
    show_progress: bool,
    quiet_logs: bool,
    max_parallel: int | None,
) -> EvaluationRun:
    runs = InProcessRuns(instance, loaded.name, quiet_logs)
    definitions = build_evaluation_assets(loaded)
    outcome = EvaluationRun(report=None, run_ids=runs.run_ids)

    def materialize(
        stages_: list[str], partition: str | None = None, quiet_level: str = "WARNING"
    ) -> dg.ExecuteInProcessResult:
        keys = [dg.AssetKey([loaded.key, stage]) for stage in stages_]
        return runs.materialize(definitions, keys, partition, quiet_level)

    replicas = loaded.recipe.run.replicas
    parallel = min(max_parallel or replicas, replicas)
    if parallel > 1:
        start_fork_server(loaded)  # its imports overlap the dataset and prompts
    # a dataset that stops the run is reported below in one message, not as a stack trace
    prepared = materialize(["validated_dataset", "preprocessed_prompts"], quiet_level="CRITICAL")
    layout = EvalLayout.for_recipe(loaded)
    # no report: the dataset file could not be read; the failed step's message says why
    report_written = storage.exists(layout.validation_report)
    validation = storage.read_json(layout.validation_report) if report_written else None
    stopped = preflight_stop(prepared) or (stop_message(validation) if validation else None)
    if stopped is not None:
        outcome.message = stopped
        return outcome
    if not prepared.success:
        outcome.message = failure_message(prepared)
        return outcome

    with progress.ReplicaBars(replicas, enabled=show_progress) as bars:
        if parallel > 1:  # a process each (assets/parallel.py)
            failed = run_replicas(loaded, instance, parallel, quiet_logs, bars.update, runs.run_ids)
            if failed is not None:
                outcome.message = failed
                return outcome
        else:
            with progress.listening_to_reports(bars.report):
                for replica in range(replicas):
                    result = materialize(list(REPLICA_STAGES), str(replica))
                    if not result.success:
                        outcome.message = failure_message(result)
                        return outcome

    result = materialize(["aggregated_report"])
    if not result.success:
        outcome.message = failure_message(result)
        return outcome
    tables_root = write_tables(loaded, runs, outcome)
    if tables_root is None:
        return outcome
    # confidence, calibration, strata and failures; the HTML report (assets/analysis.py)
    analysis = materialize_analysis(loaded, runs)
    if analysis.message:
        outcome.message = analysis.message
        return outcome
    if loaded.recipe.analysis.compare_with:
        recipes = discover_recipes(loaded.path.parent)
        outcome.comparisons = materialize_comparisons(loaded, recipes, runs)
        failed = [c.message for c in outcome.comparisons if c.message]
        if failed:
            outcome.message = "\n".join(failed)
            return outcome
    outcome.report = stages.read_latest_report(loaded)
    outcome.report["paths"]["tables"] = tables_root
    if analysis.report:
        outcome.report["paths"]["analysis_report"] = analysis.report
    for comparison in outcome.comparisons:
        outcome.report["paths"][f"vs {comparison.baseline}"] = comparison.report
    track(loaded, runs, outcome)
    return outcome


def track(loaded: LoadedRecipe, runs: InProcessRuns, outcome: EvaluationRun) -> None:
    """The MLflow run of a finished evaluation, when tracking is configured
    (assets/tracking.py): ``report["mlflow"]``, or ``outcome.tracking_error``."""
    tracked = materialize_tracking(loaded, runs)
    if tracked.message:
        outcome.add_tracking_error(tracked.message)
    elif tracked.run_id is not None and outcome.report is not None:
        outcome.report["mlflow"] = {
            "run_id": tracked.run_id,
            "url": tracked.url,
            "experiment": tracked.experiment,
        }


def write_tables(loaded: LoadedRecipe, runs: InProcessRuns, outcome: EvaluationRun) -> str | None:
    """The run's rows into the Athena-ready tables and their DDL (assets/tables.py): the
    tables root, or None with ``outcome.message`` set when a run failed."""
    tables = materialize_tables(loaded, runs)
    if tables.message:
        outcome.message = tables.message
        return None
    return tables.root
