"""calendar_scheduling: Google DeepMind's Natural Plan calendar task (CC-BY-4.0), as Nova
lists it (fs, exact_match). Nova's prompt and scorer are not public; ours follow Natural
Plan's own: the row's ``prompt_5shot`` as the prompt (five worked examples, then the
question), and its evaluator's rule: the first ``Day, HH:MM - HH:MM`` of the answer and of
the golden plan are read (day, start and end as hours, with the evaluator's quirk: minutes
other than ``30`` count as ``00``), and the row is solved when all three are equal. An
answer without such a plan scores 0.

Rows: ``prompt_5shot``, ``golden_plan``, ``num_people``, ``num_days`` (the fields of
Natural Plan's ``data/calendar_scheduling.json``: a JSON object of records keyed by id),
from ``dataset.path``, else downloaded at run time from Natural Plan's repository at a
pinned commit (:data:`NATURAL_PLAN_URL`) into the cache; never shipped here.
``num_people`` and ``num_days`` become metadata, so the analysis reports the solve rate by
each.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from nova_eval_assets.tasks.base import (
    BenchmarkTask,
    FieldProblem,
    Sample,
    ScoreInput,
    TaskOptions,
    per_row,
    required_text,
)

NATURAL_PLAN_URL = (
    "https://raw.githubusercontent.com/google-deepmind/natural-plan/"
    "9b79bc4d52ee1c5bfd6eb4d4bb24d88e828f8b84/data/calendar_scheduling.json"
)
# Natural Plan's pattern: a day word, a comma, then a start and an end time
_PLAN = re.compile(r"[A-Za-z]+, [0-9]+:[0-9]+ - [0-9]+:[0-9]+")


def parse_plan(text: str) -> tuple[str, float, float] | None:
    """(day, start hour, end hour) of the first plan in ``text`` ("Monday, 9:30 - 10:00"
    -> ("Monday", 9.5, 10.0)), read as Natural Plan's evaluator reads it; None when it has
    none."""
    found = _PLAN.search(text or "")
    if found is None:
        return None
    day, times = found.group(0).split(",", 1)
    start, end = (part.strip() for part in times.split("-", 1))

    def hours(clock: str) -> float:
        # Natural Plan's hour_to_num: ":30" is half an hour and any other minutes none,
        # so "10:15" reads as 10:00 (its meetings start on the hour or the half hour)
        hour, minute = clock.split(":", 1)
        return float(hour) + (0.5 if minute == "30" else 0.0)

    return day.strip(), hours(start), hours(end)


def solved(answer: str, golden_plan: str) -> bool:
    """The evaluator's rule: the first plans of both are equal (and the answer has one)."""
    given = parse_plan(answer)
    return given is not None and given == parse_plan(golden_plan)


def _count(row: Mapping[str, Any], name: str) -> int:
    value = row.get(name)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FieldProblem(name, f"must be a positive integer, got {value!r}")
    return value


def _sample(row: Mapping[str, Any], subtask: str | None, options: TaskOptions) -> Sample:
    prompt = required_text(row, "prompt_5shot")
    golden = required_text(row, "golden_plan")
    if parse_plan(golden) is None:
        raise FieldProblem("golden_plan", "has no plan of the form 'Day, HH:MM - HH:MM'")
    metadata = {"num_people": _count(row, "num_people"), "num_days": _count(row, "num_days")}
    return Sample(prompt, golden, metadata=metadata)


def _score(row: ScoreInput, options: TaskOptions) -> dict[str, float]:
    return {"exact_match": float(solved(row.output, row.target))}


TASK = BenchmarkTask(
    name="calendar_scheduling",
    strategy="fs",
    metric="exact_match",
    description="Natural Plan's calendar scheduling, 5-shot; solved when day and times match",
    fields=("prompt_5shot", "golden_plan", "num_people", "num_days"),
    sample=_sample,
    score=per_row(_score),
    headline="exact_match",
    metrics=(("exact_match", None),),
    url=NATURAL_PLAN_URL,
    notes=(
        "Nova's prompt and scorer are not public: the prompt is Natural Plan's prompt_5shot "
        "and the score its evaluator's rule (the first 'Day, HH:MM - HH:MM' of answer and "
        "golden plan equal).",
        "Natural Plan (Google DeepMind, CC-BY-4.0) is read from dataset.path, or downloaded "
        "from its repository at run time.",
    ),
)
