"""Images in prompts: vision-language models in the hf engine, and the checks that refuse
rows with images where nothing would see them.

A row's images are `GenerationRequest.images`: validated data URIs
(``data:image/<format>;base64,<data>``), shown with the prompt in their order.

**Which models see them.** A model folder whose config transformers maps in
`AutoModelForImageTextToText` (Qwen2-VL, Idefics3, SmolVLM, LLaVA, Gemma 3, ...) is a
vision-language model (`is_vision_config`); the hf engine then loads `AutoProcessor` and
`AutoModelForImageTextToText`.  Every other model (and every GGUF file: transformers reads
only the text model of one) is text-only, and rows with images fail before any row is
generated (`HFEngine.check_requests`, `no_vision_message`).  `model_vision_problem` says
the same at `nova-eval validate` time from the model's config, without loading weights.

**Prompts.** The user turn is one ``{"type": "image"}`` part per image, then
``{"type": "text", "text": prompt}``, rendered by the model's chat template (which places
its image tokens); the processor expands each image token to the image's patches and
turns the images, decoded from their data URIs with Pillow, into pixel values.  A row's
`Generation.prompt_tokens` counts the expanded image tokens, and so does its context
budget.  A vision-language model without a chat template takes text rows as raw prompts
and refuses rows with images (there is nowhere to put them).

**Decoding** (`decode_batch`): `model.generate` runs the model (it knows each family's
inputs: pixel values on the first step only, Qwen2-VL's multimodal positions, ...), and a
logits processor that sees the raw logits of every step makes every choice with the text
path's `_pick`: the same raw log probabilities, `top_logprobs` lists, per-row random
generators, `response_format` constraints, stop tokens and budgets.  It returns a one-hot
score, so generate's greedy step takes exactly that token; a row that reached its budget
is then given a stop token, which generate needs to leave it alone, and which is not part
of the row.  The model's own generation config (repetition penalty, suppressed tokens, ...)
is replaced by a neutral one at load, so no other processor runs before it.  Batches hold
either rows with images or rows without (left padded, like the text path); rows keep the
block batching of `base.block_size`, so shards reproduce an unsharded run.

This module imports no torch, transformers or Pillow at import time.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

from .base import GenerationRequest

#: Vision-language families that messages suggest.
VLM_EXAMPLES = "Qwen2-VL, Idefics3, SmolVLM"


class VisionError(ValueError):
    """Rows with images for a model (or engine) that cannot see them."""


# ---------------------------------------------------------------- checks


def image_rows(requests: Sequence[GenerationRequest]) -> int:
    """How many requests carry at least one image."""
    return sum(1 for r in requests if r.images)


def _rows_phrase(rows: int) -> str:
    return "1 row has images" if rows == 1 else f"{rows} rows have images"


def no_vision_message(model: str, architecture: str, rows: int) -> str:
    """The message for `rows` rows with images given to a text-only model."""
    return (
        f"model {model} has no vision (a text-only {architecture}); {_rows_phrase(rows)}: "
        f"use a vision-language model (e.g. {VLM_EXAMPLES})"
    )


def no_template_message(model: str, architecture: str, rows: int) -> str:
    return (
        f"model {model} (a vision-language {architecture}) has no chat template to place "
        f"images in the prompt; {_rows_phrase(rows)}: give the model folder its chat "
        "template (chat_template.jinja, or chat_template in its processor or tokenizer config)"
    )


def check_engine_requests(engine: Any, requests: Sequence[GenerationRequest]) -> None:
    """Refuse, before any generation, requests with images that `engine` cannot show its
    model: engines that know (the hf engine) define ``check_requests(requests)``; the
    others are left to answer per request (a server says whether its model takes
    images)."""
    check = getattr(engine, "check_requests", None)
    if check is not None and image_rows(requests):
        check(requests)


def is_vision_config(config: Any) -> bool:
    """Whether a transformers config (or a ``config.json`` dict) is that of a
    vision-language model: transformers maps its model type in
    `AutoModelForImageTextToText`."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    model_type = config.get("model_type") if isinstance(config, dict) else config.model_type
    return model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


def architecture_name(config: Any) -> str:
    """The model class a config names (``LlamaForCausalLM``), else its model type."""
    get = config.get if isinstance(config, dict) else lambda k: getattr(config, k, None)
    architectures = get("architectures") or []
    return str(architectures[0] if architectures else get("model_type") or "unknown model")


def model_vision_problem(model_name_or_path: str, rows_with_images: int) -> str | None:
    """For `nova-eval validate` (engine hf): the message `HFEngine.check_requests` would
    raise for a dataset with `rows_with_images` rows with images, from the model's config
    alone (no weights are loaded, no GGUF is converted); None when the model sees images
    or no row has any. Raises `ModelResolutionError` for a model that does not resolve."""
    if rows_with_images < 1:
        return None
    from .models import model_config, resolve_model

    resolved = resolve_model(model_name_or_path)
    config = model_config(resolved)
    if not resolved.is_gguf and is_vision_config(config):
        return None
    return no_vision_message(str(model_name_or_path), architecture_name(config), rows_with_images)


# ---------------------------------------------------------------- prompts


def decode_image(uri: str):
    """A data URI's image, decoded with Pillow and converted to RGB."""
    from PIL import Image

    header, mark, data = uri.partition(";base64,")
    if not mark or not header.startswith("data:image/"):
        raise ValueError(f"not a base64 image data URI: {uri[:40]!r}")
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image.convert("RGB")


def user_content(request: GenerationRequest) -> list[dict[str, str]]:
    """The user turn's parts: one image part per image, then the prompt."""
    return [{"type": "image"} for _ in request.images] + [{"type": "text", "text": request.prompt}]


def chat_messages(request: GenerationRequest) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if request.system is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": request.system}]})
    for role, text in request.history:
        messages.append({"role": role, "content": [{"type": "text", "text": text}]})
    messages.append({"role": "user", "content": user_content(request)})
    return messages


def processor_template(processor: Any) -> str | dict | None:
    """The chat template of a processor (or of its tokenizer)."""
    return getattr(processor, "chat_template", None) or getattr(
        getattr(processor, "tokenizer", None), "chat_template", None
    )


def encode_rows(engine: Any, texts: Sequence[str], requests: Sequence[GenerationRequest]):
    """Prompt token ids as the model sees them: text rows through the tokenizer, rows with
    images through the processor (each image token expanded to the image's patches)."""
    add_special = engine.chat_template == "none"
    ids: list[list[int] | None] = [None] * len(texts)
    plain = [i for i, r in enumerate(requests) if not r.images]
    if plain:
        encoded = engine.tokenizer([texts[i] for i in plain], add_special_tokens=add_special)
        for i, row in zip(plain, encoded["input_ids"], strict=True):
            ids[i] = list(row)
    for i, request in enumerate(requests):
        if request.images:
            inputs = engine.processor(
                text=[texts[i]],
                images=[[decode_image(uri) for uri in request.images]],
                add_special_tokens=add_special,
            )
            ids[i] = [int(t) for t in inputs["input_ids"][0]]
    return ids


# ---------------------------------------------------------------- decoding


def neutral_generation_config(model: Any, stop_ids: set[int], pad_id: int):
    """A generation config that adds no logits processor of its own (see the module
    docstring), keeping the model's special tokens."""
    from transformers import GenerationConfig

    old = getattr(model, "generation_config", None)
    return GenerationConfig(
        bos_token_id=getattr(old, "bos_token_id", None),
        eos_token_id=sorted(stop_ids),
        pad_token_id=pad_id,
    )


class _Chooser:
    """The logits processor of `decode_batch`: chooses every token itself (module
    docstring) and records what the engine returns."""

    def __init__(self, engine: Any, batch: Sequence[Any], settings: Any) -> None:
        self.engine = engine
        self.batch = batch
        self.settings = settings
        self.size = len(batch)
        self.budgets = [p.budget for p in batch]
        self.generators = engine._generators(batch, settings)
        self.stop_ids = engine.stop_ids
        self.stop_token = min(engine.stop_ids)
        self.alive = [True] * self.size
        self.ids: list[list[int]] = [[] for _ in batch]
        self.lps: list[list[float]] = [[] for _ in batch]
        self.tops: list[list[list[tuple[str, float]]]] = [[] for _ in batch]
        self.finish = ["length"] * self.size
        self.matchers = None
        self.constrained: list[tuple[list[float], list[bool]]] | None = None
        self.started = False

    def __call__(self, input_ids, scores):
        import torch

        from .hf import _pick

        device = scores.device
        if not self.started:
            self.started = True
            self.matchers = self.engine._matchers(self.batch, self.settings, scores.shape[-1])
            if self.matchers is not None:
                self.constrained = [([], []) for _ in self.batch]
        forced = torch.full((self.size,), self.stop_token, dtype=torch.long, device=device)
        active = [r for r in range(self.size) if self.alive[r]]
        if active:
            index = torch.tensor(active, device=device)
            logits = scores if len(active) == self.size else scores.index_select(0, index)
            generators = self.generators and [self.generators[r] for r in active]
            allowed = self.matchers and self.matchers.allowed(active, device)
            chosen, chosen_lp, top_v, top_i, picked = _pick(
                logits, self.settings, generators, allowed
            )
            forced[index] = chosen
            self._record(active, chosen, chosen_lp, top_v, top_i, picked)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, forced[:, None], 0.0)

    def _record(self, active, chosen, chosen_lp, top_v, top_i, picked) -> None:
        chosen_cpu, lp_cpu = chosen.tolist(), chosen_lp.tolist()
        n_top = self.settings.top_logprobs
        if n_top:
            top_v, top_i = top_v.tolist(), top_i.tolist()
        if self.matchers is not None:
            self.matchers.advance(active, chosen_cpu)
            picked_lp, picked_forced = (t.tolist() for t in picked)
        piece = self.engine.piece
        for k, r in enumerate(active):
            token = chosen_cpu[k]
            if token in self.stop_ids:  # ends the row without being part of it
                self.finish[r] = "stop"
                self.alive[r] = False
                continue
            self.ids[r].append(token)
            self.lps[r].append(lp_cpu[k])
            if self.constrained is not None:
                self.constrained[r][0].append(picked_lp[k])
                self.constrained[r][1].append(picked_forced[k])
            if n_top:
                pairs = zip(top_i[k], top_v[k], strict=True)
                self.tops[r].append([(piece(t), v) for t, v in pairs])
            if len(self.ids[r]) >= self.budgets[r]:
                self.alive[r] = False  # "length"; given a stop token on the next step


def model_inputs(engine: Any, batch: Sequence[Any]):
    """The processor's left-padded inputs for a batch (`_Prepared` rows with `text` and
    `images`), on the engine's device, floating tensors in the model's dtype."""
    images = [[decode_image(uri) for uri in p.images] for p in batch]
    kwargs: dict[str, Any] = {
        "text": [p.text for p in batch],
        "padding": True,
        "return_tensors": "pt",
        "add_special_tokens": engine.chat_template == "none",
    }
    if any(images):
        if not all(images):
            raise ValueError("a vision batch mixes rows with and without images")
        kwargs["images"] = images
    inputs = engine.processor(**kwargs)
    return {
        key: (
            value.to(engine.device, engine.dtype)
            if value.is_floating_point()
            else value.to(engine.device)
        )
        if hasattr(value, "is_floating_point")
        else value
        for key, value in inputs.items()
    }


def decode_batch(engine: Any, batch: Sequence[Any], settings: Any):
    """One batch through `model.generate` with `_Chooser` (module docstring); returns what
    the text path's decode loops return: ids, log probabilities, top lists, finish reasons
    and the constrained log probabilities (None without `response_format`)."""
    import torch
    from transformers import GenerationConfig, LogitsProcessorList

    chooser = _Chooser(engine, batch, settings)
    config = GenerationConfig(
        max_new_tokens=max(chooser.budgets),
        do_sample=False,
        num_beams=1,
        eos_token_id=sorted(engine.stop_ids),
        pad_token_id=engine.pad_id,
        use_cache=True,
    )
    with torch.inference_mode():
        engine.model.generate(
            **model_inputs(engine, batch),
            generation_config=config,
            logits_processor=LogitsProcessorList([chooser]),
        )
    return chooser.ids, chooser.lps, chooser.tops, chooser.finish, chooser.constrained


__all__ = [
    "VLM_EXAMPLES",
    "VisionError",
    "architecture_name",
    "chat_messages",
    "check_engine_requests",
    "decode_batch",
    "decode_image",
    "encode_rows",
    "image_rows",
    "is_vision_config",
    "model_vision_problem",
    "no_vision_message",
]
