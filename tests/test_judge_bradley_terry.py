"""Nova's judge summary, the prompt bootstrap, position-bias diagnostics and the
Bradley-Terry fit, against hand-computed cases and independent fits (scipy, scikit-learn)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression

from nova_eval_assets.judge import bradley_terry as bt

A, B, T, E = bt.A, bt.B, bt.TIE, bt.ERROR


def codes(*pairs: str) -> tuple[np.ndarray, np.ndarray]:
    """("AB", "Bt", "eB") -> forward and backward preference codes."""
    table = {"A": A, "B": B, "t": T, "e": E}
    return (
        np.array([table[p[0]] for p in pairs], dtype=np.int8),
        np.array([table[p[1]] for p in pairs], dtype=np.int8),
    )


# ---------------------------------------------------------------- Nova's summary


def test_summary_hand_computed():
    # prompts: (A, A), (B, B), (B, tie), (error, B)
    f, b = codes("AA", "BB", "Bt", "eB")
    s = bt.judge_summary(f, b, rounds=200)
    assert (s["a_scores"], s["b_scores"], s["ties"], s["inference_error"]) == (2, 4, 1, 1)
    assert s["score"] == 4.5  # b + ties / 2
    assert s["winrate"] == pytest.approx(4.5 / 7)  # (b + t/2) / (a + b + t)
    # stderr of a count over prompts: sqrt(n) * sd(per-prompt counts, ddof=1)
    # a per prompt: [2, 0, 0, 0] -> sd = 1 -> 2 * 1
    assert s["a_scores_stderr"] == pytest.approx(2.0)
    # b per prompt: [0, 2, 1, 1] -> mean 1, sd sqrt(2/3)
    assert s["b_scores_stderr"] == pytest.approx(2 * math.sqrt(2 / 3))
    # score per prompt: [0, 2, 1.5, 1] -> sd of those
    assert s["score_stderr"] == pytest.approx(2 * np.std([0, 2, 1.5, 1], ddof=1))
    assert s["inference_error_stderr"] == pytest.approx(2 * np.std([0, 0, 0, 1], ddof=1))
    assert s["lower_rate"] <= s["winrate"] <= s["upper_rate"]
    assert list(s) == [
        "a_scores",
        "a_scores_stderr",
        "b_scores",
        "b_scores_stderr",
        "ties",
        "ties_stderr",
        "inference_error",
        "inference_error_stderr",
        "score",
        "score_stderr",
        "winrate",
        "lower_rate",
        "upper_rate",
    ]


def test_always_first_judge_flips_every_prompt_and_has_no_net_preference():
    # a judge that always answers [[1]]: forward -> A, backward -> B, whatever the content
    f = np.full(50, A, dtype=np.int8)
    b = np.full(50, B, dtype=np.int8)
    s = bt.judge_summary(f, b)
    d = bt.position_bias(f, b)
    assert d["flip_rate"] == 1.0
    assert d["reversal_rate"] == 1.0
    assert d["first_position_win_rate"] == 1.0
    assert s["a_scores"] == s["b_scores"] == 50
    assert s["winrate"] == 0.5
    # every prompt contributes one point to each side, so no resample moves the winrate
    assert s["lower_rate"] == s["upper_rate"] == 0.5


def test_consistent_judge_has_no_flips_and_no_position_bias():
    f, b = codes("BB", "BB", "AA", "tt")
    d = bt.position_bias(f, b)
    assert d["flip_rate"] == 0.0
    assert d["first_position_win_rate"] == 0.5


def test_unparsable_outputs_are_inference_errors_outside_the_winrate():
    f, b = codes("eB", "Be", "ee", "Ae")
    s = bt.judge_summary(f, b, rounds=100)
    assert s["inference_error"] == 5
    assert (s["a_scores"], s["b_scores"]) == (1, 2)
    assert s["winrate"] == pytest.approx(2 / 3)
    d = bt.position_bias(f, b)
    assert d["prompts_with_both_verdicts"] == 0 and math.isnan(d["flip_rate"])
    assert d["judgments_with_verdict"] == 3


def test_all_errors_give_nan_rates():
    f, b = codes("ee", "ee")
    s = bt.judge_summary(f, b, rounds=50)
    assert s["inference_error"] == 4
    assert math.isnan(s["winrate"]) and math.isnan(s["lower_rate"])


def test_empty_and_single_prompt_stderrs():
    s = bt.judge_summary(*codes(), rounds=20)
    assert s["a_scores"] == 0 and math.isnan(s["a_scores_stderr"])
    s = bt.judge_summary(*codes("AB"), rounds=20)
    assert s["a_scores_stderr"] == 0.0


def test_length_bias_hand_computed():
    f, b = codes("AB", "AB", "BB", "tA")
    len_a = np.array([10, 5, 7, 20])
    len_b = np.array([5, 5, 3, 10])  # A longer, equal (excluded), A longer, A longer
    d = bt.position_bias(f, b, len_a, len_b)
    # judged: prompt 0 (A: longer wins, B: shorter), prompt 2 (B, B: shorter twice),
    # prompt 3 (tie: half, A: longer) -> (1 + 0 + 0 + 0.5 + 1) / 6
    assert d["judgments_with_unequal_lengths"] == 6
    assert d["length_bias"] == pytest.approx(2.5 / 6)


# ---------------------------------------------------------------- the bootstrap


def test_bootstrap_is_seeded_and_resamples_prompts():
    f, b = codes(*(["AA"] * 30 + ["BB"] * 50 + ["AB"] * 20))
    one = bt.judge_summary(f, b, seed=7)
    assert one == bt.judge_summary(f, b, seed=7)
    assert one != bt.judge_summary(f, b, seed=8)


def test_bootstrap_hand_computed_two_prompts():
    # prompts (A, A) and (B, B): a resample holds 0, 1 or 2 copies of (B, B) with
    # probabilities 1/4, 1/2, 1/4, so the round winrates are 0, 0.5 and 1
    counts = bt.outcome_counts(*codes("AA", "BB"))
    rates = bt.bootstrap_winrates(counts, rounds=4000, seed=1)
    values, freq = np.unique(rates, return_counts=True)
    assert list(values) == [0.0, 0.5, 1.0]
    assert freq / freq.sum() == pytest.approx([0.25, 0.5, 0.25], abs=0.03)
    s = bt.summary_from_counts(counts, rounds=1000)
    assert (s["lower_rate"], s["upper_rate"]) == (0.0, 1.0)


def test_bootstrap_with_one_outcome_has_no_spread():
    f, b = codes(*(["Bt"] * 40))
    s = bt.judge_summary(f, b)
    assert s["winrate"] == s["lower_rate"] == s["upper_rate"] == 0.75


def test_multinomial_bootstrap_matches_a_per_round_resampling_loop():
    rng = np.random.default_rng(0)
    n = 400
    f = rng.choice([A, B, T, E], size=n, p=[0.3, 0.45, 0.15, 0.1]).astype(np.int8)
    b = np.where(rng.random(n) < 0.7, f, rng.choice([A, B, T], size=n)).astype(np.int8)
    fast = bt.bootstrap_winrates(bt.outcome_counts(f, b), rounds=4000, seed=3)

    # the textbook version: draw n prompt indices per round, both passes travel together
    ties = ((f == T).astype(float) + (b == T).astype(float)) / 2
    a_pts = (f == A).astype(float) + (b == A).astype(float) + ties
    b_pts = (f == B).astype(float) + (b == B).astype(float) + ties
    loop_rng = np.random.default_rng(4)
    slow = []
    for _ in range(4000):
        idx = loop_rng.integers(0, n, n)
        slow.append(b_pts[idx].sum() / (a_pts[idx].sum() + b_pts[idx].sum()))
    slow = np.array(slow)
    assert fast.mean() == pytest.approx(slow.mean(), abs=0.003)
    assert fast.std() == pytest.approx(slow.std(), rel=0.08)
    assert np.percentile(fast, [2.5, 97.5]) == pytest.approx(
        np.percentile(slow, [2.5, 97.5]), abs=0.01
    )


def test_interval_width_reflects_prompts_not_judgments():
    # the two passes of a prompt always agree: 200 prompts, half (A, A), half (B, B).
    # Resampling prompts gives sd 0.5 / sqrt(200); resampling the 400 judgments as if
    # independent would understate it as 0.5 / sqrt(400).
    f, b = codes(*(["AA"] * 100 + ["BB"] * 100))
    s = bt.judge_summary(f, b, rounds=4000)
    width = s["upper_rate"] - s["lower_rate"]
    assert width == pytest.approx(2 * 1.96 * 0.5 / math.sqrt(200), rel=0.1)


# ---------------------------------------------------------------- Bradley-Terry fit


def test_two_model_fit_is_the_closed_form_winrate():
    # A has a + t/2 points, B has b + t/2: the ML probability that B wins is their share
    a, b, t = 7.0, 12.0, 3.0
    wins = np.array([[0.0, a + t / 2], [b + t / 2, 0.0]])
    theta = bt.fit_bradley_terry(wins, anchor=0, ridge=0.0)
    assert 1 / (1 + math.exp(-(theta[1] - theta[0]))) == pytest.approx((b + t / 2) / (a + b + t))


POINTS = np.array(
    [
        [0.0, 6.5, 3.0, 8.0],
        [4.5, 0.0, 5.0, 6.0],
        [7.0, 5.0, 0.0, 2.5],
        [2.0, 3.0, 6.5, 0.0],
    ]
)


def scipy_fit(points: np.ndarray, anchor: int) -> np.ndarray:
    m = points.shape[0]
    free = [i for i in range(m) if i != anchor]

    def nll(x):
        theta = np.zeros(m)
        theta[free] = x
        diff = theta[:, None] - theta[None, :]
        return -(points * -np.logaddexp(0, -diff)).sum()

    x = minimize(nll, np.zeros(m - 1), method="BFGS", options={"gtol": 1e-10}).x
    theta = np.zeros(m)
    theta[free] = x
    return theta


def sklearn_fit(points: np.ndarray, anchor: int) -> np.ndarray:
    """Logistic regression on one row per (i, j) pair: features +1 for i, -1 for j,
    label 1 weighted by i's points and label 0 weighted by j's (ties are half wins)."""
    m = points.shape[0]
    rows, labels, weights = [], [], []
    for i in range(m):
        for j in range(i + 1, m):
            x = np.zeros(m)
            x[i], x[j] = 1.0, -1.0
            for label, weight in ((1, points[i, j]), (0, points[j, i])):
                rows.append(x)
                labels.append(label)
                weights.append(weight)
    design = np.delete(np.array(rows), anchor, axis=1)
    model = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-12, max_iter=10000)
    model.fit(design, labels, sample_weight=weights)
    return np.insert(model.coef_[0], anchor, 0.0)


@pytest.mark.parametrize("anchor", [0, 2])
def test_fit_agrees_with_scipy_and_scikit_learn(anchor):
    ours = bt.fit_bradley_terry(POINTS, anchor=anchor, ridge=0.0)
    assert ours[anchor] == 0.0
    assert ours == pytest.approx(scipy_fit(POINTS, anchor), abs=1e-5)
    assert ours == pytest.approx(sklearn_fit(POINTS, anchor), abs=1e-4)


def test_default_ridge_is_negligible_on_well_posed_data():
    exact = bt.to_elo(bt.fit_bradley_terry(POINTS, ridge=0.0), 0)
    ridged = bt.to_elo(bt.fit_bradley_terry(POINTS), 0)
    assert np.abs(exact - ridged).max() < 0.01


def test_batched_fit_equals_one_fit_per_round():
    rng = np.random.default_rng(5)
    batch = rng.integers(0, 6, size=(7, 4, 4)).astype(float) + 0.5
    together = bt.fit_bradley_terry(batch, anchor=1)
    for r in range(7):
        assert together[r] == pytest.approx(bt.fit_bradley_terry(batch[r], anchor=1), abs=1e-8)


def test_undefeated_model_gets_a_finite_top_rating():
    wins = np.array([[0.0, 3.0, 2.0], [0.0, 0.0, 1.5], [0.0, 1.5, 0.0]])
    theta = bt.fit_bradley_terry(wins, anchor=1)
    assert np.isfinite(theta).all()
    assert theta[0] > 5 and abs(theta[2] - theta[1]) < 1e-4


def test_elo_scale_and_ranks():
    theta = np.array([0.0, math.log(10.0), -math.log(10.0), math.log(10.0)])
    assert bt.to_elo(theta, 0) == pytest.approx([1000, 1400, 600, 1400])
    assert bt.to_elo(theta, 1) == pytest.approx([600, 1000, 200, 1000])
    assert list(bt.ranks_of(bt.to_elo(theta, 0))) == [3, 1, 4, 1]


# ---------------------------------------------------------------- leaderboard


def comparison(baseline: str, challenger: str, pairs: list[str]) -> bt.Comparison:
    return bt.Comparison(baseline, challenger, bt.outcome_counts(*codes(*pairs)), "test")


def test_leaderboard_matches_an_independent_fit_and_reports_intervals():
    comparisons = [
        comparison("base", "tuned", ["BB"] * 14 + ["AA"] * 4 + ["Bt"] * 3 + ["AB"] * 3),
        comparison("tuned", "big", ["BB"] * 10 + ["AA"] * 8 + ["tt"] * 2),
        comparison("base", "big", ["BB"] * 15 + ["AA"] * 3 + ["ee"] * 2),
    ]
    board = bt.leaderboard(comparisons, anchor="base", rounds=400, ridge=0.0)
    rows = {row["model"]: row for row in board.rows}
    models = ["base", "big", "tuned"]
    points = bt.points_matrix(comparisons, models, [c.counts[None] for c in comparisons])[0]
    theta = scipy_fit(points, anchor=0)
    for i, name in enumerate(models):
        assert rows[name]["theta"] == pytest.approx(theta[i], abs=1e-5)
        assert rows[name]["rating"] == pytest.approx(1000 + bt.ELO_SCALE * theta[i], abs=1e-3)
        assert rows[name]["rating_lower"] <= rows[name]["rating"] <= rows[name]["rating_upper"]
    assert rows["base"]["rating"] == 1000.0 and rows["base"]["is_anchor"]
    assert [row["model"] for row in board.rows] == ["big", "tuned", "base"]
    assert [row["rank"] for row in board.rows] == [1, 2, 3]
    assert rows["base"]["rating_lower"] == rows["base"]["rating_upper"] == 1000.0
    # points: tuned vs base: B 14*2 + 3*1.5 + 3 = 35.5 of 48 judgments
    assert comparisons[0].b_points == 35.5 and comparisons[0].a_points == 12.5


def test_leaderboard_default_anchor_and_errors():
    comparisons = [
        comparison("m1", "m2", ["BB"] * 3 + ["AA"]),
        comparison("m1", "m3", ["AB"] * 2),
        comparison("m4", "m5", ["BB", "AA"]),
    ]
    board = bt.leaderboard(comparisons, rounds=50)
    assert board.anchor == "m1"  # the baseline of the most judgments
    rows = {row["model"]: row for row in board.rows}
    assert rows["m4"]["connected_to_anchor"] is False
    assert rows["m2"]["connected_to_anchor"] is True
    with pytest.raises(ValueError, match="not a compared model"):
        bt.leaderboard(comparisons, anchor="nobody")
    with pytest.raises(ValueError, match="with itself"):
        bt.leaderboard([comparison("x", "x", ["AB"])])
    with pytest.raises(ValueError, match="no judge results"):
        bt.leaderboard([comparison("x", "y", [])])
