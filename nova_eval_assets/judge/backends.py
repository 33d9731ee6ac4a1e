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
  Throttling and transient errors are retried by botocore (standard mode).
- ``openai``: any OpenAI-compatible chat endpoint (vLLM, TGI, llama.cpp server, OpenAI),
  by plain HTTP: ``POST <endpoint>/v1/chat/completions`` with ``model``, ``messages``,
  ``max_tokens``, ``temperature``, ``top_p``, ``seed`` (and ``top_k``, a vLLM extension,
  only when not -1; ``logprobs``/``top_logprobs`` only when asked for). A bearer token is
  read from the environment variable named by ``judge.api_key_env`` when it is set.
  HTTP 429, 5xx and connection errors are retried with exponential back-off.

A request that still fails becomes a :class:`Generation` with ``finish_reason="error"``
and the error text: the judge counts it as an ``inference_error`` and keeps the message,
and the run goes on.

The remote back ends are tested at their network boundary, with no network: Bedrock with
botocore's ``Stubber`` on a real ``bedrock-runtime`` client (the request parameters are
checked against the service model), the OpenAI-compatible one against a local
``http.server`` on 127.0.0.1 that speaks the chat-completions protocol.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nova_eval_assets.engines import create_engine
from nova_eval_assets.engines.base import (
    Engine,
    Generation,
    GenerationRequest,
    SamplingSettings,
    TokenLogprob,
    block_size,
)

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
    if backend == "bedrock":
        return BedrockConverseEngine(
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


def _failed(request: GenerationRequest, message: str, latency: float = 0.0) -> Generation:
    return Generation(
        row_index=request.row_index,
        text="",
        tokens=[],
        prompt_tokens=0,
        completion_tokens=0,
        latency_s=latency,
        finish_reason="error",
        error=message,
    )


class _RemoteEngine:
    """Shared request fan-out: ``batch_size`` requests in flight at once, results in order."""

    name = "remote"
    model_id = ""

    def __init__(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.default_batch_size = concurrency

    def block_size(self, batch_size: int) -> int:
        return block_size(batch_size)

    def _complete(self, request: GenerationRequest, settings: SamplingSettings) -> Generation:
        raise NotImplementedError

    def _safe(self, request: GenerationRequest, settings: SamplingSettings) -> Generation:
        started = time.perf_counter()
        try:
            generation = self._complete(request, settings)
        except Exception as exc:  # one failed request must not stop the others
            return _failed(request, f"{type(exc).__name__}: {exc}", time.perf_counter() - started)
        generation.latency_s = time.perf_counter() - started
        return generation

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        settings: SamplingSettings,
        batch_size: int | None = None,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> list[Generation]:
        width = int(batch_size or self.default_batch_size)
        results: list[Generation] = []
        total = len(requests)
        with ThreadPoolExecutor(max_workers=width) as pool:
            for start in range(0, total, width):
                chunk = requests[start : start + width]
                if width == 1:
                    results.extend(self._safe(r, settings) for r in chunk)
                else:
                    results.extend(pool.map(lambda r: self._safe(r, settings), chunk))
                if on_batch is not None:
                    on_batch(len(results), total)
        return results


class BedrockConverseEngine(_RemoteEngine):
    """Amazon Bedrock through the Converse API (``bedrock-runtime``)."""

    name = "bedrock"

    def __init__(
        self,
        model: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        timeout_s: float = 120.0,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_attempts: int = 6,
        client: Any = None,
    ) -> None:
        super().__init__(concurrency)
        self.model = model
        self.model_id = f"bedrock:{model}"
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "bedrock-runtime",
                region_name=region,
                endpoint_url=endpoint_url,
                config=Config(
                    read_timeout=timeout_s,
                    connect_timeout=min(timeout_s, 30.0),
                    retries={"max_attempts": max_attempts, "mode": "standard"},
                    max_pool_connections=max(10, concurrency),
                ),
            )
        self.client = client

    def request_params(
        self, request: GenerationRequest, settings: SamplingSettings
    ) -> dict[str, Any]:
        """The keyword arguments of ``client.converse`` for one request."""
        params: dict[str, Any] = {
            "modelId": self.model,
            "messages": [{"role": "user", "content": [{"text": request.prompt}]}],
            "inferenceConfig": {
                "maxTokens": settings.max_new_tokens,
                "temperature": settings.temperature,
                "topP": settings.top_p,
            },
        }
        if request.system:
            params["system"] = [{"text": request.system}]
        if settings.top_k != -1:
            params["additionalModelRequestFields"] = {"inferenceConfig": {"topK": settings.top_k}}
        return params

    def _complete(self, request: GenerationRequest, settings: SamplingSettings) -> Generation:
        response = self.client.converse(**self.request_params(request, settings))
        content = response.get("output", {}).get("message", {}).get("content", [])
        text = "".join(block["text"] for block in content if "text" in block)
        usage = response.get("usage", {})
        stop = response.get("stopReason", "end_turn")
        return Generation(
            row_index=request.row_index,
            text=text,
            tokens=[],
            prompt_tokens=int(usage.get("inputTokens", 0)),
            completion_tokens=int(usage.get("outputTokens", 0)),
            latency_s=0.0,
            finish_reason="length" if stop == "max_tokens" else "stop",
        )


class OpenAIChatEngine(_RemoteEngine):
    """Any OpenAI-compatible ``/v1/chat/completions`` endpoint, over plain HTTP."""

    name = "openai"
    RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})

    def __init__(
        self,
        model: str,
        endpoint: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_retries: int = 3,
        backoff_s: float = 0.5,
    ) -> None:
        super().__init__(concurrency)
        self.model = model
        self.url = chat_completions_url(endpoint)
        self.model_id = f"openai:{self.url}#{model}"
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s

    def request_body(self, request: GenerationRequest, settings: SamplingSettings) -> dict:
        messages = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": request.prompt})
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "seed": settings.seed,
        }
        if settings.top_k != -1:
            body["top_k"] = settings.top_k
        if settings.top_logprobs > 0:
            body["logprobs"] = True
            body["top_logprobs"] = settings.top_logprobs
        return body

    def _post(self, body: dict) -> dict:
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        attempt = 0
        while True:
            req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as response:
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:500]
                if exc.code not in self.RETRY_STATUS or attempt >= self.max_retries:
                    raise RuntimeError(f"HTTP {exc.code} from {self.url}: {detail}") from None
                delay = _retry_after(exc.headers.get("Retry-After"), self.backoff_s * 2**attempt)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt >= self.max_retries:
                    reason = getattr(exc, "reason", exc)
                    raise RuntimeError(f"cannot reach {self.url}: {reason}") from None
                delay = self.backoff_s * 2**attempt
            attempt += 1
            time.sleep(delay)

    def _complete(self, request: GenerationRequest, settings: SamplingSettings) -> Generation:
        payload = self._post(self.request_body(request, settings))
        choices = payload.get("choices") or []
        if not choices:
            raise RuntimeError(f"response without choices: {json.dumps(payload)[:300]}")
        choice = choices[0]
        text = (choice.get("message") or {}).get("content") or ""
        tokens = [
            TokenLogprob(
                token=item.get("token", ""),
                logprob=float(item.get("logprob", float("nan"))),
                top=[
                    (t.get("token", ""), float(t["logprob"]))
                    for t in item.get("top_logprobs") or []
                ],
            )
            for item in ((choice.get("logprobs") or {}).get("content") or [])
        ]
        usage = payload.get("usage") or {}
        return Generation(
            row_index=request.row_index,
            text=text,
            tokens=tokens,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or len(tokens)),
            latency_s=0.0,
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
        )


def chat_completions_url(endpoint: str) -> str:
    """``http://host:8000`` or ``.../v1`` or the full URL -> ``.../v1/chat/completions``."""
    base = endpoint.strip().rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if not base.endswith("/v1"):
        base += "/v1"
    return base + "/chat/completions"


def _retry_after(header: str | None, default: float) -> float:
    try:
        return min(max(float(header), 0.0), 30.0) if header else default
    except ValueError:
        return default


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
