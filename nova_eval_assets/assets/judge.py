"""The asset graph of an ``llm_judge`` (or ``mm_llm_judge``) recipe, and the project-wide
judge leaderboard.

    [<baseline>/aggregated_report, <challenger>/aggregated_report]   (joining recipes only)
        -> <judge>/validated_dataset (+ blocking check dataset_is_valid)
        -> <judge>/judge_results (+ check judge_verdicts_parse)
    every <judge>/judge_results -> judge_leaderboard

Thin wiring around :mod:`nova_eval_assets.judge.pipeline`. Keys are prefixed and grouped
by the recipe's ``run.name``; the leaderboard is in its own group.
"""

import math
import time
from collections.abc import Callable
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext

from nova_eval_assets import lineage, progress, storage
from nova_eval_assets.assets.validation import (
    build_preflight_checks,
    build_validation_check,
    preflight_stop,
    stop_message,
    validation_metadata,
)
from nova_eval_assets.judge import pipeline
from nova_eval_assets.judge.prompts import render
from nova_eval_assets.judge.rubric import render_rubric, rubric_pattern
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import LoadedRecipe
from nova_eval_assets.run_lock import LockOwner

PARSE_CHECK = "judge_verdicts_parse"
#: judge_verdicts_parse warns when more than this share of judgments has no verdict.
MAX_INFERENCE_ERROR_SHARE = 0.2
LEADERBOARD_KEY = dg.AssetKey(["judge_leaderboard"])


#: Changes whenever the judge prompt text changes (it is part of judge_results' version).
PROMPT_VERSION = lineage.digest(
    render("p", "a", "b", "s"), render("p", "a", "b", order="verdict_first")
)
#: The same for the rubric judge: its prompt and the YAML block it parses.
RUBRIC_PROMPT_VERSION = lineage.digest(render_rubric("p", "a", "b", "s"), rubric_pattern())


def _scalar_metadata(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float) and math.isfinite(value):
            out[key] = value
    return out


def _preview(path: str, rows: int = 5) -> str:
    table = storage.read_parquet(
        path,
        columns=["row_index", "forward_preference", "backward_preference", "outcome", "prompt"],
    ).slice(0, rows)
    lines = ["| row | forward | backward | outcome | prompt |", "|---:|---|---|---|---|"]
    for r in table.to_pylist():
        prompt = " ".join(r["prompt"].split())[:60].replace("|", "/")
        lines.append(
            f"| {r['row_index']} | {r['forward_preference']} | {r['backward_preference']} | "
            f"{r['outcome']} | {prompt} |"
        )
    return "\n".join(lines)


def upstream_keys(loaded: LoadedRecipe, recipes: list[LoadedRecipe]) -> list[dg.AssetKey]:
    return [
        dg.AssetKey([other.key, "aggregated_report"])
        for other in pipeline.upstream_recipes(loaded, recipes).values()
    ]


def build_judge_assets(loaded: LoadedRecipe, recipes: list[LoadedRecipe]) -> list[Any]:
    """validated_dataset, its blocking check, judge_results and its parse check."""
    recipe = loaded.recipe
    name = loaded.key  # Dagster-safe run.name
    config = pipeline.judge_config(loaded)
    upstream = pipeline.upstream_recipes(loaded, recipes)  # validates the names early
    deps = upstream_keys(loaded, recipes)
    baseline, challenger = pipeline.labels(loaded)
    tags = {"recipe": loaded.name, "task": recipe.evaluation.task}  # llm_judge, mm_llm_judge, ...

    def key(stage: str) -> dg.AssetKey:
        return dg.AssetKey([name, stage])

    source = (
        f"the outputs of {config.baseline_recipe} (A) and {config.challenger_recipe} (B), "
        "joined by row"
        if upstream
        else str(recipe.run.data_s3_path)
    )

    @dg.asset(
        key=key("validated_dataset"),
        deps=deps,
        group_name=name,
        code_version=lineage.digest(
            recipe.dataset, recipe.run.data_s3_path, recipe.run.limit, sorted(upstream)
        ),
        description=f"Judge rows (prompt, response_A, response_B) from {source}.",
        kinds={"python", "parquet"},
        tags=tags,
    )
    def validated_dataset(context: AssetExecutionContext) -> dg.MaterializeResult:
        outcome, summary = pipeline.prepare_dataset(loaded, recipes)
        if outcome.problems:
            context.log.warning(outcome.report())
        metadata = validation_metadata(summary)
        if "join" in summary:
            metadata["join"] = dg.MetadataValue.json(summary["join"])
        return dg.MaterializeResult(metadata=metadata)

    dataset_is_valid = build_validation_check(
        loaded,
        validated_dataset,
        "Every judge row is valid, or rejected rows are allowed by the recipe.",
    )

    @dg.asset(
        key=key("judge_results"),
        deps=[validated_dataset],
        group_name=name,
        code_version=lineage.digest(
            pipeline.judge_model(loaded),
            recipe.inference,
            config,
            RUBRIC_PROMPT_VERSION if pipeline.is_rubric(loaded) else PROMPT_VERSION,
        ),
        description=(
            f"Pairwise judgments of {baseline} (A) against {challenger} (B), forward and "
            "backward, with Nova's summary, Bradley-Terry winrate and position-bias "
            "diagnostics."
        ),
        kinds={"pytorch" if config.backend == "hf" else "python", "parquet"},
        tags=tags,
    )
    def judge_results(context: AssetExecutionContext) -> dg.MaterializeResult:
        validation = storage.read_json(EvalLayout.for_recipe(loaded).validation_report)
        if not validation["ok"] and validation["policy"] == "fail":
            raise RuntimeError(f"the judge dataset is invalid:\n{validation['report']}")
        last = [0.0]

        def on_batch(done: int, total: int) -> None:
            progress.notify("judge", done, total)
            now = time.monotonic()
            if now - last[0] > 5 or done == total:
                last[0] = now
                context.log.info(f"judge: {done}/{total} judgments")

        report = pipeline.run_judge(loaded, on_batch=on_batch)
        context.log.info("\n" + report["summary_markdown"])
        diagnostics = report["diagnostics"]
        return dg.MaterializeResult(
            metadata={
                "summary": dg.MetadataValue.md(report["summary_markdown"]),
                **_scalar_metadata(report["summary"]),
                **{f"diag_{k}": v for k, v in _scalar_metadata(diagnostics).items()},
                "outcomes": dg.MetadataValue.json(diagnostics.get("outcomes", {})),
                "by_metadata": dg.MetadataValue.json(diagnostics.get("by_metadata", {})),
                "baseline": baseline,
                "challenger": challenger,
                "judge_backend": config.backend,
                "judge_model": pipeline.judge_model(loaded),
                "first_judgments": dg.MetadataValue.md(_preview(report["paths"]["judgments"])),
                "judgments": dg.MetadataValue.path(report["paths"]["judgments"]),
                "results_json": dg.MetadataValue.path(report["paths"]["results"]),
            }
        )

    @dg.asset_check(
        asset=judge_results,
        name=PARSE_CHECK,
        description=(
            "At most 20% of judgments are inference_error (no parsable verdict); more means "
            "the judge does not follow the verdict format (try judge.order: verdict_first "
            "or a larger judge)."
        ),
    )
    def judge_verdicts_parse() -> dg.AssetCheckResult:
        report = pipeline.read_latest_report(loaded)
        errors = report["summary"]["inference_error"] or 0.0
        judgments = report["diagnostics"]["judgments"] or 0
        share = errors / judgments if judgments else 0.0
        return dg.AssetCheckResult(
            passed=share <= MAX_INFERENCE_ERROR_SHARE,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"inference_error": errors, "judgments": judgments, "share": share},
        )

    return [
        validated_dataset,
        dataset_is_valid,
        *build_preflight_checks(loaded, validated_dataset),
        judge_results,
        judge_verdicts_parse,
    ]


class LeaderboardConfig(dg.Config):
    """Launch-time options of judge_leaderboard (all optional)."""

    anchor: str = ""  # empty: the model that is the baseline of the most judgments
    bootstrap_rounds: int = 1000
    seed: int = 1234


def build_leaderboard_assets(recipes: list[LoadedRecipe]) -> list[Any]:
    """``judge_leaderboard`` over every judge recipe's judge_results ([] without any)."""
    judges = [r for r in recipes if pipeline.is_judge(r)]
    if not judges:
        return []
    deps = [dg.AssetKey([r.key, "judge_results"]) for r in judges]

    @dg.asset(
        key=LEADERBOARD_KEY,
        deps=deps,
        group_name="judge_leaderboard",
        description=(
            "Bradley-Terry ratings (Elo scale, 1000 = the anchor) of every model that any "
            "judge result compares, with bootstrap intervals and ranks."
        ),
        kinds={"python", "parquet"},
        tags={"task": "llm_judge"},
    )
    def judge_leaderboard(
        context: AssetExecutionContext, config: LeaderboardConfig
    ) -> dg.MaterializeResult:
        board = pipeline.build_leaderboard(
            recipes, anchor=config.anchor or None, rounds=config.bootstrap_rounds, seed=config.seed
        )
        if board["results_not_run"]:
            context.log.warning(
                "judge recipes without results (left out): " + ", ".join(board["results_not_run"])
            )
        context.log.info("\n" + board["markdown"])
        return dg.MaterializeResult(
            metadata={
                "leaderboard": dg.MetadataValue.md(board["markdown"]),
                "anchor": board["anchor"],
                "models": len(board["models"]),
                "judge_results": len(board["results"]),
                "results_not_run": ", ".join(board["results_not_run"]) or "none",
                "path": dg.MetadataValue.path(board["paths"]["leaderboard"]),
            }
        )

    return [judge_leaderboard]


# ---------------------------------------------------------------- the CLI's `run`


def run_judge_evaluation(
    loaded: LoadedRecipe,
    recipes: list[LoadedRecipe],
    instance: dg.DagsterInstance | None = None,
    show_progress: bool = True,
    quiet_logs: bool = True,
    run_upstream: bool = True,
    wait_for_lock: bool = False,
    on_wait: Callable[[LockOwner | None], None] | None = None,
    max_parallel: int | None = 1,
):
    """Materialize a judge recipe as a user would from the UI: first the gen_qa recipes it
    joins (each through :func:`materialize.run_evaluation`, unless ``run_upstream`` is
    False; their replicas up to ``max_parallel`` processes at once), then its dataset and
    judge results, then the leaderboard. Each recipe's run folder is locked while it runs
    (as in :func:`materialize.run_evaluation`)."""
    from nova_eval_assets.assets.in_process import exclusive_run

    instance = instance or dg.DagsterInstance.get()
    root = EvalLayout.for_recipe(loaded).root
    with exclusive_run(instance, root, loaded.name, wait_for_lock, on_wait):
        return _judge_stages(
            loaded,
            recipes,
            instance,
            show_progress,
            quiet_logs,
            run_upstream,
            wait_for_lock,
            on_wait,
            max_parallel,
        )


def _judge_stages(
    loaded: LoadedRecipe,
    recipes: list[LoadedRecipe],
    instance: dg.DagsterInstance,
    show_progress: bool,
    quiet_logs: bool,
    run_upstream: bool,
    wait_for_lock: bool,
    on_wait: Callable[[LockOwner | None], None] | None,
    max_parallel: int | None = 1,
):
    from tqdm import tqdm

    from nova_eval_assets.assets.evaluation import build_evaluation_assets
    from nova_eval_assets.assets.in_process import InProcessRuns, failure_message
    from nova_eval_assets.assets.materialize import (
        EvaluationRun,
        run_evaluation,
        track,
        write_tables,
    )

    runs = InProcessRuns(instance, loaded.name, quiet_logs)
    outcome = EvaluationRun(report=None, run_ids=runs.run_ids)
    upstream = pipeline.upstream_recipes(loaded, recipes)
    for role, other in upstream.items():
        if not run_upstream:
            continue
        if show_progress:
            print(f"{role}: {other.name}")
        done = run_evaluation(
            other,
            instance=instance,
            show_progress=show_progress,
            quiet_logs=quiet_logs,
            wait_for_lock=wait_for_lock,
            on_wait=on_wait,
            max_parallel=max_parallel,
        )
        outcome.run_ids += done.run_ids
        outcome.comparisons += done.comparisons
        if done.report is None:
            outcome.message = f"{role} recipe {other.name} failed:\n{done.message}"
            return outcome
        if done.tracking_error:  # its results are written: judge them, report it at the end
            outcome.add_tracking_error(done.tracking_error)

    definitions = build_judge_assets(loaded, recipes) + build_leaderboard_assets(recipes)
    for other in upstream.values():  # for lineage in the run's record
        definitions += build_evaluation_assets(other)

    name = loaded.key  # Dagster-safe run.name
    prepared = runs.materialize(
        definitions, [dg.AssetKey([name, "validated_dataset"])], quiet_level="CRITICAL"
    )
    validation_path = EvalLayout.for_recipe(loaded).validation_report
    if not prepared.success:
        # the dataset stopped the run (its report says why), or the join itself failed
        validation = storage.read_json(validation_path) if storage.exists(validation_path) else None
        stopped = preflight_stop(prepared) or (
            stop_message(validation, "judge dataset") if validation else None
        )
        outcome.message = stopped or failure_message(prepared)
        return outcome

    total = 2 * storage.read_json(validation_path)["valid_rows"]
    bar = tqdm(total=total, desc="judging", unit="judgment", disable=not show_progress)
    seen = [0]

    def on_progress(stage: str, done: int, _total: int) -> None:
        if stage == "judge":
            bar.update(done - seen[0])
            seen[0] = done

    with bar, progress.listening(on_progress):
        result = runs.materialize(definitions, [dg.AssetKey([name, "judge_results"])])
    if not result.success:
        outcome.message = failure_message(result)
        return outcome
    tables_root = write_tables(loaded, runs, outcome)  # as for gen_qa runs
    if tables_root is None:
        return outcome
    outcome.report = pipeline.read_latest_report(loaded)
    outcome.report["paths"]["tables"] = tables_root
    board = runs.materialize(definitions, [LEADERBOARD_KEY])
    if board.success:
        outcome.report["leaderboard"] = pipeline.read_leaderboard(recipes)
    track(loaded, runs, outcome)  # the judge's own MLflow run (assets/tracking.py)
    return outcome
