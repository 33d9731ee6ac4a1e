"""Glue / Athena ``CREATE EXTERNAL TABLE`` statements for the tables, with partition projection.

Partition projection computes the partitions from table properties, so new runs are
queryable the moment their files land (no ``MSCK REPAIR TABLE``, no Glue crawler):

* ``eval_name``: ``enum`` of the known evaluations (the recipes of the code location plus
  every ``eval_name=`` folder already in the tables). A new recipe means new DDL; the DDL
  asset regenerates it and the Athena asset recreates the tables (dropping an external
  table never touches its files).
* ``run_date``: ``date`` from a start date to ``NOW``, one partition per day.

``run_id`` is a folder below each partition and a column in the files (Athena reads the
files in a partition's sub-folders), so a query on a date range reads only those dates.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

from nova_eval_assets import storage
from nova_eval_assets.tables.schemas import PARTITION_COLUMNS, TABLES, comment

DATABASE_ENV = "NOVA_EVAL_ATHENA_DATABASE"
LOCATION_ENV = "NOVA_EVAL_ATHENA_TABLES_LOCATION"
START_ENV = "NOVA_EVAL_ATHENA_PROJECTION_START"
DEFAULT_DATABASE = "nova_eval"
DEFAULT_START = "2024-01-01"
PLACEHOLDER_LOCATION = "s3://YOUR-BUCKET/nova-eval/tables"
DDL_FOLDER = "_ddl"


def hive_type(type_: pa.DataType) -> str:
    """The Hive / Athena type of an Arrow type, as Athena reads it from Parquet."""
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return "string"
    if pa.types.is_boolean(type_):
        return "boolean"
    simple = {
        pa.int8(): "tinyint",
        pa.int16(): "smallint",
        pa.int32(): "int",
        pa.int64(): "bigint",
        pa.float32(): "float",
        pa.float64(): "double",
        pa.date32(): "date",
    }
    if type_ in simple:
        return simple[type_]
    if pa.types.is_timestamp(type_):
        return "timestamp"
    if pa.types.is_map(type_):
        return f"map<{hive_type(type_.key_type)},{hive_type(type_.item_type)}>"
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        return f"array<{hive_type(type_.value_type)}>"
    if pa.types.is_struct(type_):
        fields = ",".join(f"{f.name}:{hive_type(f.type)}" for f in type_)
        return f"struct<{fields}>"
    raise TypeError(f"no Athena type for {type_}")


@dataclass(frozen=True)
class DdlSettings:
    database: str
    location: str  # s3:// prefix that holds one folder per table
    eval_names: tuple[str, ...]
    projection_start: str = DEFAULT_START

    def __post_init__(self) -> None:
        # names reach backquoted identifiers, LOCATION and TBLPROPERTIES: refuse what could
        # break out of them rather than escape it into something Athena reads differently
        if not _DATABASE.match(self.database):
            raise ValueError(
                f"Athena database {self.database!r} ({DATABASE_ENV}): letters, digits and _ only"
            )
        if self.location != PLACEHOLDER_LOCATION and not _LOCATION.match(self.location):
            raise ValueError(
                f"tables location {self.location!r} ({LOCATION_ENV}): an s3:// prefix without "
                "quotes, backslashes, backquotes, $ or white space"
            )
        for name in self.eval_names:
            if not _EVAL_NAME.match(name) or ".." in name:
                raise ValueError(
                    f"evaluation name {name!r} cannot be projected by Athena: letters, digits, "
                    "'-', '_' and '.' only (a run.name; see docs/recipes.md 'Run names')"
                )
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", self.projection_start):
            raise ValueError(f"{START_ENV} = {self.projection_start!r}: a date as yyyy-MM-dd")

    @classmethod
    def from_env(cls, tables_root: str, eval_names: Iterable[str]) -> DdlSettings:
        """Location: ``$NOVA_EVAL_ATHENA_TABLES_LOCATION``, else the tables root when it is
        on S3, else a placeholder to edit (Athena reads only S3)."""
        location = os.environ.get(LOCATION_ENV) or (
            tables_root if tables_root.startswith("s3://") else PLACEHOLDER_LOCATION
        )
        names = tuple(sorted(set(eval_names))) or ("none",)
        return cls(
            database=os.environ.get(DATABASE_ENV, DEFAULT_DATABASE),
            location=location.rstrip("/"),
            eval_names=names,
            projection_start=os.environ.get(START_ENV, DEFAULT_START),
        )


#: Hive's escapes inside a string literal (Athena's CREATE EXTERNAL TABLE goes through its
#: Hive DDL parser: a doubled quote there is two literals, not an escaped quote)
_HIVE_ESCAPES = {"\\": "\\\\", "'": "\\'", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: what may appear in a projected evaluation name: Nova's run names (recipe.py), which also
#: keeps the enum list's commas and the storage template's `${...}` unambiguous
_EVAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_DATABASE = re.compile(r"^[A-Za-z0-9_]{1,255}$")
_LOCATION = re.compile(r"^s3://[^\s'\"\\`$]+$")


def hive_string(text: str) -> str:
    """`text` as a Hive string literal, quotes included."""
    return "'" + "".join(_HIVE_ESCAPES.get(c, c) for c in text) + "'"


def create_table(table: str, settings: DdlSettings) -> str:
    spec = TABLES[table]
    location = f"{settings.location}/{table}"
    columns = ",\n".join(
        f"  `{f.name}` {hive_type(f.type)} COMMENT {hive_string(comment(f))}" for f in spec.schema
    )
    partitions = ", ".join(f"`{name}` {hive_type(t)}" for name, t in PARTITION_COLUMNS)
    properties = {
        "parquet.compression": "ZSTD",
        "projection.enabled": "true",
        "projection.eval_name.type": "enum",
        "projection.eval_name.values": ",".join(settings.eval_names),
        "projection.run_date.type": "date",
        "projection.run_date.format": "yyyy-MM-dd",
        "projection.run_date.range": f"{settings.projection_start},NOW",
        "projection.run_date.interval": "1",
        "projection.run_date.interval.unit": "DAYS",
        "storage.location.template": (
            f"{location}/eval_name=${{eval_name}}/run_date=${{run_date}}/"
        ),
    }
    props = ",\n".join(f"  {hive_string(k)}={hive_string(v)}" for k, v in properties.items())
    return (
        f"CREATE EXTERNAL TABLE IF NOT EXISTS `{settings.database}`.`{table}` (\n"
        f"{columns}\n)\n"
        f"COMMENT {hive_string(spec.description)}\n"
        f"PARTITIONED BY ({partitions})\n"
        "STORED AS PARQUET\n"
        f"LOCATION {hive_string(location + '/')}\n"
        f"TBLPROPERTIES (\n{props}\n)"
    )


def create_database(settings: DdlSettings) -> str:
    return f"CREATE DATABASE IF NOT EXISTS `{settings.database}`"


def drop_table(table: str, settings: DdlSettings) -> str:
    return f"DROP TABLE IF EXISTS `{settings.database}`.`{table}`"


def statements(settings: DdlSettings) -> dict[str, str]:
    """``{table: CREATE EXTERNAL TABLE ...}`` for every table."""
    return {table: create_table(table, settings) for table in TABLES}


def ddl_folder(tables_root: str) -> str:
    """Beside the tables, never inside a table's location (Athena would read it)."""
    return storage.join(tables_root, DDL_FOLDER)


def write_ddl(tables_root: str, settings: DdlSettings) -> dict[str, str]:
    """``<root>/_ddl/<table>.sql`` per table and ``all.sql`` with the database too."""
    folder = ddl_folder(tables_root)
    written = {}
    ddl = statements(settings)
    for table, statement in ddl.items():
        written[table] = storage.join(folder, f"{table}.sql")
        storage.write_text(written[table], statement + ";\n")
    everything = [create_database(settings), *ddl.values()]
    written["all"] = storage.join(folder, "all.sql")
    storage.write_text(written["all"], ";\n\n".join(everything) + ";\n")
    return written
