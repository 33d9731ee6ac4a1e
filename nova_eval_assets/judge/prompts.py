"""The pairwise judge prompt.

Every prompt is judged twice (see :mod:`nova_eval_assets.judge.pairwise`):

- the **forward** pass shows ``response_A`` (the baseline) as *Response 1* and
  ``response_B`` (the challenger) as *Response 2*;
- the **backward** pass shows ``response_B`` as *Response 1* and ``response_A`` as
  *Response 2*.

The judge only ever sees positions ("Response 1", "Response 2"), never which response is
the baseline, so its verdict is about positions; :mod:`verdicts` maps it back to A/B.

The judge is asked for a short rationale and a verdict marker, ``[[1]]``, ``[[2]]`` or
``[[tie]]`` (see :mod:`verdicts` for the exact parsing rules). The dataset's ``system``
prompt, when given, is shown as the instructions the responses had to follow (unless
``judge.show_system`` is false). ``order`` decides whether the rationale comes before the
verdict (``rationale_first``, the default: the judge reasons before deciding) or after it
(``verdict_first``: the verdict is the first thing asked for, so a small
``max_new_tokens`` reaches it, and the log probabilities of the verdict token are the
judge's preference given the prompt alone; a 135M judge needs it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nova_eval_assets.engines.base import GenerationRequest

Order = Literal["rationale_first", "verdict_first"]
ORDERS: tuple[str, ...] = ("rationale_first", "verdict_first")
FORWARD, BACKWARD = "forward", "backward"
PASSES: tuple[str, str] = (FORWARD, BACKWARD)

JUDGE_SYSTEM_PROMPT = (
    "You are an impartial judge. You compare two responses to the same request and decide "
    "which one is better."
)

_HEADER = (
    "Compare two responses to the same request. Judge how correct and helpful they are and "
    "how well they follow the request; their order and length must not influence you."
)

_CONTEXT = "[Instructions the assistant was given]\n{system}\n\n"

_BODY = "[User request]\n{prompt}\n\n[Response 1]\n{first}\n\n[Response 2]\n{second}\n\n"

_QUESTION = "Which response is better, Response 1 or Response 2? "

_INSTRUCTIONS: dict[str, str] = {
    "rationale_first": (
        "Explain your decision in one or two sentences, then end with the verdict "
        "[[1]], [[2]] or [[tie]]."
    ),
    "verdict_first": (
        "Start your answer with the verdict [[1]], [[2]] or [[tie]], then give one sentence "
        "of reasoning."
    ),
}


@dataclass(frozen=True)
class JudgePrompt:
    """The text a judge sees for one pass: its system prompt and the user turn."""

    system: str
    user: str


def render(
    prompt: str,
    first: str,
    second: str,
    system: str | None = None,
    order: Order = "rationale_first",
) -> JudgePrompt:
    """The judge prompt that shows ``first`` as Response 1 and ``second`` as Response 2.

    ``system`` is the system prompt the judged assistants were given (the dataset's
    ``system`` field); when present it is shown to the judge as the instructions the
    responses should follow.
    """
    if order not in _INSTRUCTIONS:
        raise ValueError(f"unknown judge order {order!r}; allowed: {', '.join(ORDERS)}")
    shown = shown_request(prompt, first, second, system)
    return JudgePrompt(
        system=JUDGE_SYSTEM_PROMPT,
        user=f"{_HEADER}\n\n{shown}{_QUESTION}{_INSTRUCTIONS[order]}",
    )


def shown_request(prompt: str, first: str, second: str, system: str | None = None) -> str:
    """The part of a judge prompt that shows the instructions (when given), the request and
    the two responses by position; the rubric judge shows them the same way."""
    context = _CONTEXT.format(system=system.strip()) if system and system.strip() else ""
    return context + _BODY.format(prompt=prompt.strip(), first=first.strip(), second=second.strip())


def pass_prompts(
    prompt: str,
    response_a: str,
    response_b: str,
    system: str | None = None,
    order: Order = "rationale_first",
) -> dict[str, JudgePrompt]:
    """Both passes for one row: forward shows A first, backward shows B first."""
    return {
        FORWARD: render(prompt, response_a, response_b, system, order),
        BACKWARD: render(prompt, response_b, response_a, system, order),
    }


def request_index(row_position: int, pass_name: str) -> int:
    """The engine ``row_index`` of one pass: ``2 * row + 0`` (forward) or ``+ 1`` (backward).

    Engines seed sampling per ``row_index``, so each pass has its own reproducible stream.
    """
    return 2 * row_position + PASSES.index(pass_name)


def generation_request(row_position: int, pass_name: str, judge_prompt: JudgePrompt):
    return GenerationRequest(
        row_index=request_index(row_position, pass_name),
        prompt=judge_prompt.user,
        system=judge_prompt.system,
    )


__all__ = [
    "BACKWARD",
    "FORWARD",
    "JUDGE_SYSTEM_PROMPT",
    "ORDERS",
    "PASSES",
    "JudgePrompt",
    "Order",
    "generation_request",
    "pass_prompts",
    "render",
    "request_index",
    "shown_request",
]
