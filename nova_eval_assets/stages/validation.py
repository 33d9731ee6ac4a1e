"""validated_dataset: the dataset checked line by line; valid rows, rejected rows, the report."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nova_eval_assets import lineage, storage
from nova_eval_assets.dataset import (
    GEN_QA,
    MAX_LISTED_PROBLEMS,
    SCHEMAS,
    DatasetError,
    DatasetFileError,
    ValidationOutcome,
    arrow_schema,
    validate_batches,
)
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import LoadedRecipe, resolve_relative
from nova_eval_assets.stages.benchmark_samples import SampleCounts, sample_batches
from nova_eval_assets.tasks.sources import BenchmarkSource, SourceUnavailable, resolve_source


def sha256_of(location: str) -> str:
    return storage.sha256(location)


# ---------------------------------------------------------------- validated_dataset


def run_validation(loaded: LoadedRecipe) -> tuple[ValidationOutcome, dict[str, Any]]:
    """Validate the dataset and write the valid rows, the rejected rows and the report.

    One streaming pass: valid rows go to the validated Parquet and rejected rows to
    rejected_rows.jsonl batch by batch, each file appearing whole or not at all; the
    outcome keeps counts and the first problems only. Under ``dataset.on_invalid: fail`` an
    invalid dataset is reported (the report file is written) but no rows are handed on;
    callers raise :class:`DatasetError` from the outcome. A dataset with no valid row
    (empty, only blank lines, every row rejected) is handed on under no policy; under
    ``skip`` this raises :class:`DatasetError` once the report is written, so the run stops
    here rather than in a later stage.
    """
    recipe = loaded.recipe
    layout = EvalLayout.for_recipe(loaded)
    benchmark = recipe.evaluation.benchmark
    counts = SampleCounts()
    if benchmark is None:
        source = loaded.resolve_data_path()
        schema = SCHEMAS[recipe.evaluation.task]
        outcome = ValidationOutcome(source=source, problems_kept=MAX_LISTED_PROBLEMS)
        batches = validate_batches(
            outcome,
            schema,
            metadata_format=recipe.dataset.metadata_format,
            limit=recipe.run.limit,
            max_line_bytes=recipe.dataset.max_line_bytes,
        )
        rows = None
    else:
        rows = benchmark_source(loaded)
        source, schema = rows.description, GEN_QA
        outcome = ValidationOutcome(source=source, problems_kept=MAX_LISTED_PROBLEMS)
        batches = sample_batches(
            outcome,
            rows,
            benchmark,
            recipe.evaluation.subtasks,
            recipe.evaluation.task_options,
            counts,
            limit=recipe.run.limit,
            samples=recipe.evaluation.samples,
        )
    content = lineage.ContentHasher(arrow_schema(schema))

    def rejected_records() -> Iterator[dict[str, Any]]:
        # write_jsonl pulls the rejected rows; each batch's valid rows are written meanwhile
        for valid, rejected in batches:
            if valid.num_rows:
                writer.write_batch(valid)
                content.update(valid)
            yield from (row.as_record() for row in rejected)

    def strict_failure() -> bool:  # known once every line is read
        return not outcome.ok and (recipe.dataset.on_invalid == "fail" or outcome.no_rows)

    try:
        with storage.parquet_writer(layout.validated, arrow_schema(schema)) as writer:
            storage.write_jsonl(layout.rejected_rows, rejected_records())
            if strict_failure():
                raise _RowsWithheld  # the validated file is not published
    except _RowsWithheld:
        storage.delete(layout.validated)  # never leave an older run's rows to be picked up
    except DatasetFileError as exc:
        # an older run's report and rows must not stand in for this dataset's
        for stale in (layout.validation_report, layout.validated, layout.rejected_rows):
            storage.delete(stale)
        hint = dataset_path_hint(loaded) if benchmark is None else ""
        raise DatasetFileError(exc.location, exc.problem + hint) from exc
    summary: dict[str, Any] = {
        "source": source,
        "dataset_sha256": sha256_of(source) if rows is None else rows.sha256(),
        "lines_read": outcome.lines_read,
        "valid_rows": 0 if strict_failure() else outcome.valid_rows,
        "rejected_rows": outcome.rejected_rows,
        "problems": [str(p) for p in outcome.problems[:MAX_LISTED_PROBLEMS]],
        "problem_count": outcome.problem_count,
        "policy": recipe.dataset.on_invalid,
        "ok": outcome.ok,
        "no_rows": outcome.no_rows,  # nothing to evaluate: invalid under either policy
        "report": outcome.report(),
        "validated_path": layout.validated,
        "rejected_path": layout.rejected_rows,
        "sha256": content.hexdigest(),  # of the valid rows: the asset's data version
    }
    if benchmark is not None:
        summary["task"] = benchmark.name
        summary["subtasks"] = recipe.evaluation.subtasks or list(benchmark.subtasks)
        summary["rows_of_other_subtasks"] = counts.other_subtasks
    storage.write_json(layout.validation_report, summary)
    if outcome.no_rows and recipe.dataset.on_invalid == "skip":
        raise DatasetError(outcome)  # "skip" keeps the valid rows, and there are none
    return outcome, summary


class _RowsWithheld(Exception):
    """Raised inside the validated file's writer to discard it: no rows are handed on."""


def benchmark_source(loaded: LoadedRecipe) -> BenchmarkSource:
    """Where the recipe's benchmark reads its rows (dataset.path relative to the recipe)."""
    recipe = loaded.recipe
    benchmark = recipe.evaluation.benchmark
    assert benchmark is not None
    path = recipe.dataset.path
    if path is not None:
        path = resolve_relative(path, loaded.path.parent)
    try:
        return resolve_source(benchmark, path, recipe.dataset.revision, recipe.evaluation.subtasks)
    except SourceUnavailable as exc:
        raise DatasetFileError(path or benchmark.name, f"{exc}\n  recipe: {loaded.path}") from exc


def dataset_path_hint(loaded: LoadedRecipe) -> str:
    """Which recipe key named an unreadable dataset file, and what to change."""
    run = loaded.recipe.run
    if run.reads_training_channel:
        return (
            f"\n  {loaded.path}: run.data_s3_path is empty, which reads the one .jsonl file of "
            "SageMaker's training channel; fix that file, or set run.data_s3_path to the dataset"
        )
    configured = run.data_s3_path or ""
    relative = not storage.is_remote(configured) and not Path(configured).expanduser().is_absolute()
    where = f", relative to the recipe's folder {loaded.path.parent}" if relative else ""
    return (
        f"\n  {loaded.path}: run.data_s3_path is {configured!r}{where}; set it to the path "
        "of the dataset's .jsonl file (or its s3:// URI)"
    )


def validate_or_raise(loaded: LoadedRecipe) -> dict[str, Any]:
    outcome, summary = run_validation(loaded)
    if not outcome.ok and loaded.recipe.dataset.on_invalid == "fail":
        raise DatasetError(outcome)
    return summary
