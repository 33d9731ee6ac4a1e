"""Inference back ends behind one small interface (`Engine`).

    engine = create_engine("hf", "smollm2-135m-instruct")
    outputs = engine.generate([GenerationRequest(0, "What is 2+2?")], SamplingSettings())

Engines: "hf" (transformers in process), "openai" (an OpenAI-compatible server),
"bedrock" (Amazon Bedrock's Converse API), "vllm" (vllm.LLM in process, GPU nodes). This
package imports no Dagster, and importing it does not import torch, boto3 or vllm (an
engine's module loads them on creation).
"""

from __future__ import annotations

from typing import Any

from .base import (
    BLOCK_BATCHES,
    MAX_TOP_LOGPROBS,
    Engine,
    Generation,
    GenerationRequest,
    SamplingSettings,
    TokenLogprob,
    block_size,
)
from .models import (
    BUNDLED_MODELS,
    ModelResolutionError,
    ResolvedModel,
    resolve_model,
)

#: engine name -> "module:class", imported on demand
ENGINES: dict[str, str] = {
    "hf": "nova_eval_assets.engines.hf:HFEngine",
    "openai": "nova_eval_assets.engines.openai:OpenAIEngine",  # any OpenAI-compatible server
    "bedrock": "nova_eval_assets.engines.bedrock:BedrockEngine",
    "vllm": "nova_eval_assets.engines.vllm:VLLMEngine",  # the optional [vllm] extra
}

__all__ = [
    "BLOCK_BATCHES",
    "BUNDLED_MODELS",
    "ENGINES",
    "MAX_TOP_LOGPROBS",
    "Engine",
    "Generation",
    "GenerationRequest",
    "ModelResolutionError",
    "ResolvedModel",
    "SamplingSettings",
    "TokenLogprob",
    "block_size",
    "create_engine",
    "resolve_model",
]


def create_engine(engine: str, model_name_or_path: str, **options: Any) -> Engine:
    """Build an engine by name. `options` go to the engine's constructor (for "hf":
    device, dtype, default_batch_size, attn_implementation, max_context, share_prefix; for
    "openai": endpoint, api_key_env, concurrency, timeout_s, max_retries, identity, probe; for
    "bedrock": region, endpoint_url, concurrency, timeout_s, max_retries, client; for
    "vllm": dtype, tensor_parallel_size, default_batch_size, max_context)."""
    target = ENGINES.get(engine)
    if target is None:
        allowed = ", ".join(repr(name) for name in sorted(ENGINES))
        raise ValueError(f"unknown inference engine {engine!r}; allowed engines: {allowed}")
    import importlib

    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(model_name_or_path, **options)
