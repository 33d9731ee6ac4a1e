"""Tests for nova_eval_assets.metrics.

Expected values are worked out by hand (arithmetic in comments) or computed with the
reference libraries directly (rouge_score, sacrebleu, nltk, numpy/scipy), never by echoing
the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sacrebleu
import scipy.stats
from nltk.metrics.scores import f_measure as nltk_f_measure
from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu
from rouge_score import rouge_scorer

from nova_eval_assets.metrics import (
    PER_EXAMPLE_METRICS,
    aggregate_gen_qa,
    bleu_from_stats,
    bleu_from_stats_batch,
    bleu_sufficient_stats,
    bootstrap_bleu_stderr,
    bootstrap_stderr,
    corpus_bleu,
    exact_match,
    example_metrics,
    f1_score,
    f1_score_quasi,
    mean_and_stderr,
    normalize_answer,
    quasi_exact_match,
    rouge_scores,
)

# (gold, pred) pairs covering punctuation, case, short/long hypotheses (brevity penalty),
# missing higher-order matches (exp smoothing), an empty prediction and an empty gold.
PAIRS: list[tuple[str, str]] = [
    ("The cat sat on the mat.", "The cat sat on a mat."),
    ("Paris is the capital of France.", "The capital of France is Paris."),
    ("It was 3.5 km long, wasn't it?", "It was about 3.5 km long."),
    ("A quick brown fox jumps over the lazy dog", "quick brown fox"),
    ("Hello world", "Hello there world, how are you doing today?"),
    ("Water boils at 100 degrees Celsius.", "Water boils at 100 °C at sea level."),
    ("yes", "no"),
    ("The answer is 42", ""),
    ("", "something"),
    ("Machine translation is evaluated with BLEU.", "BLEU evaluates machine translation."),
    ("New York City", "new york city"),
]


# ---------------------------------------------------------------------------
# normalization, em, qem
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Cat!", "cat"),
        ("  An   apple,  a day ", "apple day"),
        ("well-known fact", "well known fact"),  # split on hyphens
        ("3", "3.0"),  # numbers become float strings
        ("03", "3.0"),
        ("3.", "3.0"),  # "." removed, then "3" -> "3.0"
        # lighteval quirk: punctuation is removed before the float cast: "3.0" -> "30" -> "30.0"
        ("3.0", "30.0"),
        ("theater", "theater"),  # articles only as whole words
        ("the", ""),
        ("", ""),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_exact_match() -> None:
    assert exact_match("Paris", "  Paris\n") == 1.0  # strip both
    assert exact_match(" Paris", "Paris ") == 1.0
    assert exact_match("Paris", "paris") == 0.0  # case matters
    assert exact_match("Paris", "Paris.") == 0.0  # punctuation matters
    assert exact_match("3", "3.0") == 0.0
    assert exact_match("", "   ") == 1.0  # both strip to ""
    assert exact_match("", "x") == 0.0


def test_quasi_exact_match() -> None:
    assert quasi_exact_match("Paris", "paris.") == 1.0  # case + punctuation
    assert quasi_exact_match("The Eiffel Tower", "eiffel tower!") == 1.0  # articles
    assert quasi_exact_match("an apple", "Apple") == 1.0
    assert quasi_exact_match("3", "03") == 1.0  # both "3.0"
    assert quasi_exact_match("3", "3.") == 1.0
    # "3.0" normalizes to "30.0" (lighteval removes punctuation first), so no match:
    assert quasi_exact_match("3", "3.0") == 0.0
    assert quasi_exact_match("cat", "dog") == 0.0
    assert quasi_exact_match("state-of-the-art", "state of art") == 1.0
    assert quasi_exact_match("the", "a") == 1.0  # both normalize to "" (pred not empty)


def test_em_and_qem_of_an_empty_prediction_are_zero() -> None:
    # lighteval 0.10 ExactMatches.compute_one_item: `if not pred: return 0` before any
    # strip or normalization. Gold "the" normalizes to "" like the empty prediction, so
    # the plain comparison would give qem 1; the rule gives 0.
    assert normalize_answer("the") == normalize_answer("") == ""
    assert quasi_exact_match("the", "") == 0.0
    assert quasi_exact_match("", "") == 0.0
    assert exact_match("", "") == 0.0
    assert exact_match("Paris", "") == 0.0
    # a white-space-only prediction is not empty: stripped, then compared as usual
    assert exact_match("", " ") == 1.0
    assert quasi_exact_match("the", " \n") == 1.0
    assert quasi_exact_match("Paris", " ") == 0.0
    # the other metrics keep lighteval's empty-set rule (f1 via nltk f_measure -> 0.0)
    got = example_metrics("the", "")
    assert got == {
        "em": 0.0,
        "qem": 0.0,
        "f1": 0.0,
        "f1_score_quasi": 0.0,
        "rouge1": 0.0,
        "rouge2": 0.0,
        "rougeL": 0.0,
    }


# ---------------------------------------------------------------------------
# f1 on token sets
# ---------------------------------------------------------------------------


def test_f1_hand_worked() -> None:
    # gold {a,b,c}, pred {b,c,d}: common 2; P = 2/3, R = 2/3; F = 2PR/(P+R) = 2/3
    assert f1_score("a b c", "b c d") == pytest.approx(2 / 3)
    # duplicates ignored: gold {a,b}, pred {a,b} -> 1.0
    assert f1_score("a a b", "a b b b") == pytest.approx(1.0)
    # gold {a,b,c,d}, pred {a}: P = 1, R = 1/4; F = 2*1*0.25/1.25 = 0.4
    assert f1_score("a b c d", "a") == pytest.approx(0.4)
    # gold {x,y}, pred {x,y,z,w,v}: P = 2/5, R = 1; F = 2*0.4/1.4 = 4/7
    assert f1_score("x y", "x y z w v") == pytest.approx(4 / 7)
    assert f1_score("a b", "c d") == 0.0
    # no normalization: "Paris" != "paris", "Paris." != "Paris"
    assert f1_score("Paris", "paris") == 0.0
    assert f1_score("Paris", "Paris.") == 0.0
    # any white space separates tokens
    assert f1_score("a\tb\nc", " a  b c ") == pytest.approx(1.0)


def test_f1_empty_cases() -> None:
    # Documented rule (lighteval: nltk f_measure -> None -> 0.0): empty on either side -> 0.0
    assert f1_score("", "") == 0.0
    assert f1_score("a", "") == 0.0
    assert f1_score("", "a") == 0.0
    assert f1_score("   ", "\n") == 0.0


def test_f1_matches_nltk_f_measure() -> None:
    for gold, pred in PAIRS:
        ref = nltk_f_measure(set(gold.split()), set(pred.split()))
        assert f1_score(gold, pred) == pytest.approx(0.0 if ref is None else ref)


def test_f1_score_quasi() -> None:
    # "The Cat sat." -> {cat, sat}; "cat sat down" -> {cat, sat, down}
    # P = 2/3, R = 1; F = 2*(2/3)/(5/3) = 0.8
    assert f1_score_quasi("The Cat sat.", "cat sat down") == pytest.approx(0.8)
    # "3 apples" -> {3.0, apples}; "03 apples!" -> {3.0, apples}
    assert f1_score_quasi("3 apples", "03 apples!") == pytest.approx(1.0)
    assert f1_score("3 apples", "03 apples!") == 0.0  # raw tokens differ
    assert f1_score_quasi("the", "a") == 0.0  # both normalize to no tokens
    assert f1_score_quasi("", "") == 0.0


# ---------------------------------------------------------------------------
# rouge
# ---------------------------------------------------------------------------


def test_rouge_matches_rouge_score() -> None:
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    for gold, pred in PAIRS:
        expected = scorer.score(gold, pred)
        got = rouge_scores(gold, pred)
        assert list(got) == ["rouge1", "rouge2", "rougeL"]
        for key in got:
            assert got[key] == pytest.approx(expected[key].fmeasure, abs=1e-12)


def test_rouge_hand_worked() -> None:
    # gold: the cat sat on the mat (6 tokens); pred: the cat lay on the mat (6 tokens)
    # unigram overlap (clipped): the x2, cat, on, mat = 5 -> P = R = F = 5/6
    # bigrams gold: the-cat cat-sat sat-on on-the the-mat; pred: the-cat cat-lay lay-on
    #   on-the the-mat; overlap 3 of 5 each -> F = 3/5
    # LCS: the cat on the mat = 5 -> F = 5/6
    got = rouge_scores("the cat sat on the mat", "The cat lay on the mat")
    assert got["rouge1"] == pytest.approx(5 / 6)
    assert got["rouge2"] == pytest.approx(3 / 5)
    assert got["rougeL"] == pytest.approx(5 / 6)
    # no stemming: "cats" != "cat"
    assert rouge_scores("cats", "cat")["rouge1"] == 0.0


def test_example_metrics_keys_and_values() -> None:
    got = example_metrics("The cat sat.", "the cat sat")
    assert tuple(got) == PER_EXAMPLE_METRICS
    assert got["em"] == 0.0
    assert got["qem"] == 1.0
    # raw sets {The, cat, sat.} vs {the, cat, sat}: only "cat" common -> P = R = 1/3
    assert got["f1"] == pytest.approx(1 / 3)
    assert got["f1_score_quasi"] == pytest.approx(1.0)
    assert got["rouge1"] == pytest.approx(1.0)
    assert got["rouge2"] == pytest.approx(1.0)
    assert got["rougeL"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------
# BLEU
# ---------------------------------------------------------------------------


def test_bleu_sufficient_stats_hand_worked() -> None:
    # hyp: the cat sat on a mat; ref: the cat sat on the mat (13a leaves these tokens alone)
    # 1-grams: 6 in hyp; matched the, cat, sat, on, mat = 5
    # 2-grams: the-cat cat-sat sat-on on-a a-mat = 5; matched the-cat cat-sat sat-on = 3
    # 3-grams: 4; matched the-cat-sat cat-sat-on = 2
    # 4-grams: 3; matched the-cat-sat-on = 1
    stats = bleu_sufficient_stats("the cat sat on the mat", "the cat sat on a mat")
    assert stats == [6, 6, 5, 3, 2, 1, 6, 5, 4, 3]
    # bp = 1 (equal lengths); BLEU = 100 * (5/6 * 3/5 * 2/4 * 1/3) ** (1/4) = 100 * 12**-0.25
    assert bleu_from_stats(np.array(stats)) == pytest.approx(100 * 12**-0.25, rel=1e-12)
    assert bleu_from_stats(np.array(stats)) == pytest.approx(53.728, abs=1e-3)


def test_corpus_bleu_matches_sacrebleu() -> None:
    golds = [g for g, _ in PAIRS]
    preds = [p for _, p in PAIRS]
    expected = sacrebleu.corpus_bleu(preds, [golds]).score
    assert 0.0 < expected < 100.0
    assert corpus_bleu(golds, preds) == pytest.approx(expected, rel=1e-12)
    stats = np.array([bleu_sufficient_stats(g, p) for g, p in PAIRS])
    assert stats.shape == (len(PAIRS), 10)
    assert bleu_from_stats(stats.sum(axis=0)) == pytest.approx(expected, rel=1e-12)
    assert bleu_from_stats(stats) == pytest.approx(expected, rel=1e-12)  # sums rows itself
    # single pairs too, including zero-match and empty cases
    for gold, pred in PAIRS:
        ref = sacrebleu.corpus_bleu([pred], [[gold]]).score
        assert corpus_bleu([gold], [pred]) == pytest.approx(ref, rel=1e-12, abs=1e-12)


def test_corpus_bleu_edge_cases() -> None:
    assert math.isnan(corpus_bleu([], []))
    with pytest.raises(ValueError):
        corpus_bleu(["a"], [])
    assert corpus_bleu(["a b c d e"], ["a b c d e"]) == pytest.approx(100.0)


def test_corpus_bleu_matches_nltk_without_zero_counts() -> None:
    # Lowercase words without punctuation: 13a tokenization == str.split(). Every n-gram
    # order has matches, so sacrebleu's exp smoothing never applies and nltk's unsmoothed
    # corpus BLEU must agree (nltk is on a 0..1 scale).
    golds = [
        "the quick brown fox jumps over the lazy dog",
        "a stitch in time saves nine stitches later on",
        "all that glitters is not gold my friend",
    ]
    preds = [
        "the quick brown fox jumped over the lazy dog",
        "a stitch in time saves nine",
        "all that glitters is surely not gold my good friend",
    ]
    ref = nltk_corpus_bleu([[g.split()] for g in golds], [p.split() for p in preds])
    assert corpus_bleu(golds, preds) == pytest.approx(100 * ref, rel=1e-9)
    # unigram precision by hand: matched 8 + 6 + 8 = 22 of 9 + 6 + 10 = 25 hyp unigrams
    stats = np.array([bleu_sufficient_stats(g, p) for g, p in zip(golds, preds, strict=True)])
    assert stats[:, 2].sum() == 22
    assert stats[:, 6].sum() == 25


def test_bleu_batch_matches_sacrebleu_compute_bleu() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(300):
        total1 = int(rng.integers(0, 40))
        total = [max(0, total1 - k) for k in range(4)]
        correct = [int(rng.integers(0, t + 1)) if rng.random() > 0.3 else 0 for t in total]
        hyp_len = total1
        ref_len = int(rng.integers(0, 50))
        rows.append([hyp_len, ref_len, *correct, *total])
    # hand-picked edge cases: no hypothesis, all zero matches, zero 4-gram total, zeros in
    # the middle orders (smoothing counter 2 and 4), brevity penalty < 1
    rows += [
        [0, 5, 0, 0, 0, 0, 0, 0, 0, 0],
        [4, 4, 0, 0, 0, 0, 4, 3, 2, 1],
        [3, 3, 3, 2, 1, 0, 3, 2, 1, 0],
        [10, 12, 7, 0, 3, 0, 10, 9, 8, 7],
        [10, 20, 9, 8, 7, 6, 10, 9, 8, 7],
        [20, 10, 9, 8, 7, 6, 20, 19, 18, 17],
    ]
    arr = np.array(rows, dtype=float)
    got = bleu_from_stats_batch(arr)
    for row, value in zip(rows, got, strict=True):
        expected = sacrebleu.BLEU.compute_bleu(
            correct=list(row[2:6]),
            total=list(row[6:10]),
            sys_len=row[0],
            ref_len=row[1],
            smooth_method="exp",
        ).score
        assert value == pytest.approx(expected, rel=1e-12, abs=1e-12), row


def test_bleu_batch_on_explicit_resamples_matches_sacrebleu() -> None:
    stats = np.array([bleu_sufficient_stats(g, p) for g, p in PAIRS])
    resamples = [
        [0, 0, 1, 3],
        [2, 2, 2],
        [5, 6, 7, 8, 9, 10, 0],
        [10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
        [6],  # "yes" vs "no": no matches -> 0
        [1, 1, 4, 4, 4, 9],
    ]
    counts = np.zeros((len(resamples), len(PAIRS)))
    for r, idx in enumerate(resamples):
        for i in idx:
            counts[r, i] += 1
    got = bleu_from_stats_batch(counts @ stats)
    for idx, value in zip(resamples, got, strict=True):
        expected = sacrebleu.corpus_bleu(
            [PAIRS[i][1] for i in idx], [[PAIRS[i][0] for i in idx]]
        ).score
        assert value == pytest.approx(expected, rel=1e-12, abs=1e-12), idx


# ---------------------------------------------------------------------------
# stderr and bootstrap
# ---------------------------------------------------------------------------


def test_mean_and_stderr() -> None:
    values = [0.0, 1.0, 1.0, 0.5, 0.25, 1.0, 0.0]
    mean, stderr = mean_and_stderr(values)
    assert mean == pytest.approx(np.mean(values))
    assert stderr == pytest.approx(scipy.stats.sem(values))  # scipy default ddof=1
    # by hand: [1, 2, 3] -> mean 2, sample var 1, stderr 1/sqrt(3)
    assert mean_and_stderr([1, 2, 3]) == pytest.approx((2.0, 1 / math.sqrt(3)))
    assert mean_and_stderr(np.array([0.7])) == (0.7, 0.0)
    m, s = mean_and_stderr([])
    assert math.isnan(m) and math.isnan(s)


def test_bootstrap_mean_close_to_analytic() -> None:
    values = np.random.default_rng(7).random(2000)
    analytic = scipy.stats.sem(values)
    boot = bootstrap_stderr(values, "mean", rounds=1000, seed=1234)
    assert boot == pytest.approx(analytic, rel=0.10)
    # sum of n values: stderr scales by n
    boot_sum = bootstrap_stderr(values, "sum", rounds=1000, seed=1234)
    assert boot_sum == pytest.approx(len(values) * analytic, rel=0.10)


def test_bootstrap_deterministic_and_chunk_invariant() -> None:
    values = np.random.default_rng(3).normal(size=500)
    for reducer in ("mean", "min", "max", "sum"):
        a = bootstrap_stderr(values, reducer, rounds=200, seed=99)
        b = bootstrap_stderr(values, reducer, rounds=200, seed=99)
        c = bootstrap_stderr(values, reducer, rounds=200, seed=99, max_chunk_bytes=24 * 500 * 7)
        assert a == b
        assert a == pytest.approx(c, rel=1e-12)
        assert a > 0.0
    assert bootstrap_stderr(values, "mean", rounds=200, seed=1) != bootstrap_stderr(
        values, "mean", rounds=200, seed=2
    )


def _explicit_resamples(n: int, rounds: int, seed: int) -> list[np.ndarray]:
    """The documented procedure, spelled out: one multinomial draw per round -> indices."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [1.0 / n] * n, size=rounds)
    return [np.repeat(np.arange(n), row) for row in counts]


@pytest.mark.parametrize("reducer", ["mean", "min", "max", "sum"])
def test_bootstrap_reducers_match_explicit_loop(reducer: str) -> None:
    values = np.random.default_rng(11).integers(0, 100, size=40).astype(float)
    fn = {"mean": np.mean, "min": np.min, "max": np.max, "sum": np.sum}[reducer]
    round_values = [fn(values[idx]) for idx in _explicit_resamples(40, 300, 5)]
    expected = np.std(round_values, ddof=1)
    assert bootstrap_stderr(values, reducer, rounds=300, seed=5) == pytest.approx(expected)


def test_bootstrap_edge_cases() -> None:
    assert bootstrap_stderr([0.3], "mean") == 0.0
    assert math.isnan(bootstrap_stderr([], "mean"))
    assert bootstrap_stderr([2.0] * 50, "max", rounds=100) == 0.0
    with pytest.raises(ValueError):
        bootstrap_stderr([1.0, 2.0], "median")
    with pytest.raises(ValueError):
        bootstrap_stderr([1.0, 2.0], "mean", rounds=1)


def test_bootstrap_bleu_stderr_matches_sacrebleu_loop() -> None:
    stats = np.array([bleu_sufficient_stats(g, p) for g, p in PAIRS])
    rounds, seed = 25, 4321
    round_scores = []
    for idx in _explicit_resamples(len(PAIRS), rounds, seed):
        hyps = [PAIRS[i][1] for i in idx]
        refs = [PAIRS[i][0] for i in idx]
        round_scores.append(sacrebleu.corpus_bleu(hyps, [refs]).score)
    expected = np.std(round_scores, ddof=1)
    got = bootstrap_bleu_stderr(stats, rounds=rounds, seed=seed)
    assert got == pytest.approx(expected, rel=1e-9)
    assert got > 0.0
    # seeded: same inputs -> same value; default arguments are deterministic too
    assert bootstrap_bleu_stderr(stats) == bootstrap_bleu_stderr(stats)
    assert bootstrap_bleu_stderr(stats[:1]) == 0.0
    assert math.isnan(bootstrap_bleu_stderr(np.zeros((0, 10))))


def test_aggregate_gen_qa() -> None:
    per_rows = [example_metrics(g, p) for g, p in PAIRS]
    per_example = {m: [row[m] for row in per_rows] for m in reversed(PER_EXAMPLE_METRICS)}
    stats = np.array([bleu_sufficient_stats(g, p) for g, p in PAIRS])
    out = aggregate_gen_qa(per_example, stats)
    expected_keys = [k for m in PER_EXAMPLE_METRICS for k in (m, f"{m}_stderr")]
    assert list(out) == [*expected_keys, "bleu", "bleu_stderr"]
    for m in PER_EXAMPLE_METRICS:
        assert out[m] == pytest.approx(np.mean(per_example[m]))
        assert out[f"{m}_stderr"] == pytest.approx(scipy.stats.sem(per_example[m]))
    golds = [g for g, _ in PAIRS]
    preds = [p for _, p in PAIRS]
    assert out["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [golds]).score)
    assert out["bleu_stderr"] > 0.0
    # without bleu stats: no bleu keys; extra metrics follow the known ones
    out2 = aggregate_gen_qa({"custom": [1.0, 0.0], "em": [1.0, 1.0]}, None)
    assert list(out2) == ["em", "em_stderr", "custom", "custom_stderr"]
    assert out2["custom_stderr"] == pytest.approx(0.5)  # std 0.7071 / sqrt(2)
