"""aggregated_report: every replica fanned in; the results JSON, the Nova export, our
examples table. Streamed: the replicas are read, joined and written in record batches, and
the aggregates gathered from them (:class:`ReportTally`)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
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
    bootstrap_bleu_stderr,
)
from nova_eval_assets.metrics.gather import MetricValues, StatsRows
from nova_eval_assets.recipe import LoadedRecipe
from nova_eval_assets.report import inspect_results
from nova_eval_assets.report.coverage import CoverageTally, coverage_markdown
from nova_eval_assets.report.nova_export import NOVA_TASK_KEY, write_nova_export
from nova_eval_assets.report.results import (
    classification_markdown,
    processor_markdown,
    results_document,
    subtask_markdown,
    summary_markdown,
)
from nova_eval_assets.stages.baseline import compare_to_baseline
from nova_eval_assets.stages.engine_setup import sampling_settings
from nova_eval_assets.stages.schemas import METRICS_SCHEMA
from nova_eval_assets.tasks.aggregate import TaskTally
from nova_eval_assets.tasks.base import PROBLEM_FIELD, SUBTASK_FIELD
from nova_eval_assets.tasks.inspect_task import InspectBenchmark

# ---------------------------------------------------------------- aggregated_report


def examples_schema(loaded: LoadedRecipe) -> pa.Schema:
    """The examples table's columns: replica 0's inference columns (and schema metadata),
    then the metrics columns but ``row_index``."""
    layout, replicas = EvalLayout.for_recipe(loaded), loaded.recipe.run.replicas
    inference = storage.parquet_schema(layout.inference(0, replicas))
    metrics = storage.parquet_schema(layout.metrics(0, replicas))
    added = [pa.field(name, metrics.field(name).type) for name in METRICS_SCHEMA.names[1:]]
    return pa.schema([*inference, *added], metadata=inference.metadata)


def collect_replicas(loaded: LoadedRecipe) -> Iterator[pa.RecordBatch]:
    """Every replica's inference and metrics joined, in global row order, in record batches
    of at most :func:`storage.batch_rows` rows.

    Replicas are contiguous ranges of rows in replica order (:func:`dataset.shard_ranges`)
    and each replica's files are in row order, so streaming the replicas one after the
    other gives the global order without a sort; both are checked as the rows go by.
    """
    layout = EvalLayout.for_recipe(loaded)
    replicas = loaded.recipe.run.replicas
    schema = examples_schema(loaded)
    size = storage.batch_rows()
    last_row = -1
    for replica in range(replicas):
        mismatch = (
            f"replica {replica}: metrics do not match inference outputs; rematerialize "
            "postprocessed_metrics for this partition"
        )
        pairs = _aligned(
            storage.iter_parquet_batches(layout.inference(replica, replicas), batch_size=size),
            storage.iter_parquet_batches(
                layout.metrics(replica, replicas), METRICS_SCHEMA.names, batch_size=size
            ),
            mismatch,
        )
        for inference, metrics in pairs:
            rows = inference.column("row_index")
            if not rows.equals(metrics.column("row_index")):
                raise RuntimeError(mismatch)
            order = rows.to_numpy()
            previous = np.concatenate([[last_row], order[:-1]])
            backwards = np.flatnonzero(order < previous)
            if len(backwards):
                at = backwards[0]
                raise RuntimeError(
                    f"replica {replica}: inference outputs are not in row order (row "
                    f"{order[at]} comes after row {previous[at]}); rematerialize "
                    "inference_outputs for this partition"
                )
            last_row = int(order[-1])
            yield pa.RecordBatch.from_arrays(
                [*inference.columns, *metrics.columns[1:]], schema=schema
            )


def _aligned(
    left: Iterator[pa.RecordBatch], right: Iterator[pa.RecordBatch], mismatch: str
) -> Iterator[tuple[pa.RecordBatch, pa.RecordBatch]]:
    """Equally long slices of two streams of the same number of rows, whose batches may be
    cut at different rows; RuntimeError(mismatch) when one stream ends first."""
    left = (batch for batch in left if batch.num_rows)
    right = (batch for batch in right if batch.num_rows)
    a, b = next(left, None), next(right, None)
    while a is not None and b is not None:
        n = min(a.num_rows, b.num_rows)
        yield a.slice(0, n), b.slice(0, n)
        a = a.slice(n) if n < a.num_rows else next(left, None)
        b = b.slice(n) if n < b.num_rows else next(right, None)
    if a is not None or b is not None:
        raise RuntimeError(mismatch)


class ClippedRows:
    """Rows whose generation budget was clipped below ``inference.max_new_tokens`` (the
    engine records each row's budget in ``max_new_tokens``), counted batch by batch."""

    def __init__(self, requested: int):
        self.requested = requested
        self.rows = 0
        self.recorded = False  # the examples have a max_new_tokens column
        self.clipped = 0
        self.context: tuple[int, int] | None = None  # prompt + budget: lowest, highest
        self.budgets: tuple[int, int] | None = None

    def add(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        if "max_new_tokens" not in batch.schema.names:
            return
        self.recorded = True
        budget = batch.column("max_new_tokens")
        clipped = pc.and_(
            # a prompt that fills the context is an error row
            pc.fill_null(pc.not_equal(batch.column("finish_reason"), "error"), True),
            pc.fill_null(pc.less(budget, self.requested), False),
        )
        rows = batch.filter(clipped)
        if not rows.num_rows:
            return
        budgets = rows.column("max_new_tokens").cast(pa.int64())
        # a clipped row's budget is what its prompt left: prompt + budget is the context
        context = pc.add(rows.column("prompt_tokens").cast(pa.int64()), budgets)
        self.clipped += rows.num_rows
        self.context = _widen(self.context, context)
        self.budgets = _widen(self.budgets, budgets)

    def warnings(self) -> list[str]:
        if not self.recorded or not self.clipped:
            return []
        assert self.context is not None and self.budgets is not None
        requested = self.requested
        context, budgets = _span(*self.context), _span(*self.budgets)
        share = f"{self.clipped} of {self.rows} rows"
        if requested >= self.context[1]:
            return [
                f"inference.max_new_tokens {requested} exceeds the model's context of "
                f"{context} tokens; clipped to {budgets} tokens per row ({share}; prompt + "
                "answer must fit)"
            ]
        return [
            f"inference.max_new_tokens {requested} plus the prompt exceeds the model's "
            f"context of {context} tokens for {share}; clipped to {budgets} tokens (prompt + "
            "answer must fit)"
        ]


def _widen(span: tuple[int, int] | None, values: pa.Array) -> tuple[int, int]:
    bounds = pc.min_max(values)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    return (low, high) if span is None else (min(span[0], low), max(span[1], high))


def _span(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}..{high}"


def inference_warnings(
    loaded: LoadedRecipe, examples: pa.Table | Iterable[pa.RecordBatch]
) -> list[str]:
    """What the run's results should warn about: today, max_new_tokens clipped to the
    model's context (:class:`ClippedRows`), from the examples or their record batches."""
    clipped = ClippedRows(loaded.recipe.inference.generation_tokens)
    for batch in examples.to_batches() if isinstance(examples, pa.Table) else examples:
        clipped.add(batch)
    return clipped.warnings()


class ReportTally:
    """What the results JSON says of the joined examples, gathered batch by batch: the
    values the aggregates reduce (float64 per row and metric: 56 bytes a scored row with
    the built-in metrics, written in place into arrays of the replicas' rows) and running
    counts for the rest. The BLEU statistics are read apart (:func:`scored_bleu_stats`)."""

    def __init__(self, loaded: LoadedRecipe):
        rows = _metrics_rows(loaded)  # every row at most is scored
        self.extras = byom.ExtrasTally(loaded)
        self.coverage = CoverageTally()
        self.clipped = ClippedRows(loaded.recipe.inference.generation_tokens)
        self.builtin = MetricValues(rows)
        benchmark = loaded.recipe.evaluation.benchmark
        self.benchmark = TaskTally(benchmark) if benchmark is not None else None
        self.rows = 0
        self.inference_errors = 0
        self.generated_tokens = 0

    def add(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        self.inference_errors += int(
            pc.sum(pc.equal(batch.column("finish_reason"), "error")).as_py() or 0
        )
        self.generated_tokens += int(pc.sum(batch.column("completion_tokens")).as_py() or 0)
        self.extras.add(batch)  # first: it names the custom metrics the built-ins skip
        self.coverage.add(batch)
        self.clipped.add(batch)
        scored = batch.filter(pc.fill_null(batch.column("scored"), False))
        if self.benchmark is not None:
            metadata = [json.loads(m) if m else {} for m in scored.column("metadata").to_pylist()]
            self.benchmark.add(
                (m.get(SUBTASK_FIELD) for m in metadata),
                (dict(pairs) for pairs in scored.column("metrics").to_pylist()),
                (m.get(PROBLEM_FIELD) for m in metadata),
            )
            return
        # custom metrics: processor.aggregation (byom.custom_aggregates)
        self.builtin.add(scored.column("metrics"), skip=self.extras.custom_names)


def scored_bleu_stats(loaded: LoadedRecipe) -> np.ndarray:
    """The BLEU statistics of the scored rows in row order, (rows, 10): what the joined
    examples hold, read from the replicas' metrics files alone (replicas are contiguous
    ranges of rows in replica order, each file in row order; :func:`collect_replicas`
    checks both), so that the bootstrap need not wait for the join. A benchmark's rows
    have none."""
    if loaded.recipe.evaluation.benchmark is not None:
        return StatsRows(0).matrix()
    stats = StatsRows(_metrics_rows(loaded))
    columns = ["scored", "bleu_stats"]
    for path in _metrics_paths(loaded):
        for batch in storage.iter_parquet_batches(path, columns, storage.batch_rows()):
            scored = batch.filter(pc.fill_null(batch.column("scored"), False))
            stats.add(scored.column("bleu_stats"))
    return stats.matrix()


def _metrics_paths(loaded: LoadedRecipe) -> list[str]:
    """The replicas' metrics files, in replica (so row) order."""
    layout, replicas = EvalLayout.for_recipe(loaded), loaded.recipe.run.replicas
    return [layout.metrics(r, replicas) for r in range(replicas)]


def _metrics_rows(loaded: LoadedRecipe) -> int:
    """Rows of the replicas' metrics files together (from their footers)."""
    return sum(storage.parquet_rows(path) for path in _metrics_paths(loaded))


def aggregate_metrics(
    tally: ReportTally, stats: np.ndarray, bleu_stderr: float | None = None
) -> dict[str, float]:
    """Built-in metrics of the scored rows: means with stderr, corpus BLEU of ``stats``
    (:func:`scored_bleu_stats`; ``bleu_stderr``: its bootstrap, when already computed)."""
    per_example: dict[str, np.ndarray] = {name: np.zeros(0) for name in PER_EXAMPLE_METRICS}
    custom = tally.extras.custom_names
    # a name seen as custom only in a later batch is custom too
    per_example.update(
        (name, values) for name, values in tally.builtin.arrays().items() if name not in custom
    )
    return aggregate_gen_qa(per_example, stats if len(stats) else None, bleu_stderr=bleu_stderr)


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
    examples_path = layout.examples
    report_lineage = {"stage": "report", **run_lineage}
    schema = lineage.with_lineage(examples_schema(loaded).empty_table(), report_lineage).schema
    tally = ReportTally(loaded)
    # The BLEU bootstrap (numpy, which lets go of the GIL) runs beside the join and the Nova
    # export below: at a million rows it takes a minute, as does each of the two.
    stats = scored_bleu_stats(loaded)
    with ThreadPoolExecutor(1, thread_name_prefix="bleu-bootstrap") as background:
        bootstrap = background.submit(bootstrap_bleu_stderr, stats) if len(stats) else None
        with storage.parquet_writer(examples_path, schema) as writer:
            for batch in collect_replicas(loaded):
                writer.write_batch(batch)
                tally.add(batch)
            # inside: a failure here leaves the previous examples file in place
            custom = byom.custom_aggregates(loaded, tally.extras)
            coverage = tally.coverage.section()
            processor = byom.processor_section(loaded, tally.extras)
            classification = byom.classification_section(loaded, tally.extras)
        stamp = timestamp()
        paths = write_nova_export(
            examples_path,
            layout.results_dir,
            recipe.run.model_name_or_path,
            stamp,
            task_key=result_key(loaded),
        )
        bleu_stderr = bootstrap.result() if bootstrap is not None else None
    inspect_runs = None
    if tally.benchmark is not None:
        entries = tally.benchmark.results()
        if isinstance(tally.benchmark.task, InspectBenchmark):  # Inspect's own metrics too
            inspect_runs = inspect_results.task_results(tally.benchmark.task, examples_path)
            for key, values in inspect_results.result_entries(
                tally.benchmark.task, inspect_runs
            ).items():
                entries[key] = {**entries.get(key, {}), **values}
                if key == result_key(loaded):  # one task: its values are the whole run's
                    entries["all"] = {**entries["all"], **values}
        if recipe.evaluation.baseline is not None:  # strong_reject against its base model
            paired = compare_to_baseline(loaded, examples_path, tally.benchmark.task.headline)
            config_paired = {"baseline_examples": paired.pop("baseline_examples")}
            for key in (result_key(loaded), "all"):
                entries[key] = {**entries[key], **paired}
        metrics = {**entries["all"], **custom}
    elif recipe.evaluation.scored_by_rewards:  # the reward function's metrics alone
        entries = {result_key(loaded): custom}
        metrics = custom
    else:
        entries = None
        metrics = {**aggregate_metrics(tally, stats, bleu_stderr), **custom}
    validation = storage.read_json(layout.validation_report)
    counts = {
        "examples": tally.rows,
        "scored": tally.coverage.scored,
        "inference_errors": tally.inference_errors,
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
        "metric": recipe.evaluation.metric,
        "dataset": {"path": validation["source"], "sha256": validation["dataset_sha256"]},
        "inference": recipe.inference.public_dump(),
        "timestamp": stamp,
        "total_generated_tokens": tally.generated_tokens,
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
    if recipe.evaluation.baseline is not None:
        config_general["baseline"] = {"named": recipe.evaluation.baseline, **config_paired}
    if tally.benchmark is not None:
        config_general["subtasks"] = validation.get("subtasks")
        config_general["subtask_rows"] = tally.benchmark.subtask_rows()
        config_general["compat"] = recipe.evaluation.compat
        config_general["samples"] = recipe.evaluation.samples
    if recipe.notes:
        config_general["notes"] = recipe.notes
    warnings = tally.clipped.warnings()
    from nova_eval_assets.report.inspect_log import (  # inspect_ai: imported when reporting
        inspect_log_decision,
        write_examples_inspect_log,
    )

    inspect_log, inspect_warning = inspect_log_decision(recipe.run.inspect_log, tally.rows)
    warnings += [inspect_warning] if inspect_warning else []
    config_general["warnings"] = warnings
    document = results_document(metrics, config_general, entries)
    if classification is not None:
        document["classification"] = classification
    results_path = layout.result(f"results_{stamp}.json")
    storage.write_json(results_path, document)
    paths.update(results=results_path, examples=examples_path, rejected_rows=layout.rejected_rows)
    if inspect_log and inspect_runs is not None:  # a log per Inspect task, from its samples
        assert isinstance(tally.benchmark.task, InspectBenchmark)
        inspect_results.write_task_logs(
            tally.benchmark.task,
            examples_path,
            inspect_runs,
            layout.inspect_specs,
            lambda task: layout.inspect_log(stamp, task),
        )
        paths["inspect_logs"] = layout.inspect_dir
    elif inspect_log:
        headline = tally.benchmark.task.headline if tally.benchmark is not None else None
        paths["inspect_log"] = write_examples_inspect_log(
            loaded, document, examples_path, sampling_settings(loaded), headline
        )
    clean = document["results"]["all"]
    summary = summary_markdown(clean, counts)
    if entries is not None and tally.benchmark is not None:
        task = tally.benchmark.task
        summary += subtask_markdown(entries, task.headline, tally.benchmark.subtask_rows())
    summary += coverage_markdown(coverage)
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
    byom.check_report_rate(loaded, processor, tally.rows)
    return report


def result_key(loaded: LoadedRecipe) -> str:
    """Nova's results key of the recipe's task (lighteval's ``custom|<task>_<strategy>|0``)."""
    benchmark = loaded.recipe.evaluation.benchmark
    if benchmark is not None:
        return benchmark.result_key
    if loaded.recipe.evaluation.scored_by_rewards:
        return "custom|rft_eval_rft_eval|0"
    return NOVA_TASK_KEY


def read_latest_report(loaded: LoadedRecipe) -> dict[str, Any]:
    """What the last :func:`write_report` of this recipe returned."""
    return storage.read_json(EvalLayout.for_recipe(loaded).latest_report)
