"""A benchmark against its base model's run on the same prompts (``evaluation.baseline``;
strong_reject's relative deflection): the two runs' examples paired by prompt in DuckDB,
then the task's paired comparison (tasks/strong_reject.py :func:`paired_deflection`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from nova_eval_assets import storage
from nova_eval_assets.layout import EvalLayout, output_root
from nova_eval_assets.recipe import LoadedRecipe, resolve_relative
from nova_eval_assets.tasks.strong_reject import paired_deflection


class BaselineError(ValueError):
    """The baseline cannot be read or paired: says which and why."""


def baseline_examples(loaded: LoadedRecipe) -> str:
    """The baseline's examples.parquet: ``evaluation.baseline`` is the run name of an
    evaluation under the same output root, or a path to its results JSON, its
    ``eval_results`` folder or its examples.parquet (relative to the recipe)."""
    named = loaded.recipe.evaluation.baseline
    assert named is not None
    if "/" not in named and not named.endswith((".json", ".parquet")):
        return EvalLayout(storage.join(output_root(loaded), named)).examples
    location = resolve_relative(named, loaded.path.parent)
    if location.endswith(".parquet"):
        return location
    folder = str(Path(location).parent) if location.endswith(".json") else location
    return storage.join(folder, "examples.parquet")


# the n-th row of a prompt pairs with the n-th row of the same prompt in the other run
_OUTCOMES = """
    SELECT prompt,
           row_number() OVER (PARTITION BY prompt ORDER BY row_index) AS occurrence,
           element_at(metrics, $metric)[1] AS value
    FROM {table} WHERE scored
"""
_COLUMNS = ["row_index", "prompt", "scored", "metrics"]


def compare_to_baseline(loaded: LoadedRecipe, examples: str, metric: str) -> dict[str, Any]:
    """The paired comparison of this run's ``examples`` with the baseline's, over the rows
    both scored (0/1 ``metric``), matched by prompt."""
    path = baseline_examples(loaded)
    if not storage.exists(path):
        raise BaselineError(
            f"evaluation.baseline {loaded.recipe.evaluation.baseline!r}: no examples at "
            f"{path}; run the base model's recipe on the same prompts first"
        )
    query = f"""
        WITH mine AS ({_OUTCOMES.format(table="mine_rows")}),
             theirs AS ({_OUTCOMES.format(table="theirs_rows")})
        SELECT count(*) FILTER (WHERE mine.value = 1 AND theirs.value = 1),
               count(*) FILTER (WHERE mine.value = 1 AND theirs.value = 0),
               count(*) FILTER (WHERE mine.value = 0 AND theirs.value = 1),
               count(*) FILTER (WHERE mine.value = 0 AND theirs.value = 0)
        FROM mine JOIN theirs USING (prompt, occurrence)
    """
    with duckdb.connect() as con:
        # read through storage (local or s3://), four columns; DuckDB pairs and counts
        con.register("mine_rows", storage.read_parquet(examples, _COLUMNS))
        con.register("theirs_rows", storage.read_parquet(path, _COLUMNS))
        both, only_model, only_baseline, neither = con.execute(query, {"metric": metric}).fetchone()
    if both + only_model + only_baseline + neither == 0:
        raise BaselineError(
            f"evaluation.baseline {loaded.recipe.evaluation.baseline!r} ({path}) shares no "
            "scored prompt with this run: it must evaluate the same prompts"
        )
    comparison = paired_deflection(both, only_model, only_baseline, neither)
    return {**comparison, "baseline_examples": path}
