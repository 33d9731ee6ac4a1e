"""The results JSON in Nova's (lighteval's) layout, and a Markdown summary of it."""

from __future__ import annotations

import math
from typing import Any

from nova_eval_assets.metrics.classification import classification_markdown
from nova_eval_assets.report.nova_export import NOVA_TASK_KEY
from nova_eval_assets.tasks.base import subtask_of_key

__all__ = [
    "classification_markdown",
    "metric_rows",
    "processor_markdown",
    "results_document",
    "summary_markdown",
]


def results_document(
    metrics: dict[str, float],
    config_general: dict[str, Any],
    entries: dict[str, dict[str, float]] | None = None,
) -> dict[str, Any]:
    """``{"config_general": ..., "results": {task: metrics, "all": metrics}}``, or a
    benchmark's ``entries`` (a key per subtask, the task's, ``all``: tasks/aggregate.py)
    with ``metrics`` as ``all``; a NaN metric (nothing was scored) is written as null."""

    def clean(values: dict[str, float]) -> dict[str, float | None]:
        return {k: (v if math.isfinite(v) else None) for k, v in values.items()}

    if entries is None:
        entries = {NOVA_TASK_KEY: metrics}
    results = {key: clean(values) for key, values in entries.items() if key != "all"}
    results["all"] = clean(metrics)
    return {
        "config_general": config_general,
        "results": results,
        "versions": dict.fromkeys((key for key in results if key != "all"), 0),
    }


def metric_rows(metrics: dict[str, float | None]) -> list[tuple[str, float | None, float | None]]:
    """(metric, value, stderr) for every metric that has a ``_stderr`` sibling or not."""
    return [
        (name, value, metrics.get(f"{name}_stderr"))
        for name, value in metrics.items()
        if not name.endswith("_stderr")
    ]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def summary_markdown(metrics: dict[str, float | None], counts: dict[str, int]) -> str:
    lines = ["| metric | value | stderr |", "|---|---:|---:|"]
    lines += [f"| {n} | {_fmt(v)} | {_fmt(s)} |" for n, v, s in metric_rows(metrics)]
    facts = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items())
    return "\n".join(lines) + f"\n\n{facts}\n"


def subtask_markdown(
    entries: dict[str, dict[str, float]], headline: str, rows: dict[str, int]
) -> str:
    """A benchmark's subtasks, one line each: the headline metric, its stderr, the rows."""
    lines = [f"| subtask | {headline} | stderr | rows |", "|---|---:|---:|---:|"]
    for key, values in entries.items():
        subtask = subtask_of_key(key)
        if subtask is not None:
            value, stderr = values.get(headline), values.get(f"{headline}_stderr")
            lines.append(f"| {subtask} | {_fmt(value)} | {_fmt(stderr)} | {rows.get(subtask, 0)} |")
    return "\n" + "\n".join(lines) + "\n" if len(lines) > 2 else ""


def processor_markdown(processor: dict[str, Any]) -> str:
    """The processor's target, error counts and time, and the first per-example errors."""
    stages = [s for s in ("preprocess", "postprocess") if processor.get(f"{s}ing")]
    parts = [
        f"{stage}: {processor[f'{stage}_errors']} errors, "
        f"{processor[f'{stage}_seconds']:.2f} s in calls"
        for stage in stages
    ]
    limit = processor.get("max_error_rate")
    policy = "errors never fail the run" if limit is None else f"max_error_rate {limit:g}"
    if processor.get("reward_function"):
        text = (
            f"\nReward function {processor['target']} ({processor['kind']}, {policy}): "
            f"{processor['postprocess_errors']} rows without a reward, "
            f"{processor['postprocess_seconds']:.2f} s in calls\n"
        )
    else:
        text = (
            f"\nProcessor {processor['target']} ({processor['kind']}, aggregation "
            f"{processor['aggregation']}, {policy}): {'; '.join(parts) or 'no stage enabled'}\n"
        )
    listed = processor.get("first_errors") or []
    if listed:
        what = "reward function" if processor.get("reward_function") else "processor"
        text += f"\nFirst {what} errors:\n\n" + "".join(
            f"- row {e['row_index']} ({e['stage']}): {e['error']}\n" for e in listed
        )
    return text
