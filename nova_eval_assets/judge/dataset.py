"""The judge dataset: joined from two gen_qa recipes' outputs (for a joining recipe),
validated like any dataset, and read back as :class:`~pairwise.JudgeItem` rows.

:func:`upstream_recipes` finds the baseline and challenger recipes a judge recipe names;
:func:`join_upstream` writes ``stages/joined_dataset.jsonl`` and ``stages/join_report.json``
from their ``eval_results/examples.parquet`` (and, for ``mm_llm_judge``, the baseline's
images); :func:`prepare_dataset` validates (:func:`stages.run_validation`);
:func:`read_items` reads the validated rows. Writes only under the judge recipe's
``stages/``; judges nothing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from nova_eval_assets import stages, storage
from nova_eval_assets.dataset import ValidationOutcome
from nova_eval_assets.judge.pairwise import JudgeItem
from nova_eval_assets.judge.settings import is_judge, judge_config
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import LoadedRecipe, RecipeError

UPSTREAM_COLUMNS = ["row_index", "line", "system", "prompt", "metadata", "prediction", "error"]


class JoinError(ValueError):
    """The two gen_qa recipes of a joining judge recipe cannot be joined."""


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
