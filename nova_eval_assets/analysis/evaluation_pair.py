"""The comparison of two evaluations of one dataset: :func:`compare_evaluations`.

Reads both examples tables (:mod:`examples`), pairs their rows by ``row_index``, checks
that the paired rows have the same prompt and gold, and compares every metric overall and
by metadata stratum with paired tests (:mod:`comparison`); the result,
:class:`ComparisonAnalysis`, holds it in memory (the forest plot included, rendered by
:mod:`outputs`). Writes no file: :func:`outputs.write_comparison` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nova_eval_assets.analysis.columns import flags
from nova_eval_assets.analysis.comparison import compare, pair_rows
from nova_eval_assets.analysis.examples import COMPARISON_COLUMNS, Examples, read_examples
from nova_eval_assets.analysis.labels import labels_equal, parse_label_column
from nova_eval_assets.analysis.outputs import comparison_images, json_ready
from nova_eval_assets.analysis.strata import metadata_fields
from nova_eval_assets.recipe import AnalysisConfig


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
    rows = json_ready(rows)
    summary = json_ready(
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
    images = comparison_images(rows, baseline_name, candidate_name) if plots else {}
    return ComparisonAnalysis(summary, rows, images)
