"""Calibration figures against hand-worked examples, scikit-learn and a plain-Python
reimplementation; the selective-accuracy curve and the review threshold."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from nova_eval_assets.analysis import calibration as cal

P = np.array([0.1, 0.2, 0.3, 0.8, 0.9, 0.95, 0.6, 0.65])
Y = np.array([0, 0, 1, 1, 1, 0, 1, 0], dtype=float)


def test_hand_worked_ece_brier_and_bins():
    # equal width, 2 bins: [0, .5] holds .1 .2 .3 (conf .2, acc 1/3);
    # (.5, 1] holds .6 .65 .8 .9 .95 (conf .78, acc .6)
    assert cal.expected_calibration_error(P, Y, 2, "uniform") == pytest.approx(
        3 / 8 * (1 / 3 - 0.2) + 5 / 8 * (0.78 - 0.6)
    )
    # equal mass, 2 bins: the median .625 splits 4 and 4: (conf .3, acc .5), (.825, .5)
    assert cal.expected_calibration_error(P, Y, 2, "quantile") == pytest.approx(
        0.5 * 0.2 + 0.5 * 0.325
    )
    assert cal.brier_score(P, Y) == pytest.approx(2.075 / 8)
    bins = cal.reliability_bins(P, Y, 2, "uniform")
    assert [(b.n, b.confidence, b.accuracy) for b in bins] == [
        (3, pytest.approx(0.2), pytest.approx(1 / 3)),
        (5, pytest.approx(0.78), pytest.approx(0.6)),
    ]


def test_bins_are_right_closed_like_sklearn():
    p = np.array([0.0, 0.1, 0.1000001, 0.5, 1.0])
    bins = cal.reliability_bins(p, np.ones(5), 10, "uniform")
    assert [(round(b.lo, 1), b.n) for b in bins] == [(0.0, 2), (0.1, 1), (0.4, 1), (0.9, 1)]


def python_ece(p: list[float], y: list[float], edges: list[float]) -> float:
    """Plain-Python ECE over right-closed bins (the first also closed on the left)."""
    groups: dict[int, list[tuple[float, float]]] = {}
    for pi, yi in zip(p, y, strict=True):
        k = 0
        while k < len(edges) - 2 and pi > edges[k + 1]:
            k += 1
        groups.setdefault(k, []).append((pi, yi))
    total = len(p)
    return sum(
        len(g) / total * abs(sum(v for _, v in g) / len(g) - sum(c for c, _ in g) / len(g))
        for g in groups.values()
    )


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_agrees_with_sklearn_and_a_python_reimplementation(strategy, seed):
    rng = np.random.default_rng(seed)
    p = rng.beta(4, 2, size=3000)
    y = (rng.random(3000) < p**1.3).astype(float)
    bins = cal.reliability_bins(p, y, 10, strategy)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy=strategy)
    np.testing.assert_allclose([b.accuracy for b in bins], prob_true, rtol=1e-12)
    np.testing.assert_allclose([b.confidence for b in bins], prob_pred, rtol=1e-12)
    edges = cal.bin_edges(p, 10, strategy).tolist()
    assert cal.expected_calibration_error(p, y, 10, strategy) == pytest.approx(
        python_ece(p.tolist(), y.tolist(), edges), rel=1e-9
    )
    assert cal.brier_score(p, y) == pytest.approx(brier_score_loss(y, p), rel=1e-12)


def test_perfectly_calibrated_data_has_a_small_ece():
    rng = np.random.default_rng(0)
    p = rng.random(200_000)
    y = (rng.random(p.size) < p).astype(float)
    assert cal.expected_calibration_error(p, y, 10, "uniform") < 0.01
    assert cal.expected_calibration_error(p, y, 10, "quantile") < 0.01
    overconfident = np.clip(p + 0.2, 0, 1)
    assert cal.expected_calibration_error(overconfident, y, 10, "uniform") > 0.15


def test_nan_confidence_or_outcome_is_left_out():
    p = np.r_[P, np.nan, 0.5]
    y = np.r_[Y, 1.0, np.nan]
    assert cal.brier_score(p, y) == pytest.approx(cal.brier_score(P, Y))
    assert cal.calibration_summary(p, y, 10, 0.9)["n"] == 8


def test_coverage_curve_and_review_threshold_by_hand():
    # by confidence: .95(0) .9(1) .8(1) .65(0) .6(1) .3(1) .2(0) .1(0)
    curve = cal.coverage_curve(P, Y)
    np.testing.assert_allclose(curve.coverage, np.arange(1, 9) / 8)
    np.testing.assert_allclose(curve.accuracy, [0, 1 / 2, 2 / 3, 2 / 4, 3 / 5, 4 / 6, 4 / 7, 4 / 8])
    review = cal.threshold_for_accuracy(P, Y, 0.6)
    assert (review.threshold, review.coverage, review.n_review) == (0.3, 0.75, 2)
    assert review.accuracy == pytest.approx(4 / 6)
    assert cal.threshold_for_accuracy(P, Y, 0.99).threshold is None
    # AURC: mean risk over the 8 prefixes
    assert cal.aurc(P, Y) == pytest.approx(np.mean(1 - curve.accuracy))


def test_ties_enter_the_coverage_curve_together():
    p = np.array([0.9, 0.9, 0.9, 0.5])
    y = np.array([1, 0, 1, 1], dtype=float)
    curve = cal.coverage_curve(p, y)
    np.testing.assert_allclose(curve.threshold, [0.9, 0.5])
    np.testing.assert_allclose(curve.coverage, [0.75, 1.0])
    np.testing.assert_allclose(curve.accuracy, [2 / 3, 3 / 4])


def test_reliability_diagram_and_coverage_curve_are_png_images():
    rng = np.random.default_rng(0)
    p = rng.random(500)
    y = (rng.random(500) < p).astype(float)
    summary = cal.calibration_summary(p, y, 10, 0.8)
    for png in (cal.reliability_diagram_png(summary), cal.coverage_curve_png(summary)):
        image = Image.open(io.BytesIO(png))
        assert image.format == "PNG" and image.width > 300 and image.height > 300
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colors is not None and len(colors) > 20  # something was drawn
