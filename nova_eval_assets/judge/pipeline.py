"""The stages of an ``llm_judge`` (or ``mm_llm_judge``, ``rubric_llm_judge``) evaluation as
plain functions (no Dagster). A ``mm_llm_judge`` recipe is the same judge over a dataset
whose rows have ``images`` (data URIs), which the judge sees with the prompt in both
passes; it writes the same files, columns and Nova keys (``custom|llm_judge_judge|0``, the
same summary). A ``rubric_llm_judge`` recipe asks the judge for criteria, scores and a
preference (:mod:`rubric`); it writes the same files under
``custom|rubric_llm_judge_judge|0``, with the rubric's columns and keys added.

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

This module holds :func:`run_judge` and re-exports the rest from where it lives:
:mod:`settings` (the recipe's judge settings and engine), :mod:`dataset` (joining,
validating and reading the judge dataset), :mod:`summary` (the summary and diagnostics),
:mod:`results` (the files a run writes) and :mod:`leaderboard`.
"""

from __future__ import annotations

import time
from typing import Any

from nova_eval_assets import stages, storage
from nova_eval_assets.engines.base import Engine
from nova_eval_assets.judge.dataset import (
    UPSTREAM_COLUMNS,
    JoinError,
    join_upstream,
    joined_dataset_path,
    prepare_dataset,
    read_items,
    upstream_images,
    upstream_recipes,
)
from nova_eval_assets.judge.leaderboard import (
    LEADERBOARD_FOLDER,
    LEADERBOARD_SCHEMA,
    build_leaderboard,
    comparison_of,
    leaderboard_dir,
    read_leaderboard,
)
from nova_eval_assets.judge.pairwise import JUDGMENTS_SCHEMA, judge_items
from nova_eval_assets.judge.results import (
    DETAILS_COLUMNS,
    NOVA_JUDGE_TASK_KEY,
    details_table,
    read_judgments,
    read_latest_report,
    write_judge_report,
)
from nova_eval_assets.judge.settings import (
    JUDGE_MAX_NEW_TOKENS,
    VERDICT_TOP_LOGPROBS,
    is_judge,
    is_rubric,
    judge_config,
    judge_model,
    labels,
    load_judge_engine,
    sampling_settings,
)
from nova_eval_assets.judge.summary import (
    MAX_METADATA_VALUES,
    SUMMARY_KEYS,
    metadata_breakdown,
    summarize,
    summary_markdown,
)
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import LoadedRecipe

ProgressCallback = stages.ProgressCallback


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
        rubric=is_rubric(loaded),
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


__all__ = [
    "DETAILS_COLUMNS",
    "JUDGE_MAX_NEW_TOKENS",
    "JUDGMENTS_SCHEMA",
    "LEADERBOARD_FOLDER",
    "LEADERBOARD_SCHEMA",
    "MAX_METADATA_VALUES",
    "NOVA_JUDGE_TASK_KEY",
    "SUMMARY_KEYS",
    "UPSTREAM_COLUMNS",
    "VERDICT_TOP_LOGPROBS",
    "JoinError",
    "ProgressCallback",
    "build_leaderboard",
    "comparison_of",
    "details_table",
    "is_judge",
    "is_rubric",
    "join_upstream",
    "joined_dataset_path",
    "judge_config",
    "judge_model",
    "labels",
    "leaderboard_dir",
    "load_judge_engine",
    "metadata_breakdown",
    "prepare_dataset",
    "read_items",
    "read_judgments",
    "read_latest_report",
    "read_leaderboard",
    "run_judge",
    "sampling_settings",
    "summarize",
    "summary_markdown",
    "upstream_images",
    "upstream_recipes",
    "write_judge_report",
]
