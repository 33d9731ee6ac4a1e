"""An inspect recipe's results as Inspect computes them, and one Inspect log per task.

The examples table keeps each row's Inspect record (engines/inspect_runner.py): its
EvalSample per epoch. Inspect's own aggregation (``eval_results``: the task's reducers,
scorers and metrics, over every row of every replica) gives each task's metrics; they join
the results under ``custom|<task name>|0`` as ``<scorer>_<metric>``. Each task's samples are
then streamed into its ``.eval`` log (report/inspect_log.py), whose results are those same
numbers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from nova_eval_assets import storage
from nova_eval_assets.metrics.batch_scoring import RECORD_COLUMN
from nova_eval_assets.tasks.inspect_task import InspectBenchmark, task_by_name


@dataclass
class TaskResults:
    """One Inspect task's aggregation: Inspect's EvalResults, and its rows."""

    results: Any
    rows: int

    def metrics(self) -> dict[str, float]:
        """``<scorer>_<metric>``: value, for every metric of every scorer."""
        values: dict[str, float] = {}
        for score in self.results.scores if self.results is not None else []:
            for metric in score.metrics.values():
                values[f"{score.name}_{metric.name}"] = float(metric.value)
        return values


def _records(examples: str) -> Iterator[dict[str, Any]]:
    for batch in storage.iter_parquet_batches(examples, [RECORD_COLUMN]):
        for text in batch.column(RECORD_COLUMN).to_pylist():
            if text:
                yield json.loads(text)


def task_results(benchmark: InspectBenchmark, examples: str) -> dict[str, TaskResults]:
    """Each task's results as Inspect aggregates them, over the rows of ``examples``."""
    from inspect_ai._eval.task.results import eval_results
    from inspect_ai.scorer import SampleScore, Score

    tasks = task_by_name(benchmark.specs, benchmark.args_json)
    scores: dict[str, list[dict[str, SampleScore]]] = {name: [] for name in tasks}
    rows = dict.fromkeys(tasks, 0)
    completed = dict.fromkeys(tasks, 0)
    for record in _records(examples):
        name = record["task"]
        rows[name] += 1
        samples = record.get("samples") or []
        completed[name] += all(not s.get("error") for s in samples) and bool(samples)
        for sample in samples:
            if sample.get("scores"):
                scores[name].append(
                    {
                        scorer: SampleScore(
                            score=Score.model_validate(score),
                            sample_id=sample["id"],
                            sample_metadata=sample.get("metadata"),
                            scorer=scorer,
                        )
                        for scorer, score in sample["scores"].items()
                    }
                )
    out: dict[str, TaskResults] = {}
    for name, task in tasks.items():
        results = None
        if scores[name]:
            results, _ = eval_results(
                samples=rows[name],
                scores=scores[name],
                reducers=task.epochs_reducer,
                scorers=task.scorer,
                metrics=task.metrics,
                completed_samples=completed[name],
            )
        out[name] = TaskResults(results, rows[name])
    return out


def result_entries(
    benchmark: InspectBenchmark, results: dict[str, TaskResults]
) -> dict[str, dict[str, float]]:
    """Inspect's metrics per results key (``custom|<task>|0``)."""
    return {benchmark.subtask_key(name): r.metrics() for name, r in results.items()}


def write_task_logs(
    benchmark: InspectBenchmark,
    examples: str,
    results: dict[str, TaskResults],
    spec_dir: str,
    location_of: Callable[[str], str],
) -> dict[str, str]:
    """One ``.eval`` log per task at ``location_of(task)``, its samples streamed from
    ``examples``; {task: location}."""
    from inspect_ai.log import EvalSample, EvalSpec

    from nova_eval_assets.engines.inspect_runner import read_spec
    from nova_eval_assets.report.inspect_log import write_inspect_log

    written: dict[str, str] = {}
    for name, task_results in results.items():
        spec_fields = read_spec(spec_dir, name)
        if spec_fields is None:  # no block of this task ran in this run's folder
            continue
        spec = EvalSpec.model_validate(spec_fields)
        spec.dataset.samples = task_results.rows
        spec.dataset.sample_ids = None

        def samples(task_name: str = name) -> Iterator[EvalSample]:
            for record in _records(examples):
                if record["task"] == task_name:
                    for sample in record.get("samples") or []:
                        yield EvalSample.model_validate(sample)

        written[name] = write_inspect_log(location_of(name), spec, samples(), task_results.results)
    return written
