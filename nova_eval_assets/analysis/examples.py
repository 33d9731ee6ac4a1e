"""Reading one evaluation's examples table into per-example columns.

:func:`read_examples` streams ``examples.parquet`` in record batches (see :mod:`columns`)
and keeps, as whole-column numpy / Arrow arrays, what the analysis needs: labels and JSON
status, output lengths, error and truncation flags, the confidence measures
(:mod:`confidence`), the per-example metrics and BLEU statistics, and the correctness.
:func:`fetch_rows` reads back the (clipped) text of a few rows for the report's examples.

Reads the examples table only (and the settings it is given); the statistics over the
whole column are :mod:`evaluation`'s and :mod:`evaluation_pair`'s. Writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nova_eval_assets.analysis.columns import (
    FilledColumns,
    flags,
    iter_batches,
    metric_columns,
    row_count,
    stats_matrix,
)
from nova_eval_assets.analysis.confidence import confidence_columns
from nova_eval_assets.analysis.labels import labels_equal, parse_label_column
from nova_eval_assets.metrics import PER_EXAMPLE_METRICS
from nova_eval_assets.recipe import AnalysisConfig

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
        # dictionary-encoded: rows share few metadata strings (4 bytes a row, not ~70)
        "metadata": pc.dictionary_encode(
            col("metadata") if "metadata" in names else pa.nulls(n, pa.string())
        ),
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
    n = row_count(source)
    filled, metric_values, stats = FilledColumns(n), FilledColumns(n), FilledColumns(n)
    names: list[str] | None = None  # the first batch's columns: every batch has them
    start = 0
    pool = pa.default_memory_pool()
    for batch in iter_batches(source, columns):
        present = batch.schema.names
        part = _batch(batch, config, "token_logprobs" in columns, for_comparison)
        names = list(part) if names is None else names
        for name in names:
            filled.put(name, start, part[name])
        if "metrics" in present:  # in first-seen order, NaN in the rows of batches without
            for name, values in metric_columns(batch.column("metrics")).items():
                metric_values.put(name, start, values, missing=np.nan)
        if "bleu_stats" in present:
            stats.put("bleu_stats", start, stats_matrix(batch.column("bleu_stats")))
        start += batch.num_rows
        # The pool (mimalloc) keeps the pages of the batches decoded so far, which the
        # columns kept from each pin: given back batch by batch, the analysis holds its
        # columns, not every batch it read (at a million rows some 100 MB less).
        pool.release_unused()
    if names is None:
        raise ValueError("the examples table has no rows")
    if start != n:
        raise RuntimeError(f"the examples table has {start} rows, not {n}")
    merged = {name: filled.get(name) for name in names}
    pool.release_unused()  # the Arrow columns' batches, joined
    metrics = {name: metric_values.get(name) for name in metric_values.numpy_names()}
    bleu_stats = stats.get("bleu_stats") if "bleu_stats" in stats else np.zeros((0, 10))
    examples = Examples(merged, _ordered(metrics), bleu_stats)
    if not (for_comparison and config.label_field is not None):
        examples.columns["correct"] = _correctness(examples, config)
    return examples


def json_mode(config: AnalysisConfig) -> str:
    return config.json_mode or "strict"


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
