"""The recipe's engine: its options, sampling settings, model identity, and one loaded
engine per process."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from nova_eval_assets import lineage
from nova_eval_assets.engines import create_engine
from nova_eval_assets.engines.base import Engine, SamplingSettings
from nova_eval_assets.engines.server import ManagedServer, managed_model_id
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import LoadedRecipe


def sampling_settings(loaded: LoadedRecipe) -> SamplingSettings:
    inference = loaded.recipe.inference
    return SamplingSettings(
        max_new_tokens=inference.generation_tokens,
        temperature=inference.temperature,
        top_k=inference.top_k,
        top_p=inference.top_p,
        top_logprobs=inference.top_logprobs,
        seed=inference.seed,
        reasoning_effort=inference.reasoning_effort,
        response_format=loaded.recipe.response_format,
    )


def engine_options(loaded: LoadedRecipe) -> dict[str, Any]:
    """The recipe's inference keys as :func:`create_engine` options: the one place where each
    engine's keys are mapped (hf, bedrock and vllm add theirs here)."""
    inference = loaded.recipe.inference
    options: dict[str, Any] = {}
    if inference.engine == "openai":
        options.update(
            endpoint=inference.endpoint,
            api_key_env=inference.api_key_env,
            concurrency=inference.concurrency,
            timeout_s=inference.timeout_s,
            max_retries=inference.max_retries,
        )
    elif inference.engine == "bedrock":
        options.update(
            region=inference.region,
            endpoint_url=inference.endpoint,
            concurrency=inference.concurrency,
            timeout_s=inference.timeout_s,
            max_retries=inference.max_retries,
        )
    elif inference.engine == "vllm":
        options.update(dtype=inference.dtype, tensor_parallel_size=inference.tensor_parallel_size)
    elif inference.engine == "hf" and inference.dtype != "auto":
        options.update(dtype=inference.dtype)  # auto: the engine's default (bf16 CUDA, fp32 CPU)
    return options


def recipe_model_id(loaded: LoadedRecipe) -> str:
    """The model identity lineage records, without loading the model or starting a server
    (an external server's comes from the engine: :func:`load_engine`)."""
    server = loaded.recipe.inference.server
    if loaded.recipe.inference.engine == "openai" and server is not None:
        return managed_model_id(server.command, lineage.model_id(loaded))
    return lineage.model_id(loaded)


def open_engine(
    loaded: LoadedRecipe, replica: int, stack: contextlib.ExitStack, model_id: str
) -> Engine:
    """The replica's engine; with ``inference.server``, the server it starts first (stopped
    when `stack` closes: on success, on failure and on SIGTERM). Task inspect: the engine
    that runs the Inspect tasks, answering with this one (or with Inspect's own provider)."""
    if loaded.recipe.evaluation.inspect_specs:
        evaluation = loaded.recipe.evaluation
        inner = (
            None
            if evaluation.inspect_model
            else _answering_engine(loaded, replica, stack, model_id)
        )
        return inspect_engine(loaded, inner)
    return _answering_engine(loaded, replica, stack, model_id)


def inspect_engine(loaded: LoadedRecipe, inner: Engine | None) -> Engine:
    """The engine of an inspect recipe around ``inner`` (None: Inspect's own provider)."""
    from nova_eval_assets.engines.inspect_runner import InspectTaskEngine

    layout = EvalLayout.for_recipe(loaded)
    evaluation = loaded.recipe.evaluation
    benchmark = evaluation.benchmark
    assert benchmark is not None
    return InspectTaskEngine(
        benchmark,  # type: ignore[arg-type]
        layout.prompts,
        layout.inspect_specs,
        inner,
        evaluation.inspect_model,
        sampling_settings(loaded),
        loaded.recipe.inference.batch_size,
    )


def _answering_engine(
    loaded: LoadedRecipe, replica: int, stack: contextlib.ExitStack, model_id: str
) -> Engine:
    server = loaded.recipe.inference.server
    if loaded.recipe.inference.engine != "openai" or server is None:
        return load_engine(loaded)
    layout = EvalLayout.for_recipe(loaded)
    replicas = loaded.recipe.run.replicas
    log = layout.stage("inference", f"replicas-{replicas}", f"replica-{replica}.server.log")
    model = loaded.recipe.run.model_name_or_path
    managed = stack.enter_context(
        ManagedServer(
            server.command,
            model,
            port=server.port,
            startup_timeout_s=server.startup_timeout_s,
            env=server.env,
            log_location=log,
        )
    )
    options = {**engine_options(loaded), "endpoint": managed.url, "identity": model_id}
    return create_engine("openai", model, **options)


_ENGINES: dict[tuple[str, ...], Engine] = {}


def load_engine(loaded: LoadedRecipe) -> Engine:
    """One engine per (engine, model, options) per process: loading a model is the slow part.
    Without options the key is ``(engine, model)``."""
    options = engine_options(loaded)
    engine, model = loaded.recipe.inference.engine, loaded.recipe.run.model_name_or_path
    key: tuple[str, ...] = (engine, model)
    if options:
        key += (json.dumps(options, sort_keys=True, default=str),)
    if key not in _ENGINES:
        _ENGINES[key] = create_engine(engine, model, **options)
    return _ENGINES[key]
