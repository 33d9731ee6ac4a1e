"""The tables in DuckDB under their Athena names, for ``nova-eval query`` and tests.

A local tables root becomes views over ``read_parquet(..., hive_partitioning=true)``; an
``s3://`` root is read through pyarrow's S3 filesystem (the same endpoint settings as the
rest of the project, so no DuckDB extension has to be downloaded) as Arrow datasets that
DuckDB scans with projection and filter push-down. Either way each table has its file
columns plus the partition columns ``eval_name`` and ``run_date``.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from nova_eval_assets import storage
from nova_eval_assets.tables.schemas import PARTITION_COLUMNS, TABLES, full_schema, partition_schema
from nova_eval_assets.tables.writer import PLACEHOLDER_EVAL, table_location

HIVE_TYPES = "{'eval_name': 'VARCHAR', 'run_date': 'DATE', 'run_id': 'VARCHAR'}"


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def parquet_glob(root: str, table: str) -> str:
    return f"{table_location(root, table)}/*/*/*/*.parquet"


def read_parquet_sql(root: str, table: str) -> str:
    return (
        f"read_parquet({_sql_string(parquet_glob(root, table))}, hive_partitioning = true, "
        f"union_by_name = true, hive_types = {HIVE_TYPES})"
    )


def _empty_view(con: duckdb.DuckDBPyConnection, table: str, view: str) -> None:
    con.register(f"{view}_empty", full_schema(table).empty_table())
    con.execute(f'CREATE OR REPLACE VIEW "{view}" AS SELECT * FROM "{view}_empty"')


def _local_view(con: duckdb.DuckDBPyConnection, root: str, table: str, view: str) -> None:
    if glob.glob(parquet_glob(root, table)):
        sql = f"SELECT * FROM {read_parquet_sql(root, table)}"
        con.execute(f'CREATE OR REPLACE VIEW "{view}" AS {sql}')
    else:
        _empty_view(con, table, view)


def arrow_dataset(root: str, table: str) -> pads.Dataset | None:
    """The table as a pyarrow dataset (any filesystem), or None when it has no files."""
    fs, path = storage.filesystem(table_location(root, table))
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    dataset = pads.dataset(
        path,
        filesystem=fs,
        format="parquet",
        partitioning=pads.partitioning(partition_schema(), flavor="hive"),
        schema=full_schema(table),
    )
    return dataset if dataset.files else None


def _arrow_view(con: duckdb.DuckDBPyConnection, root: str, table: str, view: str) -> None:
    dataset = arrow_dataset(root, table)
    if dataset is None:
        _empty_view(con, table, view)
        return
    con.register(f"{view}_dataset", dataset)
    con.execute(f'CREATE OR REPLACE VIEW "{view}" AS SELECT * FROM "{view}_dataset"')


def connect(root: str, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with one view per table under its Athena name (``eval_examples``,
    ``eval_metrics``, ``judge_judgments``, ``judge_criteria``, ``judge_summary``), schema
    placeholder hidden."""
    con = duckdb.connect(database)
    make_view = _local_view if not storage.is_remote(root) else _arrow_view
    for table in TABLES:
        raw = f"__{table}_files"
        make_view(con, root, table, raw)
        con.execute(
            f'CREATE OR REPLACE VIEW "{table}" AS SELECT * FROM "{raw}" '
            f"WHERE eval_name IS DISTINCT FROM '{PLACEHOLDER_EVAL}'"
        )
    return con


@contextmanager
def connection(root: str) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect(root)
    try:
        yield con
    finally:
        con.close()


def write_result(relation: duckdb.DuckDBPyRelation, output: str) -> None:
    """Write a query result to CSV or Parquet (by the file name's ending; local or s3://).
    DuckDB writes a local file beside the target (nested values as text in CSV), which is
    then renamed into place or uploaded, so a failed query never leaves a partial file."""
    lower = output.lower()
    if not lower.endswith((".csv", ".parquet")):
        raise ValueError(f"{output}: the output file must end in .csv or .parquet")
    local_target = None if storage.is_remote(output) else os.path.abspath(output)
    folder = os.path.dirname(local_target) if local_target else None
    if folder:
        os.makedirs(folder, exist_ok=True)
    fd, temp = tempfile.mkstemp(suffix=os.path.splitext(lower)[1], dir=folder)
    os.close(fd)
    try:
        if lower.endswith(".csv"):
            relation.write_csv(temp, header=True)
        else:
            relation.write_parquet(temp, compression="zstd")
        if local_target:
            os.replace(temp, local_target)
        else:
            with open(temp, "rb") as source, storage.atomic_output(output) as stream:
                shutil.copyfileobj(source, stream, 1 << 22)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


__all__ = [
    "PARTITION_COLUMNS",
    "arrow_dataset",
    "connect",
    "connection",
    "parquet_glob",
    "read_parquet_sql",
    "write_result",
]
