"""The analysis assets of one recipe: thin wiring around :mod:`nova_eval_assets.analysis`.

``<name>/aggregated_report -> <name>/analysis_report`` (confidence, calibration, strata,
failures; HTML report next to the results), and for each ``analysis.compare_with``
baseline ``<name>/comparison_vs_<baseline>``, downstream of both evaluations'
``aggregated_report``. The Markdown summaries and plots are shown as asset metadata.
"""

from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext

from nova_eval_assets import lineage, storage
from nova_eval_assets.analysis.pipeline import run_analysis, run_comparison
from nova_eval_assets.assets.automation import FOLLOWUP_TAG, followup_condition
from nova_eval_assets.assets.in_process import InProcessRuns, failure_message
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import LoadedRecipe, RecipeError
from nova_eval_assets.report.analysis_markdown import (
    analysis_markdown,
    comparison_markdown,
    image_markdown,
)

IMAGE_TITLES = {
    "reliability": "reliability diagram",
    "coverage": "selective accuracy by coverage",
    "confidence_histogram": "confidence of correct and incorrect examples",
    "strata": "accuracy by metadata stratum",
    "forest": "difference per metric",
}


def _images(images: dict[str, bytes]) -> dict[str, dg.MetadataValue]:
    return {
        f"plot_{key}": dg.MetadataValue.md(image_markdown(png, IMAGE_TITLES.get(key, key)))
        for key, png in images.items()
    }


def _baselines(loaded: LoadedRecipe, recipes: list[LoadedRecipe]) -> list[LoadedRecipe]:
    """The recipes named by ``analysis.compare_with``; an unknown name is a RecipeError."""
    by_name = {r.name: r for r in recipes}
    found = []
    for name in loaded.recipe.analysis.compare_with:
        if name == loaded.name:
            raise RecipeError(
                f"{loaded.path}: analysis.compare_with names the recipe itself ('{name}'); "
                "name another recipe's run.name"
            )
        if name not in by_name:
            known = ", ".join(sorted(n for n in by_name if n != loaded.name)) or "(none)"
            raise RecipeError(
                f"{loaded.path}: analysis.compare_with = '{name}' names no recipe of this code "
                f"location; allowed values: {known}"
            )
        if by_name[name].recipe.evaluation.is_judge:
            raise RecipeError(
                f"{loaded.path}: analysis.compare_with = '{name}' is a judge recipe, not an "
                "evaluation of a model"
            )
        found.append(by_name[name])
    return found


def build_analysis_assets(
    loaded: LoadedRecipe, recipes: list[LoadedRecipe] | None = None
) -> list[Any]:
    """The analysis asset and one comparison asset per baseline (none for judge recipes or
    with ``analysis.enabled: false``). ``recipes``: every recipe of the code location,
    where ``compare_with`` names are looked up."""
    recipe = loaded.recipe
    settings = recipe.analysis
    if recipe.evaluation.is_judge or not settings.enabled:
        return []
    tags = {"recipe": loaded.name}
    definitions: list[Any] = [_analysis_asset(loaded, tags)]
    for baseline in _baselines(loaded, recipes or [loaded]):
        definitions.append(_comparison_asset(loaded, baseline, tags))
    return definitions


def _analysis_asset(loaded: LoadedRecipe, tags: dict[str, str]) -> dg.AssetsDefinition:
    name = loaded.key  # Dagster-safe run.name
    settings = loaded.recipe.analysis
    report_key = dg.AssetKey([name, "aggregated_report"])

    @dg.asset(
        key=dg.AssetKey([name, "analysis_report"]),
        deps=[report_key],
        group_name=name,
        automation_condition=followup_condition(),  # after each aggregate (automation.py)
        code_version=lineage.digest(settings, getattr(loaded.recipe, "classification", None)),
        description=(
            "Confidence from token log probabilities, calibration, metrics by metadata "
            "stratum and failure analysis; an HTML report next to the results."
        ),
        kinds={"python", "html"},
        tags={**tags, FOLLOWUP_TAG: "true"},
    )
    def analysis_report(context: AssetExecutionContext) -> dg.MaterializeResult:
        result, paths = run_analysis(loaded)
        summary = result.summary
        calib = summary["calibration"]
        findings = summary["failures"]["findings"]
        context.log.info(f"analysis report: {paths['report']}")
        numbers = {
            "examples": summary["counts"]["examples"],
            "ece_equal_width": calib["ece_equal_width"],
            "ece_equal_mass": calib["ece_equal_mass"],
            "brier": calib["brier"],
            "accuracy": calib["accuracy"],
            "review_threshold": calib["review_threshold"]["threshold"],
            "low_confidence": findings["low_confidence"]["count"],
            "overconfident_errors": findings["overconfident_error"]["count"],
        }
        return dg.MaterializeResult(
            metadata={
                "summary": dg.MetadataValue.md(analysis_markdown(summary, result.strata)),
                **{k: v for k, v in numbers.items() if v is not None},
                **_images(result.images),
                "html_report": dg.MetadataValue.path(paths["report"]),
                "analysis_json": dg.MetadataValue.path(paths["summary"]),
                "per_example": dg.MetadataValue.path(paths["per_example"]),
            }
        )

    return analysis_report


def _comparison_asset(
    loaded: LoadedRecipe, baseline: LoadedRecipe, tags: dict[str, str]
) -> dg.AssetsDefinition:
    name = loaded.key  # Dagster-safe run.name

    @dg.asset(
        key=dg.AssetKey([name, f"comparison_vs_{baseline.key}"]),
        deps=[
            dg.AssetKey([name, "aggregated_report"]),
            dg.AssetKey([baseline.key, "aggregated_report"]),
        ],
        group_name=name,
        code_version=lineage.digest(loaded.recipe.analysis, baseline.name),
        description=(
            f"Paired comparison of {name} against {baseline.name} on the same dataset: "
            "bootstrap intervals and McNemar tests per metric, overall and by stratum."
        ),
        kinds={"python", "html"},
        tags=tags,
    )
    def comparison(context: AssetExecutionContext) -> dg.MaterializeResult:
        result, paths = run_comparison(loaded, baseline)
        context.log.info(f"comparison report: {paths['report']}")
        metadata: dict[str, Any] = {
            "summary": dg.MetadataValue.md(comparison_markdown(result.summary)),
            "paired_examples": result.summary["counts"]["paired"],
            **_images(result.images),
            "html_report": dg.MetadataValue.path(paths["report"]),
            "comparison_json": dg.MetadataValue.path(paths["summary"]),
        }
        for row in result.summary["overall"]:
            if row["diff"] is not None:
                metadata[f"diff_{row['metric']}"] = row["diff"]
        return dg.MaterializeResult(metadata=metadata)

    return comparison


@dataclass
class AnalysisRun:
    message: str = ""  # why it failed; empty on success
    report: str | None = None  # the HTML report


def materialize_analysis(loaded: LoadedRecipe, runs: InProcessRuns) -> AnalysisRun:
    """Materialize ``<name>/analysis_report`` as one of ``runs`` (the CLI's ``run``, after
    the aggregated report); comparisons: :func:`materialize_comparisons`."""
    recipe = loaded.recipe
    if recipe.evaluation.is_judge or not recipe.analysis.enabled:
        return AnalysisRun()
    result = runs.materialize([_analysis_asset(loaded, {"recipe": loaded.name})])
    if not result.success:
        return AnalysisRun(message=failure_message(result))
    return AnalysisRun(report=EvalLayout.for_recipe(loaded).analysis("report.html"))


@dataclass
class ComparisonRun:
    baseline: str
    message: str = ""  # why it failed; empty on success
    report: str | None = None  # the HTML report
    summary: dict[str, Any] | None = None  # comparison.json


def materialize_comparisons(
    loaded: LoadedRecipe, recipes: list[LoadedRecipe], runs: InProcessRuns
) -> list[ComparisonRun]:
    """Materialize ``<name>/comparison_vs_<baseline>`` for each ``analysis.compare_with``
    baseline whose examples are written (the CLI's ``run``, after the analysis); a baseline
    not evaluated yet is left to the UI, a backfill or its own run."""
    if loaded.recipe.evaluation.is_judge or not loaded.recipe.analysis.enabled:
        return []
    done = []
    for baseline in _baselines(loaded, recipes):
        if not storage.exists(EvalLayout.for_recipe(baseline).examples):
            continue
        result = runs.materialize([_comparison_asset(loaded, baseline, {"recipe": loaded.name})])
        if not result.success:
            done.append(ComparisonRun(baseline.name, message=failure_message(result)))
            continue
        layout = EvalLayout.for_recipe(loaded)
        summary = storage.read_json(layout.comparison(baseline.name, "comparison.json"))
        report = layout.comparison(baseline.name, "report.html")
        done.append(ComparisonRun(baseline.name, report=report, summary=summary))
    return done
