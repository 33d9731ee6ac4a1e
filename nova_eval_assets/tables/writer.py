"""Hive-partitioned Parquet writing: one run's partition of one table at a time.

A run's rows go to ``<root>/<table>/eval_name=<name>/run_date=<date>/run_id=<id>/``.
Writing a run first deletes every folder that run already has (under any run date), then
writes the new files, each atomically (see :func:`storage.atomic_output`): rerunning a run
replaces its rows instead of duplicating them, and other runs are never touched, so
recurring evaluations append. Rows arrive as an iterator of record batches and go out in
row groups of the same size, so a million rows never sit in memory at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from nova_eval_assets import storage
from nova_eval_assets.tables.schemas import TABLES

MAX_ROWS_PER_FILE = 1_000_000
# A zero-row file with the table's full schema, in a partition no real run can have (run
# names start with a letter): local readers always find a file with every column, also
# for tables no run has written yet. Athena never reads it: the partition is not projected.
PLACEHOLDER_EVAL = "_schema"
PLACEHOLDER_DATE = "1970-01-01"
PLACEHOLDER_FILE = "_schema.parquet"

_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class RunPartition:
    """Which run a set of rows belongs to: the partition values of its folder."""

    eval_name: str
    run_id: str
    run_date: str  # yyyy-mm-dd

    def __post_init__(self) -> None:
        for label, value in (("eval_name", self.eval_name), ("run_id", self.run_id)):
            if not _VALUE.match(value):
                raise ValueError(
                    f"{label} {value!r} cannot name a partition folder: use letters, digits, "
                    "'.', '_' and '-', starting with a letter or digit"
                )
        if not _DATE.match(self.run_date):
            raise ValueError(f"run_date {self.run_date!r} is not yyyy-mm-dd")

    def folder(self, root: str, table: str) -> str:
        return storage.join(
            root,
            table,
            f"eval_name={self.eval_name}",
            f"run_date={self.run_date}",
            f"run_id={self.run_id}",
        )


@dataclass
class WriteSummary:
    table: str
    folder: str
    rows: int = 0
    files: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)


def table_location(root: str, table: str) -> str:
    return storage.join(root, table)


def run_folders(root: str, table: str, eval_name: str, run_id: str) -> list[str]:
    """Every folder of ``run_id`` under ``eval_name`` (a run keeps its id across dates)."""
    fs, base = storage.filesystem(storage.join(root, table, f"eval_name={eval_name}"))
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        return []
    found = []
    for date_dir in fs.get_file_info(pafs.FileSelector(base)):
        if date_dir.type != pafs.FileType.Directory:
            continue
        candidate = f"{date_dir.path}/run_id={run_id}"
        if fs.get_file_info(candidate).type == pafs.FileType.Directory:
            found.append(candidate)
    prefix = "s3://" if root.startswith("s3://") else ""
    return sorted(prefix + path for path in found)


def delete_run(root: str, table: str, eval_name: str, run_id: str) -> list[str]:
    folders = run_folders(root, table, eval_name, run_id)
    for folder in folders:
        storage.delete(folder)
    return folders


def _conform(batch: pa.RecordBatch | pa.Table, schema: pa.Schema) -> pa.Table:
    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    if table.schema.equals(schema):
        return table
    missing = [f for f in schema if f.name not in table.column_names]
    for f in missing:
        table = table.append_column(f, pa.nulls(table.num_rows, f.type))
    return table.select(schema.names).cast(schema)


def write_run(
    root: str,
    table: str,
    partition: RunPartition,
    batches: Iterable[pa.RecordBatch | pa.Table],
    max_rows_per_file: int = MAX_ROWS_PER_FILE,
) -> WriteSummary:
    """Replace ``partition``'s rows of ``table`` with ``batches`` (conformed to the schema)."""
    schema = TABLES[table].schema
    folder = partition.folder(root, table)
    summary = WriteSummary(table=table, folder=folder)
    summary.replaced = delete_run(root, table, partition.eval_name, partition.run_id)
    stack: ExitStack | None = None
    writer: pq.ParquetWriter | None = None
    in_file = 0
    try:
        for batch in batches:
            data = _conform(batch, schema)
            offset = 0
            while offset < data.num_rows:
                if writer is None:
                    path = storage.join(folder, f"part-{len(summary.files):05d}.parquet")
                    stack = ExitStack()
                    writer = stack.enter_context(storage.parquet_writer(path, schema))
                    summary.files.append(path)
                    in_file = 0
                take = min(data.num_rows - offset, max_rows_per_file - in_file)
                writer.write_table(data.slice(offset, take), row_group_size=take)
                offset += take
                in_file += take
                summary.rows += take
                if in_file >= max_rows_per_file:
                    assert stack is not None
                    stack.close()
                    stack, writer = None, None
        if stack is not None:
            stack.close()
            stack = None
    except BaseException as exc:
        if stack is not None:  # the unfinished file is discarded, never published
            stack.__exit__(type(exc), exc, exc.__traceback__)
        raise
    return summary


def placeholder_path(root: str, table: str) -> str:
    return storage.join(
        root,
        table,
        f"eval_name={PLACEHOLDER_EVAL}",
        f"run_date={PLACEHOLDER_DATE}",
        f"run_id={PLACEHOLDER_EVAL}",
        PLACEHOLDER_FILE,
    )


def _same_columns(a: pa.Schema, b: pa.Schema) -> bool:
    return a.names == b.names and all(x.type.equals(y.type) for x, y in zip(a, b, strict=True))


def ensure_table(root: str, table: str) -> str:
    """Write (or refresh, when the schema grew) the table's zero-row schema file."""
    path = placeholder_path(root, table)
    schema = TABLES[table].schema
    if storage.exists(path):
        fs, inner = storage.filesystem(path)
        with fs.open_input_file(inner) as source:
            if _same_columns(pq.ParquetFile(source).schema_arrow, schema):
                return path
    storage.write_parquet(path, schema.empty_table())
    return path


def ensure_tables(root: str) -> list[str]:
    return [ensure_table(root, table) for table in TABLES]


def eval_names(root: str) -> list[str]:
    """The eval_name partitions present in any table under ``root``."""
    names: set[str] = set()
    for table in TABLES:
        fs, base = storage.filesystem(table_location(root, table))
        if fs.get_file_info(base).type != pafs.FileType.Directory:
            continue
        for info in fs.get_file_info(pafs.FileSelector(base)):
            name = info.base_name
            if info.type == pafs.FileType.Directory and name.startswith("eval_name="):
                value = name.split("=", 1)[1]
                if value != PLACEHOLDER_EVAL:
                    names.add(value)
    return sorted(names)
