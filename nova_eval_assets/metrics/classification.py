"""Classification report over a JSON label field (an extension beyond Nova).

With the recipe extension ``classification: {label_field: class}``, gold and prediction are
each read as a JSON object and the string in ``label_field`` is the label.

What counts as a valid label (:func:`extract_label`):

- ``json_mode: strict`` (the default): the whole text, apart from surrounding white space,
  must be one JSON object. Text around it, or a Markdown code fence, makes it invalid.
- ``json_mode: embedded``: as strict, else the first JSON object found in the text (the first
  ``{`` from which a whole object parses), so prose or a code fence around it is ignored.
- The object must hold ``label_field``; its value must be a non-empty string, taken exactly
  (no case folding or trimming). If the recipe lists ``labels``, the value must be one of them.

An invalid output gets one reason: ``not_json`` (no JSON object could be parsed),
``not_object`` (valid JSON, but not an object), ``missing_field``, ``not_string``,
``empty_label``, ``unknown_label`` (not among the recipe's ``labels``). Gold is read the same
way (always strictly); examples whose gold has no valid label are left out of the report and
counted as ``gold_invalid``.

The report (:func:`classification_report`), over the examples with a valid gold label; an
invalid prediction counts as wrong:

- ``accuracy`` (correct / examples) with ``accuracy_stderr`` (std/sqrt(n) of the 0/1 column);
- per class: ``precision``, ``recall``, ``f1``, ``support`` (gold count), ``predicted``;
  a 0/0 ratio is 0 (scikit-learn's ``zero_division=0``);
- ``macro_*``: the unweighted mean of the per-class values;
- ``micro_*``: from the summed counts over the classes; invalid predictions are false
  negatives of their gold class but false positives of no class, so ``micro_recall`` equals
  ``accuracy`` and ``micro_precision`` is the accuracy among valid predictions. These are
  exactly scikit-learn's ``classification_report(y_true, y_pred, labels=classes,
  zero_division=0)`` with invalid predictions mapped to a label outside ``classes``;
- ``invalid_rate``, ``invalid_count`` and ``invalid_reasons`` (count per reason);
- ``confusion_matrix``: rows are gold classes, columns the predicted classes plus
  ``(invalid)``.

The classes are the recipe's ``labels`` in their order if given, else the sorted union of
the gold labels and the valid predicted labels.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .stats import mean_and_stderr

JSON_MODES = ("strict", "embedded")
INVALID_COLUMN = "(invalid)"
PROBLEMS = (
    "not_json",
    "not_object",
    "missing_field",
    "not_string",
    "empty_label",
    "unknown_label",
)


@dataclass(frozen=True)
class LabelParse:
    label: str | None
    problem: str | None = None

    @property
    def valid(self) -> bool:
        return self.problem is None


def _first_object(text: str) -> dict | None:
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def parse_json_object(text: str | None, mode: str = "strict") -> tuple[Any, str | None]:
    """(the parsed object, None) or (None, reason) under the given ``json_mode``."""
    if mode not in JSON_MODES:
        raise ValueError(f"json_mode must be one of {JSON_MODES}, got {mode!r}")
    if text is None:
        return None, "not_json"
    try:
        value = json.loads(text)
    except ValueError:
        value, problem = None, "not_json"
    else:
        problem = None if isinstance(value, dict) else "not_object"
    if problem is not None and mode == "embedded":
        found = _first_object(text)
        if found is not None:
            return found, None
    return (value, None) if problem is None else (None, problem)


def extract_label(
    text: str | None,
    field: str,
    mode: str = "strict",
    labels: Sequence[str] | None = None,
) -> LabelParse:
    """The label in ``field`` of the JSON object in ``text``, or why there is none."""
    obj, problem = parse_json_object(text, mode)
    if problem is not None:
        return LabelParse(None, problem)
    if field not in obj:
        return LabelParse(None, "missing_field")
    value = obj[field]
    if not isinstance(value, str):
        return LabelParse(None, "not_string")
    if not value.strip():
        return LabelParse(None, "empty_label")
    if labels is not None and value not in labels:
        return LabelParse(value, "unknown_label")
    return LabelParse(value)


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def _f1(tp: float, fp: float, fn: float) -> float:
    return _ratio(2 * tp, 2 * tp + fp + fn)


class LabelCounts:
    """What the report needs of the examples, counted batch by batch: examples per (gold,
    prediction) pair, invalid predictions per reason, and each example's 0/1 correctness in
    order (one byte per example; its standard error is computed from the column itself)."""

    def __init__(self) -> None:
        self.pairs: Counter[tuple[str, str | None]] = Counter()  # first-seen order
        self.reasons: Counter[str] = Counter()
        self._correct: list[np.ndarray] = []

    def add(
        self,
        gold: Sequence[str],
        predicted: Sequence[str | None],
        problems: Sequence[str | None] | None = None,
    ) -> None:
        """Add examples; ``predicted[i]`` None = invalid, for the reason ``problems[i]``."""
        if len(gold) != len(predicted):
            raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
        problems = problems if problems is not None else [None] * len(gold)
        self.pairs.update(zip(gold, predicted, strict=True))
        self.reasons.update(
            r or "unknown" for p, r in zip(predicted, problems, strict=True) if p is None
        )
        correct = [p is not None and p == g for g, p in zip(gold, predicted, strict=True)]
        self._correct.append(np.array(correct, dtype=bool))

    def report(self, labels: Sequence[str] | None = None) -> dict[str, Any]:
        """The report over the examples added (see the module docstring)."""
        n = self.pairs.total()
        if labels is not None:
            classes = list(labels)
        else:
            seen = {g for g, _ in self.pairs} | {p for _, p in self.pairs if p is not None}
            classes = sorted(seen)
        index = {c: i for i, c in enumerate(classes)}
        width = len(classes) + 1
        matrix = [[0] * width for _ in classes]
        for (g, p), count in self.pairs.items():
            if g not in index:
                raise ValueError(f"gold label {g!r} is not among the classes {classes}")
            column = index[p] if p is not None and p in index else width - 1
            matrix[index[g]][column] += count
        per_class: dict[str, dict[str, float | int]] = {}
        tp_sum = fp_sum = fn_sum = 0
        for c, i in index.items():
            tp = matrix[i][i]
            support = sum(matrix[i])
            predicted_c = sum(row[i] for row in matrix)
            fp, fn = predicted_c - tp, support - tp
            tp_sum, fp_sum, fn_sum = tp_sum + tp, fp_sum + fp, fn_sum + fn
            per_class[c] = {
                "precision": _ratio(tp, tp + fp),
                "recall": _ratio(tp, tp + fn),
                "f1": _f1(tp, fp, fn),
                "support": support,
                "predicted": predicted_c,
            }
        invalid = sum(count for (_, p), count in self.pairs.items() if p is None)
        correct = np.concatenate(self._correct) if self._correct else np.zeros(0, dtype=bool)
        accuracy, accuracy_stderr = mean_and_stderr(correct.astype(np.float64))

        def macro(key: str) -> float:
            if not per_class:
                return math.nan
            return sum(v[key] for v in per_class.values()) / len(per_class)

        report: dict[str, Any] = {
            "examples": n,
            "accuracy": accuracy,
            "accuracy_stderr": accuracy_stderr,
            "macro_precision": macro("precision"),
            "macro_recall": macro("recall"),
            "macro_f1": macro("f1"),
            "micro_precision": _ratio(tp_sum, tp_sum + fp_sum),
            "micro_recall": _ratio(tp_sum, tp_sum + fn_sum),
            "micro_f1": _f1(tp_sum, fp_sum, fn_sum),
            "invalid_count": invalid,
            "invalid_rate": invalid / n if n else math.nan,
            "invalid_reasons": {
                r: self.reasons[r] for r in (*PROBLEMS, "unknown") if self.reasons.get(r)
            },
            "classes": classes,
            "per_class": per_class,
            "confusion_matrix": {
                "rows": classes,
                "columns": [*classes, INVALID_COLUMN],
                "matrix": matrix,
            },
        }
        if n == 0:
            for key in ("micro_precision", "micro_recall", "micro_f1"):
                report[key] = math.nan
        return _json_safe(report)


def classification_report(
    gold: Sequence[str],
    predicted: Sequence[str | None],
    problems: Sequence[str | None] | None = None,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The report over examples with valid gold labels; ``predicted[i]`` None = invalid.

    ``problems[i]`` is the reason an invalid prediction is invalid (counted in
    ``invalid_reasons``). See the module docstring for every definition.
    """
    counts = LabelCounts()
    counts.add(gold, predicted, problems)
    return counts.report(labels)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _fmt(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.1f} %" if percent else f"{value:.4f}"


def classification_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: headline numbers, the per-class table, the confusion matrix."""
    field = report.get("label_field", "label")
    reasons = ", ".join(f"{k} {v}" for k, v in report["invalid_reasons"].items()) or "none"
    lines = [
        f"Classification on the JSON field `{field}` ({report.get('json_mode', 'strict')} JSON), "
        f"{report['examples']} examples"
        + (
            f" ({report['gold_invalid']} left out: gold has no valid label)"
            if report.get("gold_invalid")
            else ""
        )
        + ":",
        "",
        f"- accuracy {_fmt(report['accuracy'])} (stderr {_fmt(report['accuracy_stderr'])}), "
        f"macro F1 {_fmt(report['macro_f1'])}, micro F1 {_fmt(report['micro_f1'])}",
        f"- invalid outputs {_fmt(report['invalid_rate'], percent=True)} "
        f"({report['invalid_count']}; {reasons})",
        "",
        "| class | precision | recall | f1 | support | predicted |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in report["per_class"].items():
        lines.append(
            f"| {name} | {_fmt(row['precision'])} | {_fmt(row['recall'])} | {_fmt(row['f1'])} "
            f"| {row['support']} | {row['predicted']} |"
        )
    lines.append(
        f"| macro avg | {_fmt(report['macro_precision'])} | {_fmt(report['macro_recall'])} "
        f"| {_fmt(report['macro_f1'])} | {report['examples']} | |"
    )
    lines.append(
        f"| micro avg | {_fmt(report['micro_precision'])} | {_fmt(report['micro_recall'])} "
        f"| {_fmt(report['micro_f1'])} | {report['examples']} | |"
    )
    cm = report["confusion_matrix"]
    lines += [
        "",
        "Confusion matrix (rows: gold, columns: predicted):",
        "",
        "| gold \\ predicted | " + " | ".join(cm["columns"]) + " |",
        "|---|" + "---:|" * len(cm["columns"]),
    ]
    for name, row in zip(cm["rows"], cm["matrix"], strict=True):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"
