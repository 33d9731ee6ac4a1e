"""Athena-ready, Hive-partitioned Parquet tables of every evaluation run (no Dagster here).

``eval_examples``, ``eval_metrics``, ``judge_judgments``, ``judge_criteria`` (rubric judges)
and ``judge_summary`` live under one
tables root (``$NOVA_EVAL_TABLES_ROOT``; by default ``tables/`` in the output root), a local
folder or an ``s3://`` prefix. See :mod:`.schemas` for the layout, :mod:`.writer` for how a
run's partition is replaced, :mod:`.ddl` for the Glue/Athena DDL and :mod:`.duck` for
querying them locally with DuckDB.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nova_eval_assets import storage
from nova_eval_assets.layout import OUTPUT_ROOT_ENV, EvalLayout
from nova_eval_assets.recipe import LoadedRecipe
from nova_eval_assets.tables import build
from nova_eval_assets.tables.build import RunInfo, run_info
from nova_eval_assets.tables.schemas import TABLE_NAMES, TABLES
from nova_eval_assets.tables.writer import (
    RunPartition,
    WriteSummary,
    ensure_tables,
    eval_names,
    write_run,
)

TABLES_ROOT_ENV = "NOVA_EVAL_TABLES_ROOT"
#: the tables written from a judge run's judgments.parquet
JUDGMENT_TABLES = {"judge_judgments", "judge_criteria"}
RUN_ID_ENV = "NOVA_EVAL_RUN_ID"
PROJECT_ROOT = Path(__file__).resolve().parents[2]

__all__ = [
    "TABLES",
    "TABLE_NAMES",
    "RunInfo",
    "RunPartition",
    "WriteSummary",
    "ensure_tables",
    "eval_names",
    "run_info",
    "tables_root",
    "write_evaluation_tables",
    "write_run",
]


def tables_root() -> str:
    """``$NOVA_EVAL_TABLES_ROOT``, else ``tables/`` in ``$NOVA_EVAL_OUTPUT_ROOT``, else the
    project's ``outputs/tables``. One root per deployment: every recipe's runs go there."""
    configured = os.environ.get(TABLES_ROOT_ENV)
    if configured:
        if storage.is_remote(configured):
            return configured.rstrip("/")
        return str(Path(configured).expanduser().resolve())
    output = os.environ.get(OUTPUT_ROOT_ENV)
    if output:
        if storage.is_remote(output):
            return storage.join(output, "tables")
        return str(Path(output).expanduser().resolve() / "tables")
    return str(PROJECT_ROOT / "outputs" / "tables")


def _custom_aggregation(loaded: LoadedRecipe) -> str:
    processor = loaded.recipe.active_processor
    return processor.aggregation if processor else "average"


def _judge_extra(results: dict[str, Any]) -> dict[str, Any]:
    """What a judge run's results say beyond Nova's summary keys: who was judged by whom,
    how many prompts, and the position-bias diagnostics under their table names."""
    config = results.get("config_general") or {}
    diagnostics = results.get("diagnostics") or {}
    extra: dict[str, Any] = {
        "judge_model": config.get("judge_model_id") or config.get("model_name"),
        "baseline": config.get("baseline"),
        "challenger": config.get("challenger"),
        "num_prompts": config.get("num_prompts"),
        "num_judgments": config.get("num_judgments"),
    }
    for key, column in build.JUDGE_DIAGNOSTICS.items():
        value = diagnostics.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            extra[column] = value
    return {k: v for k, v in extra.items() if v is not None}


def write_evaluation_tables(
    loaded: LoadedRecipe,
    root: str | None = None,
    run_id: str | None = None,
    only: set[str] | None = None,
) -> dict[str, WriteSummary]:
    """Write the latest run of ``loaded`` into the tables under ``root``.

    The run is the last aggregated report (its results timestamp is the run id, unless
    ``run_id`` or ``$NOVA_EVAL_RUN_ID`` names it); writing it again replaces its rows.
    ``only`` limits which tables are written. Returns a summary per table written.
    """
    root = root or tables_root()
    run_id = run_id or os.environ.get(RUN_ID_ENV) or None
    wanted = set(only or TABLE_NAMES)
    ensure_tables(root)
    layout = EvalLayout.for_recipe(loaded)
    if not storage.exists(layout.latest_report):
        raise FileNotFoundError(
            f"{layout.latest_report} does not exist: evaluate '{loaded.name}' (materialize its "
            "aggregated report) before writing its tables"
        )
    report = storage.read_json(layout.latest_report)
    paths: dict[str, Any] = report.get("paths", {})
    results = storage.read_json(paths["results"])
    run = run_info(loaded.name, results, run_id)
    written: dict[str, WriteSummary] = {}
    examples_path = paths.get("examples")
    if "eval_examples" in wanted and examples_path and storage.exists(examples_path):
        written["eval_examples"] = write_run(
            root, "eval_examples", run.partition, build.examples_batches(examples_path, run)
        )
    if "eval_metrics" in wanted:
        aggregation = _custom_aggregation(loaded)
        rows = build.overall_metric_rows(results, aggregation)
        if examples_path and storage.exists(examples_path):
            benchmark = loaded.recipe.evaluation.is_benchmark
            rows += build.stratum_metric_rows(examples_path, aggregation, skip_subtask=benchmark)
        written["eval_metrics"] = write_run(
            root, "eval_metrics", run.partition, [build.metrics_table(run, rows)]
        )
    judge = _judge_extra(results) if loaded.recipe.evaluation.is_judge else {}
    judgments = paths.get("judgments")
    has_judgments = bool(judgments) and storage.exists(judgments)
    table = storage.read_parquet(judgments) if has_judgments and wanted & JUDGMENT_TABLES else None
    if "judge_judgments" in wanted and table is not None:
        rows = build.to_judge_judgments(table, run, judge)
        written["judge_judgments"] = write_run(root, "judge_judgments", run.partition, [rows])
    if (
        "judge_criteria" in wanted
        and table is not None
        and "forward_criteria" in table.column_names
    ):
        rows = build.to_judge_criteria(table, run, judge)
        written["judge_criteria"] = write_run(root, "judge_criteria", run.partition, [rows])
    if "judge_summary" in wanted and judge:
        section = (results.get("results") or {}).get("all") or {}
        summary = build.judge_summary_table(run, section, judge)
        written["judge_summary"] = write_run(root, "judge_summary", run.partition, [summary])
    return written
