"""Markdown summaries of an analysis and of a comparison (Dagster asset metadata).

Images are embedded as base64 ``data:`` URIs, which the Dagster UI renders in Markdown.
"""

from __future__ import annotations

import base64
import math
from typing import Any


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def image_markdown(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def analysis_markdown(summary: dict[str, Any], strata: list[dict[str, Any]]) -> str:
    calib = summary["calibration"]
    review = calib["review_threshold"]
    failures = summary["failures"]
    findings = failures["findings"]
    lines = [
        f"**confidence** `{summary['confidence']['measure']}` over {calib['n']} examples",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| accuracy | {_pct(calib['accuracy'])} |",
        f"| mean confidence | {_f(calib['mean_confidence'])} |",
        f"| ECE, equal width | {_f(calib['ece_equal_width'])} |",
        f"| ECE, equal mass | {_f(calib['ece_equal_mass'])} |",
        f"| Brier score | {_f(calib['brier'])} |",
        f"| low confidence | {findings['low_confidence']['count']} |",
        f"| overconfident errors | {findings['overconfident_error']['count']} |",
        "",
    ]
    if review["threshold"] is not None:
        lines.append(
            f"Confidence ≥ **{_f(review['threshold'], 4)}** reaches "
            f"{_pct(review['accuracy'])} accuracy (target {_pct(review['target_accuracy'])}) "
            f"on {_pct(review['coverage'])} of the examples; {review['n_review']} go to review."
        )
    else:
        lines.append(f"No threshold reaches {_pct(review['target_accuracy'])} accuracy.")
    lines += ["", "| error category | examples | primary |", "|---|---:|---:|"]
    for name, c in failures["categories"].items():
        if c["count"]:
            lines.append(f"| {name} | {c['count']} | {failures['primary'].get(name, 0)} |")
    main = "label_accuracy" if summary["settings"].get("label_field") else "correct"
    rows = [r for r in strata if r["metric"] == main and r["field"] != "(all)"]
    if rows:
        lines += ["", f"| field | value | n | {main} | stderr |", "|---|---|---:|---:|---:|"]
        for r in rows:
            flag = " (small)" if r["small"] else ""
            lines.append(
                f"| {r['field']} | {r['value']}{flag} | {r['n']} | {_f(r['mean'])} "
                f"| {_f(r['stderr'])} |"
            )
    for note in [*summary.get("notes", []), *summary.get("strata_notes", [])]:
        lines.append(f"\n_{note}_")
    return "\n".join(lines) + "\n"


def comparison_markdown(summary: dict[str, Any]) -> str:
    a, b = summary["baseline"], summary["candidate"]
    lines = [
        f"**{b}** (B) against **{a}** (A), {summary['counts']['paired']} paired examples",
        "",
        "| metric | A | B | B − A | 95% interval | p | test |",
        "|---|---:|---:|---:|---|---:|---|",
    ]
    for r in summary["overall"]:
        mark = " **\\***" if r["significant"] else ""
        lines.append(
            f"| {r['metric']} | {_f(r['a'], 4)} | {_f(r['b'], 4)} | {_f(r['diff'], 4)}{mark} "
            f"| [{_f(r['low'], 4)}, {_f(r['high'], 4)}] | {_f(r['p_value'], 4)} | {r['test']} |"
        )
    lines.append("\n\\* p < 0.05")
    return "\n".join(lines) + "\n"


def comparison_lines(summary: dict[str, Any], metrics: list[str] | None = None) -> str:
    """The comparison for a terminal: one line per metric (``metrics``: these, in this
    order; default every metric), differences marked where p < 0.05."""
    a, b = summary["baseline"], summary["candidate"]
    rows = {r["metric"]: r for r in summary["overall"]}
    chosen = [m for m in metrics if m in rows] if metrics else list(rows)
    width = max([len("metric"), *(len(m) for m in chosen)])
    lines = [
        f"Paired comparison: {b} (B) against {a} (A), {summary['counts']['paired']} examples",
        f"  {'metric':<{width}}  {'A':>8}  {'B':>8}  {'B - A':>8}  {'95% interval':<19}  p",
    ]
    for m in chosen:
        r = rows[m]
        mark = " *" if r["significant"] else ""
        interval = f"[{_f(r['low'], 4)}, {_f(r['high'], 4)}]"
        lines.append(
            f"  {m:<{width}}  {_f(r['a'], 4):>8}  {_f(r['b'], 4):>8}  {_f(r['diff'], 4):>8}  "
            f"{interval:<19}  {_f(r['p_value'], 4)} ({r['test']}){mark}"
        )
    lines.append("  * p < 0.05")
    return "\n".join(lines)
