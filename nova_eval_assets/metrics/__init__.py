"""Metric definitions for nova-eval (see ``gen_qa`` and ``stats`` module docstrings)."""

from .gen_qa import (
    BLEU_STATS_FIELDS,
    PER_EXAMPLE_METRICS,
    bleu_from_stats,
    bleu_sufficient_stats,
    corpus_bleu,
    exact_match,
    example_metrics,
    f1_score,
    f1_score_quasi,
    normalize_answer,
    quasi_exact_match,
    rouge_scores,
)
from .stats import (
    aggregate_gen_qa,
    bleu_from_stats_batch,
    bootstrap_bleu_stderr,
    bootstrap_stderr,
    mean_and_stderr,
)

__all__ = [
    "BLEU_STATS_FIELDS",
    "PER_EXAMPLE_METRICS",
    "aggregate_gen_qa",
    "bleu_from_stats",
    "bleu_from_stats_batch",
    "bleu_sufficient_stats",
    "bootstrap_bleu_stderr",
    "bootstrap_stderr",
    "corpus_bleu",
    "exact_match",
    "example_metrics",
    "f1_score",
    "f1_score_quasi",
    "mean_and_stderr",
    "normalize_answer",
    "quasi_exact_match",
    "rouge_scores",
]
