"""A benchmark's scores aggregated, per subtask and over the whole task, from running sums
(memory bounded by the number of subtasks, not rows).

- A plain metric: the mean over scored rows, ``_stderr`` the standard error of that mean
  (sample std, ddof=1, / sqrt(n)), as for gen_qa (metrics/stats.py).
- A pooled metric (ifeval's instruction-level accuracies): each row holds the share of its
  weight (its instructions) that scored 1; the aggregate is the share over every unit
  pooled across rows, and ``_stderr`` that of the mean of the pooled 0/1 values.

With ``evaluation.samples`` > 1, a plain metric is first averaged over each problem's
samples (consecutive rows), and the mean and stderr are over problems: for pass@1 the mean
of c/n, its unbiased estimator.

Results as lighteval (so Nova) names them: ``custom|<task>_<strategy>:<subtask>|0`` per
subtask, ``custom|<task>_<strategy>|0`` over every row (micro average), and ``all``: the
plain mean of the subtasks' values (lighteval's macro average; Nova's eval cards report
it), or the task's own values when it has no subtasks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping

from nova_eval_assets.tasks.base import BenchmarkTask


class _Sums:
    __slots__ = ("n", "squares", "total")

    def __init__(self) -> None:
        self.n = 0.0
        self.total = 0.0
        self.squares = 0.0

    def mean_and_stderr(self) -> tuple[float, float]:
        if self.n == 0:
            return math.nan, math.nan
        mean = self.total / self.n
        if self.n <= 1:
            return mean, 0.0
        variance = max(self.squares - self.n * mean * mean, 0.0) / (self.n - 1)
        return mean, math.sqrt(variance / self.n)


class TaskTally:
    """Running sums per (subtask, metric), fed the scored rows batch by batch."""

    def __init__(self, task: BenchmarkTask):
        self.task = task
        self._sums: dict[str | None, dict[str, _Sums]] = {}
        self.rows: dict[str | None, int] = {}
        # the problem whose samples are being added: (problem, subtask), {metric: [sum, n]}
        self._problem: tuple[int, str | None] | None = None
        self._samples: dict[str, list[float]] = {}

    def add(
        self,
        subtasks: Iterable[str | None],
        metrics: Iterable[Mapping[str, float]],
        problems: Iterable[int | None] | None = None,
    ) -> None:
        """Scored rows in row order: each one's subtask, metrics and (with samples) problem."""
        problems = problems if problems is not None else _nones()
        for subtask, values, problem in zip(subtasks, metrics, problems, strict=False):
            keys = (None, subtask) if subtask is not None else (None,)
            if problem is not None and self._problem != (problem, subtask):
                self._fold()
                self._problem = (problem, subtask)
            for key in keys:
                self.rows[key] = self.rows.get(key, 0) + 1
            for name, weight_name in self.task.metrics:
                value = values.get(name)
                if value is None or math.isnan(value):
                    continue
                if weight_name is not None:  # units of 0/1: their squares sum to their sum
                    weight = values.get(weight_name, 0.0)
                    for key in keys:
                        self._add(key, name, value * weight, value * weight, weight)
                elif problem is not None:  # one observation per problem: _fold
                    pending = self._samples.setdefault(name, [0.0, 0.0])
                    pending[0] += value
                    pending[1] += 1
                else:
                    for key in keys:
                        self._add(key, name, value, value * value, 1.0)

    def _add(self, key: str | None, name: str, total: float, squares: float, n: float) -> None:
        entry = self._sums.setdefault(key, {}).setdefault(name, _Sums())
        entry.n += n
        entry.total += total
        entry.squares += squares

    def _fold(self) -> None:
        """The current problem's samples as one observation: their mean."""
        if self._problem is not None:
            subtask = self._problem[1]
            for name, (total, count) in self._samples.items():
                mean = total / count
                for key in (None, subtask) if subtask is not None else (None,):
                    self._add(key, name, mean, mean * mean, 1.0)
        self._problem, self._samples = None, {}

    def _values(self, key: str | None) -> dict[str, float]:
        out: dict[str, float] = {}
        sums = self._sums.get(key, {})
        for name in self.task.metric_names:
            mean, stderr = sums[name].mean_and_stderr() if name in sums else (math.nan, math.nan)
            out[name] = mean
            out[f"{name}_stderr"] = stderr
        return out

    def results(self) -> dict[str, dict[str, float]]:
        """Nova's results entries: the task's, each subtask's seen, and ``all``."""
        self._fold()
        task = self.task
        whole = self._values(None)
        entries = {task.result_key: whole}
        subtasks = [s for s in task.subtasks if s in self.rows]
        for subtask in subtasks:
            entries[task.subtask_key(subtask)] = self._values(subtask)
        if subtasks:
            macro: dict[str, float] = {}
            for name in task.metric_names:
                values = [entries[task.subtask_key(s)][name] for s in subtasks]
                errors = [entries[task.subtask_key(s)][f"{name}_stderr"] for s in subtasks]
                macro[name] = sum(values) / len(values)
                # the subtasks are independent samples: the stderr of their mean
                macro[f"{name}_stderr"] = math.sqrt(sum(e * e for e in errors)) / len(errors)
            entries["all"] = macro
        else:
            entries["all"] = dict(whole)
        return entries

    def subtask_rows(self) -> dict[str, int]:
        return {s: self.rows[s] for s in self.task.subtasks if s in self.rows}


def _nones() -> Iterator[None]:
    while True:
        yield None
