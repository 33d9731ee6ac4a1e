"""ifeval: Google's IFEval (Apache-2.0), 541 prompts with verifiable instructions, scored
by the 25 instruction checkers (tasks/ifeval_instructions.py) as lighteval defines them.

Per row: ``prompt_level_strict_acc`` and ``prompt_level_loose_acc`` (every instruction
followed), ``inst_level_strict_acc`` and ``inst_level_loose_acc`` (pooled over every
instruction of every row, as lighteval does). Which of them Nova reports as ``accuracy``
is not public: ours is prompt-level strict. Rows: ``prompt``, ``instruction_id_list``,
``kwargs`` (a list of objects, one per instruction); from ``dataset.path`` or the hub's
``google/IFEval``.
"""

from __future__ import annotations

import json
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

INSTRUCTIONS = "instructions"  # a row's instruction count: the instruction-level weight


def _sample(row: Mapping[str, Any], subtask: str | None, options: TaskOptions) -> Sample:
    from nova_eval_assets.tasks.ifeval_instructions import build_checker

    prompt = required_text(row, "prompt")
    ids = required_strings(row, "instruction_id_list", 1, 100)
    kwargs = row.get("kwargs")
    if hasattr(kwargs, "tolist"):
        kwargs = kwargs.tolist()
    if not isinstance(kwargs, list) or len(kwargs) != len(ids):
        raise FieldProblem("kwargs", "must be a list with one object per instruction")
    kwargs = [dict(k) if isinstance(k, Mapping) else None for k in kwargs]
    for instruction, arguments in zip(ids, kwargs, strict=True):
        try:
            build_checker(instruction, arguments or {})
        except ValueError as exc:
            raise FieldProblem("instruction_id_list", str(exc)) from exc
    target = json.dumps({"instruction_id_list": ids, "kwargs": kwargs}, ensure_ascii=False)
    return Sample(prompt, target, metadata={INSTRUCTIONS: len(ids)})


def _score(row: ScoreInput, options: TaskOptions) -> dict[str, float]:
    from nova_eval_assets.tasks.ifeval_instructions import follow_instructions

    target = json.loads(row.target)
    result = follow_instructions("", row.output, target["instruction_id_list"], target["kwargs"])
    return {
        "accuracy": result.prompt_level_strict_acc,
        "prompt_level_strict_acc": result.prompt_level_strict_acc,
        "prompt_level_loose_acc": result.prompt_level_loose_acc,
        "inst_level_strict_acc": result.inst_level_strict_acc,
        "inst_level_loose_acc": result.inst_level_loose_acc,
        INSTRUCTIONS: float(len(result.strict)),
    }


TASK = BenchmarkTask(
    name="ifeval",
    strategy="zs",
    metric="accuracy",
    description="IFEval, 541 prompts with verifiable instructions",
    fields=("prompt", "instruction_id_list", "kwargs"),
    sample=_sample,
    score=per_row(_score),
    headline="accuracy",
    metrics=(
        ("accuracy", None),
        ("prompt_level_strict_acc", None),
        ("prompt_level_loose_acc", None),
        ("inst_level_strict_acc", INSTRUCTIONS),
        ("inst_level_loose_acc", INSTRUCTIONS),
    ),
    hub=HubSource("google/IFEval", "ifeval_input_data.jsonl"),
    advised_inference={"max_new_tokens": 1280},
    notes=(
        "Which IFEval score Nova reports as accuracy is not public: ours is prompt-level "
        "strict; all four are reported.",
    ),
)
