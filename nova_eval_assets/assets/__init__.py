"""The Dagster layer: asset factories that wire the domain modules. Nothing else."""

from nova_eval_assets.assets.evaluation import build_evaluation_assets

__all__ = ["build_evaluation_assets"]
