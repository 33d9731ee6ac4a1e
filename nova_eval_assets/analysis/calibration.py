"""Calibration of a confidence against 0/1 correctness.

Definitions (``p`` confidence in [0, 1], ``y`` 1 if correct else 0, over the N examples
where both are defined):

- Bins are right-closed, ``(lo, hi]``, the first also holding ``lo`` itself, as
  ``sklearn.calibration.calibration_curve`` bins. Equal-width bins split [0, 1] into
  ``bins`` intervals; equal-mass bins take their edges at the 0, 1/B, ..., 1 quantiles of
  ``p`` (``numpy.percentile``, linear), so each holds about N/B examples (ties can merge
  bins; empty bins are dropped).
- ECE = sum over non-empty bins of (n_b / N) * |accuracy_b - mean confidence_b|.
- Brier score = mean((p - y)^2).
- Selective accuracy / coverage: keep the examples with ``p >= t``; coverage is the kept
  fraction and selective accuracy their accuracy, for every distinct ``t`` from the
  highest confidence down (ties enter together). AURC is the area under the risk
  (1 - selective accuracy) / coverage curve, as a step function over the examples.
- Threshold for a target accuracy: the lowest ``t`` (so the largest coverage) whose
  selective accuracy is at least the target; the examples below it are the ones to route
  to human review. None when no threshold reaches the target.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Bin:
    lo: float
    hi: float
    n: int
    confidence: float
    accuracy: float


def _clean(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    keep = np.isfinite(p) & np.isfinite(y)
    return np.clip(p[keep], 0.0, 1.0), y[keep]


def bin_edges(confidence: np.ndarray, bins: int, strategy: str) -> np.ndarray:
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, bins + 1)
    if strategy == "quantile":
        if confidence.size == 0:
            return np.linspace(0.0, 1.0, bins + 1)
        return np.percentile(confidence, np.linspace(0.0, 100.0, bins + 1))
    raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")


def reliability_bins(
    confidence: np.ndarray, correct: np.ndarray, bins: int = 10, strategy: str = "uniform"
) -> list[Bin]:
    """Non-empty bins with their count, mean confidence and accuracy."""
    p, y = _clean(confidence, correct)
    edges = bin_edges(p, bins, strategy)
    ids = np.searchsorted(edges[1:-1], p, side="left")
    k = len(edges) - 1
    count = np.bincount(ids, minlength=k)
    conf_sum = np.bincount(ids, weights=p, minlength=k)
    acc_sum = np.bincount(ids, weights=y, minlength=k)
    return [
        Bin(
            lo=float(edges[i]),
            hi=float(edges[i + 1]),
            n=int(count[i]),
            confidence=float(conf_sum[i] / count[i]),
            accuracy=float(acc_sum[i] / count[i]),
        )
        for i in range(k)
        if count[i] > 0
    ]


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = 10, strategy: str = "uniform"
) -> float:
    table = reliability_bins(confidence, correct, bins, strategy)
    total = sum(b.n for b in table)
    if total == 0:
        return math.nan
    return float(sum(b.n / total * abs(b.accuracy - b.confidence) for b in table))


def brier_score(confidence: np.ndarray, correct: np.ndarray) -> float:
    p, y = _clean(confidence, correct)
    return float(np.mean((p - y) ** 2)) if p.size else math.nan


@dataclass(frozen=True)
class CoverageCurve:
    threshold: np.ndarray  # descending distinct confidences
    coverage: np.ndarray
    accuracy: np.ndarray
    n: int

    def thinned(self, points: int = 200) -> dict[str, list[float]]:
        """At most ``points`` points (always the first and last), for plots and JSON."""
        if self.threshold.size <= points:
            idx = np.arange(self.threshold.size)
        else:
            idx = np.unique(np.linspace(0, self.threshold.size - 1, points).round().astype(int))
        return {
            "threshold": self.threshold[idx].tolist(),
            "coverage": self.coverage[idx].tolist(),
            "accuracy": self.accuracy[idx].tolist(),
        }


def coverage_curve(confidence: np.ndarray, correct: np.ndarray) -> CoverageCurve:
    p, y = _clean(confidence, correct)
    order = np.argsort(-p, kind="stable")
    p, y = p[order], y[order]
    kept = np.arange(1, p.size + 1)
    hits = np.cumsum(y)
    # the last position of each run of equal confidences: ties enter together
    last = np.flatnonzero(np.r_[p[1:] != p[:-1], True]) if p.size else np.array([], int)
    return CoverageCurve(
        threshold=p[last],
        coverage=kept[last] / max(p.size, 1),
        accuracy=hits[last] / kept[last],
        n=int(p.size),
    )


def aurc(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve (lower is better), ties averaged."""
    curve = coverage_curve(confidence, correct)
    if curve.n == 0:
        return math.nan
    risk = 1.0 - curve.accuracy
    widths = np.diff(np.r_[0.0, curve.coverage])
    return float(np.sum(risk * widths))


@dataclass(frozen=True)
class ReviewThreshold:
    target_accuracy: float
    threshold: float | None
    coverage: float | None
    accuracy: float | None
    n_automated: int
    n_review: int


def threshold_for_accuracy(
    confidence: np.ndarray, correct: np.ndarray, target_accuracy: float
) -> ReviewThreshold:
    curve = coverage_curve(confidence, correct)
    ok = np.flatnonzero(curve.accuracy >= target_accuracy - 1e-12)
    if ok.size == 0:
        return ReviewThreshold(target_accuracy, None, None, None, 0, curve.n)
    i = ok[-1]
    kept = round(float(curve.coverage[i]) * curve.n)
    return ReviewThreshold(
        target_accuracy=target_accuracy,
        threshold=float(curve.threshold[i]),
        coverage=float(curve.coverage[i]),
        accuracy=float(curve.accuracy[i]),
        n_automated=kept,
        n_review=curve.n - kept,
    )


def calibration_summary(
    confidence: np.ndarray, correct: np.ndarray, bins: int, target_accuracy: float
) -> dict[str, Any]:
    """Everything above for one confidence measure, JSON-ready."""
    p, y = _clean(confidence, correct)
    curve = coverage_curve(p, y)
    return {
        "n": int(p.size),
        "accuracy": float(y.mean()) if y.size else None,
        "mean_confidence": float(p.mean()) if p.size else None,
        "ece_equal_width": expected_calibration_error(p, y, bins, "uniform"),
        "ece_equal_mass": expected_calibration_error(p, y, bins, "quantile"),
        "brier": brier_score(p, y),
        "aurc": aurc(p, y),
        "bins_equal_width": [asdict(b) for b in reliability_bins(p, y, bins, "uniform")],
        "bins_equal_mass": [asdict(b) for b in reliability_bins(p, y, bins, "quantile")],
        "review_threshold": asdict(threshold_for_accuracy(p, y, target_accuracy)),
        "coverage_curve": curve.thinned(),
    }


# ---------------------------------------------------------------- plots (matplotlib, Agg)


def new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)  # the Agg canvas: no display, no pyplot global state
    return figure


def figure_png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def reliability_diagram_png(summary: dict[str, Any], title: str = "Reliability diagram") -> bytes:
    """Accuracy per equal-width bin against its mean confidence, with the diagonal of
    perfect calibration and the count per bin underneath, from :func:`calibration_summary`."""
    figure = new_figure(5.6, 5.6)
    top, bottom = figure.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    bins = summary["bins_equal_width"]
    centers = [(b["lo"] + b["hi"]) / 2 for b in bins]
    widths = [(b["hi"] - b["lo"]) * 0.9 for b in bins]
    top.plot([0, 1], [0, 1], linestyle="--", color="#888888", label="perfectly calibrated")
    top.bar(
        centers,
        [b["accuracy"] for b in bins],
        width=widths,
        color="#4c78a8",
        edgecolor="#2b4a6f",
        label="accuracy",
    )
    top.plot(
        [b["confidence"] for b in bins],
        [b["accuracy"] for b in bins],
        marker="o",
        color="#e45756",
        label="(mean confidence, accuracy)",
    )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    ece = summary["ece_equal_width"]
    top.set_title(f"{title}\nECE {ece:.3f} (equal width), Brier {summary['brier']:.3f}")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centers, [b["n"] for b in bins], width=widths, color="#9ecae9")
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("examples")
    return figure_png(figure)


def coverage_curve_png(
    summary: dict[str, Any], title: str = "Selective accuracy by coverage"
) -> bytes:
    figure = new_figure(5.6, 4.0)
    axes = figure.subplots()
    curve = summary["coverage_curve"]
    axes.step(curve["coverage"], curve["accuracy"], where="post", color="#4c78a8")
    review = summary["review_threshold"]
    axes.axhline(review["target_accuracy"], linestyle="--", color="#888888", label="target")
    if review["coverage"] is not None:
        axes.plot(
            [review["coverage"]],
            [review["accuracy"]],
            marker="o",
            color="#e45756",
            label=f"threshold {review['threshold']:.3f}",
        )
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("coverage (fraction answered automatically)")
    axes.set_ylabel("selective accuracy")
    axes.set_title(title)
    axes.legend(loc="lower left", fontsize=8)
    return figure_png(axes.figure)
