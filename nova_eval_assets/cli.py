"""``nova-eval``: validate a recipe, or run it through the project's Dagster instance."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from nova_eval_assets.layout import project_root

DAGSTER_YAML = """\
# The project's Dagster instance: runs started from the CLI appear in `make ui`.
telemetry:
  enabled: false
"""


def ensure_dagster_home() -> Path:
    """$DAGSTER_HOME, or ``.dagster_home`` in the project (created, git-ignored)."""
    home = Path(os.environ.get("DAGSTER_HOME") or project_root(Path.cwd()) / ".dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home.resolve())
    return home


def cmd_validate(args: argparse.Namespace) -> int:
    from nova_eval_assets.byom.runner import ProcessorConfigError, load_handler
    from nova_eval_assets.dataset import SCHEMAS, DatasetFileError, validate_dataset
    from nova_eval_assets.engines.models import ModelResolutionError
    from nova_eval_assets.engines.reasoning import (
        ReasoningNotSupportedError,
        check_recipe_reasoning,
    )
    from nova_eval_assets.recipe import RecipeError, load_recipe

    try:
        loaded = load_recipe(args.recipe)
        recipe = loaded.recipe
        if recipe.run.data_s3_path is None:  # an llm_judge recipe that joins two gen_qa recipes
            code = _validate_judge_join(loaded)
            if code == 0 and args.preflight and not _preflight_passes(loaded):
                return 2
            return code
        outcome = validate_dataset(
            loaded.resolve_data_path(),
            SCHEMAS[recipe.evaluation.task],
            metadata_format=recipe.dataset.metadata_format,
            max_line_bytes=recipe.dataset.max_line_bytes,
        )
        if recipe.processor is not None and recipe.processor.handler:  # BYOM: it must load
            load_handler(recipe.processor.handler, loaded.path.parent)
        check_recipe_reasoning(recipe)  # reads the model's chat template only
        problem = vision_problem(recipe, outcome.table)  # reads the model's config only
        if problem is not None:
            print(f"{loaded.path}: {problem}", file=sys.stderr)
            return 2
    except (
        RecipeError,
        DatasetFileError,
        ProcessorConfigError,
        ReasoningNotSupportedError,
        ModelResolutionError,
    ) as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{loaded.path}: recipe '{loaded.name}' is valid")
    print(outcome.report())
    if args.preflight and not _preflight_passes(loaded):
        return 2
    if outcome.ok:
        return 0
    if recipe.dataset.on_invalid == "skip" and not outcome.no_rows:
        print("dataset.on_invalid is 'skip': these rows would be written to rejected_rows.jsonl")
        return 0
    return 1  # under "skip" too when no valid row is left: there is nothing to evaluate


def _preflight_passes(loaded, announce_local: bool = True) -> bool:
    """Check every remote part the recipe names (preflight.py); print one line each."""
    from nova_eval_assets.preflight import failures, remote_parts, run_preflight

    if not remote_parts(loaded):
        if announce_local:
            print("preflight: the recipe uses no remote part (local files and models only)")
        return True
    results = run_preflight(loaded)
    for result in results:
        stream = sys.stdout if result.ok else sys.stderr
        print(f"preflight: {'ok' if result.ok else 'FAILED'}  {result.message}", file=stream)
    failed = failures(results)
    if failed:
        print(
            f"preflight: {len(failed)} of {len(results)} checks failed; nothing was run",
            file=sys.stderr,
        )
    return not failed


def vision_problem(recipe, table) -> str | None:
    """Why the recipe's engine cannot show the dataset's images to its model (None: it can,
    or no row has images). hf: from the model's config; vllm: not supported yet; the
    served engines' servers answer for their models at the first request."""
    if "images" not in table.column_names:
        return None
    rows = len(table) - table["images"].null_count
    rows -= sum(1 for uris in table["images"].to_pylist() if uris is not None and not uris)
    if rows < 1:
        return None
    engine = recipe.inference.engine
    if engine == "vllm":
        return (
            f"inference.engine 'vllm' does not take images yet; {rows} rows have images "
            "(serve the model with `vllm serve` and use inference.engine 'openai')"
        )
    if engine == "hf":
        from nova_eval_assets.engines.vision import model_vision_problem

        return model_vision_problem(recipe.run.model_name_or_path, rows)
    return None


def cmd_run(args: argparse.Namespace) -> int:
    from nova_eval_assets.engines.models import ModelResolutionError
    from nova_eval_assets.engines.reasoning import (
        ReasoningNotSupportedError,
        check_recipe_reasoning,
    )
    from nova_eval_assets.recipe import RecipeError, load_recipe

    try:
        loaded = load_recipe(args.recipe).with_overrides(
            replicas=args.replicas, limit=args.limit, max_new_tokens=args.max_new_tokens
        )
        check_recipe_reasoning(loaded.recipe)  # before Dagster starts: a message, no traceback
    except (RecipeError, ReasoningNotSupportedError, ModelResolutionError) as exc:
        print(exc, file=sys.stderr)
        return 2
    # cloud access first: a missing credential is found in a second, not after inference
    if not _preflight_passes(loaded, announce_local=False):
        return 2
    ensure_dagster_home()
    from nova_eval_assets.assets.materialize import run_evaluation

    started = time.monotonic()
    if loaded.recipe.evaluation.is_judge:  # llm_judge, mm_llm_judge
        return _run_judge(loaded, args, started)
    outcome = run_evaluation(loaded, show_progress=not args.quiet)
    if outcome.report is None:
        print(outcome.message, file=sys.stderr)
        return 1
    report = outcome.report
    print()
    print(f"Evaluation '{loaded.name}' of {loaded.recipe.run.model_name_or_path}")
    print(report["summary_markdown"])
    _print_comparisons(outcome.comparisons)
    _print_outputs(report["paths"], outcome.run_ids, started)
    return _tracking_status(outcome)


def _print_comparisons(comparisons) -> None:
    """The paired comparisons (analysis.compare_with) a run materialized."""
    from nova_eval_assets.report.analysis_markdown import comparison_lines

    for comparison in comparisons:
        print()
        print(comparison_lines(comparison.summary))
        print(f"Comparison report: {comparison.report}")


def _print_outputs(paths: dict[str, str], run_ids: list[str], started: float) -> None:
    print("Results:")
    for label, location in paths.items():
        print(f"  {label:<17} {location}")
    print(f"Dagster runs: {', '.join(run_ids)} (see them with `make ui`)")
    print(f"Done in {time.monotonic() - started:.1f} s")


def _tracking_status(outcome) -> int:
    """The MLflow run's URL; 1 when the MLflow step failed (the results are written)."""
    tracked = outcome.report.get("mlflow")
    if tracked:
        where = tracked["url"] or f"{tracked['run_id']} (experiment {tracked['experiment']})"
        print(f"MLflow run: {where}")
    if outcome.tracking_error:
        print(outcome.tracking_error, file=sys.stderr)
        return 1
    return 0


def _validate_judge_join(loaded) -> int:
    from nova_eval_assets.judge.pipeline import upstream_recipes
    from nova_eval_assets.recipe import RecipeError, discover_recipes

    try:
        upstream = upstream_recipes(loaded, discover_recipes(loaded.path.parent))
    except RecipeError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{loaded.path}: recipe '{loaded.name}' is valid")
    for role, other in upstream.items():
        print(f"  {role} (response_{'A' if role == 'baseline' else 'B'}): {other.path}")
    print("Its dataset is the join of their outputs; it is validated when the judge runs.")
    return 0


def _run_judge(loaded, args: argparse.Namespace, started: float) -> int:
    """`run` for a judge recipe (llm_judge, mm_llm_judge): the gen_qa recipes it joins, the
    judge, the leaderboard."""
    from nova_eval_assets.assets.judge import run_judge_evaluation
    from nova_eval_assets.recipe import RecipeError, discover_recipes

    try:
        others = [r for r in discover_recipes(loaded.path.parent) if r.name != loaded.name]
        outcome = run_judge_evaluation(
            loaded,
            [*others, loaded],
            show_progress=not args.quiet,
            run_upstream=not args.no_upstream,
        )
    except RecipeError as exc:
        print(exc, file=sys.stderr)
        return 2
    if outcome.report is None:
        print(outcome.message, file=sys.stderr)
        return 1
    from nova_eval_assets.judge.pipeline import judge_model

    report = outcome.report
    _print_comparisons(outcome.comparisons)  # the paired comparison leads, then the judge
    print()
    print(
        f"Judge '{loaded.name}': {report['baseline']} (A) vs {report['challenger']} (B), "
        f"judged by {judge_model(loaded)}"
    )
    print(report["summary_markdown"])
    if "leaderboard" in report:
        print("Leaderboard (Bradley-Terry, Elo scale):")
        print(report["leaderboard"]["markdown"])
    _print_outputs(report["paths"], outcome.run_ids, started)
    return _tracking_status(outcome)


def cmd_query(args: argparse.Namespace) -> int:
    import duckdb

    from nova_eval_assets.tables import tables_root
    from nova_eval_assets.tables.duck import connect, write_result

    root = args.tables or tables_root()
    try:
        con = connect(root)
        relation = con.sql(args.sql)
        if relation is None:  # a statement without a result
            return 0
        if args.output:
            write_result(relation, args.output)
            print(f"wrote {args.output}")
        else:
            relation.show(max_rows=args.max_rows, max_width=200)
    except (duckdb.Error, ValueError, OSError) as exc:
        print(f"query failed: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nova-eval", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser("validate", help="check a recipe and its dataset; run nothing")
    validate.add_argument("recipe")
    validate.add_argument(
        "--preflight",
        action="store_true",
        help="also check every remote part the recipe names (AWS credentials, S3, Lambda, "
        "Bedrock, MLflow, endpoint), without side effects",
    )
    validate.set_defaults(func=cmd_validate)

    run = sub.add_parser("run", help="materialize every replica of a recipe, then its report")
    run.add_argument("recipe")
    run.add_argument("--replicas", type=int, help="override run.replicas")
    run.add_argument("--limit", type=int, help="evaluate only the first N dataset rows")
    run.add_argument(
        "--max-new-tokens", type=int, help="override inference.max_new_tokens (a quick try)"
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    run.add_argument(
        "--no-upstream",
        action="store_true",
        help="judge recipes: judge the joined gen_qa recipes' existing outputs, "
        "do not run them first",
    )
    run.set_defaults(func=cmd_run)

    query = sub.add_parser(
        "query",
        help="run SQL on DuckDB over the evaluation tables (Athena's table names)",
        description="Tables: eval_examples, eval_metrics, judge_judgments, judge_summary, each "
        "with the partition columns eval_name and run_date.",
    )
    query.add_argument("sql", help='for instance "SELECT * FROM eval_metrics LIMIT 10"')
    query.add_argument("--tables", help="tables root (default: $NOVA_EVAL_TABLES_ROOT)")
    query.add_argument("--output", "-o", help="write the result to FILE.csv or FILE.parquet")
    query.add_argument("--max-rows", type=int, default=40, help="rows to print (default 40)")
    query.set_defaults(func=cmd_query)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
