"""Paired comparison of two evaluations: McNemar and the paired bootstrap against scipy,
on synthetic data with a known effect and with none, overall and by stratum."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from nova_eval_assets.analysis.comparison import (
    compare,
    holm,
    mcnemar,
    pair_rows,
    paired_corpus_bleu,
    paired_metric,
)
from nova_eval_assets.analysis.pipeline import compare_evaluations
from nova_eval_assets.analysis.resampling import bootstrap_mean
from nova_eval_assets.analysis.strata import metadata_fields
from nova_eval_assets.metrics.gen_qa import bleu_from_stats
from nova_eval_assets.recipe import AnalysisConfig
from tests.analysis_synthetic import make_examples


def paired_binary(n: int, p_a: float, p_b: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlated 0/1 outcomes: B copies A's outcome 70% of the time."""
    rng = np.random.default_rng(seed)
    a = (rng.random(n) < p_a).astype(float)
    fresh = (rng.random(n) < p_b).astype(float)
    copy = rng.random(n) < 0.7
    b = np.where(copy, a, fresh)
    # shift B's rate to p_b on average: copied rows carry A's rate
    extra = rng.random(n) < max(0.0, (p_b - p_a)) / 0.7
    b = np.where(copy & extra, 1.0, b)
    return a, b


@pytest.mark.parametrize(("p_a", "p_b", "seed"), [(0.6, 0.6, 1), (0.6, 0.7, 2), (0.3, 0.32, 3)])
def test_mcnemar_agrees_with_scipy(p_a, p_b, seed):
    a, b = paired_binary(800, p_a, p_b, seed)
    result = mcnemar(a, b)
    a_only = int(((a == 1) & (b == 0)).sum())
    b_only = int(((a == 0) & (b == 1)).sum())
    assert (result["a_only"], result["b_only"]) == (a_only, b_only)
    exact = stats.binomtest(b_only, a_only + b_only, 0.5).pvalue
    assert result["exact_p"] == pytest.approx(exact, rel=1e-9)
    chi2 = (abs(a_only - b_only) - 1) ** 2 / (a_only + b_only)
    assert result["chi2_p"] == pytest.approx(stats.chi2.sf(chi2, 1), rel=1e-9)


def test_mcnemar_without_discordant_pairs():
    same = np.array([1.0, 0.0, 1.0])
    assert mcnemar(same, same) == {
        "a_only": 0,
        "b_only": 0,
        "exact_p": 1.0,
        "chi2": 0.0,
        "chi2_p": 1.0,
    }


def test_known_effect_is_found_and_no_effect_is_not():
    a, b = paired_binary(1500, 0.6, 0.7, 5)
    effect = paired_metric(a, b, binary=True, rounds=2000)
    assert effect["p_value"] < 1e-4 and effect["low"] > 0
    assert effect["low"] < b.mean() - a.mean() < effect["high"]
    # with no effect, p < 0.05 about 5% of the time (McNemar's exact test: at most)
    rejected = {"mcnemar": 0, "bootstrap": 0}
    covered = 0
    for seed in range(200):
        a0, b0 = paired_binary(300, 0.6, 0.6, 1000 + seed)
        rejected["mcnemar"] += paired_metric(a0, b0, binary=True, rounds=200)["p_value"] < 0.05
        rng = np.random.default_rng(seed)
        x = rng.normal(size=300)
        y = x + rng.normal(size=300)
        none = paired_metric(x, y, binary=False, rounds=400, seed=seed)
        rejected["bootstrap"] += none["p_value"] < 0.05
        covered += none["low"] < 0 < none["high"]
    assert rejected["mcnemar"] <= 16  # <= 8%
    assert 2 <= rejected["bootstrap"] <= 20  # 1%..10%
    assert 176 <= covered <= 198  # the 95% interval covers the true 0 about 95% of the time


@pytest.mark.parametrize(("shift", "seed"), [(0.0, 11), (0.08, 12), (0.03, 13)])
def test_paired_bootstrap_agrees_with_scipy(shift, seed):
    rng = np.random.default_rng(seed)
    n = 600
    a = rng.beta(2, 2, size=n)
    b = np.clip(a + rng.normal(shift, 0.25, size=n), 0, 1)
    mine = paired_metric(a, b, binary=False, rounds=4000, seed=seed)
    theirs = stats.bootstrap(
        (a, b),
        lambda x, y, axis=-1: np.mean(y - x, axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=4000,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    width = theirs.confidence_interval.high - theirs.confidence_interval.low
    assert mine["diff"] == pytest.approx(float(np.mean(b - a)))
    assert mine["low"] == pytest.approx(theirs.confidence_interval.low, abs=0.08 * width)
    assert mine["high"] == pytest.approx(theirs.confidence_interval.high, abs=0.08 * width)
    assert mine["stderr"] == pytest.approx(theirs.standard_error, rel=0.08)
    # the null-shifted bootstrap p-value is close to the paired t-test's
    t_p = stats.ttest_rel(b, a).pvalue
    assert mine["p_value"] == pytest.approx(t_p, abs=0.03)
    assert (mine["p_value"] < 0.05) == (t_p < 0.05)


def test_block_bootstrap_for_large_n_matches_the_analytic_stderr():
    rng = np.random.default_rng(0)
    d = rng.normal(0.01, 1.0, size=200_000)
    result = bootstrap_mean(d, rounds=1000, seed=3)
    assert result.units == 2000  # resampled in blocks
    assert result.stderr == pytest.approx(d.std(ddof=1) / np.sqrt(d.size), rel=0.1)
    assert result.estimate == pytest.approx(d.mean())


def test_paired_corpus_bleu():
    rng = np.random.default_rng(0)
    n = 400
    total = rng.integers(8, 30, size=(n, 4)).astype(float)
    hyp = total[:, 0]
    a = np.column_stack([hyp, hyp + 2, np.floor(total * 0.5), total])
    b = np.column_stack([hyp, hyp + 2, np.floor(total * 0.6), total])
    result = paired_corpus_bleu(a, b, rounds=500)
    assert result["a"] == pytest.approx(bleu_from_stats(a.sum(axis=0)))
    assert result["diff"] == pytest.approx(bleu_from_stats(b.sum(axis=0)) - result["a"])
    assert result["low"] > 0 and result["p_value"] < 0.01
    same = paired_corpus_bleu(a, a.copy(), rounds=200)
    assert same["diff"] == 0 and same["p_value"] == 1.0


def test_holm_adjustment():
    assert holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])


def test_by_stratum_each_test_uses_only_its_stratum():
    a, b = paired_binary(900, 0.5, 0.65, 21)
    groups = np.array(["x", "y", "z"])[np.arange(900) % 3]
    metadata = pa.array([json.dumps({"g": str(g)}) for g in groups])
    fields, _ = metadata_fields(metadata)
    rows = compare({"em": a}, {"em": b}, fields, rounds=300)
    for value in ("x", "y", "z"):
        row = next(r for r in rows if r["field"] == "g" and r["value"] == value)
        inside = groups == value
        a_only = int(((a == 1) & (b == 0) & inside).sum())
        b_only = int(((a == 0) & (b == 1) & inside).sum())
        assert row["n"] == inside.sum() and row["test"] == "mcnemar"
        assert row["p_value"] == pytest.approx(stats.binomtest(b_only, a_only + b_only).pvalue)
    overall = next(r for r in rows if r["field"] == "(all)")
    assert overall["n"] == 900 and overall["significant"]


def test_rows_are_paired_by_row_index():
    ia, ib = pair_rows(np.array([4, 1, 2, 9]), np.array([2, 4, 7, 1]))
    assert list(ia) == [1, 2, 0] and list(ib) == [3, 0, 1]


def test_compare_evaluations_pairs_tables_and_rejects_other_datasets():
    config = AnalysisConfig(label_field="class", bootstrap_rounds=200)
    base = make_examples(300, outcome_seed=1)
    better = make_examples(300, outcome_seed=2, accuracy_of=lambda c, meta: min(1.0, c + 0.3))
    shuffled = better.take(pa.array(np.random.default_rng(0).permutation(300)[:250]))
    result = compare_evaluations(base, shuffled, config, plots=False)
    assert result.summary["counts"]["paired"] == 250
    accuracy = next(r for r in result.rows if r["field"] == "(all)")
    assert accuracy["metric"] == "label_accuracy" and accuracy["diff"] > 0.15
    assert accuracy["significant"] and accuracy["test"] == "mcnemar"
    assert {r["field"] for r in result.rows} >= {"(all)", "difficulty", "priority"}
    other = make_examples(300, seed=99)
    with pytest.raises(ValueError, match="not of the same dataset"):
        compare_evaluations(base, other, config, plots=False)
