"""What the Dagster assets call: the analysis of a recipe's evaluation, and the comparison
of two recipes' evaluations, from the recipe to the files.

:func:`run_analysis` reads the examples table of a recipe's run, analyses it
(:func:`evaluation.analyze`) with the recipe's settings (:func:`effective_settings`) and
writes the outputs (:func:`outputs.write_analysis`). :func:`run_comparison` checks that two
recipes evaluated the same dataset, compares them (:func:`evaluation_pair.compare_evaluations`)
and writes that (:func:`outputs.write_comparison`). The names the analysis used to have here
(``analyze``, ``compare_evaluations``, ``write_analysis``, ...) are still importable from
this module.

Outputs, in ``<run>/eval_results/analysis/``: ``report.html`` (offline, plots embedded),
``analysis.json`` (every figure of the report), ``per_example.parquet`` (one row per
example: confidence measures, labels, correctness, error flags), ``strata.parquet`` and
the plots as PNG files. A comparison writes ``report.html``, ``comparison.json``,
``comparison.parquet`` and ``forest.png`` in ``<run>/eval_results/comparison_vs_<baseline>/``.
"""

from __future__ import annotations

from typing import Any

from nova_eval_assets import storage
from nova_eval_assets.analysis.evaluation import EvaluationAnalysis, analyze
from nova_eval_assets.analysis.evaluation_pair import ComparisonAnalysis, compare_evaluations
from nova_eval_assets.analysis.examples import (
    ANALYSIS_COLUMNS,
    COMPARISON_COLUMNS,
    CORPUS_METRICS,
    TEXT_COLUMNS,
    TEXT_LIMITS,
    Examples,
    fetch_rows,
    json_mode,
    read_examples,
)
from nova_eval_assets.analysis.outputs import write_analysis, write_comparison
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import AnalysisConfig, LoadedRecipe


def effective_settings(loaded: LoadedRecipe) -> AnalysisConfig:
    """The recipe's analysis settings, with the label field and JSON mode of its
    classification section where the analysis section leaves them unset."""
    settings = loaded.recipe.analysis
    classification = getattr(loaded.recipe, "classification", None)
    update: dict[str, Any] = {}
    if settings.label_field is None and classification is not None:
        update["label_field"] = classification.label_field
    if settings.json_mode is None:
        update["json_mode"] = getattr(classification, "json_mode", None) or "strict"
    benchmark = loaded.recipe.evaluation.benchmark
    if benchmark is not None:
        chosen = settings.model_fields_set
        if "correctness_metric" not in chosen:
            update["correctness_metric"] = benchmark.headline
        if "max_strata_per_field" not in chosen:  # every subtask a stratum (mmlu: 57)
            update["max_strata_per_field"] = max(
                settings.max_strata_per_field, len(benchmark.subtasks)
            )
    return settings.model_copy(update=update)


def run_analysis(loaded: LoadedRecipe) -> tuple[EvaluationAnalysis, dict[str, str]]:
    layout = EvalLayout.for_recipe(loaded)
    result = analyze(
        layout.examples,
        effective_settings(loaded),
        name=loaded.name,
        model=loaded.recipe.run.model_name_or_path,
    )
    result.summary["examples_path"] = layout.examples
    return result, write_analysis(result, layout.analysis())


def run_comparison(
    loaded: LoadedRecipe, baseline: LoadedRecipe
) -> tuple[ComparisonAnalysis, dict[str, str]]:
    """Compare ``loaded`` (B) against ``baseline`` (A) with ``loaded``'s analysis settings."""
    mine, theirs = EvalLayout.for_recipe(loaded), EvalLayout.for_recipe(baseline)
    digests = []
    for layout in (theirs, mine):
        report = layout.validation_report
        digests.append(
            storage.read_json(report).get("dataset_sha256") if storage.exists(report) else None
        )
    if None not in digests and digests[0] != digests[1]:
        raise ValueError(
            f"'{loaded.name}' and '{baseline.name}' evaluated different datasets "
            f"(sha256 {digests[1][:12]}… and {digests[0][:12]}…); a comparison needs the same one"
        )
    result = compare_evaluations(
        theirs.examples,
        mine.examples,
        effective_settings(loaded),
        baseline_name=baseline.name,
        candidate_name=loaded.name,
    )
    result.summary["models"] = {
        baseline.name: baseline.recipe.run.model_name_or_path,
        loaded.name: loaded.recipe.run.model_name_or_path,
    }
    return result, write_comparison(result, mine.comparison(baseline.name))


__all__ = [
    "ANALYSIS_COLUMNS",
    "COMPARISON_COLUMNS",
    "CORPUS_METRICS",
    "TEXT_COLUMNS",
    "TEXT_LIMITS",
    "ComparisonAnalysis",
    "EvaluationAnalysis",
    "Examples",
    "analyze",
    "compare_evaluations",
    "effective_settings",
    "fetch_rows",
    "json_mode",
    "read_examples",
    "run_analysis",
    "run_comparison",
    "write_analysis",
    "write_comparison",
]
