"""validated_dataset for a benchmark: the task's source rows made samples (prompt, target,
subtask) in the validated rows' format, so that prompts, inference and the stages after
them run as for gen_qa. A row that cannot become a sample is rejected with its file, line,
field and reason; a row of a subtask the recipe did not ask for is left out and counted."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa

from nova_eval_assets import storage
from nova_eval_assets.dataset import GEN_QA, Problem, RejectedRow, ValidationOutcome, arrow_schema
from nova_eval_assets.tasks.base import (
    PROBLEM_FIELD,
    SAMPLE_FIELD,
    SUBTASK_FIELD,
    BenchmarkTask,
    FieldProblem,
    TaskOptions,
)
from nova_eval_assets.tasks.sources import BenchmarkSource, SourceRow, row_text


class SampleCounts:
    """Rows left out because their subtask was not asked for."""

    def __init__(self) -> None:
        self.other_subtasks = 0


def sample_batches(
    outcome: ValidationOutcome,
    source: BenchmarkSource,
    task: BenchmarkTask,
    subtasks: list[str],
    options: TaskOptions,
    counts: SampleCounts,
    limit: int | None = None,
    rows_per_batch: int | None = None,
    samples: int = 1,
) -> Iterator[tuple[pa.RecordBatch, list[RejectedRow]]]:
    """Valid samples (record batches of the gen_qa validated schema: ``query`` the whole
    prompt, ``response`` the target, ``metadata`` JSON with the subtask) and rejected rows,
    every ``rows_per_batch`` rows read. With ``samples`` > 1 each problem is that many
    consecutive rows, their metadata numbering the problem and the sample."""
    target = arrow_schema(GEN_QA)
    rows_per_batch = rows_per_batch or storage.batch_rows()
    wanted = set(subtasks)
    pending: dict[str, list] = {name: [] for name in target.names}
    rejected: list[RejectedRow] = []
    several_files = len(source.files) > 1
    problems = 0  # valid source rows so far

    def batch() -> tuple[pa.RecordBatch, list[RejectedRow]]:
        valid = pa.RecordBatch.from_pydict(pending, schema=target)
        for values in pending.values():
            values.clear()
        done = rejected.copy()
        rejected.clear()
        return valid, done

    def reject(row: SourceRow, field: str | None, reason: str) -> None:
        where = f"{row.file}: " if several_files else ""
        outcome.add_problems([Problem(row.line, field, where + reason)])
        outcome.rejected_rows += 1
        shown = f"{where}field '{field}': {reason}" if field else where + reason
        rejected.append(RejectedRow(row.line, row_text(row), [shown]))

    for row in source.rows():
        if limit is not None and outcome.lines_read >= limit:
            break
        if row.fields is None:
            outcome.lines_read += 1
            reject(row, None, row.problem or "not a row")
        else:
            try:
                sample = task.sample(row.fields, row.subtask, options)
                if task.subtasks and sample.subtask not in task.subtasks:
                    raise FieldProblem(
                        task.subtask_field or SUBTASK_FIELD,
                        f"{sample.subtask!r} is not a subtask of {task.name}",
                    )
            except FieldProblem as problem:
                outcome.lines_read += 1
                reject(row, problem.field_name, problem.reason)
            else:
                if wanted and sample.subtask not in wanted:
                    counts.other_subtasks += 1
                    continue
                outcome.lines_read += 1
                metadata = dict(sample.metadata)
                if sample.subtask is not None:
                    metadata[SUBTASK_FIELD] = sample.subtask
                if samples > 1:  # the problem's samples are consecutive rows
                    metadata[PROBLEM_FIELD] = problems
                problems += 1
                for number in range(samples):
                    if samples > 1:
                        metadata[SAMPLE_FIELD] = number
                    pending["row_index"].append(outcome.valid_rows)
                    pending["line"].append(row.line)
                    pending["query"].append(sample.prompt)
                    pending["response"].append(sample.target)
                    pending["system"].append(sample.system)
                    pending["metadata"].append(json.dumps(metadata, ensure_ascii=False))
                    pending["images"].append(list(sample.images) or None)
                    outcome.valid_rows += 1
                    outcome.rows_with_images += bool(sample.images)
        if len(pending["row_index"]) + len(rejected) >= rows_per_batch:
            yield batch()
    if pending["row_index"] or rejected:
        yield batch()
