"""What a judge recipe asks for: its ``judge`` section, the names of the two sides, the
sampling settings, and the judge engine.

:func:`load_judge_engine` creates the engine (hf through :func:`stages.load_engine`'s
cache; bedrock and openai through :mod:`backends`) and keeps one per configuration per
process. Reads the recipe only; reads and writes no file.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nova_eval_assets import stages
from nova_eval_assets.engines.base import Engine, SamplingSettings
from nova_eval_assets.judge.backends import api_key_from_env, create_judge_engine
from nova_eval_assets.recipe import RUBRIC_TASK, JudgeConfig, LoadedRecipe, is_judge_task

#: The top-k list the judge asks for when it records verdict log probabilities.
VERDICT_TOP_LOGPROBS = 20
# a judge recipe without inference.max_new_tokens (as Nova's are): room for a rationale
JUDGE_MAX_NEW_TOKENS = 512


def judge_config(loaded: LoadedRecipe) -> JudgeConfig:
    return loaded.recipe.judge or JudgeConfig()


def is_judge(loaded: LoadedRecipe) -> bool:
    """A judge recipe: ``llm_judge``, ``mm_llm_judge`` or ``rubric_llm_judge``."""
    return is_judge_task(loaded.recipe.evaluation.task)


def is_rubric(loaded: LoadedRecipe) -> bool:
    """A ``rubric_llm_judge`` recipe: the judge writes and scores criteria (rubric.py)."""
    return loaded.recipe.evaluation.task == RUBRIC_TASK


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
    # the gen_qa mapping (sampling, seed, response_format: e.g. a regex for the verdict),
    # with the judge's own budget and top list, and no reasoning
    return dataclasses.replace(
        stages.sampling_settings(loaded),
        max_new_tokens=inference.max_new_tokens or JUDGE_MAX_NEW_TOKENS,
        top_logprobs=top,
        reasoning_effort=None,
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
