"""The per-example metrics, computed our fast way, equal the reference libraries' values
exactly (not approximately) on thousands of random (gold, prediction) pairs built to hit
the corners: punctuation, hyphens, articles, numbers and float words, white space of every
kind, and text whose lowercase differs in length or by context (Greek final sigma, dotted
capital I, the Kelvin sign).

References: ``rouge_score``'s ``RougeScorer``, ``sacrebleu``'s ``BLEU`` sentence statistics,
and lighteval's HELM normalizer and exact-match rules written out plainly below.
"""

from __future__ import annotations

import contextlib
import random
import re
import string

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from nova_eval_assets.metrics import bleu_sufficient_stats, example_metrics, normalize_answer
from nova_eval_assets.metrics.gen_qa import lcs_length

PIECES = [
    *"abcxyzABCXYZ0123456789",
    *string.punctuation,
    " ",
    " ",
    " ",
    "-",
    "\n",
    "\t",
    "\u00a0",
    "\u2003",
    "\x1c",
    "the",
    "The",
    "THE",
    "a",
    "A",
    "an",
    "An",
    "them",
    "theory",
    "banana",
    "3",
    "03",
    "3.",
    "3.0",
    "1e5",
    "1_000",
    "inf",
    "Infinity",
    "NaN",
    "nan",
    "-2",
    "+7",
    "\u0661\u0662",
    "\u00b2",
    "\u2167",  # Arabic-Indic digits, superscript two, roman eight
    "ΑΣ",
    "ΟΔΟΣ",
    "σ",
    "Σ",
    "İ",
    "K",
    "é",
    "ß",
    "ﬁ",
    "日本",
    "’",
    "“",
    "—",
    "cat",
    "sat",
    "on",
    "mat",
    "dog",
    "ran",
    "quick",
    "brown",
    "fox",
]


def _random_text(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 24)))


def _pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        gold = _random_text(rng)
        # half the predictions share words with the gold so overlaps are common
        pred = _random_text(rng) if rng.random() < 0.5 else gold + rng.choice(PIECES) * 2
        if rng.random() < 0.3:
            words = gold.split()
            rng.shuffle(words)
            pred = " ".join(words[: rng.randint(0, len(words))])
        pairs.append((gold, pred))
    return pairs


PAIRS = _pairs(4000, seed=20261206)


def reference_helm_normalize(text: str) -> str:
    """lighteval's helm_normalizer, step by step, one piece at a time."""
    pieces = []
    for token in re.split(" |-", text):
        token = token.lower()
        token = "".join(ch for ch in token if ch not in set(string.punctuation))
        with contextlib.suppress(ValueError):
            token = str(float(token))
        token = re.sub(r"\b(a|an|the)\b", " ", token)
        token = " ".join(token.split())
        if token:
            pieces.append(token)
    return " ".join(pieces).strip()


def reference_set_f1(gold: str, pred: str) -> float:
    g, p = set(gold.split()), set(pred.split())
    common = len(g & p)
    if not g or not p or not common:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2.0 * precision * recall / (precision + recall)


def test_normalize_answer_equals_the_reference_normalizer() -> None:
    for gold, pred in PAIRS:
        for text in (gold, pred):
            assert normalize_answer(text) == reference_helm_normalize(text), repr(text)


def test_example_metrics_equal_the_reference_libraries_exactly() -> None:
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    for gold, pred in PAIRS:
        got = example_metrics(gold, pred)
        rouge = scorer.score(gold, pred)
        norm_gold = reference_helm_normalize(gold.strip())
        norm_pred = reference_helm_normalize(pred.strip())
        expected = {
            "em": float(bool(pred) and gold.strip() == pred.strip()),
            "qem": float(bool(pred) and norm_gold == norm_pred),
            "f1": reference_set_f1(gold, pred),
            "f1_score_quasi": reference_set_f1(
                reference_helm_normalize(gold), reference_helm_normalize(pred)
            ),
            "rouge1": float(rouge["rouge1"].fmeasure),
            "rouge2": float(rouge["rouge2"].fmeasure),
            "rougeL": float(rouge["rougeL"].fmeasure),
        }
        assert got == expected, (gold, pred)  # bit-for-bit, not approx
        assert list(got) == list(expected)


def test_some_pairs_overlap_so_the_comparison_means_something() -> None:
    rouge_l = [example_metrics(g, p)["rougeL"] for g, p in PAIRS]
    assert sum(0.0 < x < 1.0 for x in rouge_l) > 500
    assert sum(x == 1.0 for x in rouge_l) > 50


def test_bleu_statistics_equal_sacrebleu_sentence_statistics() -> None:
    bleu = sacrebleu.BLEU(effective_order=True)
    for gold, pred in PAIRS:
        score = bleu.sentence_score(pred, [gold])
        expected = [score.sys_len, score.ref_len, *score.counts, *score.totals]
        assert bleu_sufficient_stats(gold, pred) == [float(x) for x in expected], (gold, pred)


def _dp_lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                table[i][j] = table[i - 1][j - 1] + 1
            else:
                table[i][j] = max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


@pytest.mark.parametrize("alphabet", ["ab", "abcd", "abcdefghij"])
def test_bit_parallel_lcs_equals_the_dynamic_programme(alphabet: str) -> None:
    rng = random.Random(alphabet)
    for _ in range(500):
        a = [rng.choice(alphabet) for _ in range(rng.randint(0, 90))]
        b = [rng.choice(alphabet) for _ in range(rng.randint(0, 90))]
        assert lcs_length(a, b) == _dp_lcs(a, b)
