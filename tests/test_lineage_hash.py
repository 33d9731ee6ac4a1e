"""A table's content hash is the same in memory and read back from Parquet (list columns
included), and still tells a null list from an empty one."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from nova_eval_assets import lineage


def read_back(table: pa.Table) -> pa.Table:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    buffer.seek(0)
    return pq.read_table(buffer)


def test_list_columns_hash_the_same_after_a_parquet_round_trip():
    table = pa.table(
        {
            "all_null": pa.nulls(3, pa.list_(pa.string())),
            "empty": pa.array([[], [], []], pa.list_(pa.string())),
            "mixed": pa.array([["a", "b"], None, []], pa.list_(pa.string())),
            "n": pa.array([1, 2, 3], pa.int32()),
        }
    )
    assert read_back(table).schema.field("mixed").type.value_field.name == "element"
    assert lineage.table_sha256(table) == lineage.table_sha256(read_back(table))


def test_null_and_empty_lists_differ():
    null = pa.table({"x": pa.array([["a"], None], pa.list_(pa.string()))})
    empty = pa.table({"x": pa.array([["a"], []], pa.list_(pa.string()))})
    assert lineage.table_sha256(null) != lineage.table_sha256(empty)
