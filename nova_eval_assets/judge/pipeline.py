"""The stages of an ``llm_judge`` (or ``mm_llm_judge``) evaluation as plain functions (no
Dagster). A ``mm_llm_judge`` recipe is the same judge over a dataset whose rows have
``images`` (data URIs), which the judge sees with the prompt in both passes; it writes the
same files, columns and Nova keys (``custom|llm_judge_judge|0``, the same summary).

- :func:`prepare_dataset`: the judge dataset (``prompt``, ``response_A``, ``response_B``,
  optional ``system`` and ``metadata``), validated like any dataset
  (:func:`stages.run_validation`). A Nova judge recipe reads it from ``data_s3_path``; a
  judge recipe that names ``judge.baseline_recipe`` and ``judge.challenger_recipe`` builds
  it first (:func:`join_upstream`) from the two gen_qa recipes' ``examples.parquet``.
- :func:`run_judge`: both passes for every row, then the per-judgment Parquet, the
  Nova-style results JSON and details, and the summary and diagnostics.
- :func:`build_leaderboard`: Bradley-Terry over every judge result of a set of recipes.

Files, under ``<output root>/<run.name>/``::

    stages/joined_dataset.jsonl     the joined judge dataset (joining recipes only)
    stages/join_report.json         what the join matched, dropped and flagged
    stages/validated_dataset.parquet, validation_report.json    as for gen_qa
    stages/latest_report.json       what the last run_judge returned
    eval_results/judgments.parquet  one row per prompt: both passes, raw outputs, rationales,
                                    verdicts, preferences, soft preference, outcome, metadata
    eval_results/results_<ts>.json  {"config_general", "results": {"custom|llm_judge_judge|0":
                                    summary, "all": summary}, "diagnostics"}
    eval_results/details/<judge model>/<ts>/details_custom|llm_judge_judge|0_<ts>.parquet
    eval_results/rejected_rows.jsonl

and the leaderboard under ``<output root>/judge_leaderboard/``.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa

from nova_eval_assets import stages, storage
from nova_eval_assets.dataset import ValidationOutcome
from nova_eval_assets.engines.base import Engine, SamplingSettings
from nova_eval_assets.judge import bradley_terry as bt
from nova_eval_assets.judge.backends import api_key_from_env, create_judge_engine
from nova_eval_assets.judge.pairwise import JUDGMENTS_SCHEMA, JudgeItem, judge_items
from nova_eval_assets.layout import EvalLayout, output_root, safe_name, timestamp
from nova_eval_assets.recipe import JudgeConfig, LoadedRecipe, RecipeError, is_judge_task

NOVA_JUDGE_TASK_KEY = "custom|llm_judge_judge|0"
DETAILS_COLUMNS = ("example", "gold", "predictions", "metrics", "specifics")
#: The top-k list the judge asks for when it records verdict log probabilities.
VERDICT_TOP_LOGPROBS = 20
# a judge recipe without inference.max_new_tokens (as Nova's are): room for a rationale
JUDGE_MAX_NEW_TOKENS = 512
#: Breakdowns by metadata field stop at this many distinct values.
MAX_METADATA_VALUES = 50
UPSTREAM_COLUMNS = ["row_index", "line", "system", "prompt", "metadata", "prediction", "error"]
LEADERBOARD_FOLDER = "judge_leaderboard"
SUMMARY_KEYS = (
    "a_scores",
    "b_scores",
    "ties",
    "inference_error",
    "score",
    "winrate",
    "lower_rate",
    "upper_rate",
)

ProgressCallback = stages.ProgressCallback


class JoinError(ValueError):
    """The two gen_qa recipes of a joining judge recipe cannot be joined."""


# ---------------------------------------------------------------- configuration


def judge_config(loaded: LoadedRecipe) -> JudgeConfig:
    return loaded.recipe.judge or JudgeConfig()


def is_judge(loaded: LoadedRecipe) -> bool:
    """A judge recipe: ``llm_judge`` or ``mm_llm_judge``."""
    return is_judge_task(loaded.recipe.evaluation.task)


def judge_model(loaded: LoadedRecipe) -> str:
    return judge_config(loaded).model or loaded.recipe.run.model_name_or_path


def labels(loaded: LoadedRecipe) -> tuple[str, str]:
    """Names of the baseline (A) and challenger (B) on reports and the leaderboard.

    ``judge.baseline_label`` / ``challenger_label``; else the joined recipes' names; else
    ``<run.name>:response_A`` / ``<run.name>:response_B``.
    """
    config = judge_config(loaded)
    default_a = config.baseline_recipe or f"{loaded.name}:response_A"
    default_b = config.challenger_recipe or f"{loaded.name}:response_B"
    return config.baseline_label or default_a, config.challenger_label or default_b


def sampling_settings(loaded: LoadedRecipe) -> SamplingSettings:
    """The recipe's ``inference`` section, for the judge; with ``judge.verdict_logprobs``
    the hf and openai back ends ask for (at least) the top 20 tokens at each step."""
    config = judge_config(loaded)
    inference = loaded.recipe.inference
    top = inference.top_logprobs
    if config.verdict_logprobs and config.backend in ("hf", "openai"):
        top = max(top, VERDICT_TOP_LOGPROBS)
    if config.backend == "bedrock":
        top = 0
    return SamplingSettings(
        max_new_tokens=inference.max_new_tokens or JUDGE_MAX_NEW_TOKENS,
        temperature=inference.temperature,
        top_k=inference.top_k,
        top_p=inference.top_p,
        top_logprobs=top,
        seed=inference.seed,
        response_format=loaded.recipe.response_format,  # e.g. a regex for the verdict
    )


_ENGINES: dict[tuple[Any, ...], Engine] = {}


def load_judge_engine(loaded: LoadedRecipe) -> Engine:
    """The judge engine (one per configuration per process). The hf back end shares
    :func:`stages.load_engine`'s cache, so a gen_qa run and a judge of the same model in one
    process load it once."""
    config = judge_config(loaded)
    model = judge_model(loaded)
    if config.backend == "hf":
        recipe = loaded.recipe
        run = recipe.run.model_copy(update={"model_name_or_path": model})
        return stages.load_engine(LoadedRecipe(recipe.model_copy(update={"run": run}), loaded.path))
    key = (config.backend, model, config.endpoint, config.region, config.concurrency)
    if key not in _ENGINES:
        _ENGINES[key] = create_judge_engine(
            config.backend,
            model,
            endpoint=config.endpoint,
            region=config.region,
            api_key=api_key_from_env(config.api_key_env),
            timeout_s=config.timeout_s,
            concurrency=config.concurrency,
        )
    return _ENGINES[key]


# ---------------------------------------------------------------- the judge dataset


def upstream_recipes(loaded: LoadedRecipe, recipes: list[LoadedRecipe]) -> dict[str, LoadedRecipe]:
    """``{"baseline": ..., "challenger": ...}`` for a joining judge recipe, else ``{}``.

    Raises :class:`RecipeError` naming the judge recipe and the key when a named recipe
    is missing or is not a gen_qa recipe.
    """
    config = judge_config(loaded)
    if not is_judge(loaded) or not config.joins_recipes:
        return {}
    by_name = {r.name: r for r in recipes}
    found = {}
    for role, name in (
        ("baseline", config.baseline_recipe),
        ("challenger", config.challenger_recipe),
    ):
        other = by_name.get(name)
        if other is None:
            known = ", ".join(sorted(n for n, r in by_name.items() if not is_judge(r))) or "none"
            raise RecipeError(
                f"{loaded.path}: judge.{role}_recipe = {name!r} names no recipe in "
                f"{loaded.path.parent}; gen_qa recipes there: {known}"
            )
        if other.recipe.evaluation.task != "gen_qa":
            raise RecipeError(
                f"{loaded.path}: judge.{role}_recipe = {name!r} is a "
                f"{other.recipe.evaluation.task} recipe; it must be a gen_qa recipe"
            )
        found[role] = other
    return found


def joined_dataset_path(loaded: LoadedRecipe) -> str:
    return EvalLayout.for_recipe(loaded).stage("joined_dataset.jsonl")


def join_upstream(loaded: LoadedRecipe, upstream: dict[str, LoadedRecipe]) -> dict[str, Any]:
    """Join the baseline's and challenger's outputs by ``row_index`` into a judge dataset.

    Each side is read from its ``eval_results/examples.parquet`` (written by its
    ``aggregated_report``). Rows present on both sides are joined (inner join) in row
    order: ``prompt``, ``system`` and ``metadata`` from the baseline (``system`` from the
    challenger when the baseline has none), ``response_A`` = the baseline's prediction,
    ``response_B`` = the challenger's. A row whose inference failed on either side gets an
    empty response, which validation then rejects (use ``dataset.on_invalid: skip`` to
    judge the rest). Rows whose prompts differ are counted in ``prompt_mismatches`` (and
    judged on the baseline's prompt); rows on one side only are counted and dropped. A
    ``mm_llm_judge`` recipe also takes each row's ``images`` from the baseline's validated
    dataset (the outputs keep only their hashes), so the judge sees what both answered.
    """
    tables = {}
    for role, other in upstream.items():
        path = EvalLayout.for_recipe(other).result("examples.parquet")
        if not storage.exists(path):
            raise JoinError(
                f"{loaded.path}: judge.{role}_recipe {other.name!r} has no results yet "
                f"({path}); materialize {other.name}/aggregated_report first"
            )
        tables[role] = storage.read_parquet(path, columns=UPSTREAM_COLUMNS)
    base = {r["row_index"]: r for r in tables["baseline"].to_pylist()}
    chal = {r["row_index"]: r for r in tables["challenger"].to_pylist()}
    common = sorted(base.keys() & chal.keys())
    images = (
        upstream_images(upstream["baseline"])
        if loaded.recipe.evaluation.task == "mm_llm_judge"
        else {}
    )
    mismatches: list[int] = []
    errors = Counter()

    def rows():
        for index in common:
            a, b = base[index], chal[index]
            if a["prompt"] != b["prompt"]:
                mismatches.append(index)
            for role, side in (("baseline", a), ("challenger", b)):
                if side["error"] is not None:
                    errors[role] += 1
            row = {
                "prompt": a["prompt"],
                "response_A": "" if a["error"] is not None else a["prediction"] or "",
                "response_B": "" if b["error"] is not None else b["prediction"] or "",
            }
            system = a["system"] if a["system"] is not None else b["system"]
            if system is not None:
                row["system"] = system
            if a["metadata"] is not None:
                row["metadata"] = a["metadata"]
            if images.get(index):
                row["images"] = [{"data": uri} for uri in images[index]]
            yield row

    path = joined_dataset_path(loaded)
    written = storage.write_jsonl(path, rows())
    report = {
        "baseline_recipe": upstream["baseline"].name,
        "challenger_recipe": upstream["challenger"].name,
        "baseline_rows": len(base),
        "challenger_rows": len(chal),
        "joined_rows": written,
        "only_in_baseline": len(base.keys() - chal.keys()),
        "only_in_challenger": len(chal.keys() - base.keys()),
        "baseline_inference_errors": errors["baseline"],
        "challenger_inference_errors": errors["challenger"],
        "prompt_mismatches": len(mismatches),
        "first_prompt_mismatches": mismatches[:10],
        "rows_with_images": sum(1 for index in common if images.get(index)),
        "path": path,
    }
    storage.write_json(EvalLayout.for_recipe(loaded).stage("join_report.json"), report)
    return report


def upstream_images(other: LoadedRecipe) -> dict[int, list[str]]:
    """A gen_qa recipe's images by ``row_index``, from its validated dataset ({} when it
    has none)."""
    path = EvalLayout.for_recipe(other).validated
    if not storage.exists(path) or "images" not in storage.parquet_schema(path).names:
        return {}
    table = storage.read_parquet(path, columns=["row_index", "images"])
    return {row["row_index"]: list(row["images"]) for row in table.to_pylist() if row["images"]}


def prepare_dataset(
    loaded: LoadedRecipe, recipes: list[LoadedRecipe] | None = None
) -> tuple[ValidationOutcome, dict[str, Any]]:
    """Join (for a joining recipe) and validate the judge dataset; see the module docstring.

    Returns :func:`stages.run_validation`'s outcome and summary (with the join report under
    ``"join"``). Under ``dataset.on_invalid: fail`` callers raise on an invalid outcome.
    """
    upstream = upstream_recipes(loaded, recipes or [])
    join = None
    target = loaded
    if upstream:
        join = join_upstream(loaded, upstream)
        recipe = loaded.recipe
        run = recipe.run.model_copy(update={"data_s3_path": join["path"]})
        target = LoadedRecipe(recipe.model_copy(update={"run": run}), loaded.path)
    outcome, summary = stages.run_validation(target)
    if join is not None:
        summary["join"] = join
    return outcome, summary


def read_items(loaded: LoadedRecipe) -> list[JudgeItem]:
    rows = storage.read_parquet(EvalLayout.for_recipe(loaded).validated).to_pylist()
    return [
        JudgeItem(
            row_index=row["row_index"],
            prompt=row["prompt"],
            response_a=row["response_A"],
            response_b=row["response_B"],
            system=row.get("system"),
            metadata=row.get("metadata"),
            line=row.get("line"),
            images=tuple(row.get("images") or ()),  # null (or no column): no images
        )
        for row in rows
    ]


# ---------------------------------------------------------------- judging


def run_judge(
    loaded: LoadedRecipe,
    engine: Engine | None = None,
    on_batch: ProgressCallback | None = None,
    started_at: float | None = None,
) -> dict[str, Any]:
    """Judge every validated row in both passes; write the judgments, results and details.

    Raises RuntimeError (after writing the judgments) when every request failed in the
    engine (a wrong endpoint or missing credentials, say): that is a broken judge, not a
    result. Unparsable outputs are not failures: they are ``inference_error`` judgments.
    """
    started_at = started_at if started_at is not None else time.time()
    layout = EvalLayout.for_recipe(loaded)
    config = judge_config(loaded)
    items = read_items(loaded)
    engine = engine or load_judge_engine(loaded)
    baseline, challenger = labels(loaded)
    batch_size = loaded.recipe.inference.batch_size or engine.default_batch_size
    table = judge_items(
        engine,
        items,
        sampling_settings(loaded),
        order=config.order,
        show_system=config.show_system,
        batch_size=batch_size,
        baseline=baseline,
        challenger=challenger,
        backend=config.backend,
        on_batch=on_batch,
    )
    stage_path = layout.stage("judgments.parquet")
    storage.write_parquet(stage_path, table)
    failed = [
        e
        for name in ("forward", "backward")
        for e in table[f"{name}_error"].to_pylist()
        if e and e.startswith("generation failed")
    ]
    if items and len(failed) == 2 * len(items):
        raise RuntimeError(
            f"every judge request failed ({len(failed)} of {len(failed)}); first error: {failed[0]}"
        )
    return write_judge_report(loaded, table, engine.model_id, started_at)


def summarize(table: pa.Table, rounds: int = bt.DEFAULT_ROUNDS, seed: int = bt.DEFAULT_SEED):
    """Nova's summary and our diagnostics from a judgments table."""
    forward = bt.preference_codes(table["forward_preference"].to_pylist())
    backward = bt.preference_codes(table["backward_preference"].to_pylist())
    summary = bt.judge_summary(forward, backward, rounds=rounds, seed=seed)
    diagnostics: dict[str, Any] = {
        "prompts": table.num_rows,
        "judgments": 2 * table.num_rows,
        **bt.position_bias(
            forward,
            backward,
            table["length_A"].to_numpy(zero_copy_only=False),
            table["length_B"].to_numpy(zero_copy_only=False),
        ),
    }
    soft = [v for v in table["soft_b_preference"].to_pylist() if v is not None]
    diagnostics["soft_winrate"] = float(np.mean(soft)) if soft else math.nan
    diagnostics["prompts_with_soft_preference"] = len(soft)
    diagnostics["outcomes"] = dict(sorted(Counter(table["outcome"].to_pylist()).items()))
    diagnostics["truncated_judgments"] = sum(
        r == "length"
        for name in ("forward", "backward")
        for r in table[f"{name}_finish_reason"].to_pylist()
    )
    diagnostics["by_metadata"] = metadata_breakdown(table, forward, backward, rounds, seed)
    return summary, diagnostics


def metadata_breakdown(
    table: pa.Table, forward: np.ndarray, backward: np.ndarray, rounds: int, seed: int
) -> dict[str, dict[str, dict[str, float]]]:
    """Nova's summary per value of each top-level field of JSON metadata (fields with at
    most 50 distinct scalar values), so reports break the judge down without a join."""
    parsed: list[dict[str, Any]] = []
    for text in table["metadata"].to_pylist():
        try:
            value = json.loads(text) if text else {}
        except (TypeError, ValueError):
            value = {}
        parsed.append(value if isinstance(value, dict) else {})
    fields = sorted({k for m in parsed for k, v in m.items() if isinstance(v, str | int | bool)})
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in fields:
        values = np.array(
            [str(m[name]) if m.get(name) is not None else "" for m in parsed], dtype=object
        )
        present = np.array([m.get(name) is not None for m in parsed], dtype=bool)
        distinct, inverse = np.unique(values[present], return_inverse=True)
        if not 0 < len(distinct) <= MAX_METADATA_VALUES:
            continue
        f, b = forward[present], backward[present]
        out[name] = {}
        for code, value in enumerate(distinct):
            mask = inverse == code
            stats = bt.judge_summary(f[mask], b[mask], rounds=rounds, seed=seed)
            out[name][str(value)] = {"prompts": int(mask.sum()), **stats}
    return out


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def details_table(table: pa.Table) -> pa.Table:
    """The lighteval-style details: each cell a Python-literal string."""
    columns: dict[str, list[str]] = {name: [] for name in DETAILS_COLUMNS}
    for row in table.to_pylist():
        prefs = [row["forward_preference"], row["backward_preference"]]
        columns["example"].append(row["prompt"])
        columns["gold"].append("")
        columns["predictions"].append(repr([row["forward_raw"], row["backward_raw"]]))
        metrics = {
            "a_scores": prefs.count("A"),
            "b_scores": prefs.count("B"),
            "ties": prefs.count("tie"),
            "inference_error": prefs.count("error"),
            "score": prefs.count("B") + prefs.count("tie") / 2,
        }
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
        columns["specifics"].append(repr(specifics))
    return pa.table(columns, schema=pa.schema([(n, pa.string()) for n in DETAILS_COLUMNS]))


def summary_markdown(summary: dict[str, Any], diagnostics: dict[str, Any]) -> str:
    def fmt(value: Any) -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "n/a"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| metric | value | stderr |", "|---|---:|---:|"]
    for key in ("a_scores", "b_scores", "ties", "inference_error", "score"):
        lines.append(f"| {key} | {fmt(summary[key])} | {fmt(summary[f'{key}_stderr'])} |")
    lines.append(
        f"| winrate | {fmt(summary['winrate'])} | 95% bootstrap "
        f"[{fmt(summary['lower_rate'])}, {fmt(summary['upper_rate'])}] |"
    )
    lines += ["", "| diagnostic | value |", "|---|---:|"]
    for key in (
        "prompts",
        "judgments",
        "flip_rate",
        "reversal_rate",
        "first_position_win_rate",
        "length_bias",
        "soft_winrate",
        "truncated_judgments",
    ):
        if key in diagnostics:
            lines.append(f"| {key} | {fmt(diagnostics[key])} |")
    outcomes = ", ".join(f"{k}: {v}" for k, v in diagnostics.get("outcomes", {}).items())
    return "\n".join(lines) + f"\n\noutcomes per prompt: {outcomes or 'none'}\n"


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
        "inference": recipe.inference.model_dump(),
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
    clean = _finite(summary)
    document = {
        "config_general": config_general,
        "results": {NOVA_JUDGE_TASK_KEY: clean, "all": dict(clean)},
        "versions": {NOVA_JUDGE_TASK_KEY: 0},
        "diagnostics": _finite(diagnostics),
    }
    results_path = layout.result(f"results_{stamp}.json")
    storage.write_json(results_path, document)
    details_path = layout.result(
        "details",
        safe_name(judge_model(loaded)),
        stamp,
        f"details_{NOVA_JUDGE_TASK_KEY}_{stamp}.parquet",
    )
    storage.write_parquet(details_path, details_table(table))
    judgments_path = layout.result("judgments.parquet")
    storage.write_parquet(judgments_path, table)
    report = {
        "summary": clean,
        "diagnostics": _finite(diagnostics),
        "baseline": baseline,
        "challenger": challenger,
        "paths": {
            "results": results_path,
            "details": details_path,
            "judgments": judgments_path,
            "rejected_rows": layout.rejected_rows,
        },
        "summary_markdown": summary_markdown(summary, diagnostics),
    }
    storage.write_json(layout.latest_report, report)
    return report


def read_latest_report(loaded: LoadedRecipe) -> dict[str, Any]:
    return storage.read_json(EvalLayout.for_recipe(loaded).latest_report)


def read_judgments(loaded: LoadedRecipe) -> pa.Table | None:
    path = EvalLayout.for_recipe(loaded).result("judgments.parquet")
    return storage.read_parquet(path) if storage.exists(path) else None


# ---------------------------------------------------------------- leaderboard


def leaderboard_dir(recipes: list[LoadedRecipe]) -> str:
    """``<output root>/judge_leaderboard`` of the first judge recipe (by name)."""
    judges = sorted((r for r in recipes if is_judge(r)), key=lambda r: r.name)
    if not judges:
        raise ValueError("no judge recipes (llm_judge, mm_llm_judge)")
    return storage.join(output_root(judges[0]), LEADERBOARD_FOLDER)


def comparison_of(loaded: LoadedRecipe) -> bt.Comparison | None:
    """The judge result of one recipe as a leaderboard comparison (None: not run yet)."""
    table = read_judgments(loaded)
    if table is None or table.num_rows == 0:
        return None
    forward = bt.preference_codes(table["forward_preference"].to_pylist())
    backward = bt.preference_codes(table["backward_preference"].to_pylist())
    baseline, challenger = labels(loaded)
    return bt.Comparison(baseline, challenger, bt.outcome_counts(forward, backward), loaded.name)


LEADERBOARD_SCHEMA = pa.schema(
    [
        ("rank", pa.int64()),
        ("model", pa.string()),
        ("rating", pa.float64()),
        ("rating_lower", pa.float64()),
        ("rating_upper", pa.float64()),
        ("rank_lower", pa.float64()),
        ("rank_upper", pa.float64()),
        ("theta", pa.float64()),
        ("points", pa.float64()),
        ("judgments", pa.float64()),
        ("win_share", pa.float64()),
        ("is_anchor", pa.bool_()),
        ("connected_to_anchor", pa.bool_()),
    ]
)


def build_leaderboard(
    recipes: list[LoadedRecipe],
    anchor: str | None = None,
    rounds: int = bt.DEFAULT_ROUNDS,
    seed: int = bt.DEFAULT_SEED,
) -> dict[str, Any]:
    """Fit the leaderboard over every judge result on disk; write Parquet and JSON."""
    judges = sorted((r for r in recipes if is_judge(r)), key=lambda r: r.name)
    comparisons, missing = [], []
    for loaded in judges:
        comparison = comparison_of(loaded)
        if comparison is None:
            missing.append(loaded.name)
        else:
            comparisons.append(comparison)
    folder = leaderboard_dir(recipes)
    if not comparisons:
        raise ValueError(
            "no judge results yet; materialize a judge recipe's judge_results first "
            f"(judge recipes: {', '.join(r.name for r in judges) or 'none'})"
        )
    board = bt.leaderboard(comparisons, anchor=anchor or None, rounds=rounds, seed=seed)
    table = pa.Table.from_pylist(board.rows, schema=LEADERBOARD_SCHEMA)
    parquet_path = storage.join(folder, "leaderboard.parquet")
    json_path = storage.join(folder, "leaderboard.json")
    storage.write_parquet(parquet_path, table)
    document = {
        "anchor": board.anchor,
        "scale": "Elo: 1000 + 400 / ln(10) * (theta - theta_anchor)",
        "bootstrap": {"rounds": rounds, "seed": seed, "unit": "prompts, per judge result"},
        "counting_rule": "each pass is one judgment; a tie counts half to each side",
        "results": [
            {
                "recipe": c.source,
                "baseline": c.baseline,
                "challenger": c.challenger,
                "baseline_points": c.a_points,
                "challenger_points": c.b_points,
            }
            for c in comparisons
        ],
        "results_not_run": missing,
        "models": _finite(board.rows),
    }
    lines = ["| rank | model | rating | 95% interval | judgments |", "|---:|---|---:|---|---:|"]
    for row in board.rows:
        anchor_mark = " (anchor)" if row["is_anchor"] else ""
        lines.append(
            f"| {row['rank']} | {row['model']}{anchor_mark} | {row['rating']:.1f} | "
            f"[{row['rating_lower']:.1f}, {row['rating_upper']:.1f}] | {row['judgments']:.0f} |"
        )
    document["markdown"] = "\n".join(lines) + "\n"
    document["paths"] = {"leaderboard": parquet_path, "json": json_path}
    storage.write_json(json_path, document)
    return document


def read_leaderboard(recipes: list[LoadedRecipe]) -> dict[str, Any]:
    """What the last :func:`build_leaderboard` over these recipes wrote."""
    return storage.read_json(storage.join(leaderboard_dir(recipes), "leaderboard.json"))


__all__ = [
    "JUDGMENTS_SCHEMA",
    "NOVA_JUDGE_TASK_KEY",
    "JoinError",
    "build_leaderboard",
    "comparison_of",
    "details_table",
    "is_judge",
    "join_upstream",
    "judge_config",
    "judge_model",
    "labels",
    "leaderboard_dir",
    "load_judge_engine",
    "prepare_dataset",
    "read_items",
    "read_judgments",
    "read_latest_report",
    "read_leaderboard",
    "run_judge",
    "sampling_settings",
    "summarize",
    "upstream_recipes",
    "write_judge_report",
]
