"""Nova's judge summary, position-bias diagnostics, and the Bradley-Terry leaderboard.

Counting rule (used everywhere in this module)
----------------------------------------------
Every prompt is judged twice, forward (A shown first) and backward (B shown first), and
**each pass is one judgment**. A judgment's verdict, mapped back to A/B, is ``A``, ``B``,
``tie`` or ``error`` (no parsable verdict: an ``inference_error``). In the Bradley-Terry
fit **a tie counts half a win to each side** and errors count for nothing. So for one
comparison with ``a`` A-judgments, ``b`` B-judgments and ``t`` ties, A has ``a + t/2``
points and B has ``b + t/2``.

Nova's summary (:func:`judge_summary`)
--------------------------------------
- ``a_scores``, ``b_scores``, ``ties``, ``inference_error``: how many judgments (passes, so
  up to 2 per prompt) preferred A, preferred B, were ties, had no parsable verdict.
- ``score`` = ``b_scores + ties / 2``: the challenger's points under the counting rule.
- ``<key>_stderr``: standard error of that count with **prompts** as the independent unit
  (the two passes of a prompt are not independent): with ``c_i`` the prompt's count
  (0, 1 or 2; for ``score`` 0..2 in halves) over ``n`` prompts,
  ``sqrt(n) * std(c_i, ddof=1)``. n == 1 gives 0.0, n == 0 NaN.
- ``winrate``: the Bradley-Terry probability that B is preferred over A. With two models
  the maximum-likelihood Bradley-Terry fit with ties as half wins has the closed form
  ``(b + t/2) / (a + b + t)`` (:func:`fit_bradley_terry` gives the same; a test checks it).
  NaN when no judgment has a verdict.
- ``lower_rate``, ``upper_rate``: the 2.5 and 97.5 percentiles (numpy's default linear
  interpolation) of ``winrate`` over bootstrap rounds (default 1000, seed 1234).

The bootstrap
-------------
It resamples **prompts** with replacement (both passes of a prompt travel together). A
prompt's outcome is the pair (forward preference, backward preference): one of 16
distinct outcomes. Drawing n prompts uniformly with replacement and counting how many fall
in each outcome is exactly a multinomial draw ``Multinomial(n, k / n)`` over the distinct
outcomes' counts ``k``, so each round is one row of a ``(rounds, 16)`` count matrix from
``numpy.random.default_rng(seed).multinomial``. Every statistic of a round is then a dot
product with a per-outcome vector: no Python loop over rounds and no per-prompt work after
counting. Rounds in which no judgment has a verdict give NaN and are left out of the
percentiles.

Position-bias diagnostics (:func:`position_bias`), beyond Nova
---------------------------------------------------------------
- ``flip_rate``: among prompts whose two passes both have a verdict, the fraction whose
  A/B preferences differ (A vs B, or a win vs a tie). A judge that always picks the first
  position flips on every prompt (flip rate 1) and, being consistent in neither direction,
  shows no net preference (``a_scores == b_scores``, winrate 0.5).
- ``reversal_rate``: the same fraction counting only full reversals (A in one pass, B in
  the other).
- ``first_position_win_rate``: among judgments with a verdict, ``(first + tie/2) / n``:
  how often whichever response was shown first wins (0.5 = no position bias).
- ``length_bias``: among judgments with a verdict on prompts whose two responses differ in
  length (characters), ``(longer wins + tie/2) / n``: how often the longer response wins
  (0.5 = no length bias). NaN when there is no such judgment.

The leaderboard (:func:`leaderboard`), beyond Nova
--------------------------------------------------
Every judge result compares a baseline and a challenger. The points of all results are
summed into a matrix ``W[i, j]`` (points of model i against model j, ties as half wins)
and Bradley-Terry is fitted by maximum likelihood in logistic form,
``P(i beats j) = 1 / (1 + exp(-(theta_i - theta_j)))``, with the anchor model's
``theta`` fixed at 0, by Newton's method (batched over bootstrap rounds). A vanishing
ridge (``ridge / 2 * sum(theta**2)``, default 1e-6) keeps ratings finite when a model never
loses (common in small bootstrap rounds); on data whose MLE exists it moves ratings by far
less than 0.01 Elo. Ratings are reported on the Elo scale,
``1000 + 400 / ln(10) * (theta_i - theta_anchor)`` (a 400-point gap is 10:1 odds). The
bootstrap resamples each result's prompts (as above, independently per result) and refits;
intervals are 2.5/97.5 percentiles. ``rank`` is 1 + the number of models with a strictly
higher rating; ``rank_lower``/``rank_upper`` are its bootstrap percentiles.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

DEFAULT_ROUNDS = 1000
DEFAULT_SEED = 1234
DEFAULT_RIDGE = 1e-6
ELO_SCALE = 400.0 / math.log(10.0)
ELO_BASE = 1000.0

# Preference codes (the order of verdicts.Preference): A, B, tie, error.
A, B, TIE, ERROR = 0, 1, 2, 3
PREFERENCE_CODES = {"A": A, "B": B, "tie": TIE, "error": ERROR}
N_OUTCOMES = 16  # (forward, backward) pairs: code = 4 * forward + backward

_FWD = np.arange(N_OUTCOMES) // 4
_BWD = np.arange(N_OUTCOMES) % 4


def _count_of(code: int) -> np.ndarray:
    return np.equal(_FWD, code).astype(np.float64) + np.equal(_BWD, code).astype(np.float64)


#: Per distinct outcome: judgments preferring A / B, ties, errors (0, 1 or 2 each).
OUTCOME_A = _count_of(A)
OUTCOME_B = _count_of(B)
OUTCOME_TIE = _count_of(TIE)
OUTCOME_ERROR = _count_of(ERROR)
OUTCOME_A_POINTS = OUTCOME_A + OUTCOME_TIE / 2
OUTCOME_B_POINTS = OUTCOME_B + OUTCOME_TIE / 2


def preference_codes(preferences: Iterable[str]) -> np.ndarray:
    """``["A", "B", "tie", "error", ...]`` as int8 codes (A=0, B=1, tie=2, error=3)."""
    try:
        return np.fromiter((PREFERENCE_CODES[str(p)] for p in preferences), dtype=np.int8, count=-1)
    except KeyError as exc:
        raise ValueError(f"unknown preference {exc.args[0]!r}; allowed: A, B, tie, error") from None


def outcome_codes(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """One code per prompt, ``4 * forward + backward`` (0..15)."""
    f = np.asarray(forward, dtype=np.int8)
    b = np.asarray(backward, dtype=np.int8)
    if f.shape != b.shape:
        raise ValueError("forward and backward need one preference per prompt each")
    return (f.astype(np.int16) * 4 + b).astype(np.int8)


def outcome_counts(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """How many prompts have each of the 16 distinct (forward, backward) outcomes."""
    codes = outcome_codes(forward, backward)
    return np.bincount(codes.astype(np.intp), minlength=N_OUTCOMES).astype(np.float64)


def winrate_from_points(a_points, b_points):
    """``b / (a + b)`` elementwise; NaN where there are no points (no valid judgment)."""
    a = np.asarray(a_points, dtype=np.float64)
    b = np.asarray(b_points, dtype=np.float64)
    total = a + b
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, b / np.where(total > 0, total, 1.0), np.nan)


def bootstrap_counts(
    counts: np.ndarray, rounds: int = DEFAULT_ROUNDS, seed: int | np.random.Generator = DEFAULT_SEED
) -> np.ndarray:
    """``(rounds, K)`` multinomial resamples of ``n = counts.sum()`` items over ``K``
    distinct outcomes with probabilities ``counts / n`` (see the module docstring)."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    k = np.asarray(counts, dtype=np.float64)
    n = int(np.rint(k.sum()))
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if n == 0:
        return np.zeros((rounds, k.size))
    return rng.multinomial(n, k / k.sum(), size=rounds).astype(np.float64)


def bootstrap_winrates(
    counts: np.ndarray, rounds: int = DEFAULT_ROUNDS, seed: int = DEFAULT_SEED
) -> np.ndarray:
    """Winrate (B preferred) in each bootstrap round, from the 16 outcome counts."""
    resampled = bootstrap_counts(counts, rounds, seed)
    return winrate_from_points(resampled @ OUTCOME_A_POINTS, resampled @ OUTCOME_B_POINTS)


def _count_stderr(counts: np.ndarray, per_outcome: np.ndarray) -> float:
    """sqrt(n) * std(ddof=1) of the per-prompt values, from outcome counts (weighted)."""
    n = counts.sum()
    if n == 0:
        return math.nan
    if n == 1:
        return 0.0
    mean = float(counts @ per_outcome) / n
    variance = float(counts @ (per_outcome - mean) ** 2) / (n - 1)
    return math.sqrt(n) * math.sqrt(max(variance, 0.0))


def _percentiles(values: np.ndarray, q: Sequence[float]) -> list[float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [math.nan for _ in q]
    return [float(x) for x in np.percentile(finite, q)]


def judge_summary(
    forward: np.ndarray,
    backward: np.ndarray,
    rounds: int = DEFAULT_ROUNDS,
    seed: int = DEFAULT_SEED,
) -> dict[str, float]:
    """Nova's summary keys from per-prompt forward/backward preference codes.

    Keys, in order: a_scores, a_scores_stderr, b_scores, b_scores_stderr, ties,
    ties_stderr, inference_error, inference_error_stderr, score, score_stderr, winrate,
    lower_rate, upper_rate. See the module docstring for each definition.
    """
    return summary_from_counts(outcome_counts(forward, backward), rounds, seed)


def summary_from_counts(
    counts: np.ndarray, rounds: int = DEFAULT_ROUNDS, seed: int = DEFAULT_SEED
) -> dict[str, float]:
    """:func:`judge_summary` from the 16 distinct-outcome counts."""
    counts = np.asarray(counts, dtype=np.float64)
    out: dict[str, float] = {}
    per_outcome = {
        "a_scores": OUTCOME_A,
        "b_scores": OUTCOME_B,
        "ties": OUTCOME_TIE,
        "inference_error": OUTCOME_ERROR,
        "score": OUTCOME_B_POINTS,
    }
    for name, vector in per_outcome.items():
        out[name] = float(counts @ vector)
        out[f"{name}_stderr"] = _count_stderr(counts, vector)
    out["winrate"] = float(
        winrate_from_points(counts @ OUTCOME_A_POINTS, counts @ OUTCOME_B_POINTS)
    )
    lower, upper = _percentiles(bootstrap_winrates(counts, rounds, seed), (2.5, 97.5))
    out["lower_rate"], out["upper_rate"] = lower, upper
    return out


def position_bias(
    forward: np.ndarray,
    backward: np.ndarray,
    length_a: np.ndarray | None = None,
    length_b: np.ndarray | None = None,
) -> dict[str, float]:
    """flip_rate, reversal_rate, first_position_win_rate, length_bias (module docstring),
    with the counts they are taken over."""
    f = np.asarray(forward, dtype=np.int8)
    b = np.asarray(backward, dtype=np.int8)
    both = (f != ERROR) & (b != ERROR)
    n_both = int(both.sum())
    flips = int((both & (f != b)).sum())
    reversals = int((both & (((f == A) & (b == B)) | ((f == B) & (b == A)))).sum())

    # Position of the winner: forward A / backward B were shown first.
    first_wins = int((f == A).sum() + (b == B).sum())
    ties = int((f == TIE).sum() + (b == TIE).sum())
    valid = int((f != ERROR).sum() + (b != ERROR).sum())

    out: dict[str, float] = {
        "flip_rate": flips / n_both if n_both else math.nan,
        "reversal_rate": reversals / n_both if n_both else math.nan,
        "prompts_with_both_verdicts": n_both,
        "first_position_win_rate": (first_wins + ties / 2) / valid if valid else math.nan,
        "judgments_with_verdict": valid,
    }
    if length_a is not None and length_b is not None:
        la = np.asarray(length_a, dtype=np.int64)
        lb = np.asarray(length_b, dtype=np.int64)
        differ = la != lb
        a_longer = la > lb
        points = 0.0
        judged = 0
        for prefs in (f, b):
            has = differ & (prefs != ERROR)
            judged += int(has.sum())
            longer_wins = has & (((prefs == A) & a_longer) | ((prefs == B) & ~a_longer))
            points += int(longer_wins.sum()) + int((has & (prefs == TIE)).sum()) / 2
        out["length_bias"] = points / judged if judged else math.nan
        out["judgments_with_unequal_lengths"] = judged
    return out


# ------------------------------------------------------------------ Bradley-Terry fit


def _log_likelihood(theta: np.ndarray, wins: np.ndarray, ridge: float, free: np.ndarray):
    diff = theta[:, :, None] - theta[:, None, :]
    log_sig = -np.logaddexp(0.0, -diff)
    return (wins * log_sig).sum(axis=(1, 2)) - ridge / 2 * (theta[:, free] ** 2).sum(axis=1)


def fit_bradley_terry(
    wins: np.ndarray,
    anchor: int = 0,
    ridge: float = DEFAULT_RIDGE,
    max_iter: int = 200,
    tol: float = 1e-10,
) -> np.ndarray:
    """Maximum-likelihood Bradley-Terry strengths (logit scale) with ``theta[anchor] = 0``.

    ``wins`` is ``(m, m)`` or a batch ``(R, m, m)``; ``wins[..., i, j]`` is the points of
    model i against model j (ties already split half and half). Maximizes
    ``sum_ij W_ij log sigmoid(theta_i - theta_j) - ridge / 2 * sum(theta**2)`` by Newton's
    method with step halving, all batch rows at once. Returns ``(m,)`` or ``(R, m)``.
    """
    w = np.asarray(wins, dtype=np.float64)
    single = w.ndim == 2
    if single:
        w = w[None]
    if w.ndim != 3 or w.shape[1] != w.shape[2]:
        raise ValueError(f"wins must be (m, m) or (R, m, m), got {np.shape(wins)}")
    rounds, m, _ = w.shape
    if not 0 <= anchor < m:
        raise ValueError(f"anchor {anchor} is outside 0..{m - 1}")
    w = w.copy()
    w[:, np.arange(m), np.arange(m)] = 0.0
    theta = np.zeros((rounds, m))
    if m == 1:
        return theta[0] if single else theta
    free = np.array([i for i in range(m) if i != anchor])
    games = w + w.transpose(0, 2, 1)
    current = _log_likelihood(theta, w, ridge, free)
    active = np.ones(rounds, dtype=bool)
    eye = np.eye(m - 1)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        th, ww, gg = theta[idx], w[idx], games[idx]
        p = 1.0 / (1.0 + np.exp(-(th[:, :, None] - th[:, None, :])))
        grad = (ww - gg * p).sum(axis=2) - ridge * th
        curvature = gg * p * (1.0 - p)
        info = -curvature
        info[:, np.arange(m), np.arange(m)] = curvature.sum(axis=2)
        info = info[:, free][:, :, free] + ridge * eye  # negative Hessian, free coordinates
        rhs = grad[:, free][..., None]
        try:
            step_free = np.linalg.solve(info, rhs)[..., 0]
        except np.linalg.LinAlgError:  # ridge 0 and a model with no games: least squares
            step_free = (np.linalg.pinv(info) @ rhs)[..., 0]
        step = np.zeros_like(th)
        step[:, free] = step_free
        scale = np.ones(idx.size)
        base = current[idx]
        accepted = np.zeros(idx.size, dtype=bool)
        candidate = th.copy()
        value = base.copy()
        for _halving in range(40):
            trial = th + scale[:, None] * step
            trial_value = _log_likelihood(trial, ww, ridge, free)
            ok = ~accepted & (trial_value >= base - 1e-12 * np.maximum(1.0, np.abs(base)))
            candidate[ok] = trial[ok]
            value[ok] = trial_value[ok]
            accepted |= ok
            if accepted.all():
                break
            scale = np.where(accepted, scale, scale / 2)
        moved = np.abs(candidate - th).max(axis=1)
        theta[idx] = candidate
        current[idx] = value
        active[idx] = accepted & (moved > tol)
    return theta[0] if single else theta


def to_elo(theta: np.ndarray, anchor: int) -> np.ndarray:
    """Elo-scale ratings: ``1000 + 400 / ln(10) * (theta - theta[anchor])``."""
    t = np.asarray(theta, dtype=np.float64)
    return ELO_BASE + ELO_SCALE * (t - t[..., anchor : anchor + 1])


def ranks_of(ratings: np.ndarray) -> np.ndarray:
    """1 + the number of models with a strictly higher rating (ties share a rank)."""
    r = np.asarray(ratings, dtype=np.float64)
    return 1 + (r[..., None, :] > r[..., :, None]).sum(axis=-1)


@dataclass
class Comparison:
    """One judge result: a baseline (A) against a challenger (B), as outcome counts."""

    baseline: str
    challenger: str
    counts: np.ndarray  # the 16 distinct-outcome counts (see outcome_counts)
    source: str = ""

    @property
    def a_points(self) -> float:
        return float(np.asarray(self.counts) @ OUTCOME_A_POINTS)

    @property
    def b_points(self) -> float:
        return float(np.asarray(self.counts) @ OUTCOME_B_POINTS)


@dataclass
class Leaderboard:
    """Ratings and their bootstrap intervals, best first (see the module docstring)."""

    anchor: str
    rows: list[dict[str, object]] = field(default_factory=list)
    rounds: int = DEFAULT_ROUNDS
    seed: int = DEFAULT_SEED


def default_anchor(comparisons: Sequence[Comparison]) -> str:
    """The model that is the baseline of the most judgments (ties: alphabetical first)."""
    weight: dict[str, float] = {}
    for c in comparisons:
        weight[c.baseline] = weight.get(c.baseline, 0.0) + float(np.sum(c.counts))
    if not weight:
        raise ValueError("no comparisons to choose an anchor from")
    return min(weight, key=lambda name: (-weight[name], name))


def points_matrix(
    comparisons: Sequence[Comparison], models: Sequence[str], counts: Sequence[np.ndarray]
) -> np.ndarray:
    """``(R, m, m)`` points matrix from per-comparison ``(R, 16)`` outcome counts."""
    index = {name: i for i, name in enumerate(models)}
    rounds = counts[0].shape[0] if counts else 1
    w = np.zeros((rounds, len(models), len(models)))
    for c, k in zip(comparisons, counts, strict=True):
        i, j = index[c.baseline], index[c.challenger]
        w[:, i, j] += k @ OUTCOME_A_POINTS
        w[:, j, i] += k @ OUTCOME_B_POINTS
    return w


def leaderboard(
    comparisons: Sequence[Comparison],
    anchor: str | None = None,
    rounds: int = DEFAULT_ROUNDS,
    seed: int = DEFAULT_SEED,
    ridge: float = DEFAULT_RIDGE,
) -> Leaderboard:
    """Fit Bradley-Terry over every compared model, with bootstrap intervals and ranks."""
    comparisons = [c for c in comparisons if np.sum(c.counts) > 0]
    if not comparisons:
        raise ValueError("no judge results with any judged prompt")
    for c in comparisons:
        if c.baseline == c.challenger:
            raise ValueError(f"{c.source or 'a comparison'} compares {c.baseline!r} with itself")
    models = sorted({name for c in comparisons for name in (c.baseline, c.challenger)})
    anchor = anchor or default_anchor(comparisons)
    if anchor not in models:
        raise ValueError(f"anchor {anchor!r} is not a compared model; models: {', '.join(models)}")
    a = models.index(anchor)

    point = points_matrix(
        comparisons, models, [np.asarray(c.counts, float)[None] for c in comparisons]
    )
    theta = fit_bradley_terry(point[0], anchor=a, ridge=ridge)
    elo = to_elo(theta, a)
    rank = ranks_of(elo)

    rng = np.random.default_rng(seed)
    resampled = [bootstrap_counts(c.counts, rounds, rng) for c in comparisons]
    boot_theta = fit_bradley_terry(
        points_matrix(comparisons, models, resampled), anchor=a, ridge=ridge
    )
    boot_elo = to_elo(boot_theta, a)
    boot_rank = ranks_of(boot_elo)

    wins = point[0]
    games = wins + wins.T
    connected = _connected_to(a, games > 0)
    rows = []
    for i, name in enumerate(models):
        lo, hi = np.percentile(boot_elo[:, i], (2.5, 97.5))
        rlo, rhi = np.percentile(boot_rank[:, i], (2.5, 97.5))
        rows.append(
            {
                "model": name,
                "rating": float(elo[i]),
                "rating_lower": float(lo),
                "rating_upper": float(hi),
                "rank": int(rank[i]),
                "rank_lower": float(rlo),
                "rank_upper": float(rhi),
                "theta": float(theta[i]),
                "points": float(wins[i].sum()),
                "judgments": float(games[i].sum()),
                "win_share": float(wins[i].sum() / games[i].sum()) if games[i].sum() else math.nan,
                "is_anchor": i == a,
                "connected_to_anchor": bool(connected[i]),
            }
        )
    rows.sort(key=lambda row: (row["rank"], row["model"]))
    return Leaderboard(anchor=anchor, rows=rows, rounds=rounds, seed=seed)


def _connected_to(start: int, adjacency: np.ndarray) -> np.ndarray:
    seen = np.zeros(adjacency.shape[0], dtype=bool)
    stack = [start]
    seen[start] = True
    while stack:
        node = stack.pop()
        for nxt in np.flatnonzero(adjacency[node] & ~seen):
            seen[nxt] = True
            stack.append(int(nxt))
    return seen


__all__ = [
    "DEFAULT_RIDGE",
    "DEFAULT_ROUNDS",
    "DEFAULT_SEED",
    "ELO_BASE",
    "ELO_SCALE",
    "N_OUTCOMES",
    "OUTCOME_A",
    "OUTCOME_A_POINTS",
    "OUTCOME_B",
    "OUTCOME_B_POINTS",
    "OUTCOME_ERROR",
    "OUTCOME_TIE",
    "Comparison",
    "Leaderboard",
    "bootstrap_counts",
    "bootstrap_winrates",
    "default_anchor",
    "fit_bradley_terry",
    "judge_summary",
    "leaderboard",
    "outcome_codes",
    "outcome_counts",
    "points_matrix",
    "position_bias",
    "preference_codes",
    "ranks_of",
    "summary_from_counts",
    "to_elo",
    "winrate_from_points",
]
