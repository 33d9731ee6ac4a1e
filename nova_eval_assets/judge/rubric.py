"""The rubric judge (``rubric_llm_judge``): per prompt, the judge writes its own criteria,
scores both responses on each, and still gives a preference, which alone decides the
verdict. The weighted scores are for observability, as Nova says.

Nova's prompt and output format are not public; this is ours. The judge fills one YAML
block (the shape of Nova's published criterion example, ``name: {description, type,
weight}``, with each criterion's two scores and justifications beside it)::

    criteria:
      correctness:
        description: The answer gives the right number.
        type: scale            # scale: score 1..5; binary: true / false
        weight: 0.6
        score_1: 5
        justification_1: It says 4.
        score_2: 2
        justification_2: It says 5.
    preference: 1              # 1, 2 or tie (positions, as in llm_judge)
    justification: Response 1 is correct.

**Parsing** (:func:`parse_rubric`) is tolerant: a fenced ```yaml block or the text from
the first ``criteria:`` line is read; when YAML refuses it, values holding characters YAML
reads as syntax (``:``, ``#``, a leading quote ...) are quoted and it is read again; a
repeated criterion name gets a suffix (``clarity_2``) instead of silently replacing the
first; keys are matched without regard to case; ``preference`` may be ``1``, ``[[2]]``,
``Response 1`` or ``tie``. What still fails (no block, no criteria, no valid preference) is
an ``inference_error`` whose reason is kept.

**Scores** (:func:`score_criteria`): a scale score s (an integer 1..5) is normalized to
``(s - 1) / 4``, a binary score to 1 (true) or 0 (false). A criterion *counts* when its
type is known (given, or read from scores that are both true/false or both 1..5) and both
responses have a valid score; one that does not is kept in the breakdown with weight 0.
Among counted criteria a missing or unusable weight (absent, not a number, negative) is
the mean of the weights given to the others (1 when none is given); the weights are then
divided by their sum (equal when the sum is 0). A side's weighted score is the sum over
counted criteria of weight x normalized score; the margin is A minus B (-1..1).

Positions map back to A/B as in :func:`verdicts.to_ab`: in the forward pass Response 1 is
``response_A``, in the backward pass it is ``response_B``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

from nova_eval_assets.judge.prompts import (
    BACKWARD,
    FORWARD,
    JUDGE_SYSTEM_PROMPT,
    JudgePrompt,
    shown_request,
)
from nova_eval_assets.judge.verdicts import ParsedJudgment, Verdict
from nova_eval_assets.metrics.stats import mean_and_stderr

CRITERION_TYPES = ("scale", "binary")
#: the summary keys the rubric adds to llm_judge's, each with a ``_stderr`` sibling
RUBRIC_SUMMARY_KEYS = ("weighted_score_A", "weighted_score_B", "score_margin")
#: bounds of the constrained form (response_format type ``rubric``): they make every
#: constrained answer end; the longest is 2,021 characters, so 2,048 tokens always hold one
MAX_CRITERIA = 4
MAX_TEXT = 100

_HEADER = (
    "Compare two responses to the same request. First write the criteria that matter for "
    "this request, then score both responses on each criterion, then say which response is "
    "better. Their order and length must not influence you."
)

_INSTRUCTIONS = f"""Answer with this YAML block and nothing else, replacing each <...> \
with your own words. Write 1 to {MAX_CRITERIA} criteria, each named in snake_case. type is \
scale (score 1 to 5, 5 is best) or binary (score true or false). weight says how much a \
criterion matters; the weights sum to 1. preference is 1, 2 or tie. Write every text on one \
line, without colons.

criteria:
  <criterion_name>:
    description: <what the criterion checks>
    type: <scale or binary>
    weight: <a number from 0 to 1>
    score_1: <Response 1's score>
    justification_1: <why Response 1 gets that score>
    score_2: <Response 2's score>
    justification_2: <why Response 2 gets that score>
preference: <1, 2 or tie>
justification: <one sentence on the overall decision>"""


def render_rubric(prompt: str, first: str, second: str, system: str | None = None) -> JudgePrompt:
    """The rubric prompt that shows ``first`` as Response 1 and ``second`` as Response 2
    (the dataset's ``system`` shown as the instructions the responses had to follow)."""
    shown = shown_request(prompt, first, second, system)
    return JudgePrompt(system=JUDGE_SYSTEM_PROMPT, user=f"{_HEADER}\n\n{shown}{_INSTRUCTIONS}")


def rubric_pass_prompts(
    prompt: str, response_a: str, response_b: str, system: str | None = None
) -> dict[str, JudgePrompt]:
    """Both passes: forward shows A first, backward shows B first."""
    return {
        FORWARD: render_rubric(prompt, response_a, response_b, system),
        BACKWARD: render_rubric(prompt, response_b, response_a, system),
    }


# ------------------------------------------------------------- the constrained form

# one line of text YAML reads as a plain string: no ':' or '#', no character YAML refuses
# or reads as a line break, starting with a letter or digit
_TEXT = r"[A-Za-z0-9][^\x00-\x1f\x7f-\x9f\x{2028}\x{2029}\x{feff}:#]" + f"{{0,{MAX_TEXT - 1}}}"
_WEIGHT = r"(0\.[0-9]{1,2}|1\.0|1)"


def _scored(kind: str, score: str) -> str:
    return (
        rf"    type: {kind}\n    weight: {_WEIGHT}\n"
        rf"    score_1: {score}\n    justification_1: {_TEXT}\n"
        rf"    score_2: {score}\n    justification_2: {_TEXT}\n"
    )


def rubric_pattern() -> str:
    """The regular expression of ``response_format: {type: rubric}``: the YAML block of the
    prompt, 1 to MAX_CRITERIA criteria, texts of at most MAX_TEXT characters, the score
    range that goes with each type. Every text it allows parses (a test checks this)."""
    criterion = (
        rf"  [a-z][a-z0-9_]{{0,31}}:\n    description: {_TEXT}\n"
        rf"(?:{_scored('scale', '[1-5]')}|{_scored('binary', '(true|false)')})"
    )
    return (
        rf"criteria:\n(?:{criterion}){{1,{MAX_CRITERIA}}}"
        rf"preference: (1|2|tie)\njustification: {_TEXT}"
    )


# ------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Criterion:
    """One criterion of one judgment, in positions (1 = shown first)."""

    name: str
    description: str | None
    type: str | None  # scale | binary; None: not given and not readable from the scores
    raw_weight: float | None  # as written (None: missing or unusable)
    weight: float  # its share of the weighted scores (0 when it does not count)
    score_1: float | None  # scale 1..5, binary 1.0 / 0.0; None: missing or invalid
    score_2: float | None
    justification_1: str | None
    justification_2: str | None
    problem: str | None = None  # why it does not count, or what was repaired

    @property
    def counted(self) -> bool:
        """Both responses have a valid score of a known type: it is in the weighted scores."""
        return self.type is not None and None not in self.scores

    @property
    def scores(self) -> tuple[float | None, float | None]:
        return self.score_1, self.score_2

    def normalized(self, position: int) -> float | None:
        """A side's score on 0..1: (s - 1) / 4 for scale, the score itself for binary."""
        score = self.score_1 if position == 1 else self.score_2
        if score is None or self.type is None:
            return None
        return (score - 1) / 4 if self.type == "scale" else score


@dataclass(frozen=True)
class RubricJudgment(ParsedJudgment):
    """One pass's rubric output, parsed; ``rationale`` is the overall justification."""

    criteria: tuple[Criterion, ...] = ()


class _Loader(yaml.SafeLoader):
    """Safe YAML whose repeated mapping keys get a suffix (``name_2``) rather than
    replacing the first one silently."""


def _mapping(loader: _Loader, node: yaml.MappingNode) -> dict[str, Any]:
    loader.flatten_mapping(node)
    out: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key = str(loader.construct_object(key_node, deep=True))
        name, n = key, 2
        while name in out:
            name, n = f"{key}_{n}", n + 1
        out[name] = loader.construct_object(value_node, deep=True)
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)

_FENCE = re.compile(r"```[ \t]*(?:ya?ml)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_START = re.compile(r"^[ \t]*criteria[ \t]*:", re.MULTILINE | re.IGNORECASE)
_KEY_VALUE = re.compile(r"^(\s*(?:-\s+)?[A-Za-z0-9_][\w .-]*?\s*:)[ \t]+(\S.*?)\s*$")
_PREFERENCE = re.compile(r"^[ \t]*[\"']?preference[\"']?[ \t]*:[ \t]*", re.MULTILINE | re.I)
_POSITION = re.compile(r"^(?:response\s*_?\s*)?(1|2|tie)$")
_SCALE = re.compile(r"^([1-5])(?:\.0+)?(?:\s*/\s*5)?$")
_BINARY = {
    "true": 1.0, "yes": 1.0, "pass": 1.0, "1": 1.0,
    "false": 0.0, "no": 0.0, "fail": 0.0, "0": 0.0,
}  # fmt: skip
_BINARY_WORDS = {word for word in _BINARY if not word.isdigit()}


def _block(text: str) -> str:
    """The YAML block of an output: a fenced block, else from the first ``criteria:``."""
    fence = _FENCE.search(text)
    if fence and _START.search(fence.group(1)):
        return fence.group(1)
    start = _START.search(text)
    return text[start.start() :] if start else text


def _quote_values(block: str) -> str:
    """Each ``key: value`` line's value single-quoted (so ``:``, ``#`` or quotes in free
    text stop being YAML syntax); block scalars and values already quoted stay."""
    lines = []
    for line in block.splitlines():
        match = _KEY_VALUE.match(line)
        value = match.group(2) if match else ""
        if match and value[0] not in "'\"|>[{" and not value.startswith("- "):
            escaped = value.replace("'", "''")
            line = f"{match.group(1)} '{escaped}'"
        lines.append(line)
    return "\n".join(lines)


def _load(block: str) -> tuple[Any, str | None]:
    """(document, None) or (None, why it is not YAML), after one repair try."""
    try:
        return yaml.load(block, Loader=_Loader), None  # a SafeLoader
    except yaml.YAMLError as first:
        try:
            return yaml.load(_quote_values(block), Loader=_Loader), None
        except yaml.YAMLError:
            mark = getattr(first, "problem_mark", None)
            where = f" (line {mark.line + 1} of the block)" if mark is not None else ""
            problem = getattr(first, "problem", None) or str(first).splitlines()[0]
            return None, f"unparsable YAML: {problem}{where}"


def _keyed(mapping: dict[str, Any]) -> dict[str, Any]:
    """Keys lowercased, spaces and hyphens as underscores (the first of equal keys kept)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        out.setdefault(re.sub(r"[\s-]+", "_", key.strip().lower()), value)
    return out


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _preference(value: Any) -> Verdict | None:
    text = _text(value)
    if text is None:
        return None
    text = text.strip("[]\"' ").lower()
    match = _POSITION.match(text)
    return (
        {"1": Verdict.FIRST, "2": Verdict.SECOND, "tie": Verdict.TIE}[match[1]] if match else None
    )


def _scale(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value in (1, 2, 3, 4, 5) else None
    match = _SCALE.match(_text(value) or "")
    return float(match[1]) if match else None


def _binary(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value) if value in (0, 1) else None
    return _BINARY.get((_text(value) or "").lower())


def _weight(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        percent = text.endswith("%")
        try:
            value = float(text.rstrip("%")) / (100 if percent else 1)
        except ValueError:
            return None
    if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def _criterion(name: str, fields: Any) -> Criterion:
    """One criterion as written, before its weight is normalized (weight 0 for now)."""
    if not isinstance(fields, dict):
        return Criterion(
            name, _text(fields), None, None, 0.0, None, None, None, None, "not a mapping"
        )
    fields = _keyed(fields)
    raw = (fields.get("score_1"), fields.get("score_2"))
    kind = (_text(fields.get("type")) or "").lower() or None
    problems = []
    if kind not in CRITERION_TYPES:
        # not given (or unknown): read it from the scores when both agree on one
        if kind is not None:
            problems.append(f"type {kind!r} is not scale or binary")
        if all(isinstance(v, bool) or str(v).strip().lower() in _BINARY_WORDS for v in raw):
            kind = "binary"
        elif all(_scale(v) is not None for v in raw):
            kind = "scale"
        else:
            kind = None
    read = _scale if kind == "scale" else _binary
    scores = [read(v) if kind else None for v in raw]
    for position, (given, score) in enumerate(zip(raw, scores, strict=True), start=1):
        if given is None:
            problems.append(f"no score_{position}")
        elif score is None:
            problems.append(f"score_{position} {given!r} is not a {kind or 'known'} score")
    raw_weight = _weight(fields.get("weight"))
    if fields.get("weight") is None:
        problems.append("no weight")
    elif raw_weight is None:
        problems.append(f"weight {fields.get('weight')!r} is not a number >= 0")
    return Criterion(
        name=name,
        description=_text(fields.get("description")),
        type=kind,
        raw_weight=raw_weight,
        weight=0.0,
        score_1=scores[0],
        score_2=scores[1],
        justification_1=_text(fields.get("justification_1")),
        justification_2=_text(fields.get("justification_2")),
        problem="; ".join(problems) or None,
    )


def score_criteria(criteria: Sequence[Criterion]) -> tuple[Criterion, ...]:
    """The criteria with their normalized weights (module docstring: which count, missing
    weights, normalization); a criterion that does not count gets weight 0."""
    counted = [c.counted for c in criteria]
    given = [c.raw_weight for c, ok in zip(criteria, counted, strict=True) if ok]
    known = [w for w in given if w is not None]
    fill = sum(known) / len(known) if known else 1.0
    weights = [
        (c.raw_weight if c.raw_weight is not None else fill) if ok else 0.0
        for c, ok in zip(criteria, counted, strict=True)
    ]
    total = sum(weights)
    n = sum(counted)
    shares = [
        (w / total if total > 0 else 1.0 / n) if ok else 0.0
        for w, ok in zip(weights, counted, strict=True)
    ]
    return tuple(replace(c, weight=share) for c, share in zip(criteria, shares, strict=True))


def weighted_scores(criteria: Sequence[Criterion]) -> tuple[float, float] | None:
    """(Response 1's, Response 2's) weighted score; None when no criterion counts."""
    counted = [c for c in criteria if c.counted]
    if not counted:
        return None
    first = sum(c.weight * (c.normalized(1) or 0.0) for c in counted)
    second = sum(c.weight * (c.normalized(2) or 0.0) for c in counted)
    return first, second


def parse_rubric(text: str | None, generation_error: str | None = None) -> RubricJudgment:
    """Parse one rubric output under the module docstring's rules."""
    raw = text or ""
    if generation_error:
        return RubricJudgment(None, raw.strip(), f"generation failed: {generation_error}")
    if not raw.strip():
        return RubricJudgment(None, "", "empty output")
    document, problem = _load(_block(raw))
    if problem is not None:
        return RubricJudgment(None, raw.strip(), problem)
    if not isinstance(document, dict):
        return RubricJudgment(None, raw.strip(), "no YAML block with criteria in the output")
    document = _keyed(document)
    justification = _text(document.get("justification")) or ""
    found = document.get("criteria")
    if isinstance(found, list):  # a list of {name: ..., ...} is read as the mapping
        found = {
            str(_keyed(c).get("name", i + 1)): c for i, c in enumerate(found) if isinstance(c, dict)
        }
    if not isinstance(found, dict) or not found:
        return RubricJudgment(None, justification or raw.strip(), "no criteria in the output")
    criteria = score_criteria([_criterion(name, fields) for name, fields in found.items()])
    verdict = _preference(document.get("preference"))
    if verdict is None:
        given = document.get("preference")
        why = "no preference" if given is None else f"preference {given!r} is not 1, 2 or tie"
        return RubricJudgment(None, justification, f"{why} in the output", criteria=criteria)
    marker = _PREFERENCE.search(raw)
    span = None
    if marker is not None:
        start = marker.end()
        while start < len(raw) and raw[start] in "\"'[ ":
            start += 1
        span = (start, start + 1)
    return RubricJudgment(verdict, justification, None, span, criteria)


# ------------------------------------------------------------- per pass and per row


CRITERION_STRUCT = pa.struct(
    [
        ("name", pa.string()),
        ("description", pa.string()),
        ("type", pa.string()),
        ("raw_weight", pa.float64()),
        ("weight", pa.float64()),
        ("score_a", pa.float64()),
        ("score_b", pa.float64()),
        ("normalized_a", pa.float64()),
        ("normalized_b", pa.float64()),
        ("justification_a", pa.string()),
        ("justification_b", pa.string()),
        ("counted", pa.bool_()),
        ("problem", pa.string()),
    ]
)


def pass_fields(prefix: str) -> list[pa.Field]:
    """The rubric's per-pass columns of the judgments table."""
    return [
        pa.field(f"{prefix}_criteria", pa.list_(CRITERION_STRUCT)),
        pa.field(f"{prefix}_weighted_score_a", pa.float64()),
        pa.field(f"{prefix}_weighted_score_b", pa.float64()),
        pa.field(f"{prefix}_score_margin", pa.float64()),
    ]


def _a_first(pass_name: str) -> bool:
    if pass_name not in (FORWARD, BACKWARD):
        raise ValueError(f"pass must be {FORWARD!r} or {BACKWARD!r}, got {pass_name!r}")
    return pass_name == FORWARD


def criterion_row(criterion: Criterion, pass_name: str) -> dict[str, Any]:
    """One criterion mapped back to A/B (forward: Response 1 is A; backward: it is B)."""
    a, b = (1, 2) if _a_first(pass_name) else (2, 1)
    get = criterion.__getattribute__
    return {
        "name": criterion.name,
        "description": criterion.description,
        "type": criterion.type,
        "raw_weight": criterion.raw_weight,
        "weight": criterion.weight,
        "score_a": get(f"score_{a}"),
        "score_b": get(f"score_{b}"),
        "normalized_a": criterion.normalized(a),
        "normalized_b": criterion.normalized(b),
        "justification_a": get(f"justification_{a}"),
        "justification_b": get(f"justification_{b}"),
        "counted": criterion.counted,
        "problem": criterion.problem,
    }


def pass_columns(parsed: RubricJudgment, pass_name: str) -> dict[str, Any]:
    """A pass's rubric columns; a pass without a verdict has no weighted scores (it is an
    inference_error and counts for nothing), though its criteria are kept."""
    criteria = [criterion_row(c, pass_name) for c in parsed.criteria]
    scores = weighted_scores(parsed.criteria) if parsed.ok else None
    if scores is not None and not _a_first(pass_name):
        scores = scores[1], scores[0]
    a, b = scores if scores is not None else (None, None)
    return {
        f"{pass_name}_criteria": criteria,
        f"{pass_name}_weighted_score_a": a,
        f"{pass_name}_weighted_score_b": b,
        f"{pass_name}_score_margin": a - b if scores is not None else None,
    }


def row_scores(table: pa.Table) -> dict[str, np.ndarray]:
    """Per prompt, the mean over its passes with weighted scores (NaN: none):
    ``weighted_score_A``, ``weighted_score_B``, ``score_margin``."""
    out = {}
    for key, column in zip(
        RUBRIC_SUMMARY_KEYS, ("weighted_score_a", "weighted_score_b", "score_margin"), strict=True
    ):
        passes = np.array(
            [
                table[f"{p}_{column}"].to_numpy(zero_copy_only=False).astype(np.float64)
                for p in (FORWARD, BACKWARD)
            ]
        )
        present = ~np.isnan(passes)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[key] = np.where(
                present.any(axis=0), np.nansum(passes, axis=0) / present.sum(axis=0), np.nan
            )
    return out


def is_rubric_table(table: pa.Table) -> bool:
    return f"{FORWARD}_weighted_score_a" in table.column_names


def rubric_summary(table: pa.Table) -> dict[str, float]:
    """``weighted_score_A``, ``weighted_score_B``, ``score_margin``, each the mean over the
    prompts that have one, with ``_stderr`` (sample std / sqrt(n); prompts are the unit)."""
    out: dict[str, float] = {}
    for key, values in row_scores(table).items():
        out[key], out[f"{key}_stderr"] = mean_and_stderr(values[~np.isnan(values)])
    return out


def breakdown(criteria: Sequence[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Nova's ``criteria_breakdown`` of one pass: {criterion: {score_A, score_B, weight,
    type, description, justification_A, justification_B}} (weight: the normalized share)."""
    return {
        c["name"]: {
            "score_A": c["score_a"],
            "score_B": c["score_b"],
            "weight": c["weight"],
            "type": c["type"],
            "description": c["description"],
            "justification_A": c["justification_a"],
            "justification_B": c["justification_b"],
        }
        for c in criteria or []
    }


__all__ = [
    "CRITERION_STRUCT",
    "CRITERION_TYPES",
    "MAX_CRITERIA",
    "MAX_TEXT",
    "RUBRIC_SUMMARY_KEYS",
    "Criterion",
    "RubricJudgment",
    "breakdown",
    "criterion_row",
    "is_rubric_table",
    "parse_rubric",
    "pass_columns",
    "pass_fields",
    "render_rubric",
    "row_scores",
    "rubric_pass_prompts",
    "rubric_pattern",
    "rubric_summary",
    "score_criteria",
    "weighted_scores",
]
