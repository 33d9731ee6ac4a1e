"""What an analysis or a comparison renders and writes.

:func:`json_ready` (NaN and infinities as null, numpy scalars as Python ones) for the
summaries; the PNG plots (:func:`analysis_images`, :func:`comparison_images`, drawn with
:mod:`nova_eval_assets.report.plots` and :mod:`calibration`); and
:func:`write_analysis` / :func:`write_comparison`, which write an
:class:`~evaluation.EvaluationAnalysis` or :class:`~evaluation_pair.ComparisonAnalysis` into
a folder (the HTML report from :mod:`nova_eval_assets.report.html`). Computes no
statistics; writes only into the folder it is given.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from nova_eval_assets import storage
from nova_eval_assets.analysis import calibration
from nova_eval_assets.recipe import AnalysisConfig

if TYPE_CHECKING:
    from nova_eval_assets.analysis.evaluation import EvaluationAnalysis
    from nova_eval_assets.analysis.evaluation_pair import ComparisonAnalysis


def json_ready(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def analysis_images(
    summary: dict[str, Any],
    strata_rows: list[dict[str, Any]],
    confidence: np.ndarray,
    correct: np.ndarray,
    config: AnalysisConfig,
) -> dict[str, bytes]:
    from nova_eval_assets.report import plots

    images: dict[str, bytes] = {}
    calib = summary["calibration"]
    if calib["n"]:
        measure = summary["confidence"]["measure"]
        images["reliability"] = calibration.reliability_diagram_png(
            calib, f"Reliability diagram ({measure})"
        )
        images["coverage"] = calibration.coverage_curve_png(calib)
        images["confidence_histogram"] = plots.confidence_histogram_png(
            confidence, correct, measure
        )
    main = "label_accuracy" if config.label_field is not None else "correct"
    strata_png = plots.strata_png(strata_rows, main, config.min_stratum_size)
    if strata_png is not None and summary["strata_fields"]:
        images["strata"] = strata_png
    return images


def comparison_images(
    rows: list[dict[str, Any]], baseline_name: str, candidate_name: str
) -> dict[str, bytes]:
    from nova_eval_assets.report import plots

    images: dict[str, bytes] = {}
    forest = plots.forest_png(rows, baseline_name, candidate_name)
    if forest is not None:
        images["forest"] = forest
    return images


def write_analysis(result: EvaluationAnalysis, folder: str) -> dict[str, str]:
    """Write every output of :func:`analyze` into ``folder``; returns their locations."""
    from nova_eval_assets.report.html import evaluation_html

    paths = {
        "report": storage.join(folder, "report.html"),
        "summary": storage.join(folder, "analysis.json"),
        "per_example": storage.join(folder, "per_example.parquet"),
        "strata": storage.join(folder, "strata.parquet"),
    }
    storage.write_parquet(paths["per_example"], result.per_example)
    storage.write_parquet(paths["strata"], _strata_table(result.strata))
    for image, png in result.images.items():
        paths[f"{image}_png"] = storage.join(folder, f"{image}.png")
        storage.write_bytes(paths[f"{image}_png"], png)
    storage.write_json(paths["summary"], {**result.summary, "strata": result.strata})
    storage.write_text(
        paths["report"], evaluation_html(result.summary, result.strata, result.images)
    )
    return paths


def _strata_table(rows: list[dict[str, Any]]) -> pa.Table:
    schema = pa.schema(
        [
            ("field", pa.string()),
            ("value", pa.string()),
            ("metric", pa.string()),
            ("n", pa.int64()),
            ("mean", pa.float64()),
            ("stderr", pa.float64()),
            ("small", pa.bool_()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def write_comparison(result: ComparisonAnalysis, folder: str) -> dict[str, str]:
    from nova_eval_assets.report.html import comparison_html

    paths = {
        "report": storage.join(folder, "report.html"),
        "summary": storage.join(folder, "comparison.json"),
        "rows": storage.join(folder, "comparison.parquet"),
    }
    storage.write_parquet(paths["rows"], pa.Table.from_pylist(result.rows))
    for image, png in result.images.items():
        paths[f"{image}_png"] = storage.join(folder, f"{image}.png")
        storage.write_bytes(paths[f"{image}_png"], png)
    storage.write_json(paths["summary"], {**result.summary, "rows": result.rows})
    storage.write_text(paths["report"], comparison_html(result.summary, result.rows, result.images))
    return paths
