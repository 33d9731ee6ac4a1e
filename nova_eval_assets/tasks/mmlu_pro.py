"""mmlu_pro: MMLU-Pro (TIGER-Lab; MIT), ten-option questions, Nova's zero-shot chain of
thought prompt and extraction (tasks/multiple_choice.py), accuracy. Rows: ``question``,
``options`` (up to 10 strings), ``answer`` (a letter or index; ``answer_index`` also read),
``category`` kept as metadata; from ``dataset.path`` or the hub's ``TIGER-Lab/MMLU-Pro``
(test split, 12,032 rows)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nova_eval_assets.tasks.base import (
    BenchmarkTask,
    HubSource,
    Sample,
    ScoreInput,
    TaskOptions,
    answer_index,
    per_row,
    required_strings,
    required_text,
)
from nova_eval_assets.tasks.multiple_choice import MMLU_PRO_LETTERS, choice_metrics, mmlu_pro_prompt


def _sample(row: Mapping[str, Any], subtask: str | None, options: TaskOptions) -> Sample:
    question = required_text(row, "question")
    choices = required_strings(row, "options", 1, len(MMLU_PRO_LETTERS))
    gold = row.get("answer") if row.get("answer") is not None else row.get("answer_index")
    index = answer_index(gold, len(choices))
    category = row.get("category")
    metadata = {"category": category} if isinstance(category, str) else {}
    return Sample(mmlu_pro_prompt(question, choices), MMLU_PRO_LETTERS[index], metadata=metadata)


def _score(row: ScoreInput, options: TaskOptions) -> dict[str, float]:
    return choice_metrics(row.output, row.target, MMLU_PRO_LETTERS, options.compat_nova, row.tokens)


TASK = BenchmarkTask(
    name="mmlu_pro",
    strategy="zs_cot",
    metric="accuracy",
    description="MMLU-Pro, up to ten options, zero-shot chain of thought (Nova's prompt)",
    fields=("question", "options", "answer"),
    sample=_sample,
    score=per_row(_score),
    headline="accuracy",
    metrics=(("accuracy", None),),
    hub=HubSource("TIGER-Lab/MMLU-Pro", "data/test-*.parquet"),
    notes=(
        "Nova's extraction reads the first letter A-J after 'the correct answer is', so 'is "
        "indeed (C)' reads as I; evaluation.compat: nova keeps that.",
    ),
)
