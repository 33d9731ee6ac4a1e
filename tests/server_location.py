"""The code location the Dagster server tests load: the recipes in $NOVA_EVAL_RECIPES_DIR
with their evaluation graphs, analysis reports, tables and orchestration (no dbt, so runs
start quickly)."""

import os
from pathlib import Path

from nova_eval_assets.recipe import discover_recipes
from tests.orchestration_support import location

defs = location(discover_recipes(Path(os.environ["NOVA_EVAL_RECIPES_DIR"])), followups=True)
