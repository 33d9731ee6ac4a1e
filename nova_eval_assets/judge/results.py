"""The files a judge run writes and reads back, in the recipe's ``eval_results/``.

:func:`write_judge_report` writes the Nova-style ``results_<ts>.json`` (under
:data:`NOVA_JUDGE_TASK_KEY`), the lighteval-style details (:func:`details_table`),
``judgments.parquet`` and ``stages/latest_report.json``, from a judgments table and
:func:`summary.summarize`; :func:`read_latest_report` and :func:`read_judgments` read them
back. Writes only under the judge recipe's run folder; judges nothing.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pyarrow as pa

from nova_eval_assets import storage
from nova_eval_assets.judge.rubric import breakdown, is_rubric_table, row_scores
from nova_eval_assets.judge.settings import (
    is_rubric,
    judge_config,
    judge_model,
    labels,
)
from nova_eval_assets.judge.summary import summarize, summary_markdown
from nova_eval_assets.layout import EvalLayout, safe_name, timestamp
from nova_eval_assets.recipe import LoadedRecipe

NOVA_JUDGE_TASK_KEY = "custom|llm_judge_judge|0"
#: lighteval's ``custom|<task>_<strategy>|0`` (Nova's key for the rubric judge is not public)
NOVA_RUBRIC_TASK_KEY = "custom|rubric_llm_judge_judge|0"
DETAILS_COLUMNS = ("example", "gold", "predictions", "metrics", "specifics")


def nan_to_none(value: Any) -> Any:
    """``value`` with NaN and infinities (in dicts and lists too) as None, for JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_to_none(v) for v in value]
    return value


def task_key(loaded: LoadedRecipe) -> str:
    """The results' task key: llm_judge's (also mm_llm_judge's, as Nova), or the rubric's."""
    return NOVA_RUBRIC_TASK_KEY if is_rubric(loaded) else NOVA_JUDGE_TASK_KEY


def preference_counts(preferences: list[str | None]) -> dict[str, float]:
    """One prompt's counts over its passes' preferences, as Nova's details name them."""
    return {
        "a_scores": preferences.count("A"),
        "b_scores": preferences.count("B"),
        "ties": preferences.count("tie"),
        "inference_error": preferences.count("error"),
        "score": preferences.count("B") + preferences.count("tie") / 2,
    }


def details_table(table: pa.Table) -> pa.Table:
    """The lighteval-style details: each cell a Python-literal string. A rubric judge's
    rows add the weighted scores to ``metrics`` and, to ``specifics``, Nova's
    ``criteria_breakdown`` and ``overall_justification`` of the forward pass (A shown
    first) and the same of the backward pass (``backward_criteria_breakdown``,
    ``backward_overall_justification``)."""
    columns: dict[str, list[str]] = {name: [] for name in DETAILS_COLUMNS}
    rubric = is_rubric_table(table)
    scores = row_scores(table) if rubric else {}
    for index, row in enumerate(table.to_pylist()):
        prefs = [row["forward_preference"], row["backward_preference"]]
        columns["example"].append(row["prompt"])
        columns["gold"].append("")
        columns["predictions"].append(repr([row["forward_raw"], row["backward_raw"]]))
        metrics: dict[str, Any] = preference_counts(prefs)
        for key, values in scores.items():
            metrics[key] = nan_to_none(float(values[index]))
        columns["metrics"].append(repr(metrics))
        specifics = {
            "response_A": row["response_A"],
            "response_B": row["response_B"],
            "forward_verdict": row["forward_verdict"],
            "backward_verdict": row["backward_verdict"],
            "forward_preference": row["forward_preference"],
            "backward_preference": row["backward_preference"],
            "forward_rationale": row["forward_rationale"],
            "backward_rationale": row["backward_rationale"],
            "outcome": row["outcome"],
            "soft_b_preference": row["soft_b_preference"],
            "metadata": row["metadata"],
        }
        if rubric:
            specifics.update(
                {
                    "criteria_breakdown": breakdown(row["forward_criteria"]),
                    "overall_justification": row["forward_rationale"],
                    "backward_criteria_breakdown": breakdown(row["backward_criteria"]),
                    "backward_overall_justification": row["backward_rationale"],
                }
            )
        columns["specifics"].append(repr(specifics))
    return pa.table(columns, schema=pa.schema([(n, pa.string()) for n in DETAILS_COLUMNS]))


def write_judge_report(
    loaded: LoadedRecipe, table: pa.Table, model_id: str, started_at: float | None = None
) -> dict[str, Any]:
    layout = EvalLayout.for_recipe(loaded)
    recipe = loaded.recipe
    config = judge_config(loaded)
    summary, diagnostics = summarize(table, config.bootstrap_rounds, config.seed)
    validation = storage.read_json(layout.validation_report)
    baseline, challenger = labels(loaded)
    stamp = timestamp()
    key = task_key(loaded)
    config_general = {
        "recipe_name": recipe.run.name,
        "recipe_path": str(loaded.path),
        "model_name": judge_model(loaded),
        "model_type": recipe.run.model_type,
        "judge_backend": config.backend,
        "judge_model_id": model_id,
        "task": recipe.evaluation.task,
        "strategy": recipe.evaluation.strategy,
        "baseline": baseline,
        "challenger": challenger,
        "dataset": {"path": validation["source"], "sha256": validation["dataset_sha256"]},
        "inference": recipe.inference.public_dump(),
        "judge": config.model_dump(),
        "counting_rule": (
            "each pass (forward, backward) is one judgment; a tie counts half to each side "
            "in the Bradley-Terry fit; unparsable outputs are inference_error"
        ),
        "timestamp": stamp,
        "total_evaluation_time_secondes": (
            round(time.time() - started_at, 3) if started_at is not None else None
        ),
        "num_prompts": table.num_rows,
        "num_judgments": 2 * table.num_rows,
        "num_rejected_rows": validation["rejected_rows"],
    }
    from nova_eval_assets.report.inspect_log import inspect_log_decision  # imports inspect_ai

    inspect_log, inspect_warning = inspect_log_decision(recipe.run.inspect_log, table.num_rows)
    config_general["warnings"] = [inspect_warning] if inspect_warning else []
    if is_rubric(loaded):
        config_general["rubric_rule"] = (
            "the preference decides the verdict; weighted scores: scale (s-1)/4, binary 1/0, "
            "weights normalized to sum 1 over the criteria both sides were scored on, a "
            "missing weight the mean of the given ones; a prompt's value is the mean over "
            "its passes with a verdict; stderr: sample std / sqrt(prompts)"
        )
    clean = nan_to_none(summary)
    document = {
        "config_general": config_general,
        "results": {key: clean, "all": dict(clean)},
        "versions": {key: 0},
        "diagnostics": nan_to_none(diagnostics),
    }
    results_path = layout.result(f"results_{stamp}.json")
    storage.write_json(results_path, document)
    details_path = layout.result(
        "details",
        safe_name(judge_model(loaded)),
        stamp,
        f"details_{key}_{stamp}.parquet",
    )
    storage.write_parquet(details_path, details_table(table))
    judgments_path = layout.result("judgments.parquet")
    storage.write_parquet(judgments_path, table)
    paths = {
        "results": results_path,
        "details": details_path,
        "judgments": judgments_path,
        "rejected_rows": layout.rejected_rows,
    }
    if inspect_log:
        from nova_eval_assets.judge.inspect_log import write_judge_inspect_log

        paths["inspect_log"] = write_judge_inspect_log(loaded, table, document)
    warnings = config_general["warnings"]
    report = {
        "summary": clean,
        "diagnostics": nan_to_none(diagnostics),
        "baseline": baseline,
        "challenger": challenger,
        "paths": paths,
        "summary_markdown": summary_markdown(summary, diagnostics)
        + "".join(f"\nWarning: {warning}\n" for warning in warnings),
        "warnings": warnings,
    }
    storage.write_json(layout.latest_report, report)
    return report


def read_latest_report(loaded: LoadedRecipe) -> dict[str, Any]:
    return storage.read_json(EvalLayout.for_recipe(loaded).latest_report)


def read_judgments(loaded: LoadedRecipe) -> pa.Table | None:
    path = EvalLayout.for_recipe(loaded).result("judgments.parquet")
    return storage.read_parquet(path) if storage.exists(path) else None
