"""Plots of the analysis reports, as PNG bytes (matplotlib, Agg canvas, no pyplot)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nova_eval_assets.analysis.calibration import figure_png, new_figure

BLUE, RED, GREY = "#4c78a8", "#e45756", "#888888"


def confidence_histogram_png(
    confidence: np.ndarray, correct: np.ndarray, measure: str, bins: int = 20
) -> bytes:
    """Histogram of confidence for correct and incorrect examples."""
    figure = new_figure(5.6, 3.6)
    axes = figure.subplots()
    keep = np.isfinite(confidence) & np.isfinite(correct)
    p, y = np.clip(confidence[keep], 0, 1), correct[keep] >= 0.5
    edges = np.linspace(0, 1, bins + 1)
    axes.hist(
        [p[y], p[~y]],
        bins=edges,
        stacked=True,
        color=[BLUE, RED],
        label=[f"correct ({int(y.sum())})", f"incorrect ({int((~y).sum())})"],
    )
    axes.set_xlabel(f"confidence ({measure})")
    axes.set_ylabel("examples")
    axes.set_title("Confidence of correct and incorrect examples")
    axes.legend(fontsize=8, loc="upper left")
    return figure_png(figure)


def strata_png(rows: list[dict[str, Any]], metric: str, min_size: int) -> bytes | None:
    """The metric per stratum of every field, with +-1.96 stderr bars; small strata pale."""
    chosen = [r for r in rows if r["metric"] == metric and r["field"] != "(all)"]
    if not chosen:
        return None
    overall = next((r for r in rows if r["metric"] == metric and r["field"] == "(all)"), None)
    figure = new_figure(6.4, max(2.0, 0.28 * len(chosen) + 1.2))
    axes = figure.subplots()
    labels = [f"{r['field']} = {r['value']} (n={r['n']})" for r in chosen]
    means = [r["mean"] if r["mean"] is not None else math.nan for r in chosen]
    errors = [1.96 * r["stderr"] if r["stderr"] is not None else 0.0 for r in chosen]
    colors = ["#c6d4e6" if r["small"] else BLUE for r in chosen]
    positions = np.arange(len(chosen))[::-1]
    axes.barh(positions, means, xerr=errors, color=colors, ecolor="#333333", capsize=2)
    if overall and overall["mean"] is not None:
        axes.axvline(overall["mean"], color=RED, linestyle="--", label="all examples")
        axes.legend(fontsize=8, loc="lower right")
    axes.set_yticks(positions, labels, fontsize=7)
    axes.set_xlabel(f"{metric} (bars: 95% interval; pale: n < {min_size})")
    axes.set_title(f"{metric} by metadata stratum")
    return figure_png(figure)


def forest_png(rows: list[dict[str, Any]], a_name: str, b_name: str) -> bytes | None:
    """Difference (B - A) per metric with its 95% bootstrap interval, one panel per metric
    (metrics have different scales: bleu is 0..100)."""
    chosen = [r for r in rows if r["field"] == "(all)" and r["diff"] is not None]
    if not chosen:
        return None
    figure = new_figure(6.4, 0.75 * len(chosen) + 0.9)
    panels = figure.subplots(len(chosen), 1, squeeze=False)[:, 0]
    for axes, row in zip(panels, chosen, strict=True):
        color = RED if row["significant"] else GREY
        low = row["low"] if row["low"] is not None else row["diff"]
        high = row["high"] if row["high"] is not None else row["diff"]
        axes.plot([low, high], [0, 0], color=color, linewidth=2.5)
        axes.plot([row["diff"]], [0], marker="o", color=color)
        axes.axvline(0, color="#333333", linewidth=1)
        span = max(abs(low), abs(high), 1e-9) * 1.15
        axes.set_xlim(-span, span)
        axes.set_yticks([])
        p = "n/a" if row["p_value"] is None else f"{row['p_value']:.3g}"
        axes.set_ylabel(f"{row['metric']}\np={p}", rotation=0, ha="right", va="center", fontsize=8)
        axes.tick_params(axis="x", labelsize=7)
    panels[0].set_title(f"{b_name} - {a_name}: 95% paired bootstrap interval (red: p < 0.05)")
    return figure_png(figure)
