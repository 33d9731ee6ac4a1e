"""Aggregation: means, standard errors and a seeded, vectorized bootstrap.

Definitions:

- Per-example metrics (em, qem, f1, f1_score_quasi, rouge1, rouge2, rougeL) are
  aggregated as the mean over examples; ``<metric>_stderr`` is the standard error of that
  mean, sample std (``ddof=1``) / sqrt(n). n == 1 gives stderr 0.0, n == 0 gives NaN for
  both. NaN values are *not* skipped: callers pass only scored rows.
- ``bleu`` is corpus BLEU (0..100) from the summed per-example sacrebleu sufficient
  statistics (13a tokenizer, exp smoothing; see ``gen_qa``). lighteval 0.10, which Nova
  uses, scores only the first hypothesis for bleu; we compute proper corpus BLEU.
- ``bleu_stderr`` is a bootstrap estimate: each of ``rounds`` (default 1000) rounds
  resamples the n examples with replacement, drawn as one row of a multinomial count
  matrix (rounds x n, equal probabilities 1/n) from ``numpy.random.default_rng(seed)``
  (default seed 1234). ``counts @ stats`` gives every round's summed statistics at once,
  corpus BLEU is computed for all rounds in numpy (sacrebleu's formula with exp smoothing,
  reimplemented vectorized in :func:`bleu_from_stats_batch`), and the stderr is the
  sample std (``ddof=1``) of the round values. Rounds are processed in chunks so that the
  count matrix stays within about 48 MB (two rounds at least); chunking does not change
  the result (the generator's stream is consumed row by row either way). n == 1 gives
  0.0, n == 0 NaN.
- :func:`bootstrap_stderr` is the same bootstrap for a plain value column with a
  ``mean``/``min``/``max``/``sum`` reducer (for custom metrics aggregated that way).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from .gen_qa import BLEU_MAX_NGRAM_ORDER, N_BLEU_STATS, PER_EXAMPLE_METRICS, bleu_from_stats

DEFAULT_ROUNDS = 1000
DEFAULT_SEED = 1234
# About 16 MB of int64 counts a chunk: blocks that size are reused from the heap chunk after
# chunk, where 200 MB chunks were mapped and page-faulted in afresh each time (40 % more CPU
# with two bootstraps side by side, and 200 MB more memory beside the report's export).
DEFAULT_MAX_CHUNK_BYTES = 48_000_000
REDUCERS: tuple[str, ...] = ("mean", "min", "max", "sum")

# Bytes per (round, example) cell held at once: the int64 count matrix, its float64
# copy, and one float64 temporary (the masked values for min/max).
_BYTES_PER_CELL = 24


def mean_and_stderr(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std, ddof=1, / sqrt(n)).

    n == 1 -> (value, 0.0); n == 0 -> (nan, nan). NaN values are not skipped (a NaN makes
    both results NaN): callers pass only scored rows.
    """
    arr = np.asarray(values, dtype=np.float64).ravel()
    n = arr.size
    if n == 0:
        return math.nan, math.nan
    mean = float(arr.mean())
    if n == 1:
        return mean, 0.0
    return mean, float(arr.std(ddof=1) / math.sqrt(n))


def _count_chunks(n: int, rounds: int, seed: int, max_chunk_bytes: int) -> Iterator[np.ndarray]:
    """Yield float64 multinomial count matrices (chunk x n) covering ``rounds`` rows.

    Row r holds how often each of the n examples is drawn in bootstrap round r. The rows
    come from one ``default_rng(seed)`` stream, so the result is independent of chunking.
    """
    rng = np.random.default_rng(seed)
    pvals = np.full(n, 1.0 / n)
    # at least two rounds a chunk: one round goes through BLAS's much slower
    # matrix-vector product
    chunk = max(min(2, rounds), min(rounds, max_chunk_bytes // (_BYTES_PER_CELL * n)))
    done = 0
    while done < rounds:
        size = min(chunk, rounds - done)
        yield rng.multinomial(n, pvals, size=size).astype(np.float64)
        done += size


def _bootstrap_std(
    n: int,
    round_values: Callable[[np.ndarray], np.ndarray],
    rounds: int,
    seed: int,
    max_chunk_bytes: int,
) -> float:
    if rounds < 2:
        raise ValueError(f"rounds must be >= 2, got {rounds}")
    if n == 0:
        return math.nan
    parts = [round_values(c) for c in _count_chunks(n, rounds, seed, max_chunk_bytes)]
    if n == 1:
        # Every resample is the single example; avoid float noise in std of equal values.
        return 0.0 if np.isfinite(parts[0]).all() else math.nan
    return float(np.std(np.concatenate(parts), ddof=1))


def bootstrap_stderr(
    values: Sequence[float] | np.ndarray,
    reducer: str = "mean",
    rounds: int = DEFAULT_ROUNDS,
    seed: int = DEFAULT_SEED,
    *,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
) -> float:
    """Seeded, vectorized bootstrap stderr of ``reducer`` (mean/min/max/sum) over ``values``.

    Std (ddof=1) over ``rounds`` resamples with replacement; see the module docstring.
    """
    if reducer not in REDUCERS:
        raise ValueError(f"reducer must be one of {REDUCERS}, got {reducer!r}")
    v = np.asarray(values, dtype=np.float64).ravel()
    n = v.size

    def round_values(counts: np.ndarray) -> np.ndarray:
        if reducer == "sum":
            return counts @ v
        if reducer == "mean":
            return (counts @ v) / n
        present = counts > 0
        if reducer == "min":
            return np.where(present, v, np.inf).min(axis=1)
        return np.where(present, v, -np.inf).max(axis=1)

    return _bootstrap_std(n, round_values, rounds, seed, max_chunk_bytes)


def bleu_from_stats_batch(stats: np.ndarray) -> np.ndarray:
    """Corpus BLEU (0..100) for each row of summed sufficient statistics, shape (R, 10).

    A vectorized reimplementation of ``sacrebleu.BLEU.compute_bleu`` with the default
    settings (exp smoothing, no effective order, order 4):

    - brevity penalty ``exp(1 - ref_len / hyp_len)`` if ``hyp_len < ref_len`` (0 if
      ``hyp_len == 0``), else 1;
    - score 0 if no n-gram matches at all, or if some order has no hypothesis n-grams
      (sacrebleu floors log(0) to -9999999999, which underflows to 0);
    - precision ``100 * correct_n / total_n``; the k-th order (in increasing n) with zero
      matches gets ``100 / (2**k * total_n)`` instead (exp / NIST smoothing);
    - score ``bp * exp(sum(log p_n) / 4)``.
    """
    s = np.asarray(stats, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != N_BLEU_STATS:
        raise ValueError(f"expected shape (R, {N_BLEU_STATS}), got {s.shape}")
    order = BLEU_MAX_NGRAM_ORDER
    sys_len, ref_len = s[:, 0], s[:, 1]
    correct, total = s[:, 2 : 2 + order], s[:, 2 + order :]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        bp = np.where(
            sys_len < ref_len,
            np.where(sys_len > 0, np.exp(1.0 - ref_len / sys_len), 0.0),
            1.0,
        )
        no_match = correct == 0
        smooth = np.exp2(np.cumsum(no_match, axis=1))
        precisions = np.where(no_match, 100.0 / (smooth * total), (100.0 * correct) / total)
        valid = (total > 0).all(axis=1) & (correct > 0).any(axis=1)
        precisions = np.where(valid[:, None], precisions, 1.0)
        logs = np.log(precisions)
        log_sum = logs[:, 0]
        for n in range(1, order):  # left-to-right, as sacrebleu's sum() does
            log_sum = log_sum + logs[:, n]
        scores = bp * np.exp(log_sum / order)
    return np.where(valid, scores, 0.0)


def bootstrap_bleu_stderr(
    stats: np.ndarray,
    rounds: int = DEFAULT_ROUNDS,
    seed: int = DEFAULT_SEED,
    *,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
) -> float:
    """Bootstrap stderr of corpus BLEU from per-example sufficient statistics (n, 10).

    Seeded multinomial count matrix (rounds x n) @ stats, BLEU per round via
    :func:`bleu_from_stats_batch`, std (ddof=1) over rounds. n == 0 -> NaN, n == 1 -> 0.0.
    """
    s = np.asarray(stats, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != N_BLEU_STATS:
        raise ValueError(f"expected shape (n, {N_BLEU_STATS}), got {s.shape}")
    return _bootstrap_std(
        s.shape[0],
        lambda counts: bleu_from_stats_batch(counts @ s),
        rounds,
        seed,
        max_chunk_bytes,
    )


def aggregate_gen_qa(
    per_example: Mapping[str, Sequence[float]],
    bleu_stats: np.ndarray | None,
    *,
    bleu_rounds: int = DEFAULT_ROUNDS,
    seed: int = DEFAULT_SEED,
    bleu_stderr: float | None = None,
) -> dict[str, float]:
    """Aggregate gen_qa scores into ``{metric: mean, metric_stderr: stderr, ...}``.

    Metrics in :data:`PER_EXAMPLE_METRICS` come first in that order (em, em_stderr, qem,
    qem_stderr, ...), then any other keys of ``per_example`` in their given order, then
    ``bleu`` (corpus BLEU of the summed statistics) and ``bleu_stderr`` (bootstrap) if
    ``bleu_stats`` (n, 10) is given. An empty column or an empty ``bleu_stats`` gives NaN.
    ``bleu_stderr``: :func:`bootstrap_bleu_stderr` of ``bleu_stats`` with the same rounds
    and seed, when the caller has it already (the report stage runs it in the background).
    """
    names = [m for m in PER_EXAMPLE_METRICS if m in per_example]
    names += [m for m in per_example if m not in PER_EXAMPLE_METRICS]
    out: dict[str, float] = {}
    for name in names:
        mean, stderr = mean_and_stderr(per_example[name])
        out[name] = mean
        out[f"{name}_stderr"] = stderr
    if bleu_stats is not None:
        s = np.asarray(bleu_stats, dtype=np.float64).reshape(-1, N_BLEU_STATS)
        if s.shape[0] == 0:
            out["bleu"], out["bleu_stderr"] = math.nan, math.nan
        else:
            out["bleu"] = bleu_from_stats(s.sum(axis=0))
            out["bleu_stderr"] = (
                bootstrap_bleu_stderr(s, rounds=bleu_rounds, seed=seed)
                if bleu_stderr is None
                else bleu_stderr
            )
    return out
