"""``inference.engine: openai``: any OpenAI-compatible chat-completions server (vLLM, SGLang,
TGI, llama.cpp, OpenAI), over plain HTTP. The judge's ``openai`` back end uses this class too:
it is the one HTTP client of the code base.

One request per row: ``POST {endpoint}/v1/chat/completions`` with

    model        run.model_name_or_path (the served model name)
    messages     [{"role": "system", ...} (when the row has one), {"role": "user", ...}]
                 (the user ``content`` is the prompt string; for a row with images, parts)
    max_tokens   inference.max_new_tokens
    temperature  inference.temperature        top_p  inference.top_p
    seed         inference.seed when greedy; sampling: a seed per row (base.row_seed)
    top_k        inference.top_k, only when not -1 (the extra field vLLM and SGLang accept)
    logprobs     true, with top_logprobs = inference.top_logprobs, only when that is > 0
    reasoning_effort  inference.reasoning_effort, only when set
    response_format / structured_outputs  inference.response_format, only when set (below)

Constrained output (``inference.response_format``, engines/constraints.py) goes in the
server's structured-output fields; the server enforces it, this engine only asks:

    json_schema  ``"response_format": {"type": "json_schema", "json_schema": {"name":
                 "response", "schema": <schema>, "strict": true}}``, OpenAI's form, honoured
                 by vLLM, SGLang, llama.cpp's C++ ``llama-server`` and OpenAI (whose strict
                 mode takes only a subset of JSON Schema and refuses the rest).
                 llama-cpp-python's server (``python -m llama_cpp.server``, the one the tests
                 run) refuses that type (HTTP 500, "Input should be 'text' or 'json_object'")
                 and takes ``{"type": "json_object", "schema": <schema>}`` instead: on that
                 refusal the engine resends the row in this form and keeps it for the rest of
                 the run (`json_schema_form`). It is never sent first: vLLM reads
                 ``json_object`` as "any JSON" and would drop the schema. llama-cpp-python
                 turns the schema into a GBNF grammar without ``minimum`` / ``maximum`` (a
                 TODO of its converter) and, for a schema it cannot convert, silently allows
                 any JSON.
    regex        ``"structured_outputs": {"regex": <pattern>}``   vLLM >= 0.10.2 only (it
    choice       ``"structured_outputs": {"choice": [...]}``      replaced ``guided_regex`` /
                 ``guided_choice``, removed in 0.12).

A server that ignores the field (llama.cpp ignores ``structured_outputs``, as servers
without structured outputs ignore ``response_format``) returns unconstrained text: nothing
here can tell, and the evaluation's JSON-validity figures then show it. A server that
refuses the field for every row (HTTP 400 / 422 naming it: OpenAI refuses unknown fields,
a strict schema it cannot take) raises :class:`ServerCapabilityError`. JSON whitespace is
the server's own (llama.cpp writes ``{ "a": 1}``), not the hf engine's ``", "`` / ``": "``.
``TokenLogprob.constrained_logprob`` and ``forced`` stay None: the server does not say which
tokens the constraint allowed; ``logprob`` is whatever the server reports (vLLM masks the
logits with the grammar before it computes log probabilities, so there they are renormalized
over the allowed tokens; read from vLLM's code, unverified here).

A row with images (`GenerationRequest.images`, data URIs) sends the user ``content`` as a
list of parts, OpenAI's chat-completions form that vLLM, SGLang and TGI take: ``{"type":
"text", "text": prompt}`` first, then one ``{"type": "image_url", "image_url": {"url":
<data URI>}}`` per image, in the row's order (the URI is sent as it is, base64 inline). A
text-only row keeps the plain string, so text datasets send the bodies they always did. A
server that refuses images (HTTP 400 / 422 / 500 naming images, vision or multimodal
input as not supported: vLLM's ``At most 0 image(s) may be provided in one prompt``,
OpenAI's ``image_url is only supported by certain models``, llama.cpp's ``image input is
not supported``) raises :class:`ServerCapabilityError`: the served model does not take
images (`refuses_images`). An error about one image that says nothing of support (a file
it cannot decode) is that row's error.

Each token's ``logprob`` and ``top_logprobs`` list is taken exactly as the server sent it.
The HTTP client is :class:`~nova_eval_assets.engines.http_client.HTTPClient`: one aiohttp
session on an event loop in a thread the engine owns, with a keep-alive pool of
``concurrency`` connections. A block's rows run as ``concurrency`` coroutines on that loop
(each takes the next row when its last is done, retries included), so ``concurrency``
requests are in flight at once, never more; :meth:`OpenAIEngine.generate` waits for them
and calls ``on_batch`` on the caller's thread. 429, 5xx, connection errors and timeouts are
retried with exponential back-off and jitter (``Retry-After`` honoured) up to ``max_retries``
times. ``timeout_s`` limits each attempt as a whole, connect to the body's last byte
(``asyncio.timeout``), not each socket read. A row that still fails is a
:class:`Generation` with ``finish_reason="error"`` and the error text; so is a row answered
without the log probabilities asked for. What can never work for any row (the server
refuses ``top_k``, answers no row of a block with log probabilities before it has sent any,
rejects the key or does not know the URL) raises :class:`ServerCapabilityError` instead.
Error texts never hold the API key: a proxy may echo the request's headers in its error
page, so the client redacts the key from every error it builds (:meth:`HTTPClient.redact`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from .base import (
    BLOCK_BATCHES,
    Generation,
    GenerationRequest,
    SamplingSettings,
    TokenLogprob,
    row_seed,
)
from .collector import collector_paused
from .constraints import ResponseFormat
from .http_client import (
    REDACTED,
    RETRY_STATUS,
    ConnectionFailure,
    HTTPClient,
    HTTPStatusError,
    RequestTimeout,
    retry_after_seconds,
)

logger = logging.getLogger(__name__)

#: statuses that no retry and no other row will fix: a wrong key or a wrong URL / model
FATAL_STATUS = frozenset({401, 403, 404})
#: progress is reported every `concurrency * PROGRESS_WAVES` rows by default; a block is
#: BLOCK_BATCHES of those, long enough that the drain at a block's end costs little
PROGRESS_WAVES = 4


#: a token the server sent without a log probability
_NAN = float("nan")

#: how a json_schema format is sent: OpenAI's form, or llama-cpp-python's (module docstring)
JSON_SCHEMA_FORMS = ("json_schema", "json_object")


def structured_output_fields(
    response_format: ResponseFormat | None, json_schema_form: str = "json_schema"
) -> dict[str, Any]:
    """The request-body fields that ask the server for `response_format` (module docstring);
    empty for free text."""
    if response_format is None:
        return {}
    if response_format.type == "json_schema":
        if json_schema_form not in JSON_SCHEMA_FORMS:
            raise ValueError(f"json_schema_form must be one of {JSON_SCHEMA_FORMS}")
        return {"response_format": _json_schema_field(response_format.schema, json_schema_form)}
    if response_format.type == "regex":
        return {"structured_outputs": {"regex": response_format.pattern}}
    if response_format.type == "choice":
        return {"structured_outputs": {"choice": list(response_format.choices)}}
    raise ValueError(f"unknown response_format type {response_format.type!r}")


def _json_schema_field(schema: Any, form: str) -> dict[str, Any]:
    if form == "json_object":  # llama-cpp-python's (and Anyscale's) schema-carrying JSON mode
        return {"type": "json_object", "schema": schema}
    return {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema, "strict": True},
    }


def refuses_json_schema_type(status: int, detail: str) -> bool:
    """The server does not know ``response_format`` type ``json_schema`` but names
    ``json_object`` (llama-cpp-python: HTTP 500 with pydantic's literal error); an error
    about the schema itself (vLLM: unsupported features) names no ``json_object``."""
    return (
        status in (400, 422, 500)
        and "response_format" in detail
        and "json_schema" in detail
        and "json_object" in detail
    )


#: an error text about image input ...
_IMAGE_WORDS = re.compile(r"image|vision|multi-?modal", re.IGNORECASE)
#: ... that says it is not taken at all (or not this many), not that one image is bad
_REFUSAL_WORDS = re.compile(
    r"\bnot\s+(\w+\s+)?(support|accept|allow|enable)|n't\s+(support|accept|take)|unsupported"
    r"|not an?\s+(multi-?modal|vision)|only supported|at most \d+ image|does not take|text-only"
    r"|mmproj",
    re.IGNORECASE,
)


def user_content(request: GenerationRequest) -> str | list[dict[str, Any]]:
    """The user message's ``content``: the prompt string for a text row; for a row with
    images, the text part then one ``image_url`` part per image (module docstring)."""
    if not request.images:
        return request.prompt
    parts: list[dict[str, Any]] = [{"type": "text", "text": request.prompt}]
    parts.extend({"type": "image_url", "image_url": {"url": uri}} for uri in request.images)
    return parts


def has_images(body: dict) -> bool:
    """Whether a chat-completions body carries ``image_url`` parts."""
    return any(
        isinstance(message.get("content"), list)
        and any(part.get("type") == "image_url" for part in message["content"])
        for message in body.get("messages") or []
    )


def refuses_images(status: int, detail: str) -> bool:
    """The server does not take image input (for this model, or not this many images): an
    error naming images, vision or multimodal input together with a refusal (module
    docstring). 500 is included for servers that answer a refused feature with it."""
    return (
        status in (400, 422, 500)
        and _IMAGE_WORDS.search(detail) is not None
        and _REFUSAL_WORDS.search(detail) is not None
    )


class ServerCapabilityError(RuntimeError):
    """The server cannot do what the recipe asks; the stage stops (no row would succeed)."""


class LogprobsMissing(RuntimeError):
    """One row answered without the log probabilities its request asked for."""


def base_url(endpoint: str) -> str:
    """``http://h:8000``, ``.../v1`` or ``.../v1/chat/completions`` -> ``http://h:8000``."""
    base = endpoint.strip().rstrip("/")
    for suffix in ("/chat/completions", "/v1"):
        base = base.removesuffix(suffix)
    return base


def chat_completions_url(endpoint: str) -> str:
    """``http://host:8000`` or ``.../v1`` or the full URL -> ``.../v1/chat/completions``."""
    base = endpoint.strip().rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if not base.endswith("/v1"):
        base += "/v1"
    return base + "/chat/completions"


class OpenAIEngine:
    """The :class:`~nova_eval_assets.engines.base.Engine` of an OpenAI-compatible server.

    `probe` asks ``GET {base}/v1/models`` once on creation: the server must answer (a clear
    error names the endpoint otherwise), and the served model's ``root`` (vLLM: the weights
    it loaded) joins `model_id`, so lineage changes when the weights behind a name change.
    `identity`, when given, is the whole `model_id` (a managed server's: its port changes
    from run to run, its command and weights do not).
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        endpoint: str,
        *,
        api_key: str | None = None,
        api_key_env: str | None = None,
        timeout_s: float = 300.0,
        concurrency: int = 8,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        identity: str | None = None,
        probe: bool = True,
        require_logprobs: bool = True,
        json_schema_form: str = JSON_SCHEMA_FORMS[0],
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if not endpoint:
            raise ValueError("the openai engine needs an endpoint (inference.endpoint)")
        self.model = model
        self.base = base_url(endpoint)
        self.url = chat_completions_url(endpoint)
        self.concurrency = concurrency
        self.default_batch_size = concurrency * PROGRESS_WAVES
        if api_key is None and api_key_env:
            api_key = os.environ.get(api_key_env) or None
        self.client = HTTPClient(
            api_key=api_key,
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_s=backoff_s,
            max_connections=concurrency,
        )
        # False: a response without the log probabilities asked for is taken as it is (the
        # judge: its verdict stands without them) instead of stopping the run
        self.require_logprobs = require_logprobs
        # whether this server has sent log probabilities yet: until it has, a block where no
        # row has them means it does not support them (`_check_logprobs_support`)
        self.logprobs_seen = False
        self.served: dict[str, Any] | None = None  # this model's /v1/models entry
        # how a json_schema response_format is sent: "json_schema" (OpenAI's form) until the
        # server refuses it, then "json_object" (llama-cpp-python's; module docstring)
        self.json_schema_form = json_schema_form
        self.model_id = identity or f"openai:{self.base}#{model}"
        if probe:
            self.served = self.describe()
            root = (self.served or {}).get("root")
            if root and root != model and identity is None:
                self.model_id += f"@{root}"

    def worker_options(self, concurrency: int) -> dict[str, Any]:
        """What a copy of this engine in another process is made with (its `concurrency`
        apart): the same server, key, limits, retries and learnt request form."""
        return {
            "model": self.model,
            "endpoint": self.url,
            "api_key": self.client.api_key,
            "timeout_s": self.client.timeout_s,
            "concurrency": concurrency,
            "max_retries": self.client.max_retries,
            "backoff_s": self.client.backoff_s,
            "identity": self.model_id,
            "require_logprobs": self.require_logprobs,
            "json_schema_form": self.json_schema_form,
        }

    def close(self) -> None:
        """Close the pooled connections and end the client's loop thread (also done when
        the engine is collected or the process exits); a later call starts them again."""
        self.client.close()

    @property
    def server_label(self) -> str:
        owner = (self.served or {}).get("owned_by")
        return f"{self.base} (owned_by {owner!r})" if owner else self.base

    def describe(self) -> dict[str, Any] | None:
        """This model's entry in ``GET /v1/models`` (None when the server lists it not)."""
        url = f"{self.base}/v1/models"
        try:
            listing = self.client.request(url, timeout_s=min(self.client.timeout_s, 30.0))
        except (HTTPStatusError, ConnectionFailure) as exc:
            raise ServerCapabilityError(
                f"the OpenAI-compatible server at {self.base} did not answer GET /v1/models "
                f"({exc}); check inference.endpoint and that the server is up"
            ) from None
        entries = listing.get("data") if isinstance(listing, dict) else None
        for entry in entries or []:
            if isinstance(entry, dict) and entry.get("id") == self.model:
                return entry
        # some servers (llama.cpp) answer for any model name: not an error
        return None

    def block_size(self, batch_size: int) -> int:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return batch_size * BLOCK_BATCHES

    # ------------------------------------------------------------------ one request

    def request_body(self, request: GenerationRequest, settings: SamplingSettings) -> dict:
        messages = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.extend(request.turns())
        messages.append({"role": "user", "content": user_content(request)})
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            # sampling: each row its own seed (the hf and vllm engines' formula), so that
            # the same prompt twice (evaluation.samples) draws two answers
            "seed": settings.seed
            if settings.greedy
            else row_seed(settings.seed, request.row_index),
        }
        if settings.top_k != -1:
            body["top_k"] = settings.top_k
        if settings.top_logprobs > 0:
            body["logprobs"] = True
            body["top_logprobs"] = settings.top_logprobs
        if settings.reasoning_effort is not None:
            body["reasoning_effort"] = settings.reasoning_effort
        body.update(structured_output_fields(settings.response_format, self.json_schema_form))
        return body

    async def _post(self, body: dict) -> dict:
        fmt = body.get("response_format") or {}
        openai_form = fmt.get("type") == "json_schema"
        images = has_images(body)

        def give_up(status: int, detail: str) -> bool:  # no retry fixes these
            return (openai_form and refuses_json_schema_type(status, detail)) or (
                images and refuses_images(status, detail)
            )

        try:
            return await self.client.request_async(
                self.url, body, give_up=give_up if openai_form or images else None
            )
        except HTTPStatusError as exc:
            if openai_form and refuses_json_schema_type(exc.status, exc.detail):
                if self.json_schema_form != "json_object":
                    self.json_schema_form = "json_object"
                    logger.warning(
                        "the server at %s refuses response_format type json_schema (%s); "
                        "sending the schema as {type: json_object, schema} (llama-cpp-python's "
                        "form) from now on",
                        self.base,
                        exc.detail[:200],
                    )
                schema = fmt["json_schema"]["schema"]
                return await self._post(
                    {**body, "response_format": _json_schema_field(schema, "json_object")}
                )
            for field_name in ("response_format", "structured_outputs"):
                if exc.status in (400, 422) and field_name in body and field_name in exc.detail:
                    hint = (
                        "regex and choice formats need vLLM >= 0.10.2 (its structured_outputs "
                        "field); for other servers use type json_schema"
                        if field_name == "structured_outputs"
                        else "check the schema against what this server's structured outputs "
                        "accept (OpenAI's strict mode takes only a subset of JSON Schema)"
                    )
                    raise ServerCapabilityError(
                        f"the server at {self.base} refuses inference.response_format "
                        f"({field_name}; HTTP {exc.status}: {exc.detail}); {hint}"
                    ) from None
            if exc.status in (400, 422) and "top_k" in body and "top_k" in exc.detail:
                raise ServerCapabilityError(
                    f"top_k is not supported by the server at {self.base} (HTTP {exc.status}: "
                    f"{exc.detail}); set inference.top_k: -1 for this server"
                ) from None
            if images and refuses_images(exc.status, exc.detail):
                detail = " ".join(exc.detail.split())  # one line
                raise ServerCapabilityError(
                    f"the model {self.model!r} served at {self.base} does not take images "
                    f"(HTTP {exc.status}: {detail}); the dataset's rows have images: serve a "
                    "model with image input (vLLM: --limit-mm-per-prompt at least the most "
                    "images a row has), or evaluate a text-only dataset"
                ) from None
            if exc.status in FATAL_STATUS:
                hint = (
                    "check the API key (the environment variable named by inference.api_key_env)"
                    if exc.status in (401, 403)
                    else "check inference.endpoint and run.model_name_or_path (the served name)"
                )
                raise ServerCapabilityError(f"{exc}; {hint}") from None
            raise

    async def _complete(self, request: GenerationRequest, settings: SamplingSettings) -> Generation:
        """One row; raises on failure (see :meth:`generate` for what becomes an error row)."""
        payload = await self._post(self.request_body(request, settings))
        return self.generation(request, settings, payload)

    def generation(
        self, request: GenerationRequest, settings: SamplingSettings, payload: Any
    ) -> Generation:
        """The row's :class:`Generation` from the server's decoded answer. Per-row work at
        thousands of rows a second: each token and top entry is built once, from the dicts
        as the JSON parser made them."""
        choices = payload.get("choices") if isinstance(payload, dict) else None
        if not choices:
            raise RuntimeError(f"response without choices: {json.dumps(payload)[:300]}")
        choice = choices[0]
        message = choice.get("message") or {}
        text = message.get("content") or ""
        logprobs = (choice.get("logprobs") or {}).get("content")
        usage = payload.get("usage") or {}
        completion_tokens = int(usage.get("completion_tokens") or len(logprobs or []))
        asked = settings.top_logprobs > 0 and self.require_logprobs
        if asked and logprobs is None and (text or completion_tokens):
            raise LogprobsMissing(
                "the server answered this row without the log probabilities the request asked "
                f"for (logprobs: true, top_logprobs: {settings.top_logprobs})"
            )
        try:  # every field present, as OpenAI's format has it (vLLM, SGLang, llama.cpp)
            tokens = [
                TokenLogprob(
                    item["token"],
                    float(item["logprob"]),
                    [(t["token"], float(t["logprob"])) for t in item["top_logprobs"]],
                )
                for item in logprobs or ()
            ]
        except (KeyError, TypeError):  # a server that leaves some out
            tokens = [
                TokenLogprob(
                    item.get("token", ""),
                    float(item.get("logprob", _NAN)),
                    [
                        (t.get("token", ""), float(t["logprob"]))
                        for t in item.get("top_logprobs") or ()
                    ],
                )
                for item in logprobs or ()
            ]
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        return Generation(
            row_index=request.row_index,
            text=text,
            tokens=tokens,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=completion_tokens,
            latency_s=0.0,
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            reasoning=reasoning if isinstance(reasoning, str) else None,
            max_new_tokens=settings.max_new_tokens,
        )

    async def _safe(
        self, request: GenerationRequest, settings: SamplingSettings
    ) -> tuple[Generation, bool]:
        """The row's generation, or its error row (the one place row errors are written,
        redacted); and whether it came back without the log probabilities asked for."""
        started = time.perf_counter()
        try:
            generation = await self._complete(request, settings)
        except ServerCapabilityError:
            raise
        except Exception as exc:  # one failed row must not stop the others
            failed = Generation.failed(
                request.row_index,
                self.client.redact(f"{type(exc).__name__}: {exc}"),
                latency_s=time.perf_counter() - started,
                max_new_tokens=settings.max_new_tokens,
            )
            return failed, isinstance(exc, LogprobsMissing)
        generation.latency_s = time.perf_counter() - started
        return generation, False

    def _check_logprobs_support(
        self, generations: list[Generation], without: int, settings: SamplingSettings
    ) -> None:
        """One row without log probabilities is that row's error; a block where no row has
        them, from a server that never sent any, means the server does not support them."""
        if any(g.tokens for g in generations):
            self.logprobs_seen = True
        elif without and not self.logprobs_seen:
            raise ServerCapabilityError(
                f"the server at {self.server_label} returned no log probabilities for any of "
                f"the {without} rows it answered although the requests asked for them "
                f"(logprobs: true, top_logprobs: {settings.top_logprobs}); it does not support "
                "them. Set inference.top_logprobs: 0 for this server, or serve the model with "
                "one that returns them (vLLM, SGLang, llama.cpp)"
            )

    # ------------------------------------------------------------------ the Engine call

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        settings: SamplingSettings,
        batch_size: int | None = None,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> list[Generation]:
        """Results in request order; `concurrency` requests in flight, never more.

        `batch_size` only sets how often `on_batch(done, total)` is called (every
        `batch_size` finished rows and at the end), on this thread while the requests go
        on: a server batches by itself.
        """
        total = len(requests)
        step = max(int(batch_size or self.default_batch_size), 1)
        progress: queue.SimpleQueue[int | None] | None = None
        if on_batch is not None:
            progress = queue.SimpleQueue()
        with collector_paused():
            future = self.client.submit(self._rows(requests, settings, step, progress))
            try:
                if on_batch is not None and progress is not None:
                    while (done := progress.get()) is not None:
                        on_batch(done, total)
                generations, without_logprobs = future.result()
            except BaseException:
                future.cancel()  # a fatal row, or this thread interrupted: drop the rest
                raise
        self._check_logprobs_support(generations, without_logprobs, settings)
        return generations

    async def _rows(
        self,
        requests: Sequence[GenerationRequest],
        settings: SamplingSettings,
        step: int,
        progress: queue.SimpleQueue[int | None] | None,
    ) -> tuple[list[Generation], int]:
        """The rows by `concurrency` workers on the client's loop, each taking the next row
        when its last one is done (retries and back-off included, as a thread each did);
        the generations in order and how many came back without the log probabilities
        asked for. Progress goes to `progress` every `step` rows, then None."""
        total = len(requests)
        results: list[Generation] = [None] * total  # type: ignore[list-item]
        rows = iter(enumerate(requests))
        done = reported = without = 0

        async def worker() -> None:
            nonlocal done, reported, without
            for index, request in rows:  # one iterator shared by the workers
                results[index], lacking = await self._safe(request, settings)
                without += lacking
                done += 1
                if progress is not None and (done - reported >= step or done == total):
                    reported = done
                    progress.put(done)

        try:
            workers = [asyncio.ensure_future(worker()) for _ in range(min(self.concurrency, total))]
            try:
                await asyncio.gather(*workers)
            except BaseException:  # a fatal row: the others stop before the next is asked
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                raise
        finally:
            if progress is not None:
                progress.put(None)
        return results, without


__all__ = [
    "FATAL_STATUS",
    "JSON_SCHEMA_FORMS",
    "REDACTED",
    "RETRY_STATUS",
    "ConnectionFailure",
    "HTTPClient",
    "HTTPStatusError",
    "LogprobsMissing",
    "OpenAIEngine",
    "RequestTimeout",
    "ServerCapabilityError",
    "base_url",
    "chat_completions_url",
    "has_images",
    "refuses_images",
    "refuses_json_schema_type",
    "retry_after_seconds",
    "structured_output_fields",
    "user_content",
]
