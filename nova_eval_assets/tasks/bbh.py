"""bbh: BIG-Bench Hard (Suzgun et al.; MIT), 27 subsets as subtasks, Nova's three-shot
chain of thought prompts and answer extraction (tasks/bbh_prompts.py), accuracy.

Rows: ``input``, ``target`` and (in a ``dataset.path`` file) ``subtask``; from the hub's
``lukaemon/bbh``, one folder per subset. By default an answer that gives the option with
its text ("(A) 12/11/1937" for "(A)") counts; ``evaluation.compat: nova`` scores it 0 as
Nova's published code does.
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
from nova_eval_assets.tasks.bbh_prompts import BBH_SUBSETS, bbh_prompt, score_bbh


def _sample(row: Mapping[str, Any], subtask: str | None, options: TaskOptions) -> Sample:
    text = required_text(row, "input")
    target = required_text(row, "target")
    subset = subtask or row.get("subtask")
    if not isinstance(subset, str) or not subset:
        raise FieldProblem("subtask", "missing: the BBH subset of the row")
    if subset not in BBH_SUBSETS:
        raise FieldProblem("subtask", f"{subset!r} is not a subtask of bbh")
    return Sample(bbh_prompt(subset, text), target, subset)


def _score(row: ScoreInput, options: TaskOptions) -> dict[str, float]:
    return {"accuracy": score_bbh(row.output, row.target, options.compat_nova)}


TASK = BenchmarkTask(
    name="bbh",
    strategy="fs_cot",
    metric="accuracy",
    description="BIG-Bench Hard, 27 subsets, three-shot chain of thought (Nova's prompts)",
    fields=("input", "target", "subtask"),
    sample=_sample,
    score=per_row(_score),
    headline="accuracy",
    metrics=(("accuracy", None),),
    subtasks=BBH_SUBSETS,
    subtask_field="subtask",
    hub=HubSource("lukaemon/bbh", "{subtask}/test-*.parquet"),
    notes=(
        "Nova's bbh extraction scores '(A) text' against '(A)' as wrong and reads the middle "
        "of three answers; evaluation.compat: nova keeps both.",
    ),
)
