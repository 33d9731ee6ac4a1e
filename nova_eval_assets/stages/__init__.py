"""The stages of an evaluation as plain functions, one module per stage.

Each stage reads what the previous one wrote (through :mod:`storage`), writes its own
output atomically, and returns a small summary dict. The Dagster assets call these and
nothing else; the CLI and tests can call them directly.
"""

from nova_eval_assets.stages.engine_setup import (
    _ENGINES,
    engine_options,
    load_engine,
    open_engine,
    recipe_model_id,
    sampling_settings,
)
from nova_eval_assets.stages.generation_table import build_requests
from nova_eval_assets.stages.inference import (
    InferenceErrorRateError,
    ProgressCallback,
    check_error_rate,
    replica_range,
    run_inference,
)
from nova_eval_assets.stages.prompts import build_prompts, image_columns
from nova_eval_assets.stages.report import (
    aggregate_metrics,
    collect_replicas,
    inference_engine_section,
    inference_warnings,
    read_latest_report,
    write_report,
)
from nova_eval_assets.stages.schemas import (
    IMAGE_COLUMNS,
    IMAGES_FIELD,
    INFERENCE_SCHEMA,
    METRICS_SCHEMA,
    PROMPT_COLUMNS,
    PROMPTS_SCHEMA,
    TOKEN_LOGPROB,
    TOP_TOKEN,
)
from nova_eval_assets.stages.scoring import score_replica
from nova_eval_assets.stages.validation import (
    dataset_path_hint,
    run_validation,
    sha256_of,
    validate_or_raise,
)

__all__ = [
    "IMAGES_FIELD",
    "IMAGE_COLUMNS",
    "INFERENCE_SCHEMA",
    "METRICS_SCHEMA",
    "PROMPTS_SCHEMA",
    "PROMPT_COLUMNS",
    "TOKEN_LOGPROB",
    "TOP_TOKEN",
    "_ENGINES",
    "InferenceErrorRateError",
    "ProgressCallback",
    "aggregate_metrics",
    "build_prompts",
    "build_requests",
    "check_error_rate",
    "collect_replicas",
    "dataset_path_hint",
    "engine_options",
    "image_columns",
    "inference_engine_section",
    "inference_warnings",
    "load_engine",
    "open_engine",
    "read_latest_report",
    "recipe_model_id",
    "replica_range",
    "run_inference",
    "run_validation",
    "sampling_settings",
    "score_replica",
    "sha256_of",
    "validate_or_raise",
    "write_report",
]
