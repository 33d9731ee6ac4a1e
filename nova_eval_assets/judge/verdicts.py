"""Strict verdict parsing, and mapping position verdicts back to A/B.

Parsing rules (:func:`parse_judgment`), applied to the judge's raw output:

1. A **verdict marker** is ``[[1]]``, ``[[2]]`` or ``[[tie]]``, or the same with single
   brackets (``[1]``, ``[2]``, ``[tie]``; small judges often drop one bracket). ``tie`` is
   case-insensitive and spaces inside the brackets are allowed (``[[ 2 ]]``). Nothing else
   is a marker: "Response 1 is better", ``**1**``, ``[[A]]`` or ``[Response 1]`` are not.
2. The output must hold **at least one** marker, and **all** its markers must name the
   **same** verdict (a repeated ``Verdict: [[2]] ... so [[2]]`` is fine). No marker, or
   markers that disagree (a judge that echoes the instructions "[[1]] if ..., [[2]] if
   ...", say), is an ``inference_error``: counted, kept with its raw text, never guessed.
3. An empty output or a generation that failed (the engine's ``error``) is an
   ``inference_error`` too.

The verdict is about **positions**: ``first`` (Response 1 is better), ``second`` or
``tie``. :func:`to_ab` maps it back to the compared responses: in the forward pass
Response 1 is ``response_A``, in the backward pass it is ``response_B``.

The **rationale** is the output with the markers (and a ``Verdict:`` label right before
one) removed and a leading ``Rationale:`` / ``Explanation:`` label dropped, trimmed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from nova_eval_assets.judge.prompts import BACKWARD, FORWARD


class Verdict(StrEnum):
    """A judge's verdict about positions."""

    FIRST = "first"
    SECOND = "second"
    TIE = "tie"


class Preference(StrEnum):
    """A verdict mapped back to the compared responses; ``error`` = ``inference_error``."""

    A = "A"
    B = "B"
    TIE = "tie"
    ERROR = "error"


_TOKEN_TO_VERDICT = {"1": Verdict.FIRST, "2": Verdict.SECOND, "tie": Verdict.TIE}

#: ``[[x]]`` or ``[x]`` with x in 1, 2, tie. The lookarounds keep ``[[[1]]]`` or ``[1]]``
#: style garbage from counting as a clean marker.
MARKER = re.compile(r"(?<!\[)\[(\[)?\s*(1|2|tie)\s*(?(1)\]\]|\])(?!\])", re.IGNORECASE)
_LABELLED_MARKER = re.compile(
    r"(?:\b(?:final\s+)?verdict\s*(?:is)?\s*[:=-]?\s*)?" + MARKER.pattern, re.IGNORECASE
)
_LEADING_LABEL = re.compile(r"^\s*(?:rationale|explanation|reasoning)\s*:\s*", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedJudgment:
    """One pass's output, parsed. ``verdict`` is None exactly when ``error`` says why."""

    verdict: Verdict | None
    rationale: str
    error: str | None = None
    #: character span of the first marker's verdict text ("1", "2" or "tie") in the output
    verdict_span: tuple[int, int] | None = None

    @property
    def ok(self) -> bool:
        return self.verdict is not None


def parse_judgment(text: str | None, generation_error: str | None = None) -> ParsedJudgment:
    """Parse a judge output under the rules in the module docstring."""
    raw = text or ""
    if generation_error:
        return ParsedJudgment(None, raw.strip(), f"generation failed: {generation_error}")
    if not raw.strip():
        return ParsedJudgment(None, "", "empty output")
    matches = list(MARKER.finditer(raw))
    if not matches:
        return ParsedJudgment(
            None, raw.strip(), "no verdict marker ([[1]], [[2]] or [[tie]]) in the output"
        )
    found = [_TOKEN_TO_VERDICT[m.group(2).lower()] for m in matches]
    distinct = sorted(set(found), key=list(Verdict).index)
    if len(distinct) > 1:
        names = ", ".join(v.value for v in distinct)
        return ParsedJudgment(None, raw.strip(), f"conflicting verdict markers ({names})")
    return ParsedJudgment(found[0], rationale_of(raw), None, matches[0].span(2))


def rationale_of(text: str) -> str:
    """The output without its verdict markers and labels (see the module docstring)."""
    stripped = _LABELLED_MARKER.sub("", text)
    stripped = _LEADING_LABEL.sub("", stripped.strip())
    return re.sub(r"\n{3,}", "\n\n", stripped).strip()


def to_ab(verdict: Verdict | None, pass_name: str) -> Preference:
    """Map a position verdict back to A/B.

    forward (A shown first):  first -> A, second -> B, tie -> tie
    backward (B shown first): first -> B, second -> A, tie -> tie
    None (unparsable) -> error, in either pass.
    """
    if pass_name not in (FORWARD, BACKWARD):
        raise ValueError(f"pass must be {FORWARD!r} or {BACKWARD!r}, got {pass_name!r}")
    if verdict is None:
        return Preference.ERROR
    if verdict is Verdict.TIE:
        return Preference.TIE
    shown_first_is_a = pass_name == FORWARD
    if verdict is Verdict.FIRST:
        return Preference.A if shown_first_is_a else Preference.B
    return Preference.B if shown_first_is_a else Preference.A


def to_position(preference: Preference, pass_name: str) -> Verdict | None:
    """The inverse of :func:`to_ab`: which position a preference was shown in."""
    if preference is Preference.ERROR:
        return None
    if preference is Preference.TIE:
        return Verdict.TIE
    a_first = pass_name == FORWARD
    if (preference is Preference.A) == a_first:
        return Verdict.FIRST
    return Verdict.SECOND


__all__ = [
    "MARKER",
    "ParsedJudgment",
    "Preference",
    "Verdict",
    "parse_judgment",
    "rationale_of",
    "to_ab",
    "to_position",
]
