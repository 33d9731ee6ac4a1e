"""Dataset schemas, line-by-line validation, and sharding into replicas.

A dataset is JSONL: one JSON object per line. Blank lines are ignored (they are not rows).
Every other line ends up either among the validated rows or among the rejected rows with
its line number and reasons, so every input row is accounted for. A dataset without a
single row (an empty file, only blank lines, or every row rejected) is always invalid.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from nova_eval_assets import storage

MAX_LISTED_PROBLEMS = 20
_BATCH_ROWS = 10_000
# the recipe's default (DatasetConfig.max_line_bytes): room for ~100 MB of inline images
DEFAULT_MAX_LINE_BYTES = 128 * 1024 * 1024


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
    lines_read: int = 0  # rows read (non-blank lines), valid or not
    blank_lines: int = 0

    @property
    def no_rows(self) -> bool:
        """Nothing to evaluate: no row, or no valid one. Invalid under every policy."""
        return self.table.num_rows == 0

    @property
    def ok(self) -> bool:
        return not self.problems and not self.no_rows

    def report(self, limit: int = MAX_LISTED_PROBLEMS) -> str:
        if self.ok:
            return f"{self.source}: {self.table.num_rows} valid rows"
        if self.lines_read == 0:
            what = (
                f"the file has only blank lines ({self.blank_lines})"
                if self.blank_lines
                else "the file is empty"
            )
            return f"{self.source}: no rows: {what}"
        shown = "\n".join(f"  {self.source}: {p}" for p in self.problems[:limit])
        more = len(self.problems) - limit
        tail = f"\n  ... and {more} more" if more > 0 else ""
        if self.no_rows:
            tail += f"\n  {self.source}: no valid rows: all {self.lines_read} rows were rejected"
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
    max_line_bytes: int | None = DEFAULT_MAX_LINE_BYTES,
) -> ValidationOutcome:
    """Validate every line of a JSONL dataset; rows stream into Arrow batches.

    Lines are read as bytes and decoded one by one, so a line that is not UTF-8 or is
    longer than ``max_line_bytes`` is rejected with its line number while the others are
    validated as usual.
    """
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

    for line_number, raw in _numbered_lines(location, max_line_bytes):
        text, problem = _decode(line_number, raw, max_line_bytes)
        if problem is None and not text.strip():
            outcome.blank_lines += 1  # blank lines are not rows
            continue
        if limit is not None and outcome.lines_read >= limit:
            break
        outcome.lines_read += 1
        if problem is None:
            row, problems = check_row(line_number, text, schema, metadata_format)
        else:
            row, problems = None, [problem]
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


def _decode(
    line_number: int, raw: storage.RawLine, max_line_bytes: int | None
) -> tuple[str, Problem | None]:
    """The line's text, or (a readable rendering of it, the problem that rejects it)."""
    if raw.oversized:
        shown = raw.data.decode("utf-8", errors="replace")
        reason = (
            f"line is {raw.size} bytes, over dataset.max_line_bytes ({max_line_bytes}); "
            f"not parsed (the rejected row keeps its first {len(raw.data)} bytes)"
        )
        return shown, Problem(line_number, None, reason)
    try:
        return raw.data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        bad = raw.data[exc.start : exc.start + 1].hex()
        reason = (
            f"not valid UTF-8: byte 0x{bad} at byte {exc.start} of the line "
            f"(byte offset {raw.offset + exc.start} in the file): {exc.reason}"
        )
        # the rejected row keeps the text readable: each bad byte becomes U+FFFD
        return raw.data.decode("utf-8", errors="replace"), Problem(line_number, None, reason)


def _numbered_lines(
    location: str, max_line_bytes: int | None
) -> Iterator[tuple[int, storage.RawLine]]:
    try:
        yield from enumerate(storage.iter_raw_lines(location, max_line_bytes), start=1)
    except FileNotFoundError as exc:
        raise DatasetFileError(f"{location}: dataset file not found") from exc


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
