"""Dataset schemas, line-by-line validation, and sharding into replicas.

A dataset is JSONL: one JSON object per line. Blank lines are ignored (they are not rows).
Every other line ends up either among the validated rows or among the rejected rows with
its line number and reasons, so every input row is accounted for.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from nova_eval_assets import storage

MAX_LISTED_PROBLEMS = 20
_BATCH_ROWS = 10_000


@dataclass(frozen=True)
class DatasetSchema:
    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]

    @property
    def fields(self) -> tuple[str, ...]:
        return self.required + self.optional


GEN_QA = DatasetSchema("gen_qa", required=("query", "response"), optional=("system", "metadata"))
JUDGE = DatasetSchema(
    "judge", required=("prompt", "response_A", "response_B"), optional=("system", "metadata")
)
SCHEMAS = {"gen_qa": GEN_QA, "llm_judge": JUDGE}


@dataclass(frozen=True)
class Problem:
    line: int
    field: str | None
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", field '{self.field}'" if self.field else "")
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class RejectedRow:
    line: int
    raw: str
    reasons: list[str]

    def as_record(self) -> dict[str, object]:
        return {"line": self.line, "reasons": self.reasons, "raw": self.raw}


@dataclass
class ValidationOutcome:
    source: str
    table: pa.Table
    rejected: list[RejectedRow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    lines_read: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self, limit: int = MAX_LISTED_PROBLEMS) -> str:
        if self.ok:
            return f"{self.source}: {self.table.num_rows} valid rows"
        shown = "\n".join(f"  {self.source}: {p}" for p in self.problems[:limit])
        more = len(self.problems) - limit
        tail = f"\n  ... and {more} more" if more > 0 else ""
        return (
            f"{self.source}: {len(self.problems)} problem(s) in {len(self.rejected)} of "
            f"{self.lines_read} rows (showing the first {min(limit, len(self.problems))}):\n"
            f"{shown}{tail}"
        )


class DatasetError(ValueError):
    """A dataset with invalid rows under the strict ("fail") policy."""

    def __init__(self, outcome: ValidationOutcome):
        super().__init__(outcome.report())
        self.outcome = outcome


def arrow_schema(schema: DatasetSchema) -> pa.Schema:
    columns = [pa.field("row_index", pa.int64(), nullable=False), pa.field("line", pa.int64())]
    columns += [pa.field(name, pa.string(), nullable=False) for name in schema.required]
    columns += [pa.field(name, pa.string()) for name in schema.optional]
    return pa.schema(columns)


def check_row(
    line_number: int, text: str, schema: DatasetSchema, metadata_format: str
) -> tuple[dict[str, str | None] | None, list[Problem]]:
    """One line: the parsed row, or the problems that reject it."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, [Problem(line_number, None, f"invalid JSON: {exc.msg} at column {exc.colno}")]
    if not isinstance(obj, dict):
        return None, [Problem(line_number, None, f"expected a JSON object, got {_kind(obj)}")]
    problems = [
        Problem(line_number, key, f"unknown field; allowed: {', '.join(schema.fields)}")
        for key in obj
        if key not in schema.fields
    ]
    row: dict[str, str | None] = {}
    for name in schema.fields:
        value = obj.get(name)
        required = name in schema.required
        if value is None:
            if required:
                reason = "missing required field" if name not in obj else "must not be null"
                problems.append(Problem(line_number, name, reason))
            row[name] = None
            continue
        if not isinstance(value, str):
            problems.append(Problem(line_number, name, f"must be a string, got {_kind(value)}"))
            continue
        if required and not value.strip():
            problems.append(Problem(line_number, name, "must not be empty"))
            continue
        row[name] = value
    metadata = row.get("metadata")
    if metadata_format == "json" and metadata is not None:
        try:
            json.loads(metadata)
        except json.JSONDecodeError as exc:
            problems.append(
                Problem(
                    line_number,
                    "metadata",
                    f"the recipe says metadata is JSON (dataset.metadata_format: json), "
                    f"but it is not: {exc.msg}",
                )
            )
    return (None, problems) if problems else (row, [])


def _kind(value: object) -> str:
    return {dict: "object", list: "array", bool: "boolean", int: "number", float: "number"}.get(
        type(value), type(value).__name__
    )


def validate_dataset(
    location: str,
    schema: DatasetSchema = GEN_QA,
    metadata_format: str = "json",
    limit: int | None = None,
) -> ValidationOutcome:
    """Validate every line of a JSONL dataset; rows stream into Arrow batches."""
    target = arrow_schema(schema)
    batches: list[pa.RecordBatch] = []
    pending: dict[str, list] = {name: [] for name in target.names}
    outcome = ValidationOutcome(source=location, table=target.empty_table())
    accepted = 0

    def flush() -> None:
        if pending["row_index"]:
            batches.append(pa.RecordBatch.from_pydict(pending, schema=target))
            for values in pending.values():
                values.clear()

    for line_number, text in _numbered_rows(location):
        if limit is not None and outcome.lines_read >= limit:
            break
        outcome.lines_read += 1
        row, problems = check_row(line_number, text, schema, metadata_format)
        if row is None:
            outcome.problems.extend(problems)
            outcome.rejected.append(RejectedRow(line_number, text, [str(p) for p in problems]))
            continue
        pending["row_index"].append(accepted)
        pending["line"].append(line_number)
        for name in schema.fields:
            pending[name].append(row.get(name))
        accepted += 1
        if len(pending["row_index"]) >= _BATCH_ROWS:
            flush()
    flush()
    outcome.table = pa.Table.from_batches(batches, schema=target)
    return outcome


def _numbered_rows(location: str) -> Iterator[tuple[int, str]]:
    try:
        for number, text in enumerate(storage.iter_lines(location), start=1):
            if text.strip():
                yield number, text
    except FileNotFoundError as exc:
        raise DatasetFileError(f"{location}: dataset file not found") from exc
    except UnicodeDecodeError as exc:
        raise DatasetFileError(f"{location}: not UTF-8 text ({exc.reason})") from exc


class DatasetFileError(ValueError):
    """The dataset file itself cannot be read."""


def shard_ranges(num_rows: int, replicas: int, block_size: int) -> list[tuple[int, int]]:
    """Split rows 0..num_rows into ``replicas`` contiguous [start, end) ranges by position.

    Cuts fall on multiples of ``block_size`` (the inference engine's batching block), so
    every row is batched with the same neighbours whatever the replica count, and results
    do not depend on it. Blocks are spread as evenly as possible; with more replicas than
    blocks, the last replicas are empty.
    """
    if replicas < 1 or block_size < 1:
        raise ValueError("replicas and block_size must be at least 1")
    blocks = -(-num_rows // block_size)
    per, extra = divmod(blocks, replicas)
    ranges, start_block = [], 0
    for replica in range(replicas):
        count = per + (1 if replica < extra else 0)
        start = min(start_block * block_size, num_rows)
        end = min((start_block + count) * block_size, num_rows)
        ranges.append((start, end))
        start_block += count
    return ranges
