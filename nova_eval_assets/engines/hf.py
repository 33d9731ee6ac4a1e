"""The transformers inference engine (the default, `engine: hf`).

It runs its own decode loop over a KV cache instead of `model.generate`, for
three reasons: the raw logits of every step are at hand (log probabilities come
from the unprocessed distribution, before temperature / top-k / top-p), each row
gets its own random generator (sampling is reproducible per row, whatever its
batch), and rows that finish leave the batch (their KV cache rows are dropped), so
a long answer does not keep finished rows computing.

Decode paths: Llama-family models (engines/decoder.py: llama, qwen2, qwen3, mistral
without sliding window) run through `FastDecoder`, a lean forward over a preallocated
cache with packed weights on CPU, its book-keeping in tensors (`_decode_fast`); other
architectures through the transformers forward and a `DynamicCache`
(`_decode_generic`).  Both choose tokens the same way (`_pick`).  `inference.dtype`
(`dtype=`: auto, float32, bfloat16, float16) sets the weights' dtype; auto is bfloat16
on CUDA and float32 elsewhere.

Batching (see `base.block_size`): requests are grouped into blocks of
``batch_size * 4`` consecutive requests; within a block they are sorted by prompt
length (ties by position) and cut into batches of `batch_size`, padded on the
left.  A row's batch therefore depends only on its block, and shards that start
on block boundaries reproduce an unsharded run.

Shared prompt head: when every row of a batch starts with the same tokens (the
chat template's system turn: all rows of a gen_qa dataset usually share their
`system` text), that head is run once, so a batch's prefill costs one head plus each
row's own tail; the fast path keeps its keys and values once for all rows, the
transformers path copies them to every row.

Context: a row generates at most `max_new_tokens`, clipped to what its prompt leaves of
the model's context (Nova's 1.0 recipes ask for 8196 tokens of an 8k model); the budget a
row had is `Generation.max_new_tokens`.  Only a prompt that fills the context alone is an
error row.

Reasoning (`SamplingSettings.reasoning_effort`, engines/reasoning.py): the chat template's
thinking switch is passed to `apply_chat_template`, and the generated text is split into
`Generation.reasoning` and the answer, `Generation.text`.

Vision-language models (engines/vision.py): a model folder whose config transformers maps
in `AutoModelForImageTextToText` loads with `AutoProcessor` and that class; its rows (with
images or without) run through `model.generate`, every token chosen by `_pick` from the
raw logits, so log probabilities, top lists, sampling, constraints, stop tokens and budgets
are those of the text path (`runtime()["decoder"]`: "vision").  A text-only model refuses
rows with images before generating any row (`check_requests`).

Numerics: left padding and a shared head change the shapes of the matrix products
a row goes through, so its log probabilities differ from a one-at-a-time run in
the last float bits (measured up to ~3e-5 in float32 on CPU); greedy token choices
were identical in every comparison we ran (see BENCHMARKS.md).  Identical batches
give bit-identical results, which is what replica invariance relies on.
"""

from __future__ import annotations

import gc
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .base import (
    Generation,
    GenerationRequest,
    SamplingSettings,
    TokenLogprob,
    row_seed,
)
from .base import block_size as _block_size
from .constraints import ResponseFormatError, TokenMatchers, compile_error
from .cpu_threads import CoreShare, fixed_threads, process_share, user_chose_threads
from .decoder import FastDecoder, unsupported_reason
from .models import (
    ResolvedModel,
    cache_root,
    ensure_chat_template,
    load_dir,
    model_config,
    resolve_model,
)
from .reasoning import (
    TemplateReasoning,
    inspect_template,
    not_supported,
    opens_thinking,
    split_reasoning,
)
from .vision import (
    VisionError,
    chat_messages,
    decode_batch,
    encode_rows,
    image_rows,
    is_vision_config,
    neutral_generation_config,
    no_template_message,
    no_vision_message,
    processor_template,
)

logger = logging.getLogger(__name__)

#: Fastest batch size measured on 2 CPU cores (bench/inference.py, BENCHMARKS.md).
CPU_DEFAULT_BATCH_SIZE = 32
#: On an accelerator the model is tiny next to the memory; bigger batches only help.
CUDA_DEFAULT_BATCH_SIZE = 64

#: A shared prompt head shorter than this is not worth a separate forward pass.
MIN_SHARED_PREFIX = 16

#: The fast path's KV cache holds the prompt plus this many tokens at first and grows by
#: at least as much when full (a recipe may allow thousands of tokens that rows never use).
CACHE_STEP = 128
#: Prompt tails are prefilled in chunks of this many columns (see _decode_fast).
PREFILL_CHUNK = 32
#: Finished rows leave the fast path's batch once they are 1/COMPACT_DIVISOR of it.
COMPACT_DIVISOR = 8

DTYPES = ("auto", "float32", "bfloat16", "float16")

_END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>")


@dataclass
class _Prepared:
    index: int  # position in the caller's list
    row_index: int
    ids: list[int]
    budget: int = 0  # tokens this row may generate (generate sets it: see row_budget)
    thinking: bool = False  # the prompt ends inside a <think> block (engines/reasoning.py)
    text: str = ""  # the formatted prompt (vision models: the processor takes text)
    images: tuple[str, ...] = ()  # the request's data URIs (vision models)


def resolve_dtype(dtype: object, device_type: str):
    """The torch dtype for `inference.dtype` (None or "auto": bfloat16 on CUDA, float32
    elsewhere; CPU bfloat16 is fast only on CPUs with bf16 matrix instructions)."""
    import torch

    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device_type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return getattr(torch, str(dtype))


def is_out_of_memory(error: BaseException) -> bool:
    """True for the errors that mean "this batch does not fit"."""
    if isinstance(error, MemoryError):
        return True
    try:
        import torch

        if isinstance(error, torch.cuda.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


class HFEngine:
    """transformers engine. See the module docstring for batching and sampling."""

    name = "hf"

    def __init__(
        self,
        model_name_or_path: str,
        *,
        device: str | None = None,
        dtype: str | None = None,
        default_batch_size: int | None = None,
        attn_implementation: str | None = None,
        max_context: int | None = None,
        share_prefix: bool = True,
        fast_decoder: bool = True,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_name = str(model_name_or_path)  # as the recipe names it, for messages
        self.resolved: ResolvedModel = resolve_model(model_name_or_path)
        self.model_id = self.resolved.model_id
        folder = load_dir(self.resolved)

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = resolve_dtype(dtype, self.device.type)

        # a vision-language model (engines/vision.py); a GGUF is always text-only
        self.vision = not self.resolved.is_gguf and is_vision_config(model_config(self.resolved))
        self.processor = None
        model_class = AutoModelForCausalLM
        if self.vision:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            self.processor = AutoProcessor.from_pretrained(folder)
            self.tokenizer = self.processor.tokenizer
            template = processor_template(self.processor)
            if template and not getattr(self.tokenizer, "chat_template", None):
                self.tokenizer.chat_template = template
            model_class = AutoModelForImageTextToText
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.chat_template = ensure_chat_template(self.tokenizer)
        # a ChatML fallback or raw prompts have no thinking switch
        self.reasoning = (
            inspect_template(self.tokenizer.chat_template)
            if self.chat_template == "own"
            else TemplateReasoning()
        )
        self.tokenizer.padding_side = "left"
        kwargs = {"dtype": self.dtype}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        self.model = model_class.from_pretrained(folder, **kwargs).to(self.device)
        self.model.eval()

        config = self.model.config.get_text_config() if self.vision else self.model.config
        self.max_context = int(max_context or getattr(config, "max_position_embeddings", 2048))
        self.stop_ids = self._stop_ids()
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else sorted(self.stop_ids)[0])
        if self.vision:
            # no processor of the model's generation config may run before the engine's
            self.model.generation_config = neutral_generation_config(
                self.model, self.stop_ids, self.pad_id
            )
        if default_batch_size is None:
            default_batch_size = (
                CUDA_DEFAULT_BATCH_SIZE if self.device.type == "cuda" else CPU_DEFAULT_BATCH_SIZE
            )
        self.default_batch_size = int(default_batch_size)
        self.share_prefix = share_prefix
        self._pieces: dict[int, str] = {}
        self._core_share = self._claim_cpu_threads()
        # the lean forward with a preallocated cache for Llama-family models
        # (engines/decoder.py); other architectures keep the transformers forward
        self.decoder: FastDecoder | None = None
        reason = unsupported_reason(self.model) if fast_decoder else "turned off"
        if self.vision:
            reason = "a vision-language model (engines/vision.py)"
        if reason is None:
            self.decoder = FastDecoder(self.model)
        else:
            logger.info("hf engine: transformers forward (fast decoder: %s)", reason)

    def _fast(self) -> bool:
        # the fast decoder holds the weights of the model it was built from; a model put
        # in its place (a wrapper, another model) runs through its own forward
        return self.decoder is not None and self.decoder.model is self.model

    def runtime(self) -> dict[str, object]:
        """What runs the model (dtype, device, decode path, threads), for the results'
        config_general."""
        import torch

        fast = self._fast()
        decoder = "vision" if self.vision else "fast" if fast else "transformers"
        return {
            "engine": self.name,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            # fast: engines/decoder.py; transformers: the model's own forward; vision: a
            # vision-language model through model.generate (engines/vision.py)
            "decoder": decoder,
            "attention": "bmm" if fast else self.model.config._attn_implementation,
            "packed_weights": bool(fast and self.decoder.packed),
            "torch_threads": torch.get_num_threads() if self.device.type == "cpu" else None,
        }

    # ------------------------------------------------------------------ helpers

    def _claim_cpu_threads(self) -> CoreShare | None:
        """On CPU, fix torch's threads from the environment or share the cores with the
        other engine processes of this machine (engines/cpu_threads.py)."""
        import torch

        if self.device.type != "cpu" or user_chose_threads():
            return None
        fixed = fixed_threads()
        if fixed is not None:
            torch.set_num_threads(fixed)
            return None
        share = process_share(cache_root() / ".cpu-engines")
        share.acquire()
        weakref.finalize(self, share.release)
        self._take_cpu_share(share)
        return share

    @staticmethod
    def _take_cpu_share(share: CoreShare | None) -> None:
        import torch

        if share is not None:
            threads = share.threads()
            if threads != torch.get_num_threads():
                logger.info("torch threads: %d (a share of %d cores)", threads, share.cores)
                torch.set_num_threads(threads)

    def _stop_ids(self) -> set[int]:
        ids: set[int] = set()
        candidates = [self.tokenizer.eos_token_id, getattr(self.model.config, "eos_token_id", None)]
        if self.vision:  # a vision-language model's text config holds its own
            candidates.append(getattr(self.model.config.get_text_config(), "eos_token_id", None))
        gen_config = getattr(self.model, "generation_config", None)
        if gen_config is not None:
            candidates.append(gen_config.eos_token_id)
        for value in candidates:
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        vocab = self.tokenizer.get_vocab()
        ids.update(vocab[t] for t in _END_TOKENS if t in vocab)
        if not ids:
            raise ValueError("the tokenizer defines no end-of-sequence token")
        return ids

    def block_size(self, batch_size: int) -> int:
        return _block_size(batch_size)

    def check_settings(self, settings: SamplingSettings) -> None:
        """Refuse settings this model cannot follow before any row is generated."""
        if settings.reasoning_effort is not None and not self.reasoning.supported:
            raise not_supported(self.model_name)
        if settings.response_format is not None:
            problem = compile_error(settings.response_format)
            if problem is not None:
                raise ResponseFormatError(f"inference.response_format: {problem}")

    @property
    def architecture(self) -> str:
        """The model's class name, for messages (``LlamaForCausalLM``)."""
        return type(self.model).__name__

    def check_requests(self, requests: Sequence[GenerationRequest]) -> None:
        """Refuse rows with images this model cannot see before any row is generated: a
        text-only model (`VisionError`), or a vision-language model without a chat
        template to place them."""
        rows = image_rows(requests)
        if not rows:
            return
        if not self.vision:
            raise VisionError(no_vision_message(self.model_name, self.architecture, rows))
        if self.chat_template != "own":
            raise VisionError(no_template_message(self.model_name, self.architecture, rows))

    def _matchers(self, batch: list[_Prepared], settings: SamplingSettings, vocab: int):
        """Per-row grammar matchers under `response_format` (None: free text)."""
        if settings.response_format is None:
            return None
        return TokenMatchers(
            self.tokenizer, settings.response_format, len(batch), vocab, self.stop_ids
        )

    def format_prompt(self, request: GenerationRequest, reasoning_effort: str | None = None) -> str:
        """The prompt text as the model sees it (chat template, generation prompt added, the
        template's thinking switch set for `reasoning_effort`)."""
        if self.chat_template == "none":
            turns = [text for _, text in request.history] + [request.prompt]
            text = "\n\n".join(turns)
            return f"{request.system}\n\n{text}" if request.system else text
        if self.vision and self.chat_template == "own":
            # a vision-language template takes content parts (images, then the text)
            messages = chat_messages(request)
        else:
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

    def _texts_and_ids(
        self, requests: Sequence[GenerationRequest], reasoning_effort: str | None
    ) -> tuple[list[str], list[list[int]]]:
        if not requests:
            return [], []
        texts = [self.format_prompt(r, reasoning_effort) for r in requests]
        if self.vision:
            return texts, encode_rows(self, texts, requests)
        add_special = self.chat_template == "none"
        return texts, self.tokenizer(texts, add_special_tokens=add_special)["input_ids"]

    def encode(
        self, requests: Sequence[GenerationRequest], reasoning_effort: str | None = None
    ) -> list[list[int]]:
        """Prompt token ids, as `generate` feeds them to the model."""
        return self._texts_and_ids(requests, reasoning_effort)[1]

    def row_budget(self, prompt_tokens: int, max_new_tokens: int) -> int:
        """Tokens a row may generate: `max_new_tokens`, or what the prompt leaves of the
        context when that is less (0: the prompt fills the context alone)."""
        return max(0, min(max_new_tokens, self.max_context - prompt_tokens))

    def piece(self, token_id: int) -> str:
        """Decoded text of one token (memoized)."""
        text = self._pieces.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id])
            self._pieces[token_id] = text
        return text

    # ------------------------------------------------------------------ generate

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        settings: SamplingSettings,
        batch_size: int | None = None,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> list[Generation]:
        self.check_settings(settings)
        self.check_requests(requests)
        batch_size = int(batch_size or self.default_batch_size)
        block = _block_size(batch_size)
        total = len(requests)
        results: list[Generation | None] = [None] * total
        done, clipped = 0, 0

        for start in range(0, total, block):
            prepared = []
            stop = min(total, start + block)
            texts, block_ids = self._texts_and_ids(requests[start:stop], settings.reasoning_effort)
            for i in range(start, stop):
                request, ids = requests[i], block_ids[i - start]
                budget = self.row_budget(len(ids), settings.max_new_tokens)
                if budget < 1:
                    results[i] = Generation.failed(
                        request.row_index,
                        f"prompt is {len(ids)} tokens and fills the model's context of "
                        f"{self.max_context} tokens; no room is left to generate",
                        prompt_tokens=len(ids),
                        max_new_tokens=0,
                    )
                    done += 1
                    continue
                clipped += budget < settings.max_new_tokens
                thinking = settings.reasoning_effort is not None and opens_thinking(
                    texts[i - start]
                )
                text = texts[i - start] if self.vision else ""
                prepared.append(
                    _Prepared(i, request.row_index, ids, budget, thinking, text, request.images)
                )
            prepared.sort(key=lambda p: (len(p.ids), p.index))
            # a vision batch holds rows with images or rows without (engines/vision.py)
            groups = (
                [[p for p in prepared if not p.images], [p for p in prepared if p.images]]
                if self.vision
                else [prepared]
            )
            batches = [
                group[j : j + batch_size]
                for group in groups
                for j in range(0, len(group), batch_size)
            ]
            for batch in batches:
                self._take_cpu_share(self._core_share)  # other engine processes come and go
                for item, generation in zip(
                    batch, self._generate_with_retry(batch, settings), strict=True
                ):
                    results[item.index] = generation
                done += len(batch)
                if on_batch is not None:
                    on_batch(done, total)
            if not batches and on_batch is not None:
                on_batch(done, total)
        if clipped:
            logger.warning(
                "max_new_tokens=%d does not fit the model's context of %d tokens with the "
                "prompt for %d of %d rows; clipped to what each prompt leaves",
                settings.max_new_tokens,
                self.max_context,
                clipped,
                total,
            )
        return results  # type: ignore[return-value]

    def _generate_with_retry(
        self, batch: list[_Prepared], settings: SamplingSettings
    ) -> list[Generation]:
        """Run a batch; on out-of-memory halve it and retry, down to single rows."""
        try:
            return self._timed_batch(batch, settings)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            message = f"{type(error).__name__}: {error}"
        # Retried outside the `except` block, so the failed attempt's traceback (and the
        # tensors its frames hold) is released first.
        self._release_memory()
        if len(batch) == 1:
            item = batch[0]
            logger.warning("row %d does not fit in memory even alone: %s", item.row_index, message)
            error = f"out of memory: {message}"
            return [
                Generation.failed(
                    item.row_index, error, prompt_tokens=len(item.ids), max_new_tokens=item.budget
                )
            ]
        half = (len(batch) + 1) // 2
        logger.warning(
            "out of memory on a batch of %d rows; retrying as %d + %d",
            len(batch),
            half,
            len(batch) - half,
        )
        first = self._generate_with_retry(batch[:half], settings)
        return first + self._generate_with_retry(batch[half:], settings)

    def _shared_prefix(self, batch: list[_Prepared]) -> int:
        """Length of the token prefix all rows of a batch share, if worth computing once."""
        if not self.share_prefix or len(batch) < 2:
            return 0
        first = batch[0].ids
        limit = min(len(p.ids) for p in batch) - 1  # every row keeps at least one own token
        length = 0
        while length < limit and all(p.ids[length] == first[length] for p in batch[1:]):
            length += 1
        return length if length >= MIN_SHARED_PREFIX else 0

    def _release_memory(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    def _timed_batch(self, batch: list[_Prepared], settings: SamplingSettings) -> list[Generation]:
        started = time.perf_counter()
        generations = self._generate_batch(batch, settings)
        share = (time.perf_counter() - started) / len(batch)
        for generation in generations:
            generation.latency_s = share
        return generations

    def _generate_batch(
        self, batch: list[_Prepared], settings: SamplingSettings
    ) -> list[Generation]:
        """Decode one left-padded batch. The unit that the out-of-memory retry wraps."""
        if self.vision:
            steps = decode_batch(self, batch, settings)
        elif self._fast():
            steps = self._decode_fast(batch, settings)
        else:
            steps = self._decode_generic(batch, settings)
        return self._generations(batch, settings, *steps)

    def _generators(self, batch: list[_Prepared], settings: SamplingSettings) -> list | None:
        if settings.greedy:
            return None
        import torch

        generators = []
        for p in batch:
            g = torch.Generator(device=self.device)
            g.manual_seed(row_seed(settings.seed, p.row_index))
            generators.append(g)
        return generators

    def _tails(self, batch: list[_Prepared], shared: int):
        """Left-padded prompt tails (after the shared head): ids, real-token mask and
        positions, each rows x width, on the device."""
        import torch

        size = len(batch)
        tails = [p.ids[shared:] for p in batch]
        width = max(len(t) for t in tails)
        input_ids = torch.full((size, width), self.pad_id, dtype=torch.long)
        tail_mask = torch.zeros((size, width), dtype=torch.long)
        for r, tail in enumerate(tails):
            input_ids[r, width - len(tail) :] = torch.tensor(tail, dtype=torch.long)
            tail_mask[r, width - len(tail) :] = 1
        positions = shared + (tail_mask.cumsum(-1) - 1).clamp(min=0)
        device = self.device
        return input_ids.to(device), tail_mask.to(device), positions.to(device)

    def _decode_fast(self, batch: list[_Prepared], settings: SamplingSettings):
        """The decode loop over `FastDecoder` (engines/decoder.py) and its preallocated
        cache. Book-keeping stays in tensors: one host sync per step (how many rows are
        still running), the token histories are read back once at the end."""
        import torch

        decoder = self.decoder
        device = self.device
        size = len(batch)
        shared = self._shared_prefix(batch)
        input_ids, tail_mask, positions = self._tails(batch, shared)
        width = input_ids.shape[1]
        budgets = [p.budget for p in batch]
        steps = max(budgets)
        # the cache's row columns: the tails and the first CACHE_STEP tokens (grown when
        # needed); the shared head is kept once beside them
        cache = decoder.new_cache(size, width + min(steps, CACHE_STEP))
        generators = self._generators(batch, settings)
        n_top = settings.top_logprobs

        with torch.inference_mode():
            if shared:
                # The prompt head every row shares (typically the chat template's system
                # turn) is computed once, and attended by every row (engines/decoder.py).
                decoder.prefill_head(cache, torch.tensor([batch[0].ids[:shared]], device=device))
            # The tails, in chunks of columns. A chunk runs only the rows that have a real
            # token in it: the rows are sorted by length, so those are the last rows, and
            # the others' padding there is never computed (its cache columns stay masked).
            # Left padding of tails of 42 to 105 tokens wasted a fifth of the prefill.
            valid = tail_mask.bool()
            starts = [width - (len(p.ids) - shared) for p in batch]  # first real column
            chunk = min(PREFILL_CHUNK, decoder.prefill_chunk(size, shared + width))
            for a in range(0, width, chunk):
                b = min(width, a + chunk)
                first = next(r for r in range(size) if starts[r] < b)
                if any(start >= b for start in starts[first:]):
                    first = 0  # rows not sorted by length (a caller's order): every row
                part = decoder.row_range(cache, first)
                part.length = a
                logits = decoder.forward(
                    input_ids[first:, a:b], positions[first:, a:b], part, valid=valid[first:, a:b]
                )
            cache.length = width
            next_position = positions[:, -1] + 1

            tokens = torch.zeros((size, steps), dtype=torch.long, device=device)
            chosen_lps = torch.zeros((size, steps), dtype=torch.float32, device=device)
            matchers = self._matchers(batch, settings, logits.shape[-1])
            if matchers is not None:
                constrained_lps = torch.zeros((size, steps), dtype=torch.float32, device=device)
                forced = torch.zeros((size, steps), dtype=torch.bool, device=device)
            top_ids = torch.zeros((size, steps, n_top), dtype=torch.long, device=device)
            top_lps = torch.zeros((size, steps, n_top), dtype=torch.float32, device=device)
            lengths = torch.zeros(size, dtype=torch.long, device=device)
            stopped = torch.zeros(size, dtype=torch.bool, device=device)
            budget = torch.tensor(budgets, device=device)
            stop_ids = torch.tensor(sorted(self.stop_ids), device=device)
            slots = torch.arange(size, device=device)  # cache row -> batch row
            slot_rows = list(range(size))
            alive = torch.ones(size, dtype=torch.bool, device=device)
            for step in range(steps):
                row_generators = generators and [generators[r] for r in slot_rows]
                allowed = matchers and matchers.allowed(slot_rows, device)
                chosen, chosen_lp, top_lp, top_i, picked = _pick(
                    logits, settings, row_generators, allowed
                )
                tokens[slots, step] = chosen
                chosen_lps[slots, step] = chosen_lp
                if matchers is not None:
                    constrained_lps[slots, step], forced[slots, step] = picked
                    running_rows = alive.tolist()
                    matchers.advance(
                        [r for r, a in zip(slot_rows, running_rows, strict=True) if a],
                        [t for t, a in zip(chosen.tolist(), running_rows, strict=True) if a],
                    )
                if n_top:
                    top_ids[slots, step] = top_i
                    top_lps[slots, step] = top_lp
                is_stop = torch.isin(chosen, stop_ids)
                finished = alive & (is_stop | (budget[slots] <= step + 1))
                # a stop token ends the row without being part of it
                lengths[slots[finished]] = step + 1 - is_stop[finished].long()
                stopped[slots[finished]] = is_stop[finished]
                alive &= ~finished
                running = int(alive.sum())  # the step's one host sync
                if not running:
                    break
                dead = len(slot_rows) - running
                if dead and dead * COMPACT_DIVISOR >= len(slot_rows):
                    # Finished rows leave the batch once they are a share of it: dropping
                    # a row copies the whole cache, keeping it costs one row of compute per
                    # step, so rows are dropped in groups, not one by one.
                    keep = alive.nonzero()[:, 0]
                    cache = decoder.resized(cache, keep)
                    slots, alive = slots[keep], alive[keep]
                    chosen, next_position = chosen[keep], next_position[keep]
                    slot_rows = slots.tolist()
                if cache.length >= cache.capacity:
                    room = min(width + steps, cache.capacity + CACHE_STEP)
                    cache = decoder.resized(cache, capacity=room)
                logits = decoder.forward(chosen[:, None], next_position[:, None], cache)
                next_position = next_position + 1

        lengths_list, stopped_list = lengths.tolist(), stopped.tolist()
        all_tokens, all_lps = tokens.tolist(), chosen_lps.tolist()
        ids_out = [all_tokens[r][: lengths_list[r]] for r in range(size)]
        lps_out = [all_lps[r][: lengths_list[r]] for r in range(size)]
        tops_out: list[list[list[tuple[str, float]]]] = [[] for _ in range(size)]
        if n_top:
            all_top_ids, all_top_lps = top_ids.tolist(), top_lps.tolist()
            for r in range(size):
                tops_out[r] = [
                    [(self.piece(t), v) for t, v in zip(ids, lps, strict=True)]
                    for ids, lps in zip(
                        all_top_ids[r][: lengths_list[r]],
                        all_top_lps[r][: lengths_list[r]],
                        strict=True,
                    )
                ]
        finish = ["stop" if s else "length" for s in stopped_list]
        constrained = None
        if matchers is not None:
            all_clp, all_forced = constrained_lps.tolist(), forced.tolist()
            constrained = [
                (all_clp[r][: lengths_list[r]], all_forced[r][: lengths_list[r]])
                for r in range(size)
            ]
        return ids_out, lps_out, tops_out, finish, constrained

    def _decode_generic(self, batch: list[_Prepared], settings: SamplingSettings):
        """The decode loop over the transformers forward and a `DynamicCache`, for the
        architectures `FastDecoder` does not know."""
        import torch
        from transformers import DynamicCache

        device = self.device
        size = len(batch)
        shared = self._shared_prefix(batch)
        input_ids, tail_mask, positions = self._tails(batch, shared)
        mask = torch.cat(
            [torch.ones((size, shared), dtype=torch.long, device=device), tail_mask], dim=1
        )
        next_position = positions[:, -1:] + 1
        generators = self._generators(batch, settings)
        n_top = settings.top_logprobs

        chosen_ids: list[list[int]] = [[] for _ in batch]
        chosen_lps: list[list[float]] = [[] for _ in batch]
        tops: list[list[list[tuple[str, float]]]] = [[] for _ in batch]
        finish = ["length"] * size
        active = list(range(size))  # rows of `batch` still decoding, in cache order
        matchers = None
        constrained: list[tuple[list[float], list[bool]]] | None = None

        with torch.inference_mode():
            cache = DynamicCache(config=self.model.config)
            if shared:
                # the shared prompt head once, its KV cache copied to every row (see
                # _decode_fast)
                self.model(
                    input_ids=torch.tensor([batch[0].ids[:shared]], device=device),
                    position_ids=torch.arange(shared, device=device)[None],
                    cache=cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
                cache.batch_repeat_interleave(size)
            out = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            budgets = [p.budget for p in batch]
            matchers = self._matchers(batch, settings, out.logits.shape[-1])
            if matchers is not None:
                constrained = [([], []) for _ in batch]
            for _step in range(max(budgets)):
                row_generators = generators and [generators[r] for r in active]
                allowed = matchers and matchers.allowed(active, device)
                chosen, chosen_lp, top_v, top_i, picked = _pick(
                    out.logits[:, -1, :], settings, row_generators, allowed
                )
                chosen_cpu = chosen.tolist()
                lp_cpu = chosen_lp.tolist()
                if n_top:
                    top_v, top_i = top_v.tolist(), top_i.tolist()
                if matchers is not None:
                    matchers.advance(active, chosen_cpu)
                    picked_lp, picked_forced = (t.tolist() for t in picked)

                keep = []
                for k, r in enumerate(active):
                    token = chosen_cpu[k]
                    if token in self.stop_ids:
                        finish[r] = "stop"
                        continue
                    chosen_ids[r].append(token)
                    chosen_lps[r].append(lp_cpu[k])
                    if constrained is not None:
                        constrained[r][0].append(picked_lp[k])
                        constrained[r][1].append(picked_forced[k])
                    if n_top:
                        tops[r].append(
                            [(self.piece(t), v) for t, v in zip(top_i[k], top_v[k], strict=True)]
                        )
                    if len(chosen_ids[r]) < budgets[r]:
                        keep.append(k)
                if not keep:
                    break
                step_ids = chosen[:, None]
                if len(keep) < len(active):
                    index = torch.tensor(keep, device=device)
                    cache.batch_select_indices(index)
                    mask = mask.index_select(0, index)
                    next_position = next_position.index_select(0, index)
                    step_ids = step_ids.index_select(0, index)
                    active = [active[k] for k in keep]
                mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
                out = self.model(
                    input_ids=step_ids,
                    attention_mask=mask,
                    position_ids=next_position,
                    cache=cache,
                    use_cache=True,
                )
                next_position = next_position + 1
        return chosen_ids, chosen_lps, tops, finish, constrained

    def _generations(
        self,
        batch: list[_Prepared],
        settings: SamplingSettings,
        chosen_ids: list[list[int]],
        chosen_lps: list[list[float]],
        tops: list[list[list[tuple[str, float]]]],
        finish: list[str],
        constrained: list[tuple[list[float], list[bool]]] | None = None,
    ) -> list[Generation]:
        n_top = settings.top_logprobs
        generations = []
        for r, p in enumerate(batch):
            tokens = [
                TokenLogprob(
                    token=self.piece(t), logprob=lp, top=tops[r][j] if n_top else [], token_id=t
                )
                for j, (t, lp) in enumerate(zip(chosen_ids[r], chosen_lps[r], strict=True))
            ]
            if constrained is not None:
                for token, clp, was_forced in zip(tokens, *constrained[r], strict=True):
                    token.constrained_logprob, token.forced = clp, bool(was_forced)
            text = self.tokenizer.decode(chosen_ids[r], skip_special_tokens=False)
            reasoning = None
            if settings.reasoning_effort is not None:
                # `tokens` (and their log probabilities) stay every generated token, the
                # reasoning's included; only the text is split
                reasoning, text = split_reasoning(
                    text, inside=p.thinking, harmony=self.reasoning.harmony
                )
            generations.append(
                Generation(
                    row_index=p.row_index,
                    text=text,
                    tokens=tokens,
                    prompt_tokens=len(p.ids),
                    completion_tokens=len(tokens),
                    latency_s=0.0,
                    finish_reason=finish[r],
                    reasoning=reasoning,
                    max_new_tokens=p.budget,
                )
            )
        return generations


def _pick(logits, settings: SamplingSettings, generators, allowed=None):
    """One step's choice per row from the raw logits (rows x vocab): the token, its log
    probability, the `top_logprobs` most likely tokens' log probabilities and ids (None
    when 0), and under a constraint (`allowed`: rows x vocab, bool) the pair
    (constrained log probability, forced) per row (None without one).

    With `allowed`, the token is chosen among the allowed ones (greedy: the most likely
    allowed token; sampling: from the processed distribution restricted to them); its
    `logprob` and the top list stay those of the raw distribution.

    Log probabilities are ``logit - logsumexp(logits)`` in float32: the same numbers as
    ``log_softmax`` without writing a vocabulary-sized tensor per row.  The top list
    comes from the raw logits (before temperature / top-k / top-p), ties in token-id
    order, so in greedy decoding its first entry is always the chosen token (argmax's
    choice: the lowest id among equal maxima, which bfloat16 logits produce often).
    """
    import torch

    logits = logits.float()  # a copy in bfloat16/float16, the same tensor in float32
    lse = torch.logsumexp(logits, dim=-1)
    n_top = settings.top_logprobs
    top_v = top_i = None
    if n_top:
        top_v, top_i = logits.topk(n_top, dim=-1)  # sorted, descending
        # topk leaves the order of equal values open: order ties by token id
        top_i, order = top_i.sort(dim=-1)
        top_v = top_v.gather(-1, order)
        top_v, order = top_v.sort(dim=-1, descending=True, stable=True)
        top_i = top_i.gather(-1, order)
    own = top_i[:, 0] if n_top else logits.argmax(dim=-1)  # the model's top choice
    choose_from, picked = logits, None
    if allowed is not None:
        choose_from = logits.masked_fill(~allowed, float("-inf"))
    if settings.greedy:
        chosen = own if allowed is None else choose_from.argmax(dim=-1)
    else:
        chosen = _sample(choose_from, settings, generators)
    chosen_lp = logits.gather(1, chosen[:, None])[:, 0] - lse
    top_lp = top_v - lse[:, None] if n_top else None
    if allowed is not None:
        constrained_lp = choose_from.gather(1, chosen[:, None])[:, 0] - torch.logsumexp(
            choose_from, dim=-1
        )
        picked = (constrained_lp, ~allowed.gather(1, own[:, None])[:, 0])
    return chosen, chosen_lp, top_lp, top_i, picked


def _sample(logits, settings: SamplingSettings, generators) -> object:
    """Draw one token per row from the processed distribution (temperature, then top-k,
    then top-p), each row with its own generator.

    Each row draws exactly one uniform number per step from its own generator and picks
    the token by inverse CDF, so a row's draws never depend on its batch-mates.  The
    candidates come from `topk` rather than a full sort of the vocabulary (and
    `torch.multinomial`), which on CPU cost tens of milliseconds per row and step; for
    top-p the candidate set grows until it holds the nucleus of every row.
    """
    import torch

    probs = torch.softmax(logits / settings.temperature, dim=-1)
    vocab = probs.shape[-1]
    uniform = torch.cat([torch.rand(1, generator=g, device=g.device) for g in generators])
    uniform = uniform.to(probs.device, torch.float64)[:, None]

    top_k = settings.top_k if 0 < settings.top_k < vocab else vocab
    if settings.top_p >= 1.0 and top_k == vocab:
        cdf = probs.double().cumsum(dim=-1)
        picks = torch.searchsorted(cdf, uniform * cdf[:, -1:], right=True)
        return picks.clamp_(max=vocab - 1)[:, 0]

    if top_k < vocab:
        # top-k: exactly the k most likely tokens, renormalized; top-p then cuts that set
        values, indices = torch.topk(probs, top_k, dim=-1)  # sorted, descending
        values = values / values.sum(dim=-1, keepdim=True)
    else:
        # top-p alone: grow the candidate set until it holds every row's nucleus. The
        # probabilities are the full softmax, so the nucleus (and the pick) does not
        # depend on how many candidates were taken, and so not on the batch-mates.
        width = min(vocab, 256)
        while True:
            values, indices = torch.topk(probs, width, dim=-1)
            if width == vocab or bool((values.sum(dim=-1) >= settings.top_p).all()):
                break
            width = min(vocab, width * 4)
    if settings.top_p < 1.0:
        # drop a token when the tokens ranked above it already reach top_p (the first stays)
        before = values.cumsum(dim=-1) - values
        values = values.masked_fill(before >= settings.top_p, 0.0)
    cdf = values.double().cumsum(dim=-1)
    slot = torch.searchsorted(cdf, uniform * cdf[:, -1:], right=True)
    slot = slot.clamp_(max=values.shape[-1] - 1)
    return indices.gather(1, slot)[:, 0]
