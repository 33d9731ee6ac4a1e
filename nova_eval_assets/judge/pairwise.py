"""Two passes per prompt: run the judge, parse, map back to A/B, and tabulate.

For each row (``prompt``, ``response_A``, ``response_B``) the judge sees the forward prompt
(A shown as Response 1) and the backward prompt (B shown as Response 1); see
:mod:`prompts`. Each pass's raw output is kept, with its rationale, its position verdict
(``first``/``second``/``tie``, null when unparsable), its A/B preference (``A``, ``B``,
``tie`` or ``error``) and the parsing error, if any (:mod:`verdicts`).

**Soft preference** (when the engine returns token log probabilities, as the local ``hf``
judge and OpenAI-compatible servers asked for ``logprobs`` do): at the generated token
that holds the first verdict marker's verdict text, the top-k list gives the probability of
each alternative: entries that read ``1``, ``2`` or a prefix of ``tie`` once brackets and
white space are stripped (case-insensitive) are summed per alternative. They are recorded
as log probabilities (``*_verdict_logprobs``: ``first``, ``second``, ``tie``; null for an
alternative absent from the top list), and turned into the pass's probability that B is
preferred, renormalized over the three alternatives with a tie counting half:
``(p_B + p_tie / 2) / (p_first + p_second + p_tie)``, where ``p_B`` is ``p_second`` in the
forward pass and ``p_first`` in the backward pass. ``soft_b_preference`` is the mean over
the passes that have one.

**Outcome** of a row, from its two judgments (each pass is one judgment; a tie is half a
win): ``inference_error`` if neither pass has a verdict; ``inconsistent`` if one pass
prefers A and the other B (a position flip); otherwise ``A``, ``B`` or ``tie`` by whether
B's points over the passes with a verdict are below, above or at half.

**Rubric** (``rubric_llm_judge``, ``rubric=True``): each pass asks for the rubric's YAML
block instead (:mod:`rubric`); the verdict is its ``preference`` (the soft preference is
read at that token), the rationale its overall ``justification``, and the table gains each
pass's criteria (mapped back to A/B) and weighted scores (:data:`RUBRIC_JUDGMENTS_SCHEMA`).

**Images** (``mm_llm_judge``, or any judge dataset row with ``images``): both passes show
the judge the row's images with the prompt (``GenerationRequest.images``, in the row's
order); a judge that cannot see them fails before the first request
(:func:`engines.vision.check_engine_requests`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa

from nova_eval_assets.engines.base import Engine, Generation, SamplingSettings, TokenLogprob
from nova_eval_assets.engines.vision import check_engine_requests
from nova_eval_assets.judge.prompts import (
    BACKWARD,
    FORWARD,
    PASSES,
    Order,
    generation_request,
    pass_prompts,
)
from nova_eval_assets.judge.rubric import (
    RubricJudgment,
    parse_rubric,
    pass_columns,
    pass_fields,
    rubric_pass_prompts,
)
from nova_eval_assets.judge.verdicts import (
    MARKER,
    ParsedJudgment,
    Preference,
    Verdict,
    parse_judgment,
    to_ab,
)

VERDICT_LOGPROBS = pa.struct(
    [("first", pa.float64()), ("second", pa.float64()), ("tie", pa.float64())]
)


def _pass_fields(prefix: str) -> list[pa.Field]:
    return [
        pa.field(f"{prefix}_raw", pa.string()),
        pa.field(f"{prefix}_rationale", pa.string()),
        pa.field(f"{prefix}_verdict", pa.string()),
        pa.field(f"{prefix}_preference", pa.string()),
        pa.field(f"{prefix}_error", pa.string()),
        pa.field(f"{prefix}_finish_reason", pa.string()),
        pa.field(f"{prefix}_completion_tokens", pa.int32()),
        pa.field(f"{prefix}_latency_s", pa.float64()),
        pa.field(f"{prefix}_verdict_logprobs", VERDICT_LOGPROBS),
        pa.field(f"{prefix}_soft_b", pa.float64()),
    ]


#: One row per prompt; both judgments side by side.
JUDGMENTS_SCHEMA = pa.schema(
    [
        pa.field("row_index", pa.int64(), nullable=False),
        pa.field("line", pa.int64()),
        pa.field("prompt", pa.string()),
        pa.field("system", pa.string()),
        pa.field("response_A", pa.string()),
        pa.field("response_B", pa.string()),
        pa.field("metadata", pa.string()),
        pa.field("baseline", pa.string()),
        pa.field("challenger", pa.string()),
        pa.field("length_A", pa.int64()),
        pa.field("length_B", pa.int64()),
        *_pass_fields(FORWARD),
        *_pass_fields(BACKWARD),
        pa.field("soft_b_preference", pa.float64()),
        pa.field("outcome", pa.string()),
        pa.field("judge_backend", pa.string()),
        pa.field("judge_model", pa.string()),
    ]
)
#: A rubric judge's table: the same, then each pass's criteria and weighted scores.
RUBRIC_JUDGMENTS_SCHEMA = pa.schema(
    [*JUDGMENTS_SCHEMA, *pass_fields(FORWARD), *pass_fields(BACKWARD)]
)


@dataclass(frozen=True)
class JudgeItem:
    """One row to judge: a prompt and the baseline (A) and challenger (B) responses."""

    row_index: int
    prompt: str
    response_a: str
    response_b: str
    system: str | None = None
    metadata: str | None = None
    line: int | None = None
    images: tuple[str, ...] = ()  # data URIs shown with the prompt in both passes


@dataclass(frozen=True)
class PassResult:
    raw: str
    parsed: ParsedJudgment
    preference: Preference
    finish_reason: str
    completion_tokens: int
    latency_s: float
    verdict_logprobs: dict[str, float | None] | None
    soft_b: float | None


def _normalize_piece(piece: str) -> str:
    return piece.strip().strip("[]").strip().lower()


def _alternative(piece: str) -> Verdict | None:
    text = _normalize_piece(piece)
    if text == "1":
        return Verdict.FIRST
    if text == "2":
        return Verdict.SECOND
    if text and "tie".startswith(text):
        return Verdict.TIE
    return None


def verdict_distribution(
    tokens: Sequence[TokenLogprob], span: tuple[int, int] | None = None
) -> dict[str, float | None] | None:
    """Log probabilities of the three verdict alternatives at the verdict token.

    The verdict token is the generated token that holds the verdict text: at ``span`` (its
    character span in the output, as the parser found it), else at the first marker found
    by parsing the concatenated token pieces. None when there are no tokens, no verdict, or
    no top list at that token. An alternative absent from the top list is None.
    """
    if not tokens:
        return None
    pieces = [t.token for t in tokens]
    if span is None:
        match = MARKER.search("".join(pieces))
        if match is None:
            return None
        span = match.span(2)
    target, offset, position = span[0], 0, None
    for index, piece in enumerate(pieces):
        if offset <= target < offset + len(piece):
            position = index
            break
        offset += len(piece)
    if position is None or not tokens[position].top:
        return None
    mass: dict[Verdict, float] = {}
    for piece, logprob in tokens[position].top:
        verdict = _alternative(piece)
        if verdict is not None and math.isfinite(logprob):
            mass[verdict] = mass.get(verdict, 0.0) + math.exp(logprob)
    return {v.value: (math.log(mass[v]) if mass.get(v, 0.0) > 0 else None) for v in Verdict}


def soft_b_probability(logprobs: dict[str, float | None] | None, pass_name: str) -> float | None:
    """P(B preferred) for one pass from its verdict log probabilities (module docstring)."""
    if not logprobs:
        return None
    p = {k: math.exp(v) if v is not None else 0.0 for k, v in logprobs.items()}
    total = p["first"] + p["second"] + p["tie"]
    if total <= 0:
        return None
    b_position = "second" if pass_name == FORWARD else "first"
    return (p[b_position] + p["tie"] / 2) / total


def judge_pass(generation: Generation, pass_name: str, rubric: bool = False) -> PassResult:
    """Parse one pass's generation (a verdict marker, or the rubric's YAML) and map it back
    to A/B."""
    parse = parse_rubric if rubric else parse_judgment
    parsed = parse(generation.text, generation.error)
    logprobs = verdict_distribution(generation.tokens, parsed.verdict_span) if parsed.ok else None
    return PassResult(
        raw=generation.text,
        parsed=parsed,
        preference=to_ab(parsed.verdict, pass_name),
        finish_reason=generation.finish_reason,
        completion_tokens=generation.completion_tokens,
        latency_s=generation.latency_s,
        verdict_logprobs=logprobs,
        soft_b=soft_b_probability(logprobs, pass_name),
    )


def row_outcome(forward: Preference, backward: Preference) -> str:
    """A row's outcome from its two judgments (see the module docstring)."""
    valid = [p for p in (forward, backward) if p is not Preference.ERROR]
    if not valid:
        return "inference_error"
    if {forward, backward} == {Preference.A, Preference.B}:
        return "inconsistent"
    points = sum(1.0 if p is Preference.B else 0.5 if p is Preference.TIE else 0.0 for p in valid)
    share = points / len(valid)
    return "B" if share > 0.5 else "A" if share < 0.5 else "tie"


def judge_items(
    engine: Engine,
    items: Sequence[JudgeItem],
    settings: SamplingSettings,
    *,
    order: Order = "rationale_first",
    show_system: bool = True,
    batch_size: int | None = None,
    baseline: str = "A",
    challenger: str = "B",
    backend: str | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    rubric: bool = False,
) -> pa.Table:
    """Judge every item in both passes and return the judgments table (one row per item).

    Requests are interleaved (forward, backward, forward, ...) and sent to the engine in
    one call, so a batching engine fills its batches with both passes. ``show_system``
    False hides the items' system prompts from the judge (they stay in the table). An
    item's images go with both of its passes; an engine that cannot show them fails here,
    before any request is sent. ``rubric``: the rubric judge (module docstring); ``order``
    does not apply to it.
    """
    requests = []
    for position, item in enumerate(items):
        system = item.system if show_system else None
        prompts = (
            rubric_pass_prompts(item.prompt, item.response_a, item.response_b, system)
            if rubric
            else pass_prompts(item.prompt, item.response_a, item.response_b, system, order)
        )
        requests += [
            replace(generation_request(position, p, prompts[p]), images=tuple(item.images))
            for p in PASSES
        ]
    check_engine_requests(engine, requests)
    generations = (
        engine.generate(requests, settings, batch_size, on_batch=on_batch) if requests else []
    )
    rows = []
    for position, item in enumerate(items):
        results = {
            p: judge_pass(generations[2 * position + k], p, rubric) for k, p in enumerate(PASSES)
        }
        rows.append(
            judgment_row(
                item, results, baseline, challenger, backend or engine.name, engine.model_id
            )
        )
    schema = RUBRIC_JUDGMENTS_SCHEMA if rubric else JUDGMENTS_SCHEMA
    return pa.Table.from_pylist(rows, schema=schema)


def judgment_row(
    item: JudgeItem,
    results: dict[str, PassResult],
    baseline: str,
    challenger: str,
    backend: str,
    model_id: str,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "row_index": item.row_index,
        "line": item.line,
        "prompt": item.prompt,
        "system": item.system,
        "response_A": item.response_a,
        "response_B": item.response_b,
        "metadata": item.metadata,
        "baseline": baseline,
        "challenger": challenger,
        "length_A": len(item.response_a),
        "length_B": len(item.response_b),
    }
    for name, result in results.items():
        row.update(
            {
                f"{name}_raw": result.raw,
                f"{name}_rationale": result.parsed.rationale,
                f"{name}_verdict": result.parsed.verdict.value if result.parsed.verdict else None,
                f"{name}_preference": result.preference.value,
                f"{name}_error": result.parsed.error,
                f"{name}_finish_reason": result.finish_reason,
                f"{name}_completion_tokens": result.completion_tokens,
                f"{name}_latency_s": result.latency_s,
                f"{name}_verdict_logprobs": result.verdict_logprobs,
                f"{name}_soft_b": result.soft_b,
            }
        )
        if isinstance(result.parsed, RubricJudgment):
            row.update(pass_columns(result.parsed, name))
    softs = [r.soft_b for r in results.values() if r.soft_b is not None]
    row["soft_b_preference"] = sum(softs) / len(softs) if softs else None
    row["outcome"] = row_outcome(results[FORWARD].preference, results[BACKWARD].preference)
    row["judge_backend"] = backend
    row["judge_model"] = model_id
    return row


__all__ = [
    "JUDGMENTS_SCHEMA",
    "RUBRIC_JUDGMENTS_SCHEMA",
    "JudgeItem",
    "PassResult",
    "judge_items",
    "judge_pass",
    "judgment_row",
    "row_outcome",
    "soft_b_probability",
    "verdict_distribution",
]
