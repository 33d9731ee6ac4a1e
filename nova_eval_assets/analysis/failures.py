"""Failure analysis: what went wrong, how often, with examples.

Error categories, as flags (an example can have several) and as one primary category
(the first flag in this order, else ``ok``):

- ``inference_error``: inference (or preprocessing) failed: the row is unscored;
- ``empty``: the output is empty or only white space;
- ``truncated``: generation stopped at ``max_new_tokens`` (finish_reason ``length``);
- ``invalid_json`` (with a label field): no JSON object can be read from the output;
- ``missing_label`` (with a label field): a JSON object without the label field;
- ``wrong_label`` (with a label field): a label that differs from the gold label;
- ``low_quality`` (without a label field): the correctness metric is below the quality
  threshold;
- ``too_long`` / ``too_short``: output length over gold length (characters, both
  stripped) above ``length_ratio_max`` / below ``length_ratio_min`` (non-empty outputs).

Confidence findings (thresholds from the recipe):

- ``low_confidence``: confidence below ``low_confidence_threshold``;
- ``overconfident_error``: confidence at or above ``overconfident_threshold`` on an
  incorrect example ("high confidence, low quality").
"""

from __future__ import annotations

from typing import Any

import numpy as np

CATEGORIES = (
    "inference_error",
    "empty",
    "truncated",
    "invalid_json",
    "missing_label",
    "wrong_label",
    "low_quality",
    "too_long",
    "too_short",
)
CONFIDENCE_FINDINGS = ("low_confidence", "overconfident_error")


def error_flags(
    *,
    inference_error: np.ndarray,
    finish_reason_length: np.ndarray,
    output_chars: np.ndarray,
    gold_chars: np.ndarray,
    json_invalid: np.ndarray,
    has_object: np.ndarray,
    has_label: np.ndarray,
    correct: np.ndarray,
    uses_labels: bool,
    length_ratio_min: float,
    length_ratio_max: float,
) -> dict[str, np.ndarray]:
    """Boolean flags per example for every category (see the module docstring)."""
    ok_run = ~inference_error
    empty = ok_run & (output_chars == 0)
    answered = ok_run & ~empty
    wrong = np.nan_to_num(correct, nan=1.0) < 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = output_chars / gold_chars
    no = np.zeros_like(ok_run)
    return {
        "inference_error": inference_error.copy(),
        "empty": empty,
        "truncated": ok_run & finish_reason_length,
        "invalid_json": answered & json_invalid if uses_labels else no,
        "missing_label": answered & has_object & ~has_label if uses_labels else no,
        "wrong_label": answered & has_label & wrong if uses_labels else no,
        "low_quality": no if uses_labels else answered & wrong,
        "too_long": answered & (gold_chars > 0) & (ratio > length_ratio_max),
        "too_short": answered & (gold_chars > 0) & (ratio < length_ratio_min),
    }


def primary_category(flags: dict[str, np.ndarray]) -> np.ndarray:
    """Index into ``(*CATEGORIES, "ok")`` of the first flag set per example."""
    n = len(next(iter(flags.values())))
    primary = np.full(n, len(CATEGORIES), dtype=np.int8)
    for code in reversed(range(len(CATEGORIES))):
        primary[flags[CATEGORIES[code]]] = code
    return primary


def confidence_findings(
    confidence: np.ndarray,
    correct: np.ndarray,
    low_threshold: float,
    overconfident_threshold: float,
) -> dict[str, np.ndarray]:
    finite = np.isfinite(confidence)
    conf = np.where(finite, confidence, np.nan)
    with np.errstate(invalid="ignore"):
        low = finite & (conf < low_threshold)
        over = finite & (conf >= overconfident_threshold) & (np.nan_to_num(correct, nan=1) < 0.5)
    return {"low_confidence": low, "overconfident_error": over}


def pick(mask: np.ndarray, key: np.ndarray | None, k: int, largest: bool) -> np.ndarray:
    """Up to ``k`` row positions of ``mask``: by ``key`` (largest or smallest first, NaN
    last), else the first ones."""
    rows = np.flatnonzero(mask)
    if k <= 0 or rows.size == 0:
        return rows[:0]
    if key is None:
        return rows[:k]
    values = key[rows]
    values = np.where(np.isfinite(values), -values if largest else values, np.inf)
    if rows.size > k:
        part = np.argpartition(values, k - 1)[:k]
        rows, values = rows[part], values[part]
    return rows[np.lexsort((rows, values))]


def failure_summary(
    flags: dict[str, np.ndarray],
    findings: dict[str, np.ndarray],
    confidence: np.ndarray,
    max_examples: int,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Counts and rates per category and finding, and the row positions of the examples
    to show for each (overconfident errors most confident first, low-confidence least
    confident first, categories most confident first)."""
    n = len(confidence)
    primary = primary_category(flags)
    names = (*CATEGORIES, "ok")
    summary: dict[str, Any] = {
        "examples": n,
        "categories": {
            name: {"count": int(flags[name].sum()), "rate": float(flags[name].mean()) if n else 0}
            for name in CATEGORIES
        },
        "primary": {
            name: int(c)
            for name, c in zip(names, np.bincount(primary, minlength=len(names)), strict=True)
        },
        "findings": {
            name: {"count": int(mask.sum()), "rate": float(mask.mean()) if n else 0}
            for name, mask in findings.items()
        },
    }
    examples = {
        "low_confidence": pick(findings["low_confidence"], confidence, max_examples, False),
        "overconfident_error": pick(
            findings["overconfident_error"], confidence, max_examples, True
        ),
    }
    for name in CATEGORIES:
        examples[name] = pick(flags[name], confidence, max_examples, True)
    return summary, examples
