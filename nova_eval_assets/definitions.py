"""The code location: one asset graph per recipe in ``recipes/``.

``NOVA_EVAL_RECIPES_DIR`` points it at another folder of recipes.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from nova_eval_assets.assets import build_evaluation_assets
from nova_eval_assets.recipe import LoadedRecipe, discover_recipes

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def recipes_dir() -> Path:
    return Path(os.environ.get("NOVA_EVAL_RECIPES_DIR", PROJECT_ROOT / "recipes"))


def build_definitions(recipes: list[LoadedRecipe]) -> dg.Definitions:
    assets, checks = [], []
    for loaded in recipes:
        for definition in build_evaluation_assets(loaded):
            (checks if isinstance(definition, dg.AssetChecksDefinition) else assets).append(
                definition
            )
    return dg.Definitions(assets=assets, asset_checks=checks)


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(discover_recipes(recipes_dir()))
