"""Nova's summary and our diagnostics, computed from a judgments table.

:func:`summarize`: the Bradley-Terry summary of both passes (:mod:`bradley_terry`),
position and length bias, the soft win rate, outcomes per prompt, truncated judgments and
the breakdown by metadata field (:func:`metadata_breakdown`); for a rubric judge's table,
the rubric's weighted scores (:func:`rubric.rubric_summary`); :func:`summary_markdown`
renders them as the Markdown tables a run prints. Pure computation: reads and writes no
file.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa

from nova_eval_assets.judge import bradley_terry as bt
from nova_eval_assets.judge.rubric import RUBRIC_SUMMARY_KEYS, is_rubric_table, rubric_summary

#: Breakdowns by metadata field stop at this many distinct values.
MAX_METADATA_VALUES = 50
SUMMARY_KEYS = (
    "a_scores",
    "b_scores",
    "ties",
    "inference_error",
    "score",
    "winrate",
    "lower_rate",
    "upper_rate",
)


def summarize(table: pa.Table, rounds: int = bt.DEFAULT_ROUNDS, seed: int = bt.DEFAULT_SEED):
    """Nova's summary and our diagnostics from a judgments table."""
    forward = bt.preference_codes(table["forward_preference"].to_pylist())
    backward = bt.preference_codes(table["backward_preference"].to_pylist())
    summary = bt.judge_summary(forward, backward, rounds=rounds, seed=seed)
    if is_rubric_table(table):
        summary.update(rubric_summary(table))
    diagnostics: dict[str, Any] = {
        "prompts": table.num_rows,
        "judgments": 2 * table.num_rows,
        **bt.position_bias(
            forward,
            backward,
            table["length_A"].to_numpy(zero_copy_only=False),
            table["length_B"].to_numpy(zero_copy_only=False),
        ),
    }
    soft = [v for v in table["soft_b_preference"].to_pylist() if v is not None]
    diagnostics["soft_winrate"] = float(np.mean(soft)) if soft else math.nan
    diagnostics["prompts_with_soft_preference"] = len(soft)
    diagnostics["outcomes"] = dict(sorted(Counter(table["outcome"].to_pylist()).items()))
    diagnostics["truncated_judgments"] = sum(
        r == "length"
        for name in ("forward", "backward")
        for r in table[f"{name}_finish_reason"].to_pylist()
    )
    diagnostics["by_metadata"] = metadata_breakdown(table, forward, backward, rounds, seed)
    return summary, diagnostics


def metadata_breakdown(
    table: pa.Table, forward: np.ndarray, backward: np.ndarray, rounds: int, seed: int
) -> dict[str, dict[str, dict[str, float]]]:
    """Nova's summary per value of each top-level field of JSON metadata (fields with at
    most 50 distinct scalar values), so reports break the judge down without a join."""
    parsed: list[dict[str, Any]] = []
    for text in table["metadata"].to_pylist():
        try:
            value = json.loads(text) if text else {}
        except (TypeError, ValueError):
            value = {}
        parsed.append(value if isinstance(value, dict) else {})
    fields = sorted({k for m in parsed for k, v in m.items() if isinstance(v, str | int | bool)})
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in fields:
        values = np.array(
            [str(m[name]) if m.get(name) is not None else "" for m in parsed], dtype=object
        )
        present = np.array([m.get(name) is not None for m in parsed], dtype=bool)
        distinct, inverse = np.unique(values[present], return_inverse=True)
        if not 0 < len(distinct) <= MAX_METADATA_VALUES:
            continue
        f, b = forward[present], backward[present]
        out[name] = {}
        for code, value in enumerate(distinct):
            mask = inverse == code
            stats = bt.judge_summary(f[mask], b[mask], rounds=rounds, seed=seed)
            out[name][str(value)] = {"prompts": int(mask.sum()), **stats}
    return out


def summary_markdown(summary: dict[str, Any], diagnostics: dict[str, Any]) -> str:
    def fmt(value: Any) -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "n/a"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| metric | value | stderr |", "|---|---:|---:|"]
    for key in ("a_scores", "b_scores", "ties", "inference_error", "score"):
        lines.append(f"| {key} | {fmt(summary[key])} | {fmt(summary[f'{key}_stderr'])} |")
    lines.append(
        f"| winrate | {fmt(summary['winrate'])} | 95% bootstrap "
        f"[{fmt(summary['lower_rate'])}, {fmt(summary['upper_rate'])}] |"
    )
    for key in RUBRIC_SUMMARY_KEYS:
        if key in summary:
            lines.append(f"| {key} | {fmt(summary[key])} | {fmt(summary[f'{key}_stderr'])} |")
    lines += ["", "| diagnostic | value |", "|---|---:|"]
    for key in (
        "prompts",
        "judgments",
        "flip_rate",
        "reversal_rate",
        "first_position_win_rate",
        "length_bias",
        "soft_winrate",
        "truncated_judgments",
    ):
        if key in diagnostics:
            lines.append(f"| {key} | {fmt(diagnostics[key])} |")
    outcomes = ", ".join(f"{k}: {v}" for k, v in diagnostics.get("outcomes", {}).items())
    return "\n".join(lines) + f"\n\noutcomes per prompt: {outcomes or 'none'}\n"
