"""Model comparison: two evaluations of the same dataset, paired example by example.

Examples are paired on ``row_index`` (the position of the row in the validated dataset);
pairs whose prompt or gold differ are an error (not the same dataset). A metric is
compared over the pairs where it is defined in both evaluations.

Per metric, ``diff = mean(B) - mean(A)`` (B the evaluation being compared, A the
baseline) with:

- a paired bootstrap of the mean per-example difference (:mod:`resampling`: seeded,
  percentile 95 % interval, two-sided p-value of the null-shifted bootstrap);
- for 0/1 metrics (every value 0 or 1 in both: ``em``, ``qem``, label accuracy), also
  McNemar's test on the discordant pairs: ``a_only`` (A right, B wrong) and ``b_only``.
  The exact version is the two-sided binomial test of ``b_only`` out of
  ``a_only + b_only`` at 1/2 (``min(1, 2 * P[X <= min])``, as ``scipy.stats.binomtest``);
  the chi-square version uses the continuity correction
  ``(|a_only - b_only| - 1)^2 / (a_only + b_only)`` with 1 degree of freedom. The
  reported ``p_value`` of a 0/1 metric is the exact McNemar one, otherwise the bootstrap
  one;
- ``bleu`` (a corpus metric): the paired bootstrap of ``BLEU(B) - BLEU(A)`` over the same
  resampled examples.

All metrics of one stratum share the same bootstrap rounds (one resampling of its rows; a
metric undefined on some rows is the ratio of its resampled sums of differences and of
defined rows).

By metadata stratum the same tests run within each stratum; ``p_holm`` adjusts the
p-values of one field and metric for the number of its strata (Holm), and ``small``
flags strata under ``min_stratum_size``. ``significant`` is ``p < 0.05``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from nova_eval_assets.analysis.resampling import bootstrap_many
from nova_eval_assets.analysis.strata import ALL, StratumField
from nova_eval_assets.metrics.stats import bleu_from_stats_batch

ALPHA = 0.05


def pair_rows(a_rows: np.ndarray, b_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions in A and in B of the row indices both hold, in row order."""
    _, ia, ib = np.intersect1d(a_rows, b_rows, assume_unique=True, return_indices=True)
    return ia, ib


def is_binary(*columns: np.ndarray) -> bool:
    values = np.concatenate([c[np.isfinite(c)] for c in columns])
    return values.size > 0 and bool(np.isin(values, (0.0, 1.0)).all())


def mcnemar(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """McNemar's test for paired 0/1 outcomes (see the module docstring)."""
    from scipy import stats as scipy_stats  # imported when needed: it is slow to import

    a_only = int(np.count_nonzero((a == 1) & (b == 0)))
    b_only = int(np.count_nonzero((a == 0) & (b == 1)))
    discordant = a_only + b_only
    if discordant == 0:
        return {"a_only": 0, "b_only": 0, "exact_p": 1.0, "chi2": 0.0, "chi2_p": 1.0}
    exact = min(1.0, 2.0 * float(scipy_stats.binom.cdf(min(a_only, b_only), discordant, 0.5)))
    chi2 = (abs(a_only - b_only) - 1.0) ** 2 / discordant if a_only != b_only else 0.0
    return {
        "a_only": a_only,
        "b_only": b_only,
        "exact_p": exact,
        "chi2": chi2,
        "chi2_p": float(scipy_stats.chi2.sf(chi2, 1)),
    }


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _row(result: Any, n: int, a: float, b: float) -> dict[str, Any]:
    return {
        "n": n,
        "a": _finite(a) if n else None,
        "b": _finite(b) if n else None,
        "diff": _finite(result.estimate) if n else None,
        "low": _finite(result.low) if n else None,
        "high": _finite(result.high) if n else None,
        "stderr": _finite(result.stderr) if n else None,
        "p_bootstrap": _finite(result.p_value) if n else None,
        "test": "bootstrap",
        "p_value": _finite(result.p_value) if n else None,
    }


def paired_tests(
    a_metrics: Mapping[str, np.ndarray],
    b_metrics: Mapping[str, np.ndarray],
    binary: Mapping[str, bool],
    a_corpus: Mapping[str, np.ndarray] | None = None,
    b_corpus: Mapping[str, np.ndarray] | None = None,
    rounds: int = 1000,
    seed: int = 1234,
) -> dict[str, dict[str, Any]]:
    """Every metric's paired comparison over the same bootstrap resamples of the rows.

    A per-example metric is compared where it is defined in both (its mean difference is
    the ratio of the resampled sums of differences and of defined rows); a corpus metric
    (``bleu``, per-example statistics n x 10) where both rows have statistics."""
    names = [m for m in a_metrics if m in b_metrics]
    corpus = [m for m in (a_corpus or {}) if m in (b_corpus or {})]
    columns, valid_rows, sums = [], {}, {}
    for name in names:
        a, b = a_metrics[name], b_metrics[name]
        valid = np.isfinite(a) & np.isfinite(b)
        valid_rows[name] = valid
        columns += [np.where(valid, b - a, 0.0), valid.astype(np.float64)]
    widths = []
    for name in corpus:
        assert a_corpus is not None and b_corpus is not None
        a, b = a_corpus[name], b_corpus[name]
        valid = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
        valid_rows[name] = valid
        a, b = np.where(valid[:, None], a, 0.0), np.where(valid[:, None], b, 0.0)
        sums[name] = (a.sum(axis=0), b.sum(axis=0))
        widths.append(a.shape[1])
        columns += [*a.T, *b.T]
    if not columns:
        return {}
    x = np.column_stack(columns)
    m = len(names)

    def statistic(s: np.ndarray) -> np.ndarray:
        out = [s[:, 2 * j] / s[:, 2 * j + 1] for j in range(m)]
        offset = 2 * m
        for width in widths:
            a_sums = s[:, offset : offset + width]
            b_sums = s[:, offset + width : offset + 2 * width]
            out.append(bleu_from_stats_batch(b_sums) - bleu_from_stats_batch(a_sums))
            offset += 2 * width
        return np.column_stack(out)

    results = bootstrap_many(x, statistic, rounds, seed)
    rows: dict[str, dict[str, Any]] = {}
    for name, result in zip(names, results[:m], strict=True):
        valid = valid_rows[name]
        a, b = a_metrics[name][valid], b_metrics[name][valid]
        n = int(valid.sum())
        row = _row(result, n, a.mean() if n else math.nan, b.mean() if n else math.nan)
        if binary.get(name):
            test = mcnemar(a, b)
            row.update({f"mcnemar_{k}": v for k, v in test.items()})
            row.update(test="mcnemar", p_value=test["exact_p"] if n else None)
        rows[name] = row
    for name, result in zip(corpus, results[m:], strict=True):
        a_sum, b_sum = sums[name]
        n = int(valid_rows[name].sum())
        bleu_a = bleu_from_stats_batch(a_sum[None, :])[0]
        bleu_b = bleu_from_stats_batch(b_sum[None, :])[0]
        rows[name] = _row(result, n, bleu_a, bleu_b)
    return rows


def paired_metric(
    a: np.ndarray, b: np.ndarray, binary: bool, rounds: int = 1000, seed: int = 1234
) -> dict[str, Any]:
    """Paired comparison of one per-example metric (see :func:`paired_tests`)."""
    return paired_tests({"m": a}, {"m": b}, {"m": binary}, rounds=rounds, seed=seed)["m"]


def paired_corpus_bleu(
    a_stats: np.ndarray, b_stats: np.ndarray, rounds: int = 1000, seed: int = 1234
) -> dict[str, Any]:
    """Paired bootstrap of BLEU(B) - BLEU(A) from per-example sufficient statistics."""
    return paired_tests({}, {}, {}, {"bleu": a_stats}, {"bleu": b_stats}, rounds=rounds, seed=seed)[
        "bleu"
    ]


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm-adjusted p-values (None stays None)."""
    present = [(p, i) for i, p in enumerate(p_values) if p is not None]
    out: list[float | None] = [None] * len(p_values)
    m = len(present)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def compare(
    a_metrics: Mapping[str, np.ndarray],
    b_metrics: Mapping[str, np.ndarray],
    fields: list[StratumField],
    a_corpus: Mapping[str, np.ndarray] | None = None,
    b_corpus: Mapping[str, np.ndarray] | None = None,
    min_size: int = 30,
    rounds: int = 1000,
    seed: int = 1234,
) -> list[dict[str, Any]]:
    """Rows ``{field, value, metric, n, a, b, diff, low, high, p_value, test, ...}`` for
    every metric both evaluations have: the whole dataset first (field ``(all)``), then
    each stratum of each field. All arrays are already paired (same length, same order)."""
    names = [m for m in a_metrics if m in b_metrics]
    corpus = [m for m in (a_corpus or {}) if m in (b_corpus or {})]
    binary = {m: is_binary(a_metrics[m], b_metrics[m]) for m in names}
    n_rows = len(a_metrics[names[0]]) if names else 0
    everything = StratumField(ALL, np.zeros(n_rows, dtype=np.int64), [ALL])
    rows: list[dict[str, Any]] = []
    for field in [everything, *fields]:
        families: dict[str, list[dict[str, Any]]] = {name: [] for name in [*names, *corpus]}
        for code, value in enumerate(field.values):
            inside = field.codes == code
            tested = paired_tests(
                {m: a_metrics[m][inside] for m in names},
                {m: b_metrics[m][inside] for m in names},
                binary,
                {m: a_corpus[m][inside] for m in corpus} if a_corpus else None,
                {m: b_corpus[m][inside] for m in corpus} if b_corpus else None,
                rounds,
                seed,
            )
            for name, result in tested.items():
                p = result["p_value"]
                families[name].append(
                    {
                        "field": field.name,
                        "value": value,
                        "metric": name,
                        **result,
                        "significant": p is not None and p < ALPHA,
                        "small": result["n"] < min_size,
                    }
                )
        for family in families.values():
            for row, adjusted in zip(family, holm([r["p_value"] for r in family]), strict=True):
                row["p_holm"] = adjusted
            rows.extend(family)
    return rows
