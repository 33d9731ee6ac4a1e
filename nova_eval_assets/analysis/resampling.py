"""A seeded, vectorized bootstrap for statistics of sums, sized for a million examples.

Every statistic used here (a mean, a difference of means, corpus BLEU, a difference of
corpus BLEUs) is a function of column sums of a per-example matrix ``X`` (n x k): a mean
is ``sum(v) / sum(1)``, BLEU a function of its summed sufficient statistics. A bootstrap
round draws how often each resampling unit is taken (G draws with replacement among the G
units, from ``numpy.random.default_rng(seed)``: a multinomial row), sums the units' rows
with those counts (one matrix product for all rounds of a chunk) and applies the
statistic. Several statistics of the same rows (every metric of a stratum) share the same
rounds (:func:`bootstrap_many`).

Units: the examples themselves when ``n <= max_units`` (default 2000); otherwise the
examples are dealt into ``max_units`` blocks by a seeded random permutation and the
blocks are resampled. A block of a random partition is a sum of exchangeable examples, so
resampling blocks has the same first-order variance as resampling examples (the sum over
a resample of G blocks has variance G * (n/G) * var = n * var, as for n examples), while
the cost stays ``rounds x max_units`` whatever n is.

Results: the point estimate (the statistic of the full sums), the bootstrap standard
error (sample std, ddof=1, of the rounds), the percentile interval, and a two-sided
p-value for "the statistic is 0" from the bootstrap distribution shifted to the null:
``(1 + #{|t_r - t| >= |t|}) / (rounds + 1)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

DEFAULT_MAX_UNITS = 2000
_CHUNK_CELLS = 4_000_000


@dataclass(frozen=True)
class BootstrapResult:
    estimate: float
    stderr: float
    low: float
    high: float
    p_value: float
    rounds: int
    units: int


def resampling_units(
    x: np.ndarray, max_units: int = DEFAULT_MAX_UNITS, seed: int = 1234
) -> np.ndarray:
    """The rows to resample: ``x`` itself, or its sums over ``max_units`` random blocks."""
    n = x.shape[0]
    if n <= max_units:
        return x
    rng = np.random.default_rng([seed, 7])
    block = np.empty(n, dtype=np.int64)
    block[rng.permutation(n)] = np.arange(n) % max_units
    units = np.empty((max_units, x.shape[1]))
    for j in range(x.shape[1]):
        units[:, j] = np.bincount(block, weights=x[:, j], minlength=max_units)
    return units


def resample_counts(rng: np.random.Generator, rounds: int, units: int) -> np.ndarray:
    """(rounds, units) float counts: how often each unit is drawn when ``units`` draws are
    made with replacement, per round (a multinomial row, drawn as uniform integers and
    counted, several times faster than ``Generator.multinomial``)."""
    draws = rng.integers(0, units, size=(rounds, units), dtype=np.int64)
    draws += (np.arange(rounds, dtype=np.int64) * units)[:, None]
    counts = np.bincount(draws.ravel(), minlength=rounds * units)
    return counts.reshape(rounds, units).astype(np.float64)


def bootstrap_many(
    x: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    rounds: int = 1000,
    seed: int = 1234,
    max_units: int = DEFAULT_MAX_UNITS,
    level: float = 0.95,
) -> list[BootstrapResult]:
    """Bootstrap several statistics of the same resamples at once: ``statistic`` maps
    sums (R, k) to values (R, m); one result per output column."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    n = x.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        estimates = np.atleast_2d(statistic(x.sum(axis=0)[None, :]))[0]
    m = estimates.size
    nan = math.nan
    if n == 0:
        return [BootstrapResult(nan, nan, nan, nan, nan, rounds, 0)] * m
    units = resampling_units(x, max_units, seed)
    g = units.shape[0]
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // g)
    parts = []
    done = 0
    while done < rounds:
        size = min(chunk, rounds - done)
        counts = resample_counts(rng, size, g)
        with np.errstate(invalid="ignore", divide="ignore"):
            parts.append(np.asarray(statistic(counts @ units)).reshape(size, m))
        done += size
    values = np.concatenate(parts)
    alpha = (1.0 - level) / 2
    results = []
    for j in range(m):
        estimate = float(estimates[j])
        t = values[:, j][np.isfinite(values[:, j])]
        if t.size < 2 or not math.isfinite(estimate):
            results.append(BootstrapResult(estimate, nan, nan, nan, nan, rounds, g))
            continue
        low, high = np.percentile(t, [100 * alpha, 100 * (1 - alpha)])
        extreme = np.count_nonzero(np.abs(t - estimate) >= abs(estimate) - 1e-15)
        results.append(
            BootstrapResult(
                estimate=estimate,
                stderr=float(np.std(t, ddof=1)) if n > 1 else 0.0,
                low=float(low),
                high=float(high),
                p_value=float(min(1.0, (1 + extreme) / (t.size + 1))),
                rounds=rounds,
                units=g,
            )
        )
    return results


def bootstrap(
    x: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    rounds: int = 1000,
    seed: int = 1234,
    max_units: int = DEFAULT_MAX_UNITS,
    level: float = 0.95,
) -> BootstrapResult:
    """Bootstrap ``statistic`` (sums (R, k) -> values (R,)) of the column sums of ``x``."""
    return bootstrap_many(x, statistic, rounds, seed, max_units, level)[0]


def mean_statistic(sums: np.ndarray) -> np.ndarray:
    """For ``x = [v, 1]``: the mean of v."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[:, 0] / sums[:, 1]


def bootstrap_mean(
    values: np.ndarray, rounds: int = 1000, seed: int = 1234, max_units: int = DEFAULT_MAX_UNITS
) -> BootstrapResult:
    v = np.asarray(values, dtype=np.float64)
    return bootstrap(np.column_stack([v, np.ones_like(v)]), mean_statistic, rounds, seed, max_units)
