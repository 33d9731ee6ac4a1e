"""``nova-eval``: validate a recipe, or run it through the project's Dagster instance."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from nova_eval_assets.layout import project_root

if TYPE_CHECKING:
    from nova_eval_assets.dataset import ValidationOutcome
    from nova_eval_assets.recipe import LoadedRecipe

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


#: `nova-eval validate`'s exit codes (its --help and docs/index.md say the same)
VALIDATE_EXIT_CODES = """\
exit codes:
  0  valid: the recipe can run on this dataset (warnings may be printed)
  1  the dataset has invalid rows (dataset.on_invalid: fail), or no valid row at all
  2  the recipe cannot run: a recipe error, an unreadable dataset file, a check of the
     recipe against its model (reasoning_effort, vision, processor.handler, ...) or a
     --preflight check failed
"""


def cmd_validate(args: argparse.Namespace) -> int:
    """Check a recipe, its dataset and the recipe against its model, and report every
    problem at once: the dataset's first, then the recipe's, one line each
    (`VALIDATE_EXIT_CODES`)."""
    from nova_eval_assets.dataset import DatasetFileError
    from nova_eval_assets.recipe import RecipeError, load_recipe

    try:
        loaded = load_recipe(args.recipe)
    except RecipeError as exc:
        print(exc, file=sys.stderr)
        return 2
    recipe = loaded.recipe
    if recipe.run.data_s3_path is None:  # an llm_judge recipe that joins two gen_qa recipes
        code = _validate_judge_join(loaded)
        if code == 0 and args.preflight and not _preflight_passes(loaded):
            return 2
        return code
    outcome = dataset_problem = None
    benchmark = recipe.evaluation.benchmark
    try:
        outcome = _read_dataset(loaded)
    except (RecipeError, DatasetFileError) as exc:
        dataset_problem = str(exc)
    problems, warnings = _model_checks(
        loaded, None if outcome is None else outcome.rows_with_images
    )
    if not problems and not dataset_problem:
        print(f"{loaded.path}: recipe '{loaded.name}' is valid")
    if benchmark is not None:
        print(benchmark_summary(loaded))
    if outcome is not None:
        print(outcome.report())
    sys.stdout.flush()  # the dataset's lines come first also when both streams are one pipe
    for line in ([dataset_problem] if dataset_problem else []) + problems + warnings:
        print(line, file=sys.stderr)
    sys.stderr.flush()
    if args.preflight and not _preflight_passes(loaded):
        return 2
    if problems or dataset_problem:
        return 2
    if outcome is None or outcome.ok:  # None: a benchmark's hub or package rows
        return 0
    if recipe.dataset.on_invalid == "skip" and not outcome.no_rows:
        print("dataset.on_invalid is 'skip': these rows would be written to rejected_rows.jsonl")
        return 0
    return 1  # under "skip" too when no valid row is left: there is nothing to evaluate


def _read_dataset(loaded: LoadedRecipe) -> ValidationOutcome | None:
    """The dataset read once, streaming (counts and the first problems, no rows held); None
    for a benchmark whose rows come from the hub or a package at run time."""
    from nova_eval_assets.dataset import (
        MAX_LISTED_PROBLEMS,
        SCHEMAS,
        ValidationOutcome,
        validate_batches,
    )
    from nova_eval_assets.stages.benchmark_samples import SampleCounts, sample_batches
    from nova_eval_assets.stages.validation import benchmark_source

    recipe = loaded.recipe
    benchmark = recipe.evaluation.benchmark
    if benchmark is None:
        read = ValidationOutcome(loaded.resolve_data_path(), problems_kept=MAX_LISTED_PROBLEMS)
        batches = validate_batches(
            read,
            SCHEMAS[recipe.evaluation.task],
            metadata_format=recipe.dataset.metadata_format,
            max_line_bytes=recipe.dataset.max_line_bytes,
        )
    elif recipe.dataset.path is None:
        return None
    else:
        source = benchmark_source(loaded)
        read = ValidationOutcome(source.description, problems_kept=MAX_LISTED_PROBLEMS)
        batches = sample_batches(
            read,
            source,
            benchmark,
            recipe.evaluation.subtasks,
            recipe.evaluation.task_options,
            SampleCounts(),
        )
    for _ in batches:
        pass
    return read


def benchmark_summary(loaded: LoadedRecipe) -> str:
    """What a benchmark recipe runs: the task, its subtasks, where its rows come from, and
    where our behaviour is our own or differs from Nova's."""
    from nova_eval_assets.tasks.inspect_task import InspectBenchmark

    recipe = loaded.recipe
    task = recipe.evaluation.benchmark
    assert task is not None
    subtasks = recipe.evaluation.subtasks or list(task.subtasks)
    lines = [f"task {task.name} ({task.description}); results under {task.result_key}"]
    if subtasks:
        lines.append(f"subtasks ({len(subtasks)}): {', '.join(subtasks)}")
    if recipe.dataset.path is not None:
        lines.append(f"rows: dataset.path {recipe.dataset.path} (fields: {', '.join(task.fields)})")
    elif task.hub is not None:
        revision = recipe.dataset.revision or task.hub.revision
        lines.append(
            f"rows: hf://datasets/{task.hub.repo}@{revision}, read at run time "
            "(`nova-eval validate --preflight` checks it can be)"
        )
    elif isinstance(task, InspectBenchmark):
        lines += task.described()
    else:
        lines.append(f"rows: the {task.name} problems the {task.package} package ships")
    if task.redistribution:
        lines.append(f"never shipped: {task.redistribution}")
    mode = (
        "Nova's published behaviour (evaluation.compat: nova)"
        if recipe.evaluation.compat
        else ("our default")
    )
    lines += [f"note ({mode}): {note}" for note in task.notes]
    return "\n".join(lines)


def _model_checks(loaded, rows_with_images) -> tuple[list[str], list[str]]:
    """The recipe checked against its model and engine without loading weights: (problems
    that stop a run, warnings), each ``file:line: message`` at the recipe key concerned. A
    model that does not resolve is one problem, however many checks needed it.
    `rows_with_images`: the dataset's valid rows with images (None: it could not be read)."""
    from nova_eval_assets.byom.runner import ProcessorConfigError, load_handler
    from nova_eval_assets.engines.constraints_budget import recipe_budget_warnings
    from nova_eval_assets.engines.models import ModelResolutionError
    from nova_eval_assets.engines.reasoning import (
        ReasoningNotSupportedError,
        check_recipe_reasoning,
    )

    recipe = loaded.recipe
    where = _recipe_lines(loaded)
    problems: list[str] = []
    warnings: list[str] = []

    def problem(key: tuple[str, str], message: object) -> None:
        line = f"{where(key)}: {message}"
        if line not in problems:
            problems.append(line)

    model_key = ("run", "model_name_or_path")
    try:
        check_recipe_reasoning(recipe)  # reads the model's chat template only
    except ReasoningNotSupportedError as exc:
        problem(("inference", "reasoning_effort"), exc)
    except ModelResolutionError as exc:
        problem(model_key, exc)
    if rows_with_images is not None:
        try:
            vision = vision_problem(recipe, rows_with_images)  # reads the model's config only
        except ModelResolutionError as exc:
            problem(model_key, exc)
        else:
            if vision is not None:
                engine_key = ("inference", "engine")
                problem(engine_key if recipe.inference.engine == "vllm" else model_key, vision)
    if recipe.processor is not None and recipe.processor.handler:  # BYOM: it must load
        try:
            load_handler(recipe.processor.handler, loaded.path.parent)
        except ProcessorConfigError as exc:
            problem(("processor", "handler"), exc)
    budget_key = ("inference", "response_format")
    try:
        warnings += [f"{where(budget_key)}: warning: {w}" for w in recipe_budget_warnings(recipe)]
    except ModelResolutionError as exc:
        problem(model_key, exc)
    except OSError as exc:  # a model folder whose tokenizer files do not load
        warnings.append(
            f"{where(budget_key)}: warning: inference.response_format: the answer's length "
            f"against inference.max_new_tokens was not checked: the tokenizer did not load ({exc})"
        )
    return problems, warnings


def _recipe_lines(loaded):
    """``file:line`` of a recipe key (``file`` where the key is not written)."""
    import yaml

    from nova_eval_assets.recipe import _line_of

    root = yaml.compose(loaded.path.read_text(encoding="utf-8"))

    def where(key: tuple[str, ...]) -> str:
        line = _line_of(root, key)
        return f"{loaded.path}:{line}" if line else str(loaded.path)

    return where


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


def vision_problem(recipe, rows: int) -> str | None:
    """Why the recipe's engine cannot show the images of the dataset's `rows` rows with
    images to its model (None: it can, or no row has images). hf: from the model's config;
    vllm: not supported yet; the served engines' servers answer for their models at the
    first request."""
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
    from nova_eval_assets.run_lock import RunLockHeld

    started = time.monotonic()
    with SignalsReceived() as signals:
        try:
            if loaded.recipe.evaluation.is_judge:  # llm_judge, mm_llm_judge
                return _run_judge(loaded, args, started)
            outcome = run_evaluation(
                loaded,
                show_progress=not args.quiet,
                wait_for_lock=args.wait,
                on_wait=_waiting_for(loaded.name),
                max_parallel=args.max_parallel,
            )
        except RunLockHeld as exc:
            print(f"{loaded.name}: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # SIGINT, or SIGTERM (SignalsReceived)
            received = signals.last() or signal.SIGINT
            print(
                f"{loaded.name}: interrupted ({signal.Signals(received).name}); rerun to resume: "
                f"nova-eval run {args.recipe} (finished stages and inference blocks are kept)",
                file=sys.stderr,
            )
            return 128 + received
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


class SignalsReceived:
    """While a run executes: SIGTERM raises KeyboardInterrupt as Ctrl-C does (the run
    stops through its cleanup: the run folder's lock is released, finished work is kept),
    and :meth:`last` says which of the two came. Dagster's own handler, installed while a
    run executes, takes both alike and is not told which, so the signal numbers are read
    from Python's signal wakeup fd, where the interpreter writes each one it receives."""

    def __enter__(self) -> SignalsReceived:
        self._active = threading.current_thread() is threading.main_thread()
        if not self._active:  # signal handlers belong to the main thread
            return self
        self._reader, self._writer = socket.socketpair()
        for end in (self._reader, self._writer):
            end.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
        self._received: list[int] = []
        return self

    def last(self) -> int | None:
        """The last SIGINT or SIGTERM received so far (None: neither)."""
        if not self._active:
            return None
        with contextlib.suppress(BlockingIOError):  # nothing received
            self._received += self._reader.recv(256)
        wanted = [n for n in self._received if n in (signal.SIGINT, signal.SIGTERM)]
        return wanted[-1] if wanted else None

    def __exit__(self, *exc_info) -> None:
        if not self._active:
            return
        signal.set_wakeup_fd(self._previous_fd)
        signal.signal(signal.SIGTERM, self._previous_term)
        self._reader.close()
        self._writer.close()


def _raise_interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def _waiting_for(name: str):
    """``--wait``: say once whom the run waits for."""

    def on_wait(holder) -> None:
        who = holder.describe() if holder else "a run that is still writing the lock"
        print(f"{name}: waiting for the run that holds the run folder: {who}", file=sys.stderr)

    return on_wait


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
            wait_for_lock=args.wait,
            on_wait=_waiting_for(loaded.name),
            max_parallel=args.max_parallel,
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


def _override_value(name: str):
    """The argparse type of the `run` flag that overrides a recipe key: an integer in the
    key's range (a bad one exits with status 2 and a message naming the flag)."""
    from nova_eval_assets.recipe import override_problem

    def parse(text: str) -> int:
        problem = override_problem(name, _int_or_text(text))
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return int(text)

    return parse


def _positive_int(text: str) -> int:
    value = _int_or_text(text)
    if not isinstance(value, int) or value < 1:
        raise argparse.ArgumentTypeError(f"{text[:100]!r} is not a positive integer")
    return value


def _int_or_text(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:  # not digits, or past Python's 4300-digit limit
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nova-eval", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser(
        "validate",
        help="check a recipe and its dataset; run nothing",
        description="Check a recipe, its dataset, and the recipe against its model (no weights "
        "are loaded); every problem is reported at once, one line each: the dataset's first.",
        epilog=VALIDATE_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    run.add_argument("--replicas", type=_override_value("replicas"), help="override run.replicas")
    run.add_argument(
        "--limit", type=_override_value("limit"), help="evaluate only the first N dataset rows"
    )
    run.add_argument(
        "--max-new-tokens",
        type=_override_value("max_new_tokens"),
        help="override inference.max_new_tokens (a quick try)",
    )
    run.add_argument(
        "--max-parallel",
        type=_positive_int,
        metavar="N",
        help="run at most N replica partitions at once, each in its own process "
        "(default: all of them; 1: one after the other in this process)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument(
        "--wait",
        action="store_true",
        help="when another run holds the recipe's run folder, wait for it to end "
        "(default: stop at once, exit 2)",
    )

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
        description="Tables: eval_examples, eval_metrics, judge_judgments, judge_criteria, "
        "judge_summary, each with the partition columns eval_name and run_date.",
    )
    query.add_argument("sql", help='for instance "SELECT * FROM eval_metrics LIMIT 10"')
    query.add_argument("--tables", help="tables root (default: $NOVA_EVAL_TABLES_ROOT)")
    query.add_argument("--output", "-o", help="write the result to FILE.csv or FILE.parquet")
    query.add_argument(
        "--max-rows", type=_positive_int, default=40, help="rows to print (default 40)"
    )
    query.set_defaults(func=cmd_query)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
