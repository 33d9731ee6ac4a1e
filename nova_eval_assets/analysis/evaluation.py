"""The analysis of one evaluation: :func:`analyze` and its result.

From the per-example columns (:mod:`examples`) it computes the chosen confidence measure,
calibration and a comparison of every measure (:mod:`calibration`), the error categories
and confidence findings (:mod:`failures`), every metric by metadata stratum
(:mod:`strata`), and the per-example table; the result, :class:`EvaluationAnalysis`, holds
it in memory (plots included, rendered by :mod:`outputs`). Writes no file:
:func:`outputs.write_analysis` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from nova_eval_assets.analysis import calibration, failures
from nova_eval_assets.analysis.confidence import MEASURE_COLUMNS
from nova_eval_assets.analysis.examples import fetch_rows, json_mode, read_examples
from nova_eval_assets.analysis.labels import JSON_STATUSES
from nova_eval_assets.analysis.outputs import analysis_images, json_ready
from nova_eval_assets.analysis.strata import image_count_field, metadata_fields, stratify
from nova_eval_assets.recipe import AnalysisConfig

#: the per-row metric a benchmark's scorer gives the answer's confidence in (0..1)
ANSWER_CONFIDENCE = "confidence"


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _quantiles(values: np.ndarray) -> dict[str, float | None]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return {}
    qs = np.percentile(v, [5, 25, 50, 75, 95])
    return {f"p{int(q)}": float(x) for q, x in zip((5, 25, 50, 75, 95), qs, strict=True)}


@dataclass
class EvaluationAnalysis:
    summary: dict[str, Any]  # JSON-ready: every figure of the report
    per_example: pa.Table
    strata: list[dict[str, Any]]
    images: dict[str, bytes]


def analyze(
    source: str | pa.Table,
    config: AnalysisConfig,
    *,
    name: str = "evaluation",
    model: str | None = None,
    plots: bool = True,
) -> EvaluationAnalysis:
    """Confidence, calibration, strata and failures of one evaluation's examples table."""
    ex = read_examples(source, config)
    c = ex.columns
    n = ex.n
    scored = c["scored"]
    correct = c["correct"]
    uses_labels = config.label_field is not None
    c["answer_prob"] = ex.metrics.get(ANSWER_CONFIDENCE, np.full(n, np.nan))
    used, automatic = _confidence_measure(c, scored, config)
    measure_column = MEASURE_COLUMNS[used]
    if measure_column not in c:
        for column in MEASURE_COLUMNS.values():
            c.setdefault(column, np.full(n, np.nan))
        c["answer_found"] = np.zeros(n, dtype=bool)
        ex.notes.append("the examples table has no token log probabilities")
    confidence = np.where(scored, c[measure_column], np.nan)
    c["confidence"] = confidence
    if uses_labels and n and not c["answer_found"].any():
        ex.notes.append(
            f"the label field '{config.label_field}' was found in no generated output, so "
            "there is no label confidence (see the failure categories)"
        )
    elif used == "label_confidence" and not np.isfinite(confidence).any():
        ex.notes.append(
            "no example has a constrained log probability (inference.response_format): "
            "there is no label_confidence"
        )

    # -- calibration of the chosen measure, and a comparison of every measure
    calib = calibration.calibration_summary(
        confidence, correct, config.bins, config.target_accuracy
    )
    measures = []
    for measure, column in MEASURE_COLUMNS.items():
        if measure == "label" and not uses_labels:
            continue
        values = np.where(scored, c[column], np.nan)
        if column == "label_confidence" and used != measure and not np.isfinite(values).any():
            continue  # listed where the output was constrained
        p_ok = np.isfinite(values) & np.isfinite(correct)
        measures.append(
            {
                "measure": measure,
                "column": column,
                "n": int(p_ok.sum()),
                "mean_confidence": float(values[p_ok].mean()) if p_ok.any() else None,
                "ece_equal_width": calibration.expected_calibration_error(
                    values, correct, config.bins, "uniform"
                ),
                "ece_equal_mass": calibration.expected_calibration_error(
                    values, correct, config.bins, "quantile"
                ),
                "brier": calibration.brier_score(values, correct),
                "aurc": calibration.aurc(values, correct),
            }
        )
    by_outcome = []
    for column in (
        "first_token_prob",
        "label_prob",
        "label_confidence",
        "first_token_entropy",
        "first_token_top_mass",
        "mean_token_prob",
        "min_token_prob",
    ):
        if column not in c or (column == "label_prob" and not uses_labels):
            continue
        values = np.where(scored, c[column], np.nan)
        if column == "label_confidence" and not np.isfinite(values).any():
            continue
        right = np.isfinite(values) & (correct == 1)
        wrong = np.isfinite(values) & (correct == 0)
        by_outcome.append(
            {
                "measure": column,
                "correct": float(values[right].mean()) if right.any() else None,
                "incorrect": float(values[wrong].mean()) if wrong.any() else None,
            }
        )

    # -- failures
    json_status = c.get("json_status", np.full(n, 3, dtype=np.int8))
    json_usable = json_status <= (1 if json_mode(config) == "embedded" else 0)
    error_flags = failures.error_flags(
        inference_error=c.get("inference_error", ~scored),
        finish_reason_length=c.get("truncated", np.zeros(n, dtype=bool)),
        output_chars=c.get("output_chars", np.zeros(n, dtype=np.int64)),
        gold_chars=c.get("gold_chars", np.zeros(n, dtype=np.int64)),
        json_invalid=~json_usable,
        has_object=json_usable,
        has_label=c["predicted_label"].is_valid().to_numpy(zero_copy_only=False)
        if "predicted_label" in c
        else np.zeros(n, dtype=bool),
        correct=correct,
        uses_labels=uses_labels,
        length_ratio_min=config.length_ratio_min,
        length_ratio_max=config.length_ratio_max,
    )
    findings = failures.confidence_findings(
        confidence, correct, config.low_confidence_threshold, config.overconfident_threshold
    )
    failure_counts, example_rows = failures.failure_summary(
        error_flags, findings, confidence, config.max_examples
    )
    primary = failures.primary_category(error_flags)

    # -- strata: every metric, the correctness and the confidence findings
    fields, strata_notes = metadata_fields(c["metadata"], config.max_strata_per_field)
    images = image_count_field(c.get("image_count"), config.max_strata_per_field)
    if images is not None and all(f.name != images.name for f in fields):
        fields.append(images)
    stratified: dict[str, np.ndarray] = {"label_accuracy" if uses_labels else "correct": correct}
    stratified.update(ex.metrics)
    has_conf = np.isfinite(confidence)
    stratified["confidence"] = confidence
    stratified["low_confidence"] = np.where(has_conf, findings["low_confidence"], np.nan)
    judged = has_conf & np.isfinite(correct)
    stratified["overconfident_error"] = np.where(judged, findings["overconfident_error"], np.nan)
    corpus = {}
    if ex.bleu_stats.shape[0] == n and np.isfinite(ex.bleu_stats).any():
        # in place: nothing else reads them (a copy is 80 bytes a row)
        ex.bleu_stats[~scored] = np.nan
        corpus["bleu"] = ex.bleu_stats
    strata_rows = stratify(
        stratified,
        fields,
        config.min_stratum_size,
        corpus_stats=corpus,
        rounds=config.bootstrap_rounds,
        seed=config.seed,
    )
    # nothing after the strata reads the metrics or the BLEU statistics (136 bytes a row
    # with the built-in metrics): let go of them before the examples' texts and the plots
    ex.metrics, ex.bleu_stats = {}, np.zeros((0, ex.bleu_stats.shape[1]))
    del stratified, corpus

    # -- examples of each finding and category, with their text
    wanted = np.concatenate([v for v in example_rows.values()] or [np.zeros(0, int)])
    texts = fetch_rows(source, wanted) if wanted.size else {}
    category_names = (*failures.CATEGORIES, "ok")

    def record(pos: int) -> dict[str, Any]:
        row = dict(texts.get(pos, {}))
        row.update(
            position=pos,
            confidence=_finite_or_none(float(confidence[pos])),
            correct=_finite_or_none(float(correct[pos])),
            category=category_names[primary[pos]],
        )
        if uses_labels:
            row.update(
                predicted_label=c["predicted_label"][pos].as_py(),
                gold_label=c["gold_label"][pos].as_py(),
            )
        return row

    failure_counts["examples"] = {
        key: [record(int(p)) for p in rows] for key, rows in example_rows.items()
    }
    failure_counts["thresholds"] = {
        "low_confidence_threshold": config.low_confidence_threshold,
        "overconfident_threshold": config.overconfident_threshold,
        "length_ratio_min": config.length_ratio_min,
        "length_ratio_max": config.length_ratio_max,
    }

    # -- the per-example table
    per_example = _per_example_table(c, error_flags, findings, primary, uses_labels)
    answer_found = c.get("answer_found", np.zeros(n, dtype=bool))
    summary = {
        "kind": "evaluation_analysis",
        "name": name,
        "model": model,
        "settings": config.model_dump(),
        "counts": {
            "examples": n,
            "scored": int(scored.sum()),
            "answer_found": int(answer_found.sum()),
            "with_confidence": int(np.isfinite(confidence).sum()),
            "with_correctness": int(np.isfinite(correct).sum()),
            "json_ok": int((json_status == 0).sum()),
            "json_embedded": int((json_status == 1).sum()),
            "json_invalid": int((json_status == 2).sum()),
            "with_label_confidence": int((np.isfinite(c["label_confidence"]) & scored).sum()),
            "with_forced_tokens": int(((c.get("forced_tokens", np.zeros(n)) > 0) & scored).sum()),
        },
        "notes": ex.notes,
        "confidence": {
            "measure": used,  # the measure used
            "requested": config.confidence,
            "automatic": automatic,  # chosen by confidence 'auto'
            "column": measure_column,
            "quantiles": _quantiles(confidence),
            "mean": float(np.nanmean(confidence)) if np.isfinite(confidence).any() else None,
        },
        "calibration": calib,
        "measures": measures,
        "measures_by_outcome": by_outcome,
        "failures": failure_counts,
        "strata_notes": strata_notes,
        "strata_fields": [f.name for f in fields],
    }
    summary = json_ready(summary)
    images: dict[str, bytes] = {}
    if plots:
        images = analysis_images(summary, strata_rows, confidence, correct, config)
    return EvaluationAnalysis(summary, per_example, strata_rows, images)


def _confidence_measure(
    c: dict[str, Any], scored: np.ndarray, config: AnalysisConfig
) -> tuple[str, bool]:
    """(measure used, chosen automatically): ``auto`` is a benchmark scorer's answer
    confidence where a scored example has one, else the label confidence where one has it
    (constrained decoding), else the first-token probability."""
    if config.confidence != "auto":
        return config.confidence, False
    if np.isfinite(c["answer_prob"][scored]).any():
        return "answer", True
    label_confidence = c.get("label_confidence")
    if label_confidence is not None and np.isfinite(label_confidence[scored]).any():
        return "label_confidence", True
    return "first_token", True


def _per_example_table(
    c: dict[str, Any],
    error_flags: dict[str, np.ndarray],
    findings: dict[str, np.ndarray],
    primary: np.ndarray,
    uses_labels: bool,
) -> pa.Table:
    categories = pa.array([*failures.CATEGORIES, "ok"])
    statuses = pa.array(JSON_STATUSES)
    n = len(c["row_index"])
    columns: dict[str, Any] = {
        "row_index": c["row_index"],
        "metadata": c["metadata"].cast(pa.string()),
        "scored": c["scored"],
        "correct": c["correct"],
        "confidence": c["confidence"],
    }
    if uses_labels:
        columns.update(predicted_label=c["predicted_label"], gold_label=c["gold_label"])
    if "json_status" in c:
        columns["json_status"] = pa.DictionaryArray.from_arrays(
            pa.array(c["json_status"].astype(np.int32)), statuses
        )
    columns["error_category"] = pa.DictionaryArray.from_arrays(
        pa.array(primary.astype(np.int32)), categories
    )
    for name in (
        "answer_found",
        "answer_token_position",
        "label_tokens",
        "first_token_prob",
        "label_prob",
        "label_confidence",
        "forced_tokens",
        "first_token_entropy",
        "first_token_top_mass",
        "mean_logprob",
        "mean_token_prob",
        "min_token_prob",
        "min_token",
        "min_token_position",
        "sequence_logprob",
        "n_tokens",
        "output_chars",
        "gold_chars",
    ):
        if name in c and not (name == "label_prob" and not uses_labels):
            columns[name] = c[name]
    columns.update({name: mask for name, mask in findings.items()})
    columns.update({f"is_{name}": mask for name, mask in error_flags.items()})
    assert all(len(v) == n for v in columns.values())
    return pa.table(columns)
