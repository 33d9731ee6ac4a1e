"""The code location: one asset graph per recipe in ``recipes/``.

``NOVA_EVAL_RECIPES_DIR`` points it at another folder of recipes.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from nova_eval_assets.assets import build_evaluation_assets
from nova_eval_assets.assets.analysis import build_analysis_assets
from nova_eval_assets.assets.automation import build_orchestration
from nova_eval_assets.assets.dbt import build_dbt_assets, dbt_project, dbt_resource
from nova_eval_assets.assets.judge import build_judge_assets, build_leaderboard_assets
from nova_eval_assets.assets.tables import build_table_assets, table_resources
from nova_eval_assets.assets.tracking import build_tracking_assets
from nova_eval_assets.recipe import LoadedRecipe, discover_recipes

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def recipes_dir() -> Path:
    return Path(os.environ.get("NOVA_EVAL_RECIPES_DIR", PROJECT_ROOT / "recipes"))


def build_definitions(recipes: list[LoadedRecipe]) -> dg.Definitions:
    assets, checks = [], []
    for loaded in recipes:
        built = (
            build_judge_assets(loaded, recipes)
            if loaded.recipe.evaluation.is_judge  # llm_judge, mm_llm_judge
            else build_evaluation_assets(loaded)
        )
        for definition in built:
            (checks if isinstance(definition, dg.AssetChecksDefinition) else assets).append(
                definition
            )
    assets += build_leaderboard_assets(recipes)  # [] without judge recipes
    for loaded in recipes:  # analysis_report and comparisons ([] for judge recipes)
        assets += build_analysis_assets(loaded, recipes)
    for loaded in recipes:  # the MLflow run of each, when tracking is configured
        assets += build_tracking_assets(loaded)
    # the Athena-ready tables of every run, their DDL, and the dbt models over them
    assets += build_table_assets(recipes)
    project = dbt_project()
    assets.append(build_dbt_assets(project))
    resources = {"dbt": dbt_resource(project), **table_resources()}
    # lineage sources, jobs, schedules, automation and dataset sensors (assets/automation.py)
    orchestration = build_orchestration(recipes)
    return dg.Definitions(
        assets=assets + orchestration.assets,
        asset_checks=checks,
        resources=resources,
        jobs=orchestration.jobs,
        schedules=orchestration.schedules,
        sensors=orchestration.sensors,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(discover_recipes(recipes_dir()))
