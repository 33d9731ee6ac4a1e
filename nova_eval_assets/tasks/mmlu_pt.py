"""mmlu_pt: MMLU for a pre-trained (not instruction-tuned) model, Nova's
general_pt_benchmark (Nova 2.0 Micro's recipe: ``max_new_tokens: 1``, ``top_logprobs: 5``).

Nova's prompt is not public; ours is the classic few-word MMLU completion prompt (HELM's,
which lighteval's ``mmlu`` uses): the subject line, the question, ``A. ...`` to ``D. ...``,
then ``Answer:``. The answer is read from the first generated token's top log
probabilities, as Nova's recipe implies: the most likely of the tokens ``A``-``D`` (a
leading space allowed) among them; when none is among them, the generated token itself.
Rows and subtasks as mmlu's (tasks/mmlu.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from nova_eval_assets.tasks.base import (
    BenchmarkTask,
    HubSource,
    Sample,
    ScoreInput,
    TaskOptions,
    per_row,
)
from nova_eval_assets.tasks.mmlu import MMLU_SUBJECTS, mmlu_row
from nova_eval_assets.tasks.multiple_choice import MMLU_LETTERS


def completion_prompt(subject: str, question: str, choices: list[str]) -> str:
    lines = [
        f"The following are multiple choice questions (with answers) about "
        f"{subject.replace('_', ' ')}.",
        "",
        question,
        *(f"{letter}. {choice}" for letter, choice in zip(MMLU_LETTERS, choices, strict=True)),
        "Answer:",
    ]
    return "\n".join(lines)


def first_token_letter(
    output: str, first_token_logprobs: Mapping[str, float] | None
) -> tuple[str | None, float]:
    """(the letter read, its probability among the letters in the top list; NaN when read
    from the output alone)."""
    letters = {}
    for token, logprob in (first_token_logprobs or {}).items():
        letter = token.strip()
        if letter in MMLU_LETTERS and letter not in letters:
            letters[letter] = logprob
    if letters:
        best = max(letters, key=letters.__getitem__)
        total = sum(math.exp(v) for v in letters.values())
        return best, math.exp(letters[best]) / total
    letter = output.strip()[:1]
    return (letter if letter in MMLU_LETTERS else None), math.nan


def _sample(row: Mapping[str, Any], subtask: str | None, options: TaskOptions) -> Sample:
    question, choices, gold, subject = mmlu_row(row, subtask)
    return Sample(completion_prompt(subject, question, choices), MMLU_LETTERS[gold], subject)


def _score(row: ScoreInput, options: TaskOptions) -> dict[str, float]:
    letter, confidence = first_token_letter(row.output, row.first_token_logprobs)
    return {"accuracy": float(letter == row.target), "confidence": confidence}


TASK = BenchmarkTask(
    name="mmlu_pt",
    strategy="zs_cot",
    metric="accuracy",
    description="MMLU for pre-trained models: the answer letter from the first token",
    fields=("question", "choices", "answer", "subject"),
    sample=_sample,
    score=per_row(_score),
    headline="accuracy",
    metrics=(("accuracy", None),),
    subtasks=MMLU_SUBJECTS,
    subtask_field="subject",
    hub=HubSource("cais/mmlu", "all/test-*.parquet"),
    needs_top_logprobs=1,
    advised_inference={"max_new_tokens": 1, "top_logprobs": 5},
    notes=("Nova's mmlu_pt prompt is not public: ours is HELM's MMLU completion prompt.",),
)
