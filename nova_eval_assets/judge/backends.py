"""Judge back ends, all behind the inference engine interface (:class:`engines.base.Engine`).

- ``hf`` (default): the local transformers engine, :func:`engines.create_engine`
  (``"hf", model``), by default the bundled SmolLM2-135M-Instruct. It returns token log
  probabilities, so the judge also records the verdict tokens' probabilities (a soft
  preference).
- ``bedrock``: Amazon Bedrock through boto3's ``bedrock-runtime`` **Converse** API, a Nova
  model (or any Converse model) as the judge: ``client.converse(modelId=..., messages=
  [{"role": "user", "content": [{"text": prompt}]}], system=[{"text": system}],
  inferenceConfig={"maxTokens", "temperature", "topP"})``; ``top_k`` (when not -1) goes in
  ``additionalModelRequestFields={"inferenceConfig": {"topK": k}}``, the form Nova models
  take. Converse returns no log probabilities. Credentials and region come from the usual
  boto3 chain (``judge.region`` overrides the region, ``judge.endpoint`` the endpoint URL).
  It is the gen_qa ``bedrock`` engine itself (:mod:`nova_eval_assets.engines.bedrock`, one
  client for both), throttling retries included.
- ``openai``: any OpenAI-compatible chat endpoint (vLLM, TGI, llama.cpp server, OpenAI),
  by plain HTTP: ``POST <endpoint>/v1/chat/completions`` with ``model``, ``messages``,
  ``max_tokens``, ``temperature``, ``top_p``, ``seed`` (and ``top_k``, a vLLM extension,
  only when not -1; ``logprobs``/``top_logprobs`` only when asked for). A bearer token is
  read from the environment variable named by ``judge.api_key_env`` when it is set.
  It is the gen_qa ``openai`` engine's client (:mod:`nova_eval_assets.engines.openai`):
  HTTP 429, 5xx and connection errors are retried with exponential back-off and jitter.

A request that still fails becomes a :class:`Generation` with ``finish_reason="error"``
and the error text: the judge counts it as an ``inference_error`` and keeps the message,
and the run goes on.

The remote back ends are tested at their network boundary, with no network: Bedrock with
botocore's ``Stubber`` on a real ``bedrock-runtime`` client (the request parameters are
checked against the service model), the OpenAI-compatible one against a local
``http.server`` on 127.0.0.1 that speaks the chat-completions protocol.
"""

from __future__ import annotations

import os
from typing import Any

from nova_eval_assets.engines import create_engine
from nova_eval_assets.engines.base import Engine
from nova_eval_assets.engines.bedrock import BedrockEngine as BedrockConverseEngine
from nova_eval_assets.engines.openai import OpenAIEngine, chat_completions_url

BACKENDS: tuple[str, ...] = ("hf", "bedrock", "openai")
DEFAULT_CONCURRENCY = 4


def create_judge_engine(
    backend: str,
    model: str,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    api_key: str | None = None,
    timeout_s: float = 120.0,
    concurrency: int = DEFAULT_CONCURRENCY,
    client: Any = None,
) -> Engine:
    """A judge engine by back-end name (see the module docstring)."""
    if backend == "hf":
        return create_engine("hf", model)
    if backend == "bedrock":  # the gen_qa engine's client (engines/bedrock.py)
        return create_engine(
            "bedrock",
            model,
            region=region,
            endpoint_url=endpoint,
            timeout_s=timeout_s,
            concurrency=concurrency,
            client=client,
        )
    if backend == "openai":
        if not endpoint:
            raise ValueError("the openai judge back end needs an endpoint (judge.endpoint)")
        return OpenAIChatEngine(
            model, endpoint, api_key=api_key, timeout_s=timeout_s, concurrency=concurrency
        )
    raise ValueError(f"unknown judge back end {backend!r}; allowed: {', '.join(BACKENDS)}")


class OpenAIChatEngine(OpenAIEngine):
    """The judge's ``openai`` back end: the gen_qa engine's HTTP client (engines/openai.py),
    retries and errors included. A judge records its model as configured, so by default it
    does not probe ``/v1/models``; a server without log probabilities leaves the verdicts
    without a soft preference rather than failing the judge."""

    def __init__(self, model: str, endpoint: str, *, probe: bool = False, **options: Any) -> None:
        options.setdefault("require_logprobs", False)
        options.setdefault("timeout_s", 120.0)
        options.setdefault("concurrency", DEFAULT_CONCURRENCY)
        super().__init__(model, endpoint, probe=probe, **options)


def api_key_from_env(variable: str | None) -> str | None:
    return os.environ.get(variable) or None if variable else None


__all__ = [
    "BACKENDS",
    "BedrockConverseEngine",
    "OpenAIChatEngine",
    "api_key_from_env",
    "chat_completions_url",
    "create_judge_engine",
]
