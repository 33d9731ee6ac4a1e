"""What the pipeline stages do with a recipe's processor and classification settings.

Plain functions over Arrow tables and row dicts, called by :mod:`nova_eval_assets.stages`:

- :func:`apply_preprocessing` (``preprocessed_prompts``): each row's ``system``, ``prompt``
  and ``gold`` are replaced by the preprocessor's answer, so inference sees, and every
  output records, the rewritten text. A row whose call fails keeps its original text, gets
  ``preprocess_error``, is still generated (so batching, and hence results, do not depend
  on which rows failed or on the replica count), and is left out of every metric.
- :func:`score_extras` (``postprocessed_metrics``, per replica): the postprocessor's metrics
  for every scored row (``custom_metrics``, merged into ``metrics``), or its
  ``postprocess_error``; and the classification columns (``gold_label``,
  ``predicted_label``, ``label_valid``, ``label_problem``).
- :func:`processor_section`, :func:`custom_aggregates`, :func:`classification_section`
  (``aggregated_report``): counts, timings and aggregates for the results JSON.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from nova_eval_assets.byom.runner import CallResult, ProcessorRunner, check_error_rate
from nova_eval_assets.metrics.classification import classification_report, extract_label
from nova_eval_assets.metrics.custom import aggregate_custom
from nova_eval_assets.recipe import LoadedRecipe

MAX_LISTED_ERRORS = 10


def runner_for(loaded: LoadedRecipe) -> ProcessorRunner:
    config = loaded.recipe.active_processor
    assert config is not None
    return ProcessorRunner.from_config(config, loaded.path.parent)


def preprocessing_enabled(loaded: LoadedRecipe) -> bool:
    config = loaded.recipe.active_processor
    return bool(config and config.preprocessing.enabled)


def postprocessing_enabled(loaded: LoadedRecipe) -> bool:
    config = loaded.recipe.active_processor
    return bool(config and config.postprocessing.enabled)


def first_errors(
    row_indices: Sequence[int], errors: Sequence[str | None], limit: int = MAX_LISTED_ERRORS
) -> list[dict[str, Any]]:
    listed = [
        {"row_index": r, "error": e}
        for r, e in zip(row_indices, errors, strict=True)
        if e is not None
    ]
    return listed[:limit]


# ---------------------------------------------------------------- preprocessed_prompts


def apply_preprocessing(loaded: LoadedRecipe, prompts: pa.Table) -> tuple[pa.Table, dict[str, Any]]:
    """Rewrite ``system``/``prompt``/``gold`` with the preprocessor; fill the processor columns.

    Returns the table and a summary (empty when preprocessing is off). Failed calls are
    recorded, never raised; the caller writes the table, then applies the recipe's
    ``max_error_rate`` with :func:`check_preprocess_rate`.
    """
    if not preprocessing_enabled(loaded):
        return prompts, {}
    runner = runner_for(loaded)
    rows = prompts.select(["system", "prompt", "gold"]).to_pylist()
    started = time.perf_counter()
    results = runner.preprocess(rows)
    wall = time.perf_counter() - started
    columns = {name: prompts[name].to_pylist() for name in ("system", "prompt", "gold")}
    for i, result in enumerate(results):
        if result.ok:
            for name in ("system", "prompt", "gold"):
                columns[name][i] = result.body[name]
    errors = [r.error for r in results]
    table = prompts
    for name, values in (
        *columns.items(),
        ("preprocess_error", errors),
        ("preprocess_seconds", [r.seconds for r in results]),
    ):
        index = table.schema.get_field_index(name)
        field = table.schema.field(index)
        table = table.set_column(index, field, pa.array(values, type=field.type))
    summary = {
        "processor": runner.target,
        "preprocess_errors": sum(e is not None for e in errors),
        "preprocess_seconds": round(wall, 4),
        "preprocess_call_seconds": round(sum(r.seconds for r in results), 4),
        "preprocess_first_errors": first_errors(prompts["row_index"].to_pylist(), errors),
    }
    return table, summary


def check_preprocess_rate(loaded: LoadedRecipe, summary: dict[str, Any], rows: int) -> None:
    if summary:
        check_error_rate(
            "preprocessing",
            summary["preprocess_errors"],
            rows,
            loaded.recipe.active_processor.max_error_rate,  # type: ignore[union-attr]
        )


# ---------------------------------------------------------------- postprocessed_metrics


def _custom_metrics(
    result: CallResult, builtin: Iterable[str]
) -> tuple[list[tuple[str, float]], str | None]:
    """The answer's metrics as (name, value) pairs, or an error for a clashing name."""
    taken = set(builtin)
    pairs = []
    for item in result.body:
        name = item["metric"]
        if name in taken or name.endswith("_stderr"):
            return [], (
                f"malformed answer: custom metric {name!r} clashes with a built-in metric "
                "or a _stderr key; rename it"
            )
        pairs.append((name, float(item["value"])))
    return pairs, None


def score_extras(
    loaded: LoadedRecipe,
    outputs: Sequence[dict[str, Any]],
    scored: Sequence[bool],
    builtin: Sequence[Sequence[tuple[str, float]]],
) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """Per-row processor and classification columns for one replica, and a summary.

    ``outputs`` rows hold ``row_index``, ``prompt``, ``gold`` and ``prediction``; ``builtin``
    is each row's built-in metric pairs (custom names must not clash with them).
    """
    n = len(outputs)
    columns: dict[str, list[Any]] = {
        "custom_metrics": [[] for _ in range(n)],
        "postprocess_error": [None] * n,
        "postprocess_seconds": [None] * n,
        "gold_label": [None] * n,
        "predicted_label": [None] * n,
        "label_valid": [None] * n,
        "label_problem": [None] * n,
    }
    summary: dict[str, Any] = {}
    if postprocessing_enabled(loaded):
        runner = runner_for(loaded)
        todo = [i for i in range(n) if scored[i]]
        started = time.perf_counter()
        results = runner.postprocess(
            [
                {
                    "prompt": outputs[i]["prompt"],
                    "inference_output": outputs[i]["prediction"] or "",
                    "gold": outputs[i]["gold"],
                }
                for i in todo
            ]
        )
        wall = time.perf_counter() - started
        for i, result in zip(todo, results, strict=True):
            columns["postprocess_seconds"][i] = result.seconds
            if result.ok:
                names = [name for name, _ in builtin[i]] + ["bleu"]
                pairs, error = _custom_metrics(result, names)
                columns["custom_metrics"][i] = pairs
                columns["postprocess_error"][i] = error
            else:
                columns["postprocess_error"][i] = result.error
        errors = columns["postprocess_error"]
        summary = {
            "processor": runner.target,
            "postprocessed": len(todo),
            "postprocess_errors": sum(e is not None for e in errors),
            "postprocess_seconds": round(wall, 4),
            "postprocess_call_seconds": round(sum(r.seconds for r in results), 4),
            "postprocess_first_errors": first_errors([o["row_index"] for o in outputs], errors),
        }
    config = loaded.recipe.classification
    if config is not None:
        for i, row in enumerate(outputs):
            gold = extract_label(row["gold"], config.label_field, "strict", config.labels)
            if not gold.valid:
                columns["label_problem"][i] = f"gold_{gold.problem}"
                continue
            columns["gold_label"][i] = gold.label
            if not scored[i]:
                continue
            pred = extract_label(
                row["prediction"], config.label_field, config.json_mode, config.labels
            )
            columns["predicted_label"][i] = pred.label
            columns["label_valid"][i] = pred.valid
            columns["label_problem"][i] = pred.problem
    return columns, summary


# ---------------------------------------------------------------- aggregated_report


def custom_metric_names(table: pa.Table) -> list[str]:
    """Every custom metric name, in first-seen order."""
    names: dict[str, None] = {}
    for pairs in table["custom_metrics"].to_pylist():
        for name, _ in pairs or []:
            names.setdefault(name, None)
    return list(names)


def custom_aggregates(loaded: LoadedRecipe, table: pa.Table) -> dict[str, float]:
    """Custom metrics of the scored rows, aggregated with ``processor.aggregation``."""
    if "custom_metrics" not in table.column_names:
        return {}
    scored = table.filter(table["scored"])
    values: dict[str, list[float]] = {}
    for pairs in scored["custom_metrics"].to_pylist():
        for name, value in pairs or []:
            values.setdefault(name, []).append(value)
    if not values:
        return {}
    config = loaded.recipe.active_processor
    aggregation = config.aggregation if config else "average"
    return aggregate_custom(values, aggregation)


def _count_set(table: pa.Table, column: str) -> int:
    if column not in table.column_names:
        return 0
    return int(table.num_rows - table[column].null_count)


def _sum(table: pa.Table, column: str) -> float:
    if column not in table.column_names:
        return 0.0
    return float(pc.sum(table[column]).as_py() or 0.0)


def processor_section(loaded: LoadedRecipe, table: pa.Table) -> dict[str, Any] | None:
    """The processor's configuration, error counts and timings over the whole run."""
    config = loaded.recipe.active_processor
    if config is None:
        return None
    pre_errors = _count_set(table, "preprocess_error")
    post_errors = _count_set(table, "postprocess_error")
    columns = ["row_index", "preprocess_error", "postprocess_error"]
    rows = table.select(columns).to_pylist() if pre_errors + post_errors else []
    listed = [
        {"row_index": r["row_index"], "stage": stage, "error": r[f"{stage}_error"]}
        for r in rows
        for stage in ("preprocess", "postprocess")
        if r.get(f"{stage}_error") is not None
    ][:MAX_LISTED_ERRORS]
    return {
        "target": config.lambda_arn or config.handler,
        "kind": "lambda" if config.lambda_arn else "local",
        "preprocessing": config.preprocessing.enabled,
        "postprocessing": config.postprocessing.enabled,
        "aggregation": config.aggregation,
        "max_error_rate": config.max_error_rate,
        "custom_metrics": custom_metric_names(table)
        if "custom_metrics" in table.column_names
        else [],
        "preprocessed": table.num_rows if config.preprocessing.enabled else 0,
        "postprocessed": _count_set(table, "postprocess_seconds"),
        "preprocess_errors": pre_errors,
        "postprocess_errors": post_errors,
        "processor_errors": pre_errors + post_errors,
        "preprocess_seconds": round(_sum(table, "preprocess_seconds"), 4),
        "postprocess_seconds": round(_sum(table, "postprocess_seconds"), 4),
        "inference_seconds": round(_sum(table, "latency_s"), 4),
        "first_errors": listed,
    }


def check_report_rate(loaded: LoadedRecipe, section: dict[str, Any] | None, rows: int) -> None:
    if section:
        check_error_rate(
            "processor",
            section["processor_errors"],
            rows,
            loaded.recipe.active_processor.max_error_rate,  # type: ignore[union-attr]
        )


def classification_section(loaded: LoadedRecipe, table: pa.Table) -> dict[str, Any] | None:
    """The classification report over scored rows with a valid gold label."""
    config = loaded.recipe.classification
    if config is None:
        return None
    rows = table.select(
        ["scored", "gold_label", "predicted_label", "label_valid", "label_problem"]
    ).to_pylist()
    considered = [r for r in rows if r["scored"] and r["gold_label"] is not None]
    report = classification_report(
        [r["gold_label"] for r in considered],
        [r["predicted_label"] if r["label_valid"] else None for r in considered],
        [r["label_problem"] for r in considered],
        labels=config.labels,
    )
    return {
        "label_field": config.label_field,
        "json_mode": config.json_mode,
        "gold_invalid": sum(r["gold_label"] is None for r in rows if r["scored"]),
        **report,
    }


def processor_fingerprint(loaded: LoadedRecipe) -> str | None:
    """A content hash of a local handler file, so editing it changes the assets' code
    version (Dagster then marks the processed assets stale); None for other targets."""
    import hashlib

    config = loaded.recipe.active_processor
    if config is None or not config.handler:
        return None
    target = config.handler.rpartition(":")[0]
    if not (target.endswith(".py") or "/" in target or "\\" in target):
        return None
    from pathlib import Path

    path = Path(target)
    path = path if path.is_absolute() else loaded.path.parent / path
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return "missing"
