"""aime_2024: the 30 problems of AIME 2024, as lighteval 0.10 defines the task (Nova's
code is not public): lighteval's prompt, exact_match of the final integer answer (0-999).

lighteval extracts with math-verify; we read the last ``\\boxed{}`` (else "the final answer
is N") and compare integers (tasks/math_answers.py): an answer written as an expression
("\\frac{408}{2}") scores 0 here. The problems are under an AoPS takedown notice: never
shipped; rows (``problem``, ``answer``) from ``dataset.path`` or the hub's
``HuggingFaceH4/aime_2024``.
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
from nova_eval_assets.tasks.math_answers import aime_integer, aime_prompt, score_aime


def _sample(row: Mapping[str, Any], subtask: str | None, options: TaskOptions) -> Sample:
    problem = required_text(row, "problem")
    answer = row.get("answer")
    text = str(answer).strip() if isinstance(answer, str | int) else ""
    number = aime_integer(text) if text else None
    if number is None or not 0 <= number <= 999:
        raise FieldProblem("answer", f"must be an integer 0-999, got {answer!r}")
    return Sample(aime_prompt(problem), str(number))


def _score(row: ScoreInput, options: TaskOptions) -> dict[str, float]:
    return {"exact_match": score_aime(row.output, row.target)}


TASK = BenchmarkTask(
    name="aime_2024",
    strategy="zs_cot",
    metric="exact_match",
    description="AIME 2024, 30 problems, integer answers (lighteval's definition)",
    fields=("problem", "answer"),
    sample=_sample,
    score=per_row(_score),
    headline="exact_match",
    metrics=(("exact_match", None),),
    hub=HubSource("HuggingFaceH4/aime_2024", "*train-*.parquet"),
    redistribution="AIME's text is under an AoPS takedown notice",
    advised_inference={"max_new_tokens": 32768},
    notes=("lighteval scores aime_2024 with math-verify; we compare the final integer.",),
)
