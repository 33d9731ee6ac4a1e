"""Per-example metrics for the ``gen_qa`` task (lighteval-style: one small function per metric).

Definitions (as lighteval computes them, which is what Nova reports):

- ``em``: gold and prediction are both ``str.strip()``-ed; 1.0 if equal else 0.0.
- ``qem``: the same after :func:`normalize_answer` (HELM normalization).
  Both are 0.0 for an empty prediction (``""``, tested before stripping), whatever the
  gold: lighteval 0.10's ``ExactMatches.compute_one_item`` starts with
  ``if not pred: return 0``. A white-space-only prediction is not empty, so it is
  stripped and compared as usual.
- ``f1``: F-measure of the *sets* of white-space tokens (``str.split()``) of gold and
  prediction, no normalization. Duplicate tokens count once. Like lighteval (which calls
  ``nltk.scores.f_measure`` and maps ``None`` to 0), the result is 0.0 when either token
  set is empty, *including when both are empty* (``f1("", "") == 0.0``).
- ``f1_score_quasi``: ``f1`` on :func:`normalize_answer` text (same empty-set rule, so a
  pair that normalizes to nothing, e.g. ``"the"`` vs ``"a"``, scores 0.0).
- ``rouge1``, ``rouge2``, ``rougeL``: F-measure as ``rouge_score.rouge_scorer.RougeScorer``
  gives it with its default tokenizer (lowercase, non-``[a-z0-9]`` characters become
  separators, so text in other scripts has no tokens and scores 0.0) and
  ``use_stemmer=False``. Computed here, bit-for-bit the same, several times faster: the
  LCS is bit-parallel rather than a table (tests/test_metrics_equivalence.py holds us to
  the libraries on random text).
- ``bleu``: a corpus metric, not a per-example one. Each example contributes sacrebleu's
  sufficient statistics (:func:`bleu_sufficient_stats`); corpus BLEU (0..100) is computed
  from their sum with sacrebleu's default ``BLEU`` settings (13a tokenizer, ``exp``
  smoothing, no effective order, max n-gram order 4), which equals
  ``sacrebleu.corpus_bleu(preds, [golds]).score``. lighteval 0.10, which Nova uses, scores
  only the first hypothesis for bleu; we compute proper corpus BLEU.

This module is plain Python (no dagster import); aggregation lives in ``stats.py``.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import sacrebleu

PER_EXAMPLE_METRICS: tuple[str, ...] = (
    "em",
    "qem",
    "f1",
    "f1_score_quasi",
    "rouge1",
    "rouge2",
    "rougeL",
)

ROUGE_TYPES: tuple[str, ...] = ("rouge1", "rouge2", "rougeL")

#: Layout of one row of BLEU sufficient statistics (sacrebleu's segment statistics).
BLEU_STATS_FIELDS: tuple[str, ...] = (
    "hyp_len",
    "ref_len",
    "correct_1",
    "correct_2",
    "correct_3",
    "correct_4",
    "total_1",
    "total_2",
    "total_3",
    "total_4",
)
BLEU_MAX_NGRAM_ORDER = 4
N_BLEU_STATS = len(BLEU_STATS_FIELDS)

# ---------------------------------------------------------------------------
# Normalization
# ---------------------------------------------------------------------------

_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_ARTICLES = frozenset(("a", "an", "the"))
_FLOAT_WORDS = frozenset(("inf", "nan", "infinity"))  # what float() takes of letters alone


def _homogenize_number(token: str) -> str:
    try:
        return str(float(token))
    except ValueError:
        return token


def normalize_answer(text: str) -> str:
    """HELM normalization, exactly as lighteval's ``helm_normalizer`` does it.

    The text is split on spaces and hyphens; each piece is lowercased, stripped of ASCII
    punctuation, turned into a float string if it parses as a float (``"3"`` -> ``"3.0"``,
    ``"03"`` -> ``"3.0"``), stripped of the articles a/an/the, and white-space collapsed;
    empty pieces are dropped and the rest joined by single spaces.

    Quirk kept for fidelity: punctuation is removed *before* the float cast, so ``"3.0"``
    becomes ``"30"`` and then ``"30.0"``; ``"3"`` and ``"3.0"`` therefore do not match under
    qem, while ``"3"``, ``"03"`` and ``"3."`` do.
    """
    # Lowercasing and dropping punctuation once for the whole text gives the same pieces:
    # a space or a hyphen is neither kept punctuation nor case-ignorable.
    kept = []
    for piece in text.lower().replace("-", " ").translate(_DROP_PUNCTUATION).split(" "):
        if piece.isalpha() and piece not in _FLOAT_WORDS:
            # A word (the common case): float() refuses it and, being all word characters,
            # the article pattern can only match all of it.
            if piece not in _ARTICLES:
                kept.append(piece)
        elif piece:
            piece = " ".join(_ARTICLES_RE.sub(" ", _homogenize_number(piece)).split())
            if piece:
                kept.append(piece)
    return " ".join(kept)


# ---------------------------------------------------------------------------
# Per-example metrics
# ---------------------------------------------------------------------------


def exact_match(gold: str, pred: str) -> float:
    """``em``: 1.0 if the stripped strings are equal, else 0.0; 0.0 if ``pred`` is empty."""
    if not pred:  # lighteval 0.10 checks this before stripping
        return 0.0
    return 1.0 if gold.strip() == pred.strip() else 0.0


def quasi_exact_match(gold: str, pred: str) -> float:
    """``qem``: exact match after :func:`normalize_answer` on both sides; 0.0 if ``pred``
    is empty (so a gold that normalizes to nothing, such as ``"the"``, does not match it)."""
    if not pred:
        return 0.0
    return 1.0 if normalize_answer(gold.strip()) == normalize_answer(pred.strip()) else 0.0


def _set_f1(gold_tokens: set[str], pred_tokens: set[str]) -> float:
    """F-measure (alpha 0.5) of two token sets; 0.0 if either set is empty."""
    if not gold_tokens or not pred_tokens:
        return 0.0
    common = len(gold_tokens & pred_tokens)
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2.0 * precision * recall / (precision + recall)


def f1_score(gold: str, pred: str) -> float:
    """``f1``: F-measure of the sets of white-space tokens, no normalization.

    Empty cases: 0.0 if either side has no tokens, including both empty (lighteval).
    """
    return _set_f1(set(gold.split()), set(pred.split()))


def f1_score_quasi(gold: str, pred: str) -> float:
    """``f1_score_quasi``: :func:`f1_score` on :func:`normalize_answer` text."""
    return _set_f1(set(normalize_answer(gold).split()), set(normalize_answer(pred).split()))


# rouge_score's default tokenizer: lowercase, then the runs of [a-z0-9] are the tokens.
_ROUGE_TOKEN_RE = re.compile(r"[a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """Tokens as ``rouge_score``'s default tokenizer (no stemming) makes them."""
    return _ROUGE_TOKEN_RE.findall(text.lower())


def _fmeasure(precision: float, recall: float) -> float:
    # rouge_score.scoring.fmeasure, operation for operation, so results are bit-identical
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def _ngrams(tokens: list[str], n: int) -> Counter:
    return (
        Counter(tokens) if n == 1 else Counter(zip(*(tokens[i:] for i in range(n)), strict=False))
    )


def _clipped_overlap(a: Counter, b: Counter) -> int:
    """Sum over shared n-grams of the smaller count (what ROUGE-N and BLEU both count)."""
    # the key intersection runs in C; most n-grams are usually not shared
    return sum(min(a[gram], b[gram]) for gram in a.keys() & b.keys())


def _rouge_n(target: list[str], prediction: list[str], n: int) -> float:
    target_ngrams, prediction_ngrams = _ngrams(target, n), _ngrams(prediction, n)
    overlap = _clipped_overlap(target_ngrams, prediction_ngrams)
    precision = overlap / max(len(prediction) - n + 1, 1)
    recall = overlap / max(len(target) - n + 1, 1)
    return _fmeasure(precision, recall)


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists.

    Bit-parallel (Hyyrö 2004): one machine-word pass per token of ``b`` over a Python int
    holding one bit per token of ``a``, instead of rouge_score's ``len(a) * len(b)`` table.
    """
    positions: dict[str, int] = {}
    for i, token in enumerate(a):
        positions[token] = positions.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for token in b:
        u = v & positions.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def _rouge_l(target: list[str], prediction: list[str]) -> float:
    if not target or not prediction:
        return 0.0
    common = lcs_length(target, prediction)
    return _fmeasure(common / len(prediction), common / len(target))


def rouge_scores(gold: str, pred: str) -> dict[str, float]:
    """``rouge1``/``rouge2``/``rougeL`` F-measures, equal to
    ``rouge_score.rouge_scorer.RougeScorer(..., use_stemmer=False).score(gold, pred)``."""
    target, prediction = rouge_tokens(gold), rouge_tokens(pred)
    return {
        "rouge1": _rouge_n(target, prediction, 1),
        "rouge2": _rouge_n(target, prediction, 2),
        "rougeL": _rouge_l(target, prediction),
    }


def example_metrics(gold: str, pred: str) -> dict[str, float]:
    """All :data:`PER_EXAMPLE_METRICS` for one (gold, prediction) pair, in that order.

    The same values as the functions above, each text normalized once: ``qem`` normalizes
    the stripped text, which is the text itself when there is nothing to strip.
    """
    gold_stripped, pred_stripped = gold.strip(), pred.strip()
    gold_norm, pred_norm = normalize_answer(gold), normalize_answer(pred)
    if pred:
        em = 1.0 if gold_stripped == pred_stripped else 0.0
        gold_norm_stripped = gold_norm if gold_stripped == gold else normalize_answer(gold_stripped)
        pred_norm_stripped = pred_norm if pred_stripped == pred else normalize_answer(pred_stripped)
        qem = 1.0 if gold_norm_stripped == pred_norm_stripped else 0.0
    else:  # lighteval 0.10 scores an empty prediction 0 before anything else
        em = qem = 0.0
    out = {
        "em": em,
        "qem": qem,
        "f1": _set_f1(set(gold.split()), set(pred.split())),
        "f1_score_quasi": _set_f1(set(gold_norm.split()), set(pred_norm.split())),
    }
    out.update(rouge_scores(gold, pred))
    return out


# ---------------------------------------------------------------------------
# BLEU (corpus metric via sufficient statistics)
# ---------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _bleu_defaults() -> sacrebleu.BLEU:
    return sacrebleu.BLEU()


def bleu_tokens(text: str) -> list[str]:
    """Tokens as sacrebleu's default BLEU makes them (13a tokenizer, case kept)."""
    return _bleu_defaults().tokenizer(text.rstrip()).split()


def bleu_sufficient_stats(gold: str, pred: str) -> list[float]:
    """sacrebleu's segment statistics for one pair, laid out as :data:`BLEU_STATS_FIELDS`.

    ``[hyp_len, ref_len, correct_1..4, total_1..4]``; summing rows over a corpus and
    passing the sum to :func:`bleu_from_stats` gives corpus BLEU. Counted here from
    sacrebleu's own tokens, as its ``BLEU`` counts them, without building a sentence score.
    """
    hypothesis, reference = bleu_tokens(pred), bleu_tokens(gold)
    correct, total = [], []
    for n in range(1, BLEU_MAX_NGRAM_ORDER + 1):
        hyp_ngrams, ref_ngrams = _ngrams(hypothesis, n), _ngrams(reference, n)
        correct.append(_clipped_overlap(hyp_ngrams, ref_ngrams))
        total.append(max(len(hypothesis) - n + 1, 0))
    return [float(x) for x in (len(hypothesis), len(reference), *correct, *total)]


def bleu_from_stats(stats: np.ndarray) -> float:
    """Corpus BLEU (0..100) from sufficient statistics.

    ``stats`` is either one summed row of shape ``(10,)`` or per-example rows of shape
    ``(n, 10)``, which are summed over rows first. Uses ``sacrebleu.BLEU.compute_bleu`` with
    the default ``BLEU`` settings (exp smoothing, no effective order, order 4).
    """
    arr = np.asarray(stats, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr.sum(axis=0)
    if arr.shape != (N_BLEU_STATS,):
        raise ValueError(f"expected {N_BLEU_STATS} BLEU statistics, got shape {arr.shape}")
    ints = [int(x) for x in np.rint(arr)]
    order = BLEU_MAX_NGRAM_ORDER
    b = _bleu_defaults()
    result = sacrebleu.BLEU.compute_bleu(
        correct=ints[2 : 2 + order],
        total=ints[2 + order :],
        sys_len=ints[0],
        ref_len=ints[1],
        smooth_method=b.smooth_method,
        smooth_value=b.smooth_value,
        effective_order=b.effective_order,
        max_ngram_order=order,
    )
    return float(result.score)


def corpus_bleu(golds: Sequence[str], preds: Sequence[str]) -> float:
    """Corpus BLEU (0..100), equal to ``sacrebleu.corpus_bleu(preds, [golds]).score``.

    Returns NaN for an empty corpus (sacrebleu itself raises there).
    """
    if len(golds) != len(preds):
        raise ValueError(f"{len(golds)} golds but {len(preds)} predictions")
    if len(golds) == 0:
        return math.nan
    stats = np.array(
        [bleu_sufficient_stats(g, p) for g, p in zip(golds, preds, strict=True)],
        dtype=np.float64,
    )
    return bleu_from_stats(stats)
