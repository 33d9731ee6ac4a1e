"""The tasks: every module of this package that defines ``TASK`` (a :class:`BenchmarkTask`,
or a :class:`PipelineTask` for gen_qa and the judges), found by name, so that a new task is
one new module."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from nova_eval_assets import tasks as _package
from nova_eval_assets.tasks.base import BenchmarkTask, PipelineTask


@cache
def all_tasks() -> dict[str, BenchmarkTask | PipelineTask]:
    """evaluation.task -> task, for every module that defines ``TASK``: gen_qa and the
    judges first, then the benchmarks by name."""
    found: dict[str, BenchmarkTask | PipelineTask] = {}
    for module in pkgutil.iter_modules(_package.__path__):
        task = getattr(importlib.import_module(f"{_package.__name__}.{module.name}"), "TASK", None)
        if isinstance(task, BenchmarkTask | PipelineTask):
            if task.name in found:
                raise RuntimeError(f"two tasks are named {task.name!r}")
            found[task.name] = task
    pipelines = ("gen_qa", "llm_judge", "mm_llm_judge", "rubric_llm_judge")
    pipelines = [name for name in pipelines if name in found]
    return {name: found[name] for name in [*pipelines, *sorted(set(found) - set(pipelines))]}


def benchmark_tasks() -> dict[str, BenchmarkTask]:
    """evaluation.task -> task, for the benchmarks."""
    return {name: t for name, t in all_tasks().items() if isinstance(t, BenchmarkTask)}


def benchmark_task(name: str) -> BenchmarkTask | None:
    """The benchmark task named ``name`` (None: gen_qa, a judge, or no task)."""
    return benchmark_tasks().get(name)


def task_names() -> list[str]:
    return list(all_tasks())


def _listed(values: list[str]) -> str:
    quoted = [f"'{v}'" for v in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def task_problem(task: str) -> str | None:
    """Why evaluation.task names no task (None: it does), listing the tasks."""
    if task not in all_tasks():
        return f"{task!r} is not a task; allowed: {_listed(task_names())}"
    return None


def nova_pairing(task: str) -> tuple[str, str]:
    """The (strategy, metric) Nova pairs with a known ``task``."""
    known = all_tasks()[task]
    return known.strategy, known.metric


def subtask_problem(task: str, subtasks: list[str]) -> str | None:
    """Why evaluation.subtask names are not the task's (None: they are)."""
    benchmark = benchmark_task(task)
    allowed = list(benchmark.subtasks) if benchmark is not None else []
    if not allowed and subtasks:
        return f"task '{task}' has no subtasks; leave evaluation.subtask empty"
    unknown = [s for s in subtasks if s not in allowed]
    if unknown:
        return (
            f"{_listed(unknown)} {'is not a subtask' if len(unknown) == 1 else 'are not subtasks'}"
            f" of '{task}'; allowed: {', '.join(allowed)}"
        )
    return None
