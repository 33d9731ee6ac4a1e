"""inspect: an Inspect AI task (or several) run as a nova-eval evaluation (our extension).

``evaluation.inspect_task`` names the tasks as Inspect does: ``path/to/file.py@task_name``
(a local file, relative to the recipe, or an ``s3://`` file, as AWS's Inspect container
takes them), ``path/to/file.py`` (every task in it), or a registered name such as
``inspect_evals/gpqa_diamond``; ``evaluation.inspect_args`` are the task's arguments. A task
file is Python code: it is imported and run (nova-eval validate says so).

Each of the tasks' samples is a row: validation, replicas, resume by block and the tables
work on them as on any benchmark's rows. Inference runs the task's solver and scorers on a
block of samples at a time (engines/inspect_runner.py) with the recipe's model, and keeps
what Inspect recorded of each row (its scores reduced over epochs, its samples) in the
inference table's ``inspect_record``; scoring reads the per-row values from it (Inspect's
``value_to_float``: C 1, I 0, P 0.5). The results hold Inspect's own metrics of each
scorer (``<scorer>_<metric>``, computed by Inspect over every row) beside the means and
stderrs of the per-row values, under ``custom|<task name>|0``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nova_eval_assets.tasks.base import (
    BenchmarkTask,
    FieldProblem,
    RowScore,
    Sample,
    ScoreInput,
    TaskOptions,
)

if TYPE_CHECKING:
    from inspect_ai import Task

NAME = "inspect"
#: the metadata keys that name a row's Inspect task and sample
TASK_FIELD, SAMPLE_ID_FIELD = "inspect_task", "sample_id"
CODE_WARNING = (
    "an Inspect task file is Python code: nova-eval imports and runs it with your "
    "permissions; run only task files you trust"
)


def _sample(row: Mapping[str, Any], subtask: str | None, options: TaskOptions) -> Sample:
    task, sample_id = row.get(TASK_FIELD), row.get(SAMPLE_ID_FIELD)
    if not isinstance(task, str) or not isinstance(sample_id, str | int):
        raise FieldProblem(SAMPLE_ID_FIELD, "a row of an Inspect task needs its task and id")
    metadata = {
        key: value
        for key, value in (row.get("metadata") or {}).items()
        if isinstance(value, str | int | float | bool) and key not in (TASK_FIELD, "subtask")
    }
    metadata.update({TASK_FIELD: task, SAMPLE_ID_FIELD: sample_id})
    return Sample(
        prompt=row["input"],
        target=row["target"],
        subtask=row.get("subtask"),
        metadata=metadata,
        system=row.get("system"),
    )


def score_values(scores: Mapping[str, Any]) -> dict[str, float]:
    """A row's Inspect scores as metrics: each scorer's value as a number (Inspect's
    ``value_to_float``), a dict-valued score as ``<scorer>_<key>`` per key."""
    from inspect_ai.scorer import value_to_float

    to_float = value_to_float()
    metrics: dict[str, float] = {}
    for scorer, score in scores.items():
        value = score.get("value")
        if isinstance(value, dict):
            for key, item in value.items():
                metrics[f"{scorer}_{key}"] = float(to_float(item))
        elif isinstance(value, list):
            metrics[scorer] = float(sum(to_float(v) for v in value) / max(len(value), 1))
        else:
            metrics[scorer] = float(to_float(value))
    return {name: value for name, value in metrics.items() if not math.isnan(value)}


def _score(rows: Sequence[ScoreInput], options: TaskOptions) -> list[RowScore]:
    scored: list[RowScore] = []
    for row in rows:
        record = json.loads(row.record) if row.record else {}
        scores = record.get("scores") or {}
        notes = [
            f"{name}: {score['explanation']}"
            for name, score in scores.items()
            if score.get("explanation")
        ]
        scored.append(RowScore(score_values(scores), "; ".join(notes)[:2000] or None))
    return scored


@dataclass(frozen=True)
class InspectBenchmark(BenchmarkTask):
    """The recipe's Inspect tasks as one benchmark: a subtask per task when there are
    several; results keys ``custom|<task name>|0``."""

    specs: tuple[str, ...] = ()
    args_json: str = "{}"
    task_names: tuple[str, ...] = ()

    @property
    def result_key(self) -> str:
        if len(self.task_names) == 1:
            return f"custom|{self.task_names[0]}|0"
        return f"custom|{NAME}|0"

    def subtask_key(self, subtask: str) -> str:
        return f"custom|{subtask}|0"

    def described(self) -> list[str]:
        """What `nova-eval validate` says of each task: its samples and scorers."""
        tasks = load_tasks(self.specs, self.args_json)
        return [f"Inspect tasks from: {', '.join(self.specs)}"] + [
            f"rows: the {len(task.dataset)} samples of Inspect task {short_name(task)}, scored by "
            f"{', '.join(scorer_names(task)) or 'no scorer'}"
            for task in tasks
        ]


#: the task as the registry knows it; a recipe's is this with its Inspect tasks
#: (:func:`inspect_benchmark`)
TASK = InspectBenchmark(
    name=NAME,
    strategy=NAME,
    metric="all",
    description="Inspect AI tasks (evaluation.inspect_task): their solvers and scorers",
    fields=(TASK_FIELD, SAMPLE_ID_FIELD, "input", "target"),
    sample=_sample,
    score=_score,
    headline="score",
    metrics=(),
    package="inspect-ai",
    notes=(CODE_WARNING,),
)


# ------------------------------------------------------------------ loading the tasks


def task_file(spec: str, cache_dir: Path) -> str:
    """``spec`` with an ``s3://`` task file fetched into ``cache_dir`` (named by its content,
    so a changed file is fetched anew); local specs and registered names unchanged."""
    if not spec.startswith("s3://"):
        return spec
    from nova_eval_assets import storage

    location, _, name = spec.partition("@")
    data = storage.read_bytes(location)
    digest = hashlib.sha256(data).hexdigest()[:16]
    local = cache_dir / "inspect-tasks" / digest / Path(location).name
    if not local.exists():
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_suffix(".partial")
        partial.write_bytes(data)
        partial.replace(local)
    return f"{local}@{name}" if name else str(local)


@cache
def load_tasks(specs: tuple[str, ...], args_json: str) -> tuple[Task, ...]:
    """The Inspect tasks the specs name, created with the arguments (once per process)."""
    from inspect_ai._eval.loader import create_file_tasks
    from inspect_ai._eval.loader import load_tasks as inspect_load_tasks

    from nova_eval_assets.tasks.sources import download_cache

    args = json.loads(args_json)
    tasks: list[Task] = []
    for spec in specs:
        local = task_file(spec, download_cache())
        if local.endswith(".py") and Path(local).is_file():  # every task in the file
            found = create_file_tasks(Path(local), None, args)
        else:
            found = inspect_load_tasks([local], args)
        if not found:
            raise FieldProblem("inspect_task", f"{spec!r} names no Inspect task")
        tasks.extend(found)
    names = [short_name(task) for task in tasks]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise FieldProblem("inspect_task", f"two tasks are named {', '.join(repeated)}")
    return tuple(tasks)


def short_name(task: Task) -> str:
    """The task's name without its package (inspect_evals/gpqa_diamond: gpqa_diamond): its
    results key, subtask and log file name."""
    return task.name.rsplit("/", 1)[-1]


def sample_ids(task: Task) -> list[str | int]:
    """Each sample's id as Inspect runs it: its own, else its position from 1."""
    return [s.id if s.id is not None else i + 1 for i, s in enumerate(task.dataset)]


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, default=str)


def _input_text(messages: Any) -> tuple[str | None, str]:
    """(system, prompt) as the prompts table shows a sample's input: the system messages,
    then every other turn as ``role: text`` (a plain string input as it is)."""
    if isinstance(messages, str):
        return None, messages
    system = "\n\n".join(m.text for m in messages if m.role == "system") or None
    turns = [m for m in messages if m.role != "system"]
    if len(turns) == 1 and turns[0].role == "user":
        return system, turns[0].text
    return system, "\n\n".join(f"{m.role}: {m.text}" for m in turns)


def iter_rows(specs: tuple[str, ...], args_json: str) -> Iterator[dict[str, Any]]:
    """The tasks' samples as rows, task by task in the order named, each in its order."""
    tasks = load_tasks(specs, args_json)
    several = len(tasks) > 1
    for task in tasks:
        for sample, sample_id in zip(task.dataset, sample_ids(task), strict=True):
            system, prompt = _input_text(sample.input)
            yield {
                TASK_FIELD: short_name(task),
                SAMPLE_ID_FIELD: sample_id,
                "input": prompt,
                "system": system,
                "target": _text(sample.target),
                "metadata": sample.metadata or {},
                "subtask": short_name(task) if several else None,
            }


def scorer_names(task: Task) -> list[str]:
    """The names Inspect gives the task's scorers' scores."""
    from inspect_ai._util.registry import registry_unqualified_name

    return [registry_unqualified_name(scorer) for scorer in task.scorer or []]


@cache
def inspect_benchmark(specs: tuple[str, ...], args_json: str) -> InspectBenchmark:
    """The benchmark of the recipe's Inspect tasks (loads them: their files are imported)."""
    tasks = load_tasks(specs, args_json)
    names = tuple(short_name(task) for task in tasks)
    metrics: list[str] = []
    for task in tasks:
        metrics.extend(name for name in scorer_names(task) if name not in metrics)
    return dataclasses.replace(
        TASK,
        description=f"Inspect AI: {', '.join(names)}",
        headline=metrics[0] if metrics else TASK.headline,
        metrics=tuple((name, None) for name in metrics),
        subtasks=names if len(names) > 1 else (),
        package_rows=lambda: iter_rows(specs, args_json),
        specs=specs,
        args_json=args_json,
        task_names=names,
    )


def code_identity(
    specs: tuple[str, ...], args: Mapping[str, Any], inspect_model: str | None
) -> str:
    """What names the tasks' code: the specs, their arguments, Inspect's provider and
    version, and the content of every local task file (a changed solver reruns)."""
    from importlib.metadata import version

    digest = hashlib.sha256()
    digest.update(json.dumps([specs, args, inspect_model], sort_keys=True, default=str).encode())
    digest.update(version("inspect-ai").encode())
    for spec in specs:
        location = Path(spec.partition("@")[0])
        if location.is_file():
            digest.update(location.read_bytes())
    return digest.hexdigest()


def task_by_name(specs: tuple[str, ...], args_json: str) -> dict[str, Task]:
    return {short_name(task): task for task in load_tasks(specs, args_json)}
