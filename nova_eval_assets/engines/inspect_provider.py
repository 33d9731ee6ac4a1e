"""Our engines as an Inspect AI model provider (``nova_eval/<model>``).

An Inspect task's solver asks the model one conversation at a time, from many samples at
once; our engines answer lists of requests. :class:`NovaEvalModelAPI` turns each call into
a :class:`GenerationRequest` (system messages, earlier turns, the last user turn and its
images), gathers the calls that arrive together into batches of up to ``batch_size`` for
the engine (run in a thread: the event loop keeps going), and turns each
:class:`Generation` back into Inspect's ``ModelOutput`` with its token log probabilities
and usage. The recipe's sampling settings are the defaults; what the task or solver sets
(max_tokens, temperature, top_p, top_k, seed, top_logprobs, and a ``response_schema``,
which becomes the engine's constrained decoding) wins for its calls.

Inspect's own command line reaches it too (the ``inspect_ai`` entry point of this package):
``inspect eval task.py --model nova_eval/<model> -M engine=openai -M endpoint=<url>``
builds the engine from the ``-M`` arguments (default: the hf engine on ``<model>``).

The batch a call joins depends on which calls arrive together: with the hf engine, whose
outputs can move with their batch-mates' padding, ``inference.batch_size: 1`` makes every
answer independent of timing (and so of replicas).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import mimetypes
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessage,
    ChatMessageAssistant,
    GenerateConfig,
    Logprob,
    Logprobs,
    ModelAPI,
    ModelOutput,
    ModelUsage,
    TopLogprob,
    modelapi,
)
from inspect_ai.model._model_output import StopReason
from inspect_ai.tool import ToolChoice, ToolInfo

from nova_eval_assets.engines.base import (
    MAX_TOP_LOGPROBS,
    Engine,
    Generation,
    GenerationRequest,
    SamplingSettings,
)
from nova_eval_assets.engines.constraints import ResponseFormat

PROVIDER = "nova_eval"
#: our finish reasons as Inspect's stop reasons (any other: unknown)
STOP_REASONS: dict[str, StopReason] = {"stop": "stop", "length": "max_tokens"}
#: how long the batcher waits for more calls before it sends a batch that is not full
GATHER_S = 0.005


class ToolsNotSupported(RuntimeError):
    """The task gives the model tools, which nova-eval's engines do not call."""


def request_of(messages: list[ChatMessage], row_index: int) -> GenerationRequest:
    """An Inspect conversation as one request: every system message joined, the turns
    before the last as history, the last (a user turn) as the prompt with its images."""
    system = "\n\n".join(m.text for m in messages if m.role == "system") or None
    turns = [m for m in messages if m.role != "system"]
    if not turns or turns[-1].role != "user":
        raise ValueError("the conversation must end with a user message")
    history = []
    for message in turns[:-1]:
        if message.role not in ("user", "assistant"):
            raise ToolsNotSupported(
                f"a {message.role} message: nova-eval's engines take user and assistant "
                "turns only; name Inspect's own provider in evaluation.inspect_model"
            )
        history.append((message.role, message.text))
    last = turns[-1]
    images = tuple(_data_uri(part.image) for part in _parts(last) if part.type == "image")
    return GenerationRequest(
        row_index=row_index,
        prompt=last.text,
        system=system,
        images=images,
        history=tuple(history),
    )


def _parts(message: ChatMessage) -> list[Any]:
    return [] if isinstance(message.content, str) else list(message.content)


def _data_uri(image: str) -> str:
    """An Inspect image (a data URI, or a local file) as a data URI."""
    if image.startswith("data:"):
        return image
    path = Path(image.removeprefix("file://"))
    kind = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode()}"


def settings_for(config: GenerateConfig, base: SamplingSettings) -> SamplingSettings:
    """``base`` with what the task or solver set in ``config``."""
    changes: dict[str, Any] = {}
    if config.max_tokens is not None:
        changes["max_new_tokens"] = config.max_tokens
    if config.temperature is not None:
        changes["temperature"] = config.temperature
    if config.top_p is not None:
        changes["top_p"] = config.top_p
    if config.top_k is not None:
        changes["top_k"] = config.top_k
    if config.seed is not None:
        changes["seed"] = config.seed
    if config.top_logprobs is not None:
        changes["top_logprobs"] = min(config.top_logprobs, MAX_TOP_LOGPROBS)
    if config.response_schema is not None:  # structured output: our constrained decoding
        schema = config.response_schema.json_schema.model_dump(exclude_none=True, by_alias=True)
        changes["response_format"] = ResponseFormat.json_schema(schema)
    return dataclasses.replace(base, **changes) if changes else base


def inspect_logprobs(
    tokens: Iterable[tuple[str, float, Iterable[tuple[str, float]]]],
) -> Logprobs | None:
    """Generated tokens, each (text, log probability, its top alternatives), as Inspect's
    log probabilities (None: no tokens)."""
    content = [
        Logprob(
            token=text,
            logprob=logprob,
            top_logprobs=[TopLogprob(token=t, logprob=lp) for t, lp in top] or None,
        )
        for text, logprob, top in tokens
    ]
    return Logprobs(content=content) if content else None


def token_usage(prompt_tokens: int | None, completion_tokens: int | None) -> ModelUsage:
    prompt, completion = prompt_tokens or 0, completion_tokens or 0
    return ModelUsage(
        input_tokens=prompt, output_tokens=completion, total_tokens=prompt + completion
    )


def output_of(generation: Generation, model: str) -> ModelOutput:
    """A generation as Inspect's model output."""
    choice = ChatCompletionChoice(
        message=ChatMessageAssistant(content=generation.text, model=model, source="generate"),
        stop_reason=STOP_REASONS.get(generation.finish_reason, "unknown"),
        logprobs=inspect_logprobs((t.token, t.logprob, t.top) for t in generation.tokens),
    )
    usage = token_usage(generation.prompt_tokens, generation.completion_tokens)
    return ModelOutput(model=model, choices=[choice], usage=usage, time=generation.latency_s)


class Batcher:
    """Calls gathered into engine batches: up to ``batch_size`` requests of the same settings
    per batch, ``in_flight`` batches at once (1 for an in-process model)."""

    def __init__(self, engine: Engine, batch_size: int, in_flight: int):
        self.engine, self.batch_size, self.in_flight = engine, batch_size, in_flight
        self.pending: list[tuple[GenerationRequest, SamplingSettings, asyncio.Future]] = []
        self._draining: asyncio.Task | None = None
        self._slots: asyncio.Semaphore | None = None
        self._running: set[asyncio.Task] = set()
        # each inspect_ai.eval runs its own event loop: the batcher's state is per loop
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, request: GenerationRequest, settings: SamplingSettings) -> Generation:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._slots, self._draining = loop, asyncio.Semaphore(self.in_flight), None
            self.pending = []
        answer: asyncio.Future = loop.create_future()
        self.pending.append((request, settings, answer))
        if self._draining is None or self._draining.done():
            self._draining = loop.create_task(self._drain())
        return await answer

    async def _drain(self) -> None:
        try:
            await self._send_pending()
        except BaseException as exc:  # no caller waits forever on a batch never sent
            for _, _, answer in self.pending:
                if not answer.done():
                    answer.set_exception(exc)
            self.pending = []
            raise

    async def _send_pending(self) -> None:
        assert self._slots is not None
        while self.pending:
            if len(self.pending) < self.batch_size:
                await asyncio.sleep(GATHER_S)  # let the calls made together arrive
            await self._slots.acquire()
            settings = self.pending[0][1]
            batch = [p for p in self.pending if p[1] == settings][: self.batch_size]
            taken = {id(p) for p in batch}
            self.pending = [p for p in self.pending if id(p) not in taken]
            task = asyncio.get_running_loop().create_task(self._run(batch, settings))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[Any, Any, asyncio.Future]], settings) -> None:
        try:
            requests = [request for request, _, _ in batch]
            generations = await asyncio.to_thread(
                self.engine.generate, requests, settings, len(requests)
            )
            for (_, _, answer), generation in zip(batch, generations, strict=True):
                if not answer.done():
                    answer.set_result(generation)
        except BaseException as exc:  # every caller of the batch learns why
            for _, _, answer in batch:
                if not answer.done():
                    answer.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            assert self._slots is not None
            self._slots.release()


def engine_from_model_args(model: str, model_args: dict[str, Any]) -> Engine:
    """The engine of ``inspect eval --model nova_eval/<model>``: ``-M
    engine=hf|openai|bedrock|vllm`` (default hf) and that engine's options as the other
    ``-M`` arguments (``-M endpoint=http://...`` for openai, ``-M dtype=bfloat16`` for hf)."""
    from nova_eval_assets.engines import create_engine

    options = dict(model_args)
    return create_engine(str(options.pop("engine", "hf")), model, **options)


def batches_in_flight(engine: Engine, batch_size: int) -> int:
    """Batches sent to ``engine`` at once: a served engine's concurrency in batches (its
    requests go out side by side), one for a model in this process."""
    if engine.name not in ("openai", "bedrock"):
        return 1
    return max(1, int(getattr(engine, "concurrency", batch_size)) // batch_size)


@modelapi(name=PROVIDER)
class NovaEvalModelAPI(ModelAPI):
    """``nova_eval/<model>``: the recipe's engine answering an Inspect task's calls."""

    def __init__(
        self,
        model_name: str,
        base_url: str | None = None,
        api_key: str | None = None,
        config: GenerateConfig = GenerateConfig(),  # noqa: B008 (Inspect's own signature)
        *,
        answering_engine: Engine | None = None,
        settings: SamplingSettings | None = None,
        batch_size: int | None = None,
        **model_args: Any,
    ) -> None:
        super().__init__(model_name=model_name, base_url=base_url, api_key=api_key, config=config)
        engine = answering_engine  # None: Inspect's own command line, --model nova_eval/...
        engine = engine or engine_from_model_args(model_name, model_args)
        batch_size = batch_size or engine.default_batch_size
        in_flight = batches_in_flight(engine, batch_size)
        self.engine, self.settings = engine, settings or SamplingSettings()
        self.batcher = Batcher(engine, batch_size, in_flight)
        self.calls_at_once = max(batch_size * in_flight * 4, 8)
        # sample id (as text) -> row, for the task being run: a call's sampling seed is its
        # row's, whatever its batch (engines/inspect_runner.py sets it per task)
        self.row_of: dict[str, int] = {}

    def max_connections(self) -> int:
        return self.calls_at_once

    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        if tools:
            raise ToolsNotSupported(
                "the task gives the model tools; nova-eval's engines do not call tools: name "
                "Inspect's own provider in evaluation.inspect_model"
            )
        request = request_of(input, self._row_index())
        generation = await self.batcher.submit(request, settings_for(config, self.settings))
        if generation.error is not None:
            raise RuntimeError(f"the engine failed on this call: {generation.error}")
        return output_of(generation, self.model_name)

    def _row_index(self) -> int:
        from inspect_ai.solver._task_state import sample_state

        state = sample_state()
        if state is None:
            return 0
        return self.row_of.get(str(state.sample_id), 0)
