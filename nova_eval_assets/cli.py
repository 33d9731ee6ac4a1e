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
    from nova_eval_assets.dataset import SCHEMAS, DatasetFileError, validate_dataset
    from nova_eval_assets.recipe import RecipeError, load_recipe

    try:
        loaded = load_recipe(args.recipe)
        recipe = loaded.recipe
        outcome = validate_dataset(
            loaded.resolve_data_path(),
            SCHEMAS[recipe.evaluation.task],
            metadata_format=recipe.dataset.metadata_format,
        )
    except (RecipeError, DatasetFileError) as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{loaded.path}: recipe '{loaded.name}' is valid")
    print(outcome.report())
    if outcome.ok:
        return 0
    if recipe.dataset.on_invalid == "skip":
        print("dataset.on_invalid is 'skip': these rows would be written to rejected_rows.jsonl")
        return 0
    return 1


def cmd_run(args: argparse.Namespace) -> int:
    from nova_eval_assets.recipe import RecipeError, load_recipe

    try:
        loaded = load_recipe(args.recipe).with_overrides(replicas=args.replicas, limit=args.limit)
    except RecipeError as exc:
        print(exc, file=sys.stderr)
        return 2
    ensure_dagster_home()
    from nova_eval_assets.assets.materialize import run_evaluation

    started = time.monotonic()
    outcome = run_evaluation(loaded, show_progress=not args.quiet)
    if outcome.report is None:
        print(outcome.message, file=sys.stderr)
        return 1
    report = outcome.report
    print()
    print(f"Evaluation '{loaded.name}' of {loaded.recipe.run.model_name_or_path}")
    print(report["summary_markdown"])
    print("Results:")
    for label, location in report["paths"].items():
        print(f"  {label:<17} {location}")
    print(f"Dagster runs: {', '.join(outcome.run_ids)} (see them with `make ui`)")
    print(f"Done in {time.monotonic() - started:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nova-eval", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser("validate", help="check a recipe and its dataset; run nothing")
    validate.add_argument("recipe")
    validate.set_defaults(func=cmd_validate)

    run = sub.add_parser("run", help="materialize every replica of a recipe, then its report")
    run.add_argument("recipe")
    run.add_argument("--replicas", type=int, help="override run.replicas")
    run.add_argument("--limit", type=int, help="evaluate only the first N dataset rows")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
