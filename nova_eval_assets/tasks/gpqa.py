"""gpqa: GPQA main (Rein et al.; CC-BY-4.0, whose authors ask that it never appear in
plain text online: it is never shipped, only read where the user has it), 448 questions,
Nova's zero-shot chain of thought prompt and extraction (tasks/multiple_choice.py).

Nova's published code shows every question's choices in the same order with the correct
answer always (A); by default each question gets its own order (from a hash of the
question), ``evaluation.compat: nova`` reproduces the published order. Rows: ``question``,
``correct_answer``, ``incorrect_answers`` (3 strings), or the hub CSV's own columns
(``Question``, ``Correct Answer``, ``Incorrect Answer 1``-``3``; ``Subdomain`` kept as
metadata); from ``dataset.path`` or the gated hub dataset ``Idavidrein/gpqa``.
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
    required_strings,
    required_text,
)
from nova_eval_assets.tasks.multiple_choice import (
    GPQA_LETTERS,
    choice_metrics,
    gpqa_choices,
    gpqa_prompt,
)

_HUB_COLUMNS = ("Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
                "Incorrect Answer 3")  # fmt: skip


def _fields(row: Mapping[str, Any]) -> tuple[str, str, list[str]]:
    if "Question" in row:  # the hub's CSV
        question, correct, *incorrect = (required_text(row, name) for name in _HUB_COLUMNS)
        return question, correct, incorrect
    question = required_text(row, "question")
    correct = required_text(row, "correct_answer")
    incorrect = required_strings(row, "incorrect_answers", 3, 3)
    return question, correct, incorrect


def _sample(row: Mapping[str, Any], subtask: str | None, options: TaskOptions) -> Sample:
    question, correct, incorrect = _fields(row)
    try:
        shown, gold = gpqa_choices(correct, incorrect, options.compat_nova, question)
    except ValueError as exc:
        raise FieldProblem("incorrect_answers", str(exc)) from exc
    domain = row.get("Subdomain") or row.get("subdomain")
    metadata = {"subdomain": domain} if isinstance(domain, str) else {}
    return Sample(gpqa_prompt(question, shown), gold, metadata=metadata)


def _score(row: ScoreInput, options: TaskOptions) -> dict[str, float]:
    return choice_metrics(row.output, row.target, GPQA_LETTERS, options.compat_nova, row.tokens)


TASK = BenchmarkTask(
    name="gpqa",
    strategy="zs_cot",
    metric="accuracy",
    description="GPQA main, graduate-level science, zero-shot chain of thought",
    fields=("question", "correct_answer", "incorrect_answers"),
    sample=_sample,
    score=per_row(_score),
    headline="accuracy",
    metrics=(("accuracy", None),),
    hub=HubSource("Idavidrein/gpqa", "gpqa_main.csv", gated=True),
    redistribution="GPQA's authors ask that its questions never appear in plain text online",
    notes=(
        "Nova's published gpqa shows every question's choices in one order with the answer "
        "always (A); ours orders each question's choices by a hash of the question "
        "(evaluation.compat: nova: the published order).",
    ),
)
