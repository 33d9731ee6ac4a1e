"""The whole analysis of an evaluation, and the comparison of two, as plain functions.

:func:`analyze` reads the examples table in record batches (see :mod:`columns`), computes
the per-example confidence, correctness and error flags, then calibration, strata and
failures over the whole column; :func:`write_analysis` writes the outputs next to the
results. :func:`compare_evaluations` / :func:`write_comparison` do the same for two
evaluations of one dataset. :func:`run_analysis` and :func:`run_comparison` are what the
Dagster assets call.

Outputs, in ``<run>/eval_results/analysis/``: ``report.html`` (offline, plots embedded),
``analysis.json`` (every figure of the report), ``per_example.parquet`` (one row per
example: confidence measures, labels, correctness, error flags), ``strata.parquet`` and
the plots as PNG files. A comparison writes ``report.html``, ``comparison.json``,
``comparison.parquet`` and ``forest.png`` in ``<run>/eval_results/comparison_vs_<baseline>/``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nova_eval_assets import storage
from nova_eval_assets.analysis import calibration, failures
from nova_eval_assets.analysis.columns import (
    flags,
    iter_batches,
    merge_metric_batches,
    metric_columns,
    stats_matrix,
)
from nova_eval_assets.analysis.comparison import compare, pair_rows
from nova_eval_assets.analysis.confidence import MEASURE_COLUMNS, confidence_columns
from nova_eval_assets.analysis.labels import JSON_STATUSES, labels_equal, parse_label_column
from nova_eval_assets.analysis.strata import image_count_field, metadata_fields, stratify
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.metrics import PER_EXAMPLE_METRICS
from nova_eval_assets.recipe import AnalysisConfig, LoadedRecipe

ANALYSIS_COLUMNS = [
    "row_index",
    "prediction",
    "gold",
    "metadata",
    "finish_reason",
    "error",
    "scored",
    "metrics",
    "bleu_stats",
    "token_logprobs",
    "image_count",  # a stratum field when any row has images (strata.image_count_field)
]
COMPARISON_COLUMNS = ["row_index", "prompt", "prediction", "gold", "metadata", "scored"]
TEXT_COLUMNS = ["row_index", "prompt", "prediction", "gold", "metadata", "finish_reason"]
TEXT_LIMITS = {"prompt": 500, "prediction": 700, "gold": 500, "metadata": 300}
CORPUS_METRICS = ("bleu",)


@dataclass
class Examples:
    """Per-example columns of one evaluation, whole-column numpy / Arrow arrays."""

    columns: dict[str, Any]
    metrics: dict[str, np.ndarray]
    bleu_stats: np.ndarray
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.columns["row_index"])


def _concat(parts: list[Any]) -> Any:
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return pa.concat_arrays(
        [p.combine_chunks() if isinstance(p, pa.ChunkedArray) else p for p in parts]
    )


def _text_chars(array: pa.Array) -> np.ndarray:
    trimmed = pc.utf8_trim_whitespace(array)
    return pc.fill_null(pc.utf8_length(trimmed), 0).to_numpy(zero_copy_only=False)


def _batch(
    batch: pa.RecordBatch, config: AnalysisConfig, tokens: bool, for_comparison: bool
) -> dict[str, Any]:
    """Per-example columns of one batch. ``for_comparison``: only what a comparison needs
    (labels, and gold strings and prompt lengths to check the pairing)."""
    n = batch.num_rows
    names = batch.schema.names
    col = batch.column
    out: dict[str, Any] = {
        "row_index": col("row_index").to_numpy(zero_copy_only=False).astype(np.int64),
        "metadata": col("metadata") if "metadata" in names else pa.nulls(n, pa.string()),
        "scored": flags(col("scored")) if "scored" in names else np.ones(n, dtype=bool),
    }
    if "prediction" in names:
        prediction, gold = col("prediction"), col("gold")
        if config.label_field is not None or not for_comparison:
            predicted = parse_label_column(prediction, config.label_field, json_mode(config))
            out.update(predicted_label=predicted.label, json_status=predicted.json_status)
        if config.label_field is not None and not for_comparison:
            out["gold_label"] = parse_label_column(gold, config.label_field, "strict").label
        if not for_comparison:
            out.update(output_chars=_text_chars(prediction), gold_chars=_text_chars(gold))
        if "prompt" in names:
            out["prompt_bytes"] = pc.fill_null(pc.binary_length(col("prompt")), -1).to_numpy(
                zero_copy_only=False
            )
            out["gold"] = gold
    if "finish_reason" in names:
        reason = col("finish_reason")
        error = col("error").is_valid() if "error" in names else pa.nulls(n, pa.bool_())
        failed = flags(pc.or_(pc.equal(reason, "error"), error))
        out["inference_error"] = failed | ~out["scored"]  # unscored: some stage failed
        out["truncated"] = flags(pc.equal(reason, "length"))
    if tokens and "token_logprobs" in names:
        out.update(confidence_columns(col("token_logprobs"), config.label_field))
    if "image_count" in names:
        counts = pc.fill_null(col("image_count"), 0)
        out["image_count"] = counts.to_numpy(zero_copy_only=False).astype(np.int64)
    return out


def read_examples(
    source: str | pa.Table, config: AnalysisConfig, columns: list[str] | None = None
) -> Examples:
    """Stream the examples table and keep only the per-example analysis columns (given
    ``columns``: those a comparison reads, without gold labels; see
    :func:`compare_evaluations`)."""
    for_comparison = columns is not None
    columns = columns or ANALYSIS_COLUMNS
    parts: list[dict[str, Any]] = []
    metric_parts: list[dict[str, np.ndarray]] = []
    stat_parts: list[np.ndarray] = []
    for batch in iter_batches(source, columns):
        names = batch.schema.names
        parts.append(_batch(batch, config, "token_logprobs" in columns, for_comparison))
        metric_parts.append(metric_columns(batch.column("metrics")) if "metrics" in names else {})
        if "bleu_stats" in names:
            stat_parts.append(stats_matrix(batch.column("bleu_stats")))
    if not parts:
        raise ValueError("the examples table has no rows")
    merged = {name: _concat([p[name] for p in parts]) for name in parts[0]}
    metrics = merge_metric_batches(metric_parts, [len(p["row_index"]) for p in parts])
    stats = np.concatenate(stat_parts) if stat_parts else np.zeros((0, 10))
    examples = Examples(merged, _ordered(metrics), stats)
    if not (for_comparison and config.label_field is not None):
        examples.columns["correct"] = _correctness(examples, config)
    return examples


def json_mode(config: AnalysisConfig) -> str:
    return config.json_mode or "strict"


def effective_settings(loaded: LoadedRecipe) -> AnalysisConfig:
    """The recipe's analysis settings, with the label field and JSON mode of its
    classification section where the analysis section leaves them unset."""
    settings = loaded.recipe.analysis
    classification = getattr(loaded.recipe, "classification", None)
    update: dict[str, Any] = {}
    if settings.label_field is None and classification is not None:
        update["label_field"] = classification.label_field
    if settings.json_mode is None:
        update["json_mode"] = getattr(classification, "json_mode", None) or "strict"
    return settings.model_copy(update=update)


def _ordered(metrics: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [m for m in PER_EXAMPLE_METRICS if m in metrics]
    return {name: metrics[name] for name in [*names, *(m for m in metrics if m not in names)]}


def _correctness(examples: Examples, config: AnalysisConfig) -> np.ndarray:
    c = examples.columns
    scored = c["scored"]
    if config.label_field is not None:
        correct = labels_equal(c["predicted_label"], c["gold_label"])
    else:
        metric = examples.metrics.get(config.correctness_metric)
        if metric is None:
            examples.notes.append(
                f"correctness metric '{config.correctness_metric}' is not in the results; "
                "nothing is counted correct or incorrect"
            )
            return np.full(examples.n, np.nan)
        with np.errstate(invalid="ignore"):
            correct = np.where(
                np.isfinite(metric), (metric >= config.quality_threshold).astype(float), np.nan
            )
    return np.where(scored, correct, np.nan)


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


def _clip(text: Any, limit: int) -> Any:
    if isinstance(text, str) and len(text) > limit:
        return text[:limit] + f"… [{len(text) - limit} more characters]"
    return text


def fetch_rows(source: str | pa.Table, positions: np.ndarray) -> dict[int, dict[str, Any]]:
    """The text columns of the rows at ``positions`` (positions in the table), clipped."""
    wanted = np.unique(positions)
    found: dict[int, dict[str, Any]] = {}
    offset = 0
    for batch in iter_batches(source, TEXT_COLUMNS):
        local = wanted[(wanted >= offset) & (wanted < offset + batch.num_rows)] - offset
        if local.size:
            for pos, row in zip(local, batch.take(pa.array(local)).to_pylist(), strict=True):
                found[int(pos + offset)] = {
                    k: _clip(v, TEXT_LIMITS.get(k, 10_000)) for k, v in row.items()
                }
        offset += batch.num_rows
    return found


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
    used, automatic = _confidence_measure(c, scored, config)
    measure_column = MEASURE_COLUMNS[used]
    if measure_column not in c:
        for column in MEASURE_COLUMNS.values():
            c[column] = np.full(n, np.nan)
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
        corpus["bleu"] = np.where(scored[:, None], ex.bleu_stats, np.nan)
    strata_rows = stratify(
        stratified,
        fields,
        config.min_stratum_size,
        corpus_stats=corpus,
        rounds=config.bootstrap_rounds,
        seed=config.seed,
    )

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
    summary = _json_ready(summary)
    images: dict[str, bytes] = {}
    if plots:
        images = _analysis_images(summary, strata_rows, confidence, correct, config)
    return EvaluationAnalysis(summary, per_example, strata_rows, images)


def _confidence_measure(
    c: dict[str, Any], scored: np.ndarray, config: AnalysisConfig
) -> tuple[str, bool]:
    """(measure used, chosen automatically): ``auto`` is the label confidence where a
    scored example has one (constrained decoding), else the first-token probability."""
    if config.confidence != "auto":
        return config.confidence, False
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
        "metadata": c["metadata"],
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


def _json_ready(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _analysis_images(
    summary: dict[str, Any],
    strata_rows: list[dict[str, Any]],
    confidence: np.ndarray,
    correct: np.ndarray,
    config: AnalysisConfig,
) -> dict[str, bytes]:
    from nova_eval_assets.report import plots

    images: dict[str, bytes] = {}
    calib = summary["calibration"]
    if calib["n"]:
        measure = summary["confidence"]["measure"]
        images["reliability"] = calibration.reliability_diagram_png(
            calib, f"Reliability diagram ({measure})"
        )
        images["coverage"] = calibration.coverage_curve_png(calib)
        images["confidence_histogram"] = plots.confidence_histogram_png(
            confidence, correct, measure
        )
    main = "label_accuracy" if config.label_field is not None else "correct"
    strata_png = plots.strata_png(strata_rows, main, config.min_stratum_size)
    if strata_png is not None and summary["strata_fields"]:
        images["strata"] = strata_png
    return images


def write_analysis(result: EvaluationAnalysis, folder: str) -> dict[str, str]:
    """Write every output of :func:`analyze` into ``folder``; returns their locations."""
    from nova_eval_assets.report.html import evaluation_html

    paths = {
        "report": storage.join(folder, "report.html"),
        "summary": storage.join(folder, "analysis.json"),
        "per_example": storage.join(folder, "per_example.parquet"),
        "strata": storage.join(folder, "strata.parquet"),
    }
    storage.write_parquet(paths["per_example"], result.per_example)
    storage.write_parquet(paths["strata"], _strata_table(result.strata))
    for image, png in result.images.items():
        paths[f"{image}_png"] = storage.join(folder, f"{image}.png")
        storage.write_bytes(paths[f"{image}_png"], png)
    storage.write_json(paths["summary"], {**result.summary, "strata": result.strata})
    storage.write_text(
        paths["report"], evaluation_html(result.summary, result.strata, result.images)
    )
    return paths


def _strata_table(rows: list[dict[str, Any]]) -> pa.Table:
    schema = pa.schema(
        [
            ("field", pa.string()),
            ("value", pa.string()),
            ("metric", pa.string()),
            ("n", pa.int64()),
            ("mean", pa.float64()),
            ("stderr", pa.float64()),
            ("small", pa.bool_()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


# ---------------------------------------------------------------- comparison


@dataclass
class ComparisonAnalysis:
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    images: dict[str, bytes]


def _comparison_metrics(ex: Examples, config: AnalysisConfig) -> dict[str, np.ndarray]:
    out = {
        ("label_accuracy" if config.label_field is not None else "correct"): ex.columns["correct"]
    }
    out.update(ex.metrics)
    return out


def compare_evaluations(
    baseline: str | pa.Table,
    candidate: str | pa.Table,
    config: AnalysisConfig,
    *,
    baseline_name: str = "A",
    candidate_name: str = "B",
    plots: bool = True,
) -> ComparisonAnalysis:
    """Paired comparison of ``candidate`` (B) against ``baseline`` (A) on their common
    examples: every metric overall and by metadata stratum (see :mod:`comparison`)."""
    columns = [*COMPARISON_COLUMNS, "metrics", "bleu_stats"]
    a = read_examples(baseline, config, columns)
    b = read_examples(candidate, config, columns)
    ia, ib = pair_rows(a.columns["row_index"], b.columns["row_index"])
    if ia.size == 0:
        raise ValueError("the two evaluations have no example (row_index) in common")
    a_gold = a.columns["gold"].take(pa.array(ia))
    same_gold = pc.equal(a_gold, b.columns["gold"].take(pa.array(ib)))
    same_prompt = a.columns["prompt_bytes"][ia] == b.columns["prompt_bytes"][ib]
    mismatched = int((~flags(same_gold) | ~same_prompt).sum())
    if mismatched:
        raise ValueError(
            f"{mismatched} paired rows have a different prompt or gold: the two evaluations "
            "are not of the same dataset"
        )
    if config.label_field is not None:  # the golds are the same: parse them once
        gold_label = parse_label_column(a_gold, config.label_field, "strict").label
        for ex, index in ((a, ia), (b, ib)):
            correct = np.full(ex.n, np.nan)
            predicted = ex.columns["predicted_label"].take(pa.array(index))
            correct[index] = labels_equal(predicted, gold_label)
            ex.columns["correct"] = np.where(ex.columns["scored"], correct, np.nan)
    a_metrics = {k: v[ia] for k, v in _comparison_metrics(a, config).items()}
    b_metrics = {k: v[ib] for k, v in _comparison_metrics(b, config).items()}
    # a metric is compared only where both evaluations scored the example
    both = a.columns["scored"][ia] & b.columns["scored"][ib]
    for metrics in (a_metrics, b_metrics):
        for name in metrics:
            metrics[name] = np.where(both, metrics[name], np.nan)
    a_corpus, b_corpus = {}, {}
    if a.bleu_stats.shape[0] == a.n and b.bleu_stats.shape[0] == b.n:
        a_corpus["bleu"] = np.where(both[:, None], a.bleu_stats[ia], np.nan)
        b_corpus["bleu"] = np.where(both[:, None], b.bleu_stats[ib], np.nan)
    fields, notes = metadata_fields(
        b.columns["metadata"].take(pa.array(ib)), config.max_strata_per_field
    )
    rows = compare(
        a_metrics,
        b_metrics,
        fields,
        a_corpus,
        b_corpus,
        min_size=config.min_stratum_size,
        rounds=config.bootstrap_rounds,
        seed=config.seed,
    )
    rows = _json_ready(rows)
    summary = _json_ready(
        {
            "kind": "comparison",
            "baseline": baseline_name,
            "candidate": candidate_name,
            "settings": config.model_dump(),
            "counts": {
                "baseline_examples": a.n,
                "candidate_examples": b.n,
                "paired": int(ia.size),
                "scored_in_both": int(both.sum()),
            },
            "notes": [*a.notes, *b.notes, *notes],
            "strata_fields": [f.name for f in fields],
            "overall": [r for r in rows if r["field"] == "(all)"],
        }
    )
    images: dict[str, bytes] = {}
    if plots:
        from nova_eval_assets.report import plots as plot_module

        forest = plot_module.forest_png(rows, baseline_name, candidate_name)
        if forest is not None:
            images["forest"] = forest
    return ComparisonAnalysis(summary, rows, images)


def write_comparison(result: ComparisonAnalysis, folder: str) -> dict[str, str]:
    from nova_eval_assets.report.html import comparison_html

    paths = {
        "report": storage.join(folder, "report.html"),
        "summary": storage.join(folder, "comparison.json"),
        "rows": storage.join(folder, "comparison.parquet"),
    }
    storage.write_parquet(paths["rows"], pa.Table.from_pylist(result.rows))
    for image, png in result.images.items():
        paths[f"{image}_png"] = storage.join(folder, f"{image}.png")
        storage.write_bytes(paths[f"{image}_png"], png)
    storage.write_json(paths["summary"], {**result.summary, "rows": result.rows})
    storage.write_text(paths["report"], comparison_html(result.summary, result.rows, result.images))
    return paths


# ---------------------------------------------------------------- what the assets call


def run_analysis(loaded: LoadedRecipe) -> tuple[EvaluationAnalysis, dict[str, str]]:
    layout = EvalLayout.for_recipe(loaded)
    result = analyze(
        layout.examples,
        effective_settings(loaded),
        name=loaded.name,
        model=loaded.recipe.run.model_name_or_path,
    )
    result.summary["examples_path"] = layout.examples
    return result, write_analysis(result, layout.analysis())


def run_comparison(
    loaded: LoadedRecipe, baseline: LoadedRecipe
) -> tuple[ComparisonAnalysis, dict[str, str]]:
    """Compare ``loaded`` (B) against ``baseline`` (A) with ``loaded``'s analysis settings."""
    mine, theirs = EvalLayout.for_recipe(loaded), EvalLayout.for_recipe(baseline)
    digests = []
    for layout in (theirs, mine):
        report = layout.validation_report
        digests.append(
            storage.read_json(report).get("dataset_sha256") if storage.exists(report) else None
        )
    if None not in digests and digests[0] != digests[1]:
        raise ValueError(
            f"'{loaded.name}' and '{baseline.name}' evaluated different datasets "
            f"(sha256 {digests[1][:12]}… and {digests[0][:12]}…); a comparison needs the same one"
        )
    result = compare_evaluations(
        theirs.examples,
        mine.examples,
        effective_settings(loaded),
        baseline_name=baseline.name,
        candidate_name=loaded.name,
    )
    result.summary["models"] = {
        baseline.name: baseline.recipe.run.model_name_or_path,
        loaded.name: loaded.recipe.run.model_name_or_path,
    }
    return result, write_comparison(result, mine.comparison(baseline.name))
