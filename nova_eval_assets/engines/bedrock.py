"""Amazon Bedrock through the Converse API (``inference.engine: bedrock``).

The one Bedrock client of the code base: gen_qa inference uses it, and so does the judge's
``bedrock`` back end (judge/backends.py).

Models: whatever Converse takes as ``modelId``, passed through unchanged -- a model id
(``amazon.nova-lite-v1:0``), a cross-region inference profile (``us.amazon.nova-pro-v1:0``)
or the ARN of a custom model, a provisioned-throughput model, an inference profile, an
imported model (``arn:aws:bedrock:<region>:<account>:provisioned-model/<id>`` ...).  With no
``region`` the region of such an ARN is used, else boto3's usual chain (``AWS_DEFAULT_REGION``,
the profile); ``endpoint_url`` overrides the regional endpoint (VPC endpoints, FIPS).

One request per row::

    client.converse(modelId=model,
                    messages=[{"role": "user", "content": [*images, {"text": prompt}]}],
                    system=[{"text": system}],                      # when the row has one
                    inferenceConfig={"maxTokens", "temperature", "topP"},
                    additionalModelRequestFields={"inferenceConfig": {"topK": k}})  # top_k

A row with images (`GenerationRequest.images`, ``data:image/<format>;base64,<data>`` URIs)
puts one ``{"image": {"format": "png" | "jpeg" | "gif" | "webp", "source": {"bytes": <the
decoded bytes>}}}`` block per image, in the row's order, *before* the text block: the Nova
user guide's placement advice (media first, the instruction text last; other orders work
but this one is preferred). Converse takes raw bytes (boto3 base64-encodes them on the
wire), so the URI's base64 is decoded here; ``jpg`` is sent as ``jpeg``, and a format
Converse does not take is that row's error. A model without image input answers
``ValidationException`` ("This model doesn't support the image content block ..."): that
stops the stage with :class:`ModelCapabilityError` naming the model, since no image row
would succeed.

``topK`` is not a Converse field; Nova takes it inside an ``inferenceConfig`` object of
``additionalModelRequestFields`` (the Nova user guide), Anthropic models as ``top_k``.
Converse returns no log probabilities: `Generation.tokens` stays empty (the recipe refuses
``top_logprobs > 0`` with this engine) and the token counts come from ``usage``.

Requests: ``concurrency`` in flight at once (one thread each, one shared client: boto3
clients are thread-safe).  Retries in two layers: botocore's own (``retry_mode``, adaptive
by default: its client-side rate limiter slows every thread down together when Bedrock
throttles; ``max_retries + 1`` attempts in all), then ours around it for throttling
that outlasts botocore's backoff (which caps at 20 s): ``ThrottlingException``,
``ServiceUnavailableException`` and ``ModelNotReadyException`` are retried
``throttle_retries`` more times after an exponential wait with jitter.  A row that still
fails is a `Generation` with ``finish_reason="error"`` and the error text; the inference
stage decides from ``inference.max_error_rate`` whether the run fails.

This module imports no Dagster; boto3 is imported when a client is made.
"""

from __future__ import annotations

import base64
import binascii
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from .base import Generation, GenerationRequest, SamplingSettings, block_size

logger = logging.getLogger(__name__)

#: Error codes our own retry layer waits out (botocore has already retried them).
RETRYABLE_CODES = frozenset(
    {"ThrottlingException", "ServiceUnavailableException", "ModelNotReadyException"}
)

#: Converse ``stopReason`` -> `Generation.finish_reason` (anything else: "stop").
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
}

#: Converse's ``ImageBlock.format`` values (botocore's bedrock-runtime service model).
IMAGE_FORMATS = ("png", "jpeg", "gif", "webp")

_DATA_URI = re.compile(r"^data:image/(?P<format>[A-Za-z0-9.+-]+);base64,(?P<data>.*)$", re.DOTALL)
#: a ValidationException saying the model takes no images at all (not that one is bad):
#: "This model doesn't support the image content block that you provided. ..."
_NO_IMAGES = re.compile(
    r"(n't|not)\s+support\w*\s+(the\s+)?image"
    r"|image\w*\s+(input\s+)?(is\s+|are\s+)?not\s+support",
    re.IGNORECASE,
)


class ModelCapabilityError(RuntimeError):
    """The model cannot do what the rows need (images to a text model); the stage stops."""


# arn:aws:bedrock:<region>:<account>:<resource>; also the aws-cn / aws-us-gov partitions
_ARN = re.compile(r"^arn:aws[a-z-]*:bedrock:(?P<region>[a-z0-9-]+):[0-9]*:(?P<resource>.+)$")


def arn_region(model: str) -> str | None:
    """The region of a Bedrock ARN (None: `model` is a model or profile id, not an ARN)."""
    match = _ARN.match(model.strip())
    return match.group("region") if match else None


def lineage_model_id(model: str, region: str | None) -> str:
    """``bedrock:<region>:<model>``, the model identity an output records."""
    return f"bedrock:{region or 'default'}:{model}"


def default_region(model: str, region: str | None = None) -> str | None:
    """The region requests go to: `region`, else the ARN's, else boto3's default chain."""
    if region:
        return region
    if arn := arn_region(model):
        return arn
    import boto3

    return boto3.session.Session().region_name


def top_k_fields(model: str, top_k: int) -> dict[str, Any] | None:
    """``additionalModelRequestFields`` that carry `top_k` (None: top_k is off).

    Anthropic models take ``top_k`` at the top level; Nova (and, as the models this project
    is about, anything else, custom-model ARNs included) ``{"inferenceConfig": {"topK": k}}``.
    """
    if top_k == -1:
        return None
    if "anthropic." in model:
        return {"top_k": top_k}
    return {"inferenceConfig": {"topK": top_k}}


def image_block(uri: str) -> dict[str, Any]:
    """A ``data:image/<format>;base64,<data>`` URI as a Converse image content block."""
    match = _DATA_URI.match(uri)
    if match is None:
        raise ValueError(f"not a base64 image data URI: {uri[:40]!r}")
    fmt = match.group("format").lower()
    fmt = "jpeg" if fmt == "jpg" else fmt
    if fmt not in IMAGE_FORMATS:
        raise ValueError(
            f"Bedrock's Converse API takes {', '.join(IMAGE_FORMATS)} images, not image/{fmt}"
        )
    try:
        data = base64.b64decode("".join(match.group("data").split()), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"the image/{fmt} data URI is not valid base64: {exc}") from None
    return {"image": {"format": fmt, "source": {"bytes": data}}}


def user_content(request: GenerationRequest) -> list[dict[str, Any]]:
    """The user message's content blocks: the images (in order), then the text."""
    return [*(image_block(uri) for uri in request.images), {"text": request.prompt}]


def request_params(
    model: str, request: GenerationRequest, settings: SamplingSettings
) -> dict[str, Any]:
    """The keyword arguments of ``client.converse`` for one row."""
    params: dict[str, Any] = {
        "modelId": model,
        "messages": [
            *({"role": role, "content": [{"text": text}]} for role, text in request.history),
            {"role": "user", "content": user_content(request)},
        ],
        "inferenceConfig": {
            "maxTokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "topP": settings.top_p,
        },
    }
    if request.system:
        params["system"] = [{"text": request.system}]
    extra = top_k_fields(model, settings.top_k)
    if extra is not None:
        params["additionalModelRequestFields"] = extra
    return params


def parse_response(
    request: GenerationRequest, settings: SamplingSettings, response: dict[str, Any]
) -> Generation:
    """A Converse response as a `Generation` (text blocks joined; no token log probs)."""
    content = response.get("output", {}).get("message", {}).get("content", [])
    usage = response.get("usage", {})
    return Generation(
        row_index=request.row_index,
        text="".join(block["text"] for block in content if "text" in block),
        tokens=[],
        prompt_tokens=int(usage.get("inputTokens", 0)),
        completion_tokens=int(usage.get("outputTokens", 0)),
        latency_s=0.0,
        finish_reason=FINISH_REASONS.get(response.get("stopReason", "end_turn"), "stop"),
        max_new_tokens=settings.max_new_tokens,
    )


def error_code(exc: BaseException) -> str | None:
    """The service error code of a botocore ClientError (None for any other error)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None


def refuses_images(exc: BaseException) -> bool:
    """A ``ValidationException`` saying the model takes no image input."""
    if error_code(exc) != "ValidationException":
        return False
    message = getattr(exc, "response", {}).get("Error", {}).get("Message") or str(exc)
    return _NO_IMAGES.search(message) is not None


def backoff_delay(
    attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None
) -> float:
    """Wait before retry `attempt` (0-based): half of ``min(cap, base * 2**attempt)`` plus a
    uniform draw over the other half ("equal jitter": never near zero, and threads that
    were throttled together do not come back together)."""
    ceiling = min(cap_s, base_s * 2**attempt)
    return ceiling / 2 + (rng or random).uniform(0.0, ceiling / 2)


def make_client(
    *,
    region: str | None,
    endpoint_url: str | None,
    timeout_s: float,
    max_retries: int,
    retry_mode: str,
    concurrency: int,
) -> Any:
    """A ``bedrock-runtime`` client (tests replace this function to hand in a stubbed one)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "bedrock-runtime",
        region_name=region,
        endpoint_url=endpoint_url,
        config=Config(
            read_timeout=timeout_s,
            connect_timeout=min(timeout_s, 30.0),
            # total_max_attempts counts the first try (botocore's max_attempts would not)
            retries={"mode": retry_mode, "total_max_attempts": max_retries + 1},
            # one pooled connection per thread in flight, or threads wait for a connection
            max_pool_connections=max(10, concurrency),
        ),
    )


class BedrockEngine:
    """Amazon Bedrock's Converse API behind the `Engine` interface (module docstring)."""

    name = "bedrock"

    def __init__(
        self,
        model: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 300.0,
        max_retries: int = 5,
        retry_mode: str = "adaptive",
        throttle_retries: int = 4,
        backoff_s: float = 2.0,
        max_backoff_s: float = 60.0,
        default_batch_size: int | None = None,
        client: Any = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if not model or not model.strip():
            raise ValueError("the bedrock engine needs a model id, inference profile or ARN")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if throttle_retries < 0:
            raise ValueError(f"throttle_retries must be >= 0, got {throttle_retries}")
        self.model = model.strip()
        self.concurrency = int(concurrency)
        # rows per block are batch_size * 4 (base.block_size): with the default, a block
        # keeps every thread busy four times over before the stage checkpoints it
        self.default_batch_size = int(default_batch_size or concurrency)
        self.throttle_retries = throttle_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.sleep = sleep  # None: time.sleep (tests record the waits instead)
        if client is None:
            region = default_region(self.model, region)
            if region is None:  # botocore's NoRegionError would not say which key to set
                raise ValueError(
                    "inference.engine 'bedrock' needs a region: set inference.region (or "
                    "judge.region), AWS_DEFAULT_REGION, or a region in the AWS profile"
                )
            client = make_client(
                region=region,
                endpoint_url=endpoint_url,
                timeout_s=timeout_s,
                max_retries=max_retries,
                retry_mode=retry_mode,
                concurrency=self.concurrency,
            )
        self.client = client
        self.region = getattr(getattr(client, "meta", None), "region_name", None) or region
        self.model_id = lineage_model_id(self.model, self.region)
        self._rng = random.Random()
        self._rng_lock = threading.Lock()

    def block_size(self, batch_size: int) -> int:
        return block_size(batch_size)

    def check_settings(self, settings: SamplingSettings) -> None:
        """Refuse what Converse cannot do before any request is sent."""
        if settings.top_logprobs > 0:
            raise ValueError(
                "top_logprobs must be 0 with the bedrock engine: Bedrock's Converse API "
                "returns no log probabilities"
            )
        if settings.reasoning_effort is not None:
            raise ValueError(
                "inference.reasoning_effort is not supported with inference.engine 'bedrock' "
                "yet; set it to null"
            )

    def request_params(
        self, request: GenerationRequest, settings: SamplingSettings
    ) -> dict[str, Any]:
        return request_params(self.model, request, settings)

    def _delay(self, attempt: int) -> float:
        with self._rng_lock:  # random.Random is not safe to share between threads
            return backoff_delay(attempt, self.backoff_s, self.max_backoff_s, self._rng)

    def _converse(self, params: dict[str, Any]) -> dict[str, Any]:
        """One Converse call, throttling retried past botocore's own attempts."""
        attempt = 0
        while True:
            try:
                return self.client.converse(**params)
            except Exception as exc:
                code = error_code(exc)
                if code not in RETRYABLE_CODES or attempt >= self.throttle_retries:
                    raise
                delay = self._delay(attempt)
                logger.info("bedrock %s; retry %d in %.1f s", code, attempt + 1, delay)
                attempt += 1
                (self.sleep or time.sleep)(delay)

    def _one(self, request: GenerationRequest, settings: SamplingSettings) -> Generation:
        started = time.perf_counter()
        try:
            generation = parse_response(
                request, settings, self._converse(request_params(self.model, request, settings))
            )
        except Exception as exc:  # one failed row must not stop the others
            if request.images and refuses_images(exc):  # ... but no image row would succeed
                message = " ".join(str(exc).split())  # one line
                raise ModelCapabilityError(
                    f"the Bedrock model {self.model!r} does not take images ({message}); the "
                    "dataset's rows have images: use a model with image input (Nova Lite, "
                    "Nova Pro, Nova Premier), or evaluate a text-only dataset"
                ) from None
            generation = Generation.failed(
                request.row_index,
                f"{type(exc).__name__}: {exc}",
                max_new_tokens=settings.max_new_tokens,
            )
        # a request's own wall time (requests overlap, so these sum to more than the run)
        generation.latency_s = time.perf_counter() - started
        return generation

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        settings: SamplingSettings,
        batch_size: int | None = None,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> list[Generation]:
        """One Converse request per row, `concurrency` in flight; results in order.

        `batch_size` only sizes the caller's blocks; it does not change what is in flight.
        `on_batch(done, total)` is called as rows finish.
        """
        self.check_settings(settings)
        total = len(requests)
        results: list[Generation | None] = [None] * total
        if not total:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, total)) as pool:
            futures = {pool.submit(self._one, r, settings): i for i, r in enumerate(requests)}
            try:
                for done, future in enumerate(as_completed(futures), start=1):
                    results[futures[future]] = future.result()  # re-raises a stage stop
                    if on_batch is not None:
                        on_batch(done, total)
            except BaseException:
                for future in futures:  # stop before the queued rows are sent
                    future.cancel()
                raise
        return results  # type: ignore[return-value]


__all__ = [
    "FINISH_REASONS",
    "IMAGE_FORMATS",
    "RETRYABLE_CODES",
    "BedrockEngine",
    "ModelCapabilityError",
    "arn_region",
    "backoff_delay",
    "default_region",
    "image_block",
    "lineage_model_id",
    "make_client",
    "parse_response",
    "refuses_images",
    "request_params",
    "top_k_fields",
    "user_content",
]
