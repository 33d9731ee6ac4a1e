"""`inference.reasoning_effort` for local models: the chat template's thinking switch, and
the split of a generation into its reasoning and its answer.

A local model reasons when its chat template says how:

* a template that reads ``enable_thinking`` (Qwen3, SmolLM3, GLM-4.5 ...) turns thinking
  on with ``enable_thinking=True``; its model cards document ``enable_thinking=False`` as
  the way to turn it off;
* a template that reads ``reasoning_effort`` (gpt-oss) takes the level itself;
* a template whose generation prompt already opens a ``<think>`` block (DeepSeek-R1
  distills, QwQ, Qwen3 "Thinking" checkpoints) always reasons and needs no switch.

Any other template (the bundled SmolLM2's ChatML, for one) cannot reason, and a recipe that
asks for reasoning on it is refused before inference starts, in Nova's words.

Reasoning text is marked either by ``<think>`` ... ``</think>`` or, for gpt-oss's harmony
format, by its ``analysis`` channel before the ``final`` one.  This module imports no torch;
it loads transformers' template renderer only when it inspects a template.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nova_eval_assets.recipe import Recipe

#: Template variables that switch thinking on (see the module docstring).
ENABLE_THINKING = "enable_thinking"
REASONING_EFFORT = "reasoning_effort"
SWITCHES = (ENABLE_THINKING, REASONING_EFFORT)

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# gpt-oss (harmony): <|channel|>analysis<|message|>...<|end|><|start|>assistant<|channel|>final...
HARMONY_CHANNEL = "<|channel|>"
HARMONY_ANALYSIS = "<|channel|>analysis<|message|>"
HARMONY_FINAL = "<|channel|>final<|message|>"
_HARMONY_ENDS = ("<|end|>", "<|return|>", "<|call|>")


class ReasoningNotSupportedError(ValueError):
    """The recipe asks for reasoning and the model's chat template has no way to do it."""


def not_supported(model: str) -> ReasoningNotSupportedError:
    return ReasoningNotSupportedError(
        f"Reasoning mode is enabled but model '{model}' does not support reasoning: its chat "
        f"template has no thinking switch ({ENABLE_THINKING} or {REASONING_EFFORT}) and does "
        "not open a <think> block. Set inference.reasoning_effort: null to evaluate this "
        "model without reasoning, or use a model whose chat template can reason (e.g. Qwen3, "
        "SmolLM3, gpt-oss)."
    )


@dataclass(frozen=True)
class TemplateReasoning:
    """What a chat template offers for reasoning."""

    switches: frozenset[str] = frozenset()  # which of SWITCHES the template reads
    opens_thinking: bool = False  # its generation prompt ends inside a <think> block
    harmony: bool = False  # gpt-oss channels mark the reasoning, not <think> tags

    @property
    def supported(self) -> bool:
        return bool(self.switches) or self.opens_thinking

    def template_kwargs(self, effort: str | None) -> dict[str, object]:
        """Extra `apply_chat_template` arguments for a reasoning effort (None: off).

        Off: ``enable_thinking=False`` where the template reads it (its documented off
        switch; Qwen3 and SmolLM3 think by default otherwise), and nothing else: a
        ``reasoning_effort`` template (gpt-oss) has no "off" level, so its default stays.
        On: ``enable_thinking=True`` and/or ``reasoning_effort=<effort>``, whichever the
        template reads; an ``enable_thinking`` template has no levels, any effort is "on".
        """
        kwargs: dict[str, object] = {}
        if ENABLE_THINKING in self.switches:
            kwargs[ENABLE_THINKING] = effort is not None
        if effort is not None and REASONING_EFFORT in self.switches:
            kwargs[REASONING_EFFORT] = effort
        return kwargs


def default_template(chat_template: str | dict | None) -> str | None:
    """The template a plain `apply_chat_template` uses (a tokenizer may hold named ones)."""
    if isinstance(chat_template, dict):
        return chat_template.get("default")
    return chat_template or None


def template_variables(template: str) -> frozenset[str]:
    """The variables a Jinja template reads from its caller (undeclared names)."""
    import jinja2
    import jinja2.meta

    env = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"])
    try:
        return frozenset(jinja2.meta.find_undeclared_variables(env.parse(template)))
    except jinja2.TemplateSyntaxError:
        # transformers' own tags (e.g. {% generation %}) do not parse here; the variable
        # names as words are then a close enough reading
        return frozenset(n for n in SWITCHES if re.search(rf"\b{n}\b", template))


def _generation_prompt(template: str) -> str | None:
    """The template rendered for one user turn with the generation prompt (None: fails)."""
    try:
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template(
            [[{"role": "user", "content": "x"}]], chat_template=template, add_generation_prompt=True
        )
        return rendered[0]
    except Exception:  # a template may insist on tools, a system turn, ... : not opened
        return None


def inspect_template(chat_template: str | dict | None) -> TemplateReasoning:
    """How a chat template reasons (see the module docstring); None: it cannot."""
    template = default_template(chat_template)
    if not template:
        return TemplateReasoning()
    switches = frozenset(n for n in SWITCHES if n in template_variables(template))
    prompt = _generation_prompt(template)
    return TemplateReasoning(
        switches=switches,
        opens_thinking=prompt is not None and opens_thinking(prompt),
        harmony=HARMONY_CHANNEL in template,
    )


def opens_thinking(prompt: str) -> bool:
    """True when a rendered prompt ends inside a <think> block the model is to close."""
    return prompt.rstrip().endswith(THINK_OPEN)


def split_reasoning(
    text: str, *, inside: bool = False, harmony: bool = False
) -> tuple[str | None, str]:
    """(reasoning, answer) of a generated text.

    ``<think>`` style: a block at the start of the text (or, with ``inside``, the text up to
    the first ``</think>``, when the prompt itself opened the block) is the reasoning, the
    rest the answer.  An unclosed block (the budget ran out while thinking) is all
    reasoning and an empty answer.  No block: reasoning None, the text is the answer.
    """
    if harmony:
        return _split_harmony(text)
    body = text
    if not inside:
        stripped = text.lstrip()
        if not stripped.startswith(THINK_OPEN):
            return None, text
        body = stripped[len(THINK_OPEN) :]
    end = body.find(THINK_CLOSE)
    if end < 0:
        return body.strip(), ""
    return body[:end].strip(), body[end + len(THINK_CLOSE) :].lstrip()


def _strip_harmony_end(text: str) -> str:
    for marker in _HARMONY_ENDS:
        index = text.find(marker)
        if index >= 0:
            text = text[:index]
    return text


def _split_harmony(text: str) -> tuple[str | None, str]:
    """gpt-oss: the analysis channel(s) are the reasoning, the final channel the answer."""
    final = text.rfind(HARMONY_FINAL)
    head = text if final < 0 else text[:final]
    parts = [_strip_harmony_end(p) for p in head.split(HARMONY_ANALYSIS)[1:]]
    reasoning = "\n".join(p.strip() for p in parts) if parts else None
    if final >= 0:
        return reasoning, _strip_harmony_end(text[final + len(HARMONY_FINAL) :]).strip()
    if text.lstrip().startswith(HARMONY_CHANNEL):  # still in a channel: no answer yet
        return reasoning if reasoning is not None else "", ""
    return None, text


def check_recipe_reasoning(recipe: Recipe) -> None:
    """Refuse, before anything runs, a gen_qa recipe that asks a model without a thinking
    switch to reason. Reads only the model's chat template (no weights, no conversion).
    Raises `ReasoningNotSupportedError`, or `ModelResolutionError` for a model that cannot
    be found; both are ValueErrors."""
    if recipe.inference.reasoning_effort is None or recipe.evaluation.is_judge:
        return
    if recipe.inference.engine not in ("hf", "vllm"):  # a remote model: its engine decides
        return
    from .models import load_chat_template, resolve_model

    model = recipe.run.model_name_or_path
    if not inspect_template(load_chat_template(resolve_model(model))).supported:
        raise not_supported(model)
