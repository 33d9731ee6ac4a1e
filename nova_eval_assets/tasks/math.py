"""math: the MATH competition problems (Hendrycks et al.), seven subjects as subtasks,
Nova's zero-shot chain of thought prompt, the last ``\\boxed{}`` answer and the PRM800K
grader Nova's published code uses (tasks/math_answers.py), exact_match.

The problems are under an AoPS takedown notice: never shipped; read at run time from
``dataset.path`` (rows: ``problem``, ``solution`` whose last boxed answer is the gold,
``subtask`` or ``type`` such as "Counting & Probability"; ``level`` kept as metadata) or
the hub's ``EleutherAI/hendrycks_math`` (one folder per subject).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nova_eval_assets.tasks.base import (
    BenchmarkTask,
    FieldProblem,
    HubSource,
    Sample,
    ScoreInput,
    TaskOptions,
    per_row,
    required_text,
)
from nova_eval_assets.tasks.math_answers import (
    MATH_SUBTASKS,
    last_boxed_answer,
    math_prompt,
    score_math,
)


def subject_name(value: str) -> str:
    """MATH's ``type`` ("Counting & Probability") as its subtask (counting_and_probability)."""
    return value.strip().lower().replace(" & ", "_and_").replace(" ", "_")


def _sample(row: Mapping[str, Any], subtask: str | None, options: TaskOptions) -> Sample:
    problem = required_text(row, "problem")
    solution = required_text(row, "solution")
    if last_boxed_answer(solution) is None:
        raise FieldProblem("solution", "has no \\boxed{} answer to score against")
    subject = subtask or row.get("subtask") or row.get("type")
    if not isinstance(subject, str) or not subject:
        raise FieldProblem("subtask", "missing: the row's subject (or MATH's type field)")
    level = row.get("level")
    metadata = {"level": level} if isinstance(level, str) else {}
    return Sample(math_prompt(problem), solution, subject_name(subject), metadata)


def _score(row: ScoreInput, options: TaskOptions) -> dict[str, float]:
    return {"exact_match": score_math(row.output, row.target)}


TASK = BenchmarkTask(
    name="math",
    strategy="zs_cot",
    metric="exact_match",
    description="MATH, seven subjects, zero-shot chain of thought (Nova's prompt and grader)",
    fields=("problem", "solution", "subtask"),
    sample=_sample,
    score=per_row(_score),
    headline="exact_match",
    metrics=(("exact_match", None),),
    subtasks=MATH_SUBTASKS,
    subtask_field="subtask",
    hub=HubSource("EleutherAI/hendrycks_math", "{subtask}/test-*.parquet"),
    redistribution="MATH's text is under an AoPS takedown notice",
    advised_inference={"max_new_tokens": 8192},
    notes=(
        "The grader is Nova's (PRM800K's), quirks included: an unreduced fraction is "
        "wrong, and an answer in \\fbox{} is not read.",
    ),
)
