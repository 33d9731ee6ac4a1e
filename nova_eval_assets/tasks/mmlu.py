"""mmlu: Massive Multitask Language Understanding (Hendrycks et al.; MIT), Nova's
general_text_benchmark: zero-shot chain of thought, accuracy, 57 subjects as subtasks.

Prompt and answer extraction are Nova's published ones (tasks/multiple_choice.py). Rows:
``question``, ``choices`` (4 strings), ``answer`` (0-3 or A-D), ``subject`` (the subtask);
from ``dataset.path`` or the hub's ``cais/mmlu`` (test split, 14,042 rows).
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
    answer_index,
    per_row,
    required_strings,
    required_text,
)
from nova_eval_assets.tasks.multiple_choice import MMLU_LETTERS, choice_metrics, mmlu_prompt

MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge",
    "college_biology", "college_chemistry", "college_computer_science",
    "college_mathematics", "college_medicine", "college_physics", "computer_security",
    "conceptual_physics", "econometrics", "electrical_engineering", "elementary_mathematics",
    "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry",
    "high_school_computer_science", "high_school_european_history", "high_school_geography",
    "high_school_government_and_politics", "high_school_macroeconomics",
    "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history",
    "high_school_world_history", "human_aging", "human_sexuality", "international_law",
    "jurisprudence", "logical_fallacies", "machine_learning", "management", "marketing",
    "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law",
    "professional_medicine", "professional_psychology", "public_relations",
    "security_studies", "sociology", "us_foreign_policy", "virology", "world_religions",
)  # fmt: skip


def mmlu_row(row: Mapping[str, Any], subtask: str | None) -> tuple[str, list[str], int, str]:
    """(question, choices, gold index, subject) of an MMLU row, or the FieldProblem."""
    question = required_text(row, "question")
    choices = required_strings(row, "choices", 4, 4)
    gold = answer_index(row.get("answer"), len(choices))
    subject = subtask or row.get("subject")
    if not isinstance(subject, str) or not subject:
        raise FieldProblem("subject", "missing: the row's subject names its subtask")
    return question, choices, gold, subject


def _sample(row: Mapping[str, Any], subtask: str | None, options: TaskOptions) -> Sample:
    question, choices, gold, subject = mmlu_row(row, subtask)
    return Sample(mmlu_prompt(question, choices), MMLU_LETTERS[gold], subject)


def _score(row: ScoreInput, options: TaskOptions) -> dict[str, float]:
    return choice_metrics(row.output, row.target, MMLU_LETTERS, options.compat_nova, row.tokens)


TASK = BenchmarkTask(
    name="mmlu",
    strategy="zs_cot",
    metric="accuracy",
    description="MMLU, 57 subjects, zero-shot chain of thought (Nova's prompt)",
    fields=("question", "choices", "answer", "subject"),
    sample=_sample,
    score=per_row(_score),
    headline="accuracy",
    metrics=(("accuracy", None),),
    subtasks=MMLU_SUBJECTS,
    subtask_field="subject",
    hub=HubSource("cais/mmlu", "all/test-*.parquet"),
    notes=(
        "Nova's answer extraction reads the first letter after 'the correct answer is', so "
        "'is absolutely B' reads as A; evaluation.compat: nova keeps that, the default "
        "reads standalone letters only.",
    ),
)
