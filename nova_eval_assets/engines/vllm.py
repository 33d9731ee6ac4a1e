"""vLLM in process (``inference.engine: vllm``), for GPU replicas.

UNVERIFIED: vLLM is not installed where this project is built and tested (no GPU there);
the tests cover the pure functions below with objects shaped like vLLM's outputs, and
`bench/vllm_engine.py` is the check to run on a GPU node.

The engine loads the model once with an offline ``vllm.LLM`` and generates a block of rows
(``batch_size * 4``, base.block_size) per ``LLM.generate`` call; vLLM's own scheduler
batches within the block.  Prompts are built here exactly as the hf engine builds them
(the model's chat template with the generation prompt, the template's thinking switch for
``reasoning_effort``, the same ChatML / raw fallbacks) and passed as token ids, so both
engines feed the model the same tokens.

Sampling: one ``SamplingParams`` per row (`sampling_params_kwargs`): ``max_tokens`` (the
row's budget: ``max_new_tokens`` clipped to what the prompt leaves of the context),
``temperature`` (0 = greedy), ``top_p``, ``top_k`` (left out when off), a per-row
``seed`` derived from (seed, row_index) when sampling, so a row's draws do not depend on
its batch, and ``logprobs = top_logprobs`` (0 still returns the chosen token's).

Constrained output (``inference.response_format``, engines/constraints.py): the row's
``SamplingParams`` gets ``structured_outputs=StructuredOutputsParams(...)`` (vLLM >= 0.10.2,
`structured_outputs_kwargs`): ``json=<schema>`` with ``disable_any_whitespace=True`` (so the
JSON is written with ``", "`` / ``": "`` as the hf engine writes it, in both of vLLM's
backends, xgrammar and guidance), ``regex=<pattern>`` or ``choice=[...]``; vLLM's backend
compiles and enforces it.  vLLM masks the logits with the grammar before its sampler takes
the "raw" log probabilities, so under a constraint ``logprob`` and the top lists are those of
the constrained distribution (read from vLLM's code, unverified here);
``constrained_logprob`` and ``forced`` stay None.

Log probabilities: the LLM is created with ``logprobs_mode="raw_logprobs"``: vLLM then
returns log-softmax of the model's raw logits, before temperature, top-k / top-p and
penalties (vLLM's documented default; set explicitly so a changed default cannot change
our numbers), which is the distribution DESIGN.md asks for.  vLLM returns, per generated
token, a dict ``token_id -> Logprob(logprob, rank, decoded_token)`` holding the top-k and
the chosen token; `to_generation` takes the chosen token's entry and the k best by rank.
Token texts are decoded here, one id at a time (``tokenizer.decode([id])``, as the hf
engine does), and the text from all ids at once, so vLLM's detokenizer is switched off.

Finish: vLLM stops on the model's end-of-sequence ids and on the end-of-turn tokens the
hf engine stops on; that token is dropped from `tokens` and `text` (the `Generation`
contract).  ``finish_reason`` "length" stays "length", "abort" becomes an error row.

Replica invariance holds at the block level (a row's batch-mates come only from its
block), but vLLM's kernels are not batch-invariant by default, so two runs may differ in
the last float bits (vLLM's ``VLLM_BATCH_INVARIANT=1`` trades speed for that).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import (
    MAX_TOP_LOGPROBS,
    Generation,
    GenerationRequest,
    SamplingSettings,
    TokenLogprob,
    block_size,
    row_seed,
)
from .constraints import ResponseFormat
from .reasoning import TemplateReasoning, not_supported, opens_thinking, split_reasoning

logger = logging.getLogger(__name__)

#: Rows per vLLM call are batch_size * 4; vLLM batches continuously inside a call, so big
#: blocks keep the GPU full (a block's tail, its last long answers, runs under-occupied).
DEFAULT_BATCH_SIZE = 256

NOT_INSTALLED = (
    "inference.engine 'vllm' needs vLLM, which is not installed (GPU nodes only): install "
    "it in the replica's image (`pip install 'nova-eval[vllm]'`, see docs/engines.md 'Engines: "
    "vllm'), or use inference.engine 'openai' with a vLLM server"
)

#: End-of-turn tokens the hf engine also stops on (engines/hf.py).
END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>")

#: recipe dtype -> vLLM's; "auto" is bfloat16, as for the hf engine on CUDA (vLLM's own
#: "auto" would take float16 for float32 checkpoints)
DTYPES = {"auto": "bfloat16", "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


class VLLMNotInstalledError(ImportError):
    """vLLM cannot be imported here."""


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise VLLMNotInstalledError(f"{NOT_INSTALLED} ({exc})") from exc
    return vllm


def llm_kwargs(
    model_dir: str,
    *,
    dtype: str = "auto",
    tensor_parallel_size: int = 1,
    max_context: int | None = None,
    seed: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """The keyword arguments of ``vllm.LLM`` (`extra`: any other engine argument)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if tensor_parallel_size < 1:
        raise ValueError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
    kwargs: dict[str, Any] = {
        "model": model_dir,
        "tokenizer": model_dir,
        "dtype": DTYPES[dtype],
        "tensor_parallel_size": tensor_parallel_size,
        "seed": seed,
        "logprobs_mode": "raw_logprobs",  # see the module docstring
        "max_logprobs": MAX_TOP_LOGPROBS,
        # the model folder is local (engines/models.py): never ask the Hub
        "trust_remote_code": False,
    }
    if max_context is not None:
        kwargs["max_model_len"] = max_context
    kwargs.update(extra)
    return kwargs


def structured_outputs_kwargs(response_format: ResponseFormat | None) -> dict[str, Any] | None:
    """The keyword arguments of ``vllm.sampling_params.StructuredOutputsParams`` for
    `response_format` (None: free text)."""
    if response_format is None:
        return None
    if response_format.type == "json_schema":
        return {"json": response_format.schema, "disable_any_whitespace": True}
    if response_format.type == "regex":
        return {"regex": response_format.pattern}
    if response_format.type == "choice":
        return {"choice": list(response_format.choices)}
    raise ValueError(f"unknown response_format type {response_format.type!r}")


def structured_outputs_class() -> Any:
    """vLLM's ``StructuredOutputsParams`` (vLLM >= 0.10.2)."""
    import_vllm()
    try:
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError as exc:
        raise VLLMNotInstalledError(
            "inference.response_format with engine 'vllm' needs vLLM >= 0.10.2 "
            f"(StructuredOutputsParams): {exc}"
        ) from exc
    return StructuredOutputsParams


def sampling_params_kwargs(
    settings: SamplingSettings,
    row_index: int,
    max_tokens: int,
    stop_token_ids: Iterable[int] = (),
    structured_outputs: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """The keyword arguments of one row's ``vllm.SamplingParams``.

    `structured_outputs`: the ``StructuredOutputsParams`` class (default: vLLM's), called
    only under ``settings.response_format``."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    kwargs: dict[str, Any] = {
        "n": 1,
        "max_tokens": max_tokens,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "logprobs": settings.top_logprobs,
        "stop_token_ids": sorted(set(stop_token_ids)),
        "detokenize": False,  # texts are decoded here (module docstring)
    }
    if settings.top_k != -1:  # off is vLLM's default (its "off" value changed across versions)
        kwargs["top_k"] = settings.top_k
    if not settings.greedy:  # greedy draws nothing; a seeded request costs vLLM extra work
        kwargs["seed"] = row_seed(settings.seed, row_index)
    constraint = structured_outputs_kwargs(settings.response_format)
    if constraint is not None:
        factory = structured_outputs or structured_outputs_class()
        kwargs["structured_outputs"] = factory(**constraint)  # one per row: vLLM writes to it
    return kwargs


def _get(obj: Any, name: str, default: Any = None) -> Any:
    return obj.get(name, default) if isinstance(obj, Mapping) else getattr(obj, name, default)


def top_entries(position: Mapping[int, Any], k: int) -> list[tuple[int, float]]:
    """The `k` most likely (token id, logprob) of one position's ``{id: Logprob}``, best
    first: by vLLM's rank where it gives one, else by log probability."""
    if k <= 0:
        return []
    items = [(int(tid), _get(lp, "logprob"), _get(lp, "rank")) for tid, lp in position.items()]
    if all(rank is not None for _, _, rank in items):
        items.sort(key=lambda item: (item[2], -item[1]))
    else:
        items.sort(key=lambda item: -item[1])
    return [(tid, float(logprob)) for tid, logprob, _ in items[:k]]


def token_logprobs(
    token_ids: Sequence[int],
    logprobs: Sequence[Mapping[int, Any]] | None,
    top_n: int,
    piece: Callable[[int], str] | None = None,
) -> list[TokenLogprob]:
    """One `TokenLogprob` per generated id from vLLM's per-position ``{id: Logprob}``.

    `piece(id)` is the token's text; without it, vLLM's ``decoded_token`` (or "").
    """
    tokens = []
    for j, tid in enumerate(token_ids):
        position = logprobs[j] if logprobs is not None else {}

        def text(token_id: int, entry: Any) -> str:
            if piece is not None:
                return piece(token_id)
            return _get(entry, "decoded_token") or ""

        chosen = position.get(tid)
        tokens.append(
            TokenLogprob(
                token=text(tid, chosen),
                logprob=float(_get(chosen, "logprob")) if chosen is not None else float("nan"),
                top=[(text(t, position[t]), lp) for t, lp in top_entries(position, top_n)],
                token_id=int(tid),
            )
        )
    return tokens


def stop_token_ids(tokenizer: Any, folder: str | Path | None = None) -> set[int]:
    """The ids a generation ends on, as the hf engine collects them: the tokenizer's EOS,
    the model's and its generation config's ``eos_token_id`` (an int or a list), and the
    end-of-turn tokens of `END_TOKENS` that the vocabulary has."""
    candidates: list[Any] = [tokenizer.eos_token_id]
    for name in ("config.json", "generation_config.json"):
        path = Path(folder) / name if folder is not None else None
        if path is not None and path.is_file():
            candidates.append(json.loads(path.read_text(encoding="utf-8")).get("eos_token_id"))
    ids: set[int] = set()
    for value in candidates:
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(int(v) for v in value)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in END_TOKENS if t in vocab)
    return ids


@dataclass(frozen=True)
class PreparedRow:
    """A row ready for vLLM: its prompt ids, budget and reasoning state."""

    index: int  # position in the caller's list
    row_index: int
    prompt_ids: list[int]
    budget: int
    thinking: bool = False  # the prompt itself opened a <think> block


def to_generation(
    row: PreparedRow,
    completion: Any,
    settings: SamplingSettings,
    stop_ids: frozenset[int] | set[int],
    decode: Callable[[Sequence[int]], str],
    piece: Callable[[int], str] | None = None,
    harmony: bool = False,
    latency_s: float = 0.0,
) -> Generation:
    """A `Generation` from one vLLM ``CompletionOutput`` (``token_ids``, ``logprobs``,
    ``finish_reason``, ``stop_reason``); the end-of-turn token is dropped."""
    ids = [int(t) for t in _get(completion, "token_ids", ())]
    logprobs = _get(completion, "logprobs")
    logprobs = None if logprobs is None else [logprobs[j] for j in range(len(ids))]
    reason = _get(completion, "finish_reason")
    if reason == "abort":
        return Generation.failed(
            row.row_index,
            "vLLM aborted the request",
            prompt_tokens=len(row.prompt_ids),
            latency_s=latency_s,
            max_new_tokens=row.budget,
        )
    stop_reason = _get(completion, "stop_reason")
    # the token that ended the turn: one of ours, or the one vLLM says it stopped on
    if reason == "stop" and ids and (ids[-1] in stop_ids or ids[-1] == stop_reason):
        ids = ids[:-1]
        logprobs = logprobs[:-1] if logprobs is not None else None
    tokens = token_logprobs(ids, logprobs, settings.top_logprobs, piece)
    text = decode(ids)
    reasoning = None
    if settings.reasoning_effort is not None:
        # tokens keep every generated token, the reasoning's included; only the text splits
        reasoning, text = split_reasoning(text, inside=row.thinking, harmony=harmony)
    return Generation(
        row_index=row.row_index,
        text=text,
        tokens=tokens,
        prompt_tokens=len(row.prompt_ids),
        completion_tokens=len(tokens),
        latency_s=latency_s,
        finish_reason="length" if reason == "length" else "stop",
        reasoning=reasoning,
        max_new_tokens=row.budget,
    )


class VLLMEngine:
    """vLLM's offline ``LLM`` behind the `Engine` interface (module docstring)."""

    name = "vllm"

    def __init__(
        self,
        model_name_or_path: str,
        *,
        dtype: str | None = "auto",
        tensor_parallel_size: int = 1,
        default_batch_size: int | None = None,
        max_context: int | None = None,
        llm: Any = None,
        tokenizer: Any = None,
        sampling_params: Callable[..., Any] | None = None,
        structured_outputs: Callable[..., Any] | None = None,
        **llm_options: Any,
    ) -> None:
        """`llm`, `tokenizer`, `sampling_params` (the ``SamplingParams`` class),
        `structured_outputs` (the ``StructuredOutputsParams`` class): ready objects (tests,
        or a caller that built them); `llm_options`: further ``vllm.LLM`` arguments
        (gpu_memory_utilization, enforce_eager, ...)."""
        from .models import ensure_chat_template, load_dir, resolve_model
        from .reasoning import inspect_template

        if llm is None or sampling_params is None:
            vllm = import_vllm()  # before any loading: a missing vLLM fails at once
            sampling_params = sampling_params or vllm.SamplingParams
        self.model_name = str(model_name_or_path)
        self.resolved = resolve_model(model_name_or_path)
        self.model_id = self.resolved.model_id  # the weights' hash, as for the hf engine
        folder = str(load_dir(self.resolved))
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(folder)
        self.tokenizer = tokenizer
        self.chat_template = ensure_chat_template(tokenizer)
        self.reasoning = (
            inspect_template(tokenizer.chat_template)
            if self.chat_template == "own"
            else TemplateReasoning()
        )
        if llm is None:
            llm = vllm.LLM(
                **llm_kwargs(
                    folder,
                    dtype=dtype or "auto",
                    tensor_parallel_size=tensor_parallel_size,
                    max_context=max_context,
                    **llm_options,
                )
            )
        self.llm = llm
        self.sampling_params = sampling_params
        self.structured_outputs = structured_outputs  # None: vLLM's, imported when needed
        self.max_context = int(max_context or _max_model_len(llm))
        self.stop_ids = frozenset(stop_token_ids(tokenizer, folder))
        self.default_batch_size = int(default_batch_size or DEFAULT_BATCH_SIZE)
        self._pieces: dict[int, str] = {}

    def block_size(self, batch_size: int) -> int:
        return block_size(batch_size)

    def check_settings(self, settings: SamplingSettings) -> None:
        if settings.reasoning_effort is not None and not self.reasoning.supported:
            raise not_supported(self.model_name)

    def format_prompt(self, request: GenerationRequest, reasoning_effort: str | None = None) -> str:
        """The prompt text as the model sees it (as engines/hf.py formats it)."""
        if self.chat_template == "none":
            turns = [text for _, text in request.history] + [request.prompt]
            text = "\n\n".join(turns)
            return f"{request.system}\n\n{text}" if request.system else text
        messages = []
        if request.system is not None:
            messages.append({"role": "system", "content": request.system})
        messages.extend(request.turns())
        messages.append({"role": "user", "content": request.prompt})
        return self.tokenizer.apply_chat_template(
            messages,
            add_generation_prompt=True,
            tokenize=False,
            **self.reasoning.template_kwargs(reasoning_effort),
        )

    def piece(self, token_id: int) -> str:
        text = self._pieces.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id])
            self._pieces[token_id] = text
        return text

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def prepare(
        self, requests: Sequence[GenerationRequest], settings: SamplingSettings, offset: int = 0
    ) -> tuple[list[PreparedRow], list[tuple[int, Generation]]]:
        """Rows to generate, and (position, error row) for prompts that fill the context
        alone; positions count from `offset`."""
        texts = [self.format_prompt(r, settings.reasoning_effort) for r in requests]
        if not texts:
            return [], []
        add_special = self.chat_template == "none"
        all_ids = self.tokenizer(texts, add_special_tokens=add_special)["input_ids"]
        rows, errors = [], []
        for i, (request, text, ids) in enumerate(zip(requests, texts, all_ids, strict=True)):
            budget = max(0, min(settings.max_new_tokens, self.max_context - len(ids)))
            if budget < 1:
                errors.append(
                    (
                        offset + i,
                        Generation.failed(
                            request.row_index,
                            f"prompt is {len(ids)} tokens and fills the model's context of "
                            f"{self.max_context} tokens; no room is left to generate",
                            prompt_tokens=len(ids),
                            max_new_tokens=0,
                        ),
                    )
                )
                continue
            thinking = settings.reasoning_effort is not None and opens_thinking(text)
            rows.append(PreparedRow(offset + i, request.row_index, list(ids), budget, thinking))
        return rows, errors

    def check_requests(self, requests: Sequence[GenerationRequest]) -> None:
        """Images are not passed to vLLM yet (its multi_modal_data): refuse them up front."""
        rows = sum(1 for r in requests if r.images)
        if rows:
            raise ValueError(
                f"inference.engine 'vllm' does not take images yet; {rows} rows have images "
                "(serve the model with `vllm serve` and use inference.engine 'openai')"
            )

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        settings: SamplingSettings,
        batch_size: int | None = None,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> list[Generation]:
        self.check_settings(settings)
        self.check_requests(requests)
        block = block_size(int(batch_size or self.default_batch_size))
        total = len(requests)
        results: list[Generation | None] = [None] * total
        for start in range(0, total, block):
            rows, errors = self.prepare(requests[start : start + block], settings, offset=start)
            for position, error in errors:
                results[position] = error
            if rows:
                params = [
                    self.sampling_params(
                        **sampling_params_kwargs(
                            settings,
                            r.row_index,
                            r.budget,
                            self.stop_ids,
                            structured_outputs=self.structured_outputs,
                        )
                    )
                    for r in rows
                ]
                prompts = [{"prompt_token_ids": r.prompt_ids} for r in rows]
                started = time.perf_counter()
                outputs = self.llm.generate(prompts, params, use_tqdm=False)
                # a row's share of the call's wall time, as the hf engine reports latency
                share = (time.perf_counter() - started) / len(rows)
                for row, output in zip(rows, outputs, strict=True):
                    results[row.index] = to_generation(
                        row,
                        output.outputs[0],
                        settings,
                        self.stop_ids,
                        self.decode,
                        self.piece,
                        harmony=self.reasoning.harmony,
                        latency_s=share,
                    )
            if on_batch is not None:
                on_batch(min(total, start + block), total)
        return results  # type: ignore[return-value]


def _max_model_len(llm: Any) -> int:
    """The context vLLM set up (``max_model_len``), wherever this vLLM version keeps it."""
    config = getattr(llm, "model_config", None) or getattr(
        getattr(llm, "llm_engine", None), "model_config", None
    )
    value = getattr(config, "max_model_len", None)
    if value is None:
        raise RuntimeError("cannot read max_model_len from the vLLM engine; pass max_context")
    return int(value)


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DTYPES",
    "NOT_INSTALLED",
    "PreparedRow",
    "VLLMEngine",
    "VLLMNotInstalledError",
    "import_vllm",
    "llm_kwargs",
    "row_seed",
    "sampling_params_kwargs",
    "stop_token_ids",
    "structured_outputs_class",
    "structured_outputs_kwargs",
    "to_generation",
    "token_logprobs",
    "top_entries",
]
