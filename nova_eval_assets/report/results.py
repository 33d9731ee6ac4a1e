"""The results JSON in Nova's (lighteval's) layout, and a Markdown summary of it."""

from __future__ import annotations

import math
from typing import Any

from nova_eval_assets.report.nova_export import NOVA_TASK_KEY


def results_document(metrics: dict[str, float], config_general: dict[str, Any]) -> dict[str, Any]:
    """``{"config_general": ..., "results": {task: metrics, "all": metrics}}``; a NaN metric
    (nothing was scored) is written as null."""
    clean = {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}
    return {
        "config_general": config_general,
        "results": {NOVA_TASK_KEY: clean, "all": dict(clean)},
        "versions": {NOVA_TASK_KEY: 0},
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
