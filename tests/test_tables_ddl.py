"""The generated Athena DDL against the Parquet files it describes, the Athena asset at its
network boundary (botocore's Stubber in place of Athena), and the tables' place in the
asset graph (dataset -> evaluation -> tables -> dbt models)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import boto3
import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.stub import Stubber
from dagster_aws.athena import AthenaClientResource
from dagster_aws.athena.resources import AthenaClient

from nova_eval_assets.assets.tables import (
    ATHENA_KEY,
    DDL_KEY,
    WORKGROUP_ENV,
    build_table_assets,
    table_key,
)
from nova_eval_assets.definitions import build_definitions
from nova_eval_assets.tables import TABLES, build, ddl, writer
from nova_eval_assets.tables.schemas import PARTITION_COLUMNS
from tests.test_tables_writer import examples

# ---------------------------------------------------------------- a Hive type parser


def parse_hive_type(text: str) -> pa.DataType:
    """A Hive/Athena type string as the Arrow type it reads from Parquet (written for this
    test, independently of the generator)."""
    tokens = re.findall(r"[a-z_][a-z0-9_]*|[<>,:]", text.lower())
    position = 0

    def take(expected: str | None = None) -> str:
        nonlocal position
        token = tokens[position]
        position += 1
        assert expected is None or token == expected, (text, token, expected)
        return token

    def parse() -> pa.DataType:
        word = take()
        if word == "array":
            take("<")
            item = parse()
            take(">")
            return pa.list_(item)
        if word == "map":
            take("<")
            key = parse()
            take(",")
            value = parse()
            take(">")
            return pa.map_(key, value)
        if word == "struct":
            take("<")
            fields = []
            while True:
                name = take()
                take(":")
                fields.append(pa.field(name, parse()))
                if take() == ">":
                    return pa.struct(fields)
        primitive = {
            "string": pa.string(),
            "bigint": pa.int64(),
            "int": pa.int32(),
            "double": pa.float64(),
            "boolean": pa.bool_(),
            "date": pa.date32(),
            "timestamp": pa.timestamp("ms"),
        }
        return primitive[word]

    parsed = parse()
    assert position == len(tokens), text
    return parsed


def same_type(a: pa.DataType, b: pa.DataType) -> bool:
    """Equal as Athena sees them: list item names and timestamp units do not matter."""
    if pa.types.is_timestamp(a) and pa.types.is_timestamp(b):
        return True
    if pa.types.is_map(a) and pa.types.is_map(b):
        return same_type(a.key_type, b.key_type) and same_type(a.item_type, b.item_type)
    if pa.types.is_list(a) and pa.types.is_list(b):
        return same_type(a.value_type, b.value_type)
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        return [f.name for f in a] == [f.name for f in b] and all(
            same_type(x.type, y.type) for x, y in zip(a, b, strict=True)
        )
    return a.equals(b)


def ddl_columns(statement: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]], dict]:
    body = statement.split("(\n", 1)[1].split("\n)\nCOMMENT", 1)[0]
    columns = re.findall(r"^  `(\w+)` (.+?) COMMENT '", body, flags=re.M)
    partitions = re.findall(
        r"`(\w+)` (\w+)", statement.split("PARTITIONED BY (", 1)[1].split(")")[0]
    )
    props = dict(
        re.findall(r"^  '([^']+)'='([^']*)'", statement.split("TBLPROPERTIES", 1)[1], re.M)
    )
    return columns, partitions, props


def write_all_tables(root: str) -> None:
    info = build.RunInfo("tiny", "r1", datetime(2025, 3, 2, tzinfo=UTC), "m", "gen_qa", "0" * 64)
    writer.write_run(
        root, "eval_examples", info.partition, [build.to_eval_examples(examples(), info)]
    )
    results = {
        "config_general": {"num_scored": 5},
        "results": {"all": {"em": 0.5, "em_stderr": 0.1}},
    }
    rows = build.overall_metric_rows(results) + build.stratum_metric_rows(examples())
    writer.write_run(root, "eval_metrics", info.partition, [build.metrics_table(info, rows)])
    judge = build.RunInfo("judge", "j1", datetime(2025, 3, 3, tzinfo=UTC), "judge-m", "llm_judge")
    judgments = pa.table(
        {
            "row_index": [0],
            "prompt": ["p"],
            "response_A": ["a"],
            "response_B": ["b"],
            "forward_preference": ["A"],
            "backward_preference": ["tie"],
        }
    )
    writer.write_run(
        root, "judge_judgments", judge.partition, [build.to_judge_judgments(judgments, judge)]
    )
    summary = build.judge_summary_table(judge, {"winrate": 0.5, "a_scores": 1.0})
    writer.write_run(root, "judge_summary", judge.partition, [summary])
    writer.ensure_tables(root)


def test_ddl_agrees_with_the_parquet_files_it_describes(tmp_path: Path):
    root = str(tmp_path / "tables")
    write_all_tables(root)
    settings = ddl.DdlSettings.from_env(root, writer.eval_names(root))
    assert settings.eval_names == ("judge", "tiny")
    written = ddl.write_ddl(root, settings)
    for table in TABLES:
        statement = Path(written[table]).read_text()
        columns, partitions, props = ddl_columns(statement)
        files = sorted((tmp_path / "tables" / table).rglob("*.parquet"))
        assert files, table
        for file in files:
            schema = pq.read_schema(file)
            # the data columns: every column of every file, in order, with the same type
            assert [name for name, _ in columns] == schema.names, (table, file)
            for (name, hive), field in zip(columns, schema, strict=True):
                assert same_type(parse_hive_type(hive), field.type), (table, name, hive, field.type)
            # the partition columns: the Hive keys of the path, not in the file
            keys = [
                part.split("=", 1)[0]
                for part in file.relative_to(tmp_path / "tables" / table).parts[:-1]
            ]
            assert [name for name, _ in partitions] == keys[:2] == [c for c, _ in PARTITION_COLUMNS]
            assert not set(keys[:2]) & set(schema.names)
            # run_id: a folder below the partition and a column holding the same value
            assert keys[2] == "run_id"
            values = set(pq.read_table(file, columns=["run_id"])["run_id"].to_pylist())
            assert values <= {file.parent.name.split("=", 1)[1]}
        assert [hive for _, hive in partitions] == ["string", "date"]
        # partition projection: no MSCK REPAIR, the template matches the layout
        assert props["projection.enabled"] == "true"
        assert props["projection.eval_name.values"] == "judge,tiny"
        assert props["projection.run_date.type"] == "date"
        assert props["storage.location.template"] == (
            f"{ddl.PLACEHOLDER_LOCATION}/{table}/eval_name=${{eval_name}}/run_date=${{run_date}}/"
        )
        assert f"LOCATION '{ddl.PLACEHOLDER_LOCATION}/{table}/'" in statement
        assert "STORED AS PARQUET" in statement
    everything = Path(written["all"]).read_text()
    assert everything.startswith("CREATE DATABASE IF NOT EXISTS `nova_eval`;")
    assert everything.count("CREATE EXTERNAL TABLE") == len(TABLES)


def test_ddl_location_follows_an_s3_tables_root(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(ddl.LOCATION_ENV, raising=False)
    monkeypatch.setenv(ddl.DATABASE_ENV, "evals")
    settings = ddl.DdlSettings.from_env("s3://bucket/nova/tables/", ["a"])
    statement = ddl.create_table("eval_metrics", settings)
    assert "CREATE EXTERNAL TABLE IF NOT EXISTS `evals`.`eval_metrics`" in statement
    assert "LOCATION 's3://bucket/nova/tables/eval_metrics/'" in statement


class StubbedAthena(AthenaClientResource):
    """dagster-aws's Athena resource whose boto3 client answers from botocore's Stubber."""

    def get_client(self) -> AthenaClient:
        return AthenaClient(CLIENT, workgroup=self.workgroup, polling_interval=0)


CLIENT = boto3.client(
    "athena", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
)


def test_athena_asset_runs_the_generated_ddl_in_the_workgroup(make_recipe, tmp_path, monkeypatch):
    monkeypatch.delenv("NOVA_EVAL_TABLES_ROOT", raising=False)
    loaded = make_recipe()
    root = str(tmp_path / "outputs" / "tables")
    write_all_tables(root)
    assets = build_table_assets([loaded], athena=True)
    keys = {k for a in assets for k in a.keys}
    assert {DDL_KEY, ATHENA_KEY} <= keys
    assert ATHENA_KEY not in {k for a in build_table_assets([loaded], athena=False) for k in a.keys}

    ddl_result = dg.materialize(
        assets, selection=[DDL_KEY], resources={"athena": StubbedAthena(workgroup="wg")}
    )
    assert ddl_result.success
    sql_files = sorted(p.name for p in (tmp_path / "outputs" / "tables" / "_ddl").iterdir())
    assert sql_files == ["all.sql", *sorted(f"{t}.sql" for t in TABLES)]

    expected = ["CREATE DATABASE IF NOT EXISTS `nova_eval`"]
    for table in TABLES:
        expected.append(f"DROP TABLE IF EXISTS `nova_eval`.`{table}`")
        expected.append(
            (tmp_path / "outputs" / "tables" / "_ddl" / f"{table}.sql")
            .read_text()
            .strip()
            .rstrip(";")
        )
    with Stubber(CLIENT) as stub:
        for i, query in enumerate(expected):
            stub.add_response(
                "start_query_execution",
                {"QueryExecutionId": f"q{i}"},
                {"QueryString": query, "WorkGroup": "wg"},
            )
            stub.add_response(
                "get_query_execution",
                {"QueryExecution": {"Status": {"State": "SUCCEEDED"}}},
                {"QueryExecutionId": f"q{i}"},
            )
        result = dg.materialize(
            assets, selection=[ATHENA_KEY], resources={"athena": StubbedAthena(workgroup="wg")}
        )
        stub.assert_no_pending_responses()
    assert result.success
    (materialization,) = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.asset_key == ATHENA_KEY
    ]
    assert materialization.metadata["statements"].value == len(expected)
    assert materialization.metadata["workgroup"].value == "wg"
    assert "tiny" in expected[2]  # the enum of evaluations names the recipe


def test_asset_graph_runs_from_dataset_through_tables_to_dbt_models(make_recipe, monkeypatch):
    monkeypatch.delenv(WORKGROUP_ENV, raising=False)
    loaded = make_recipe()
    graph = build_definitions([loaded]).resolve_asset_graph()
    for table in TABLES:
        node = graph.get(table_key(table))
        assert dg.AssetKey(["tiny", "aggregated_report"]) in node.parent_keys
        assert node.partitions_def.get_partition_keys() == ["tiny"]
        assert node.group_name == "tables"
    assert graph.get(DDL_KEY).parent_keys == {table_key(t) for t in TABLES}
    assert not graph.has(ATHENA_KEY)
    staging = {t: graph.get(dg.AssetKey(["dbt", f"stg_{t}"])) for t in TABLES}
    for table, node in staging.items():
        assert node.parent_keys == {table_key(table)}
        assert node.group_name == "dbt"
    marts = {
        "metrics_over_time": {"stg_eval_metrics"},
        "metrics_by_stratum": {"stg_eval_examples"},
        "base_vs_challenger": {"metrics_over_time"},
        "judge_win_rates": {"stg_judge_judgments", "stg_judge_summary"},
        "calibration_bins": {"stg_eval_examples"},
    }
    for model, parents in marts.items():
        node = graph.get(dg.AssetKey(["dbt", model]))
        assert node.parent_keys == {dg.AssetKey(["dbt", p]) for p in parents}
    # upstream of a dbt model, all the way back to the dataset
    seen, todo = set(), [dg.AssetKey(["dbt", "metrics_by_stratum"])]
    while todo:
        key = todo.pop()
        if key not in seen and graph.has(key):
            seen.add(key)
            todo.extend(graph.get(key).parent_keys)
    assert dg.AssetKey(["tiny", "validated_dataset"]) in seen

    monkeypatch.setenv(WORKGROUP_ENV, "analytics")
    definitions = build_definitions([loaded])
    assert definitions.resolve_asset_graph().has(ATHENA_KEY)
    assert "athena" in definitions.resources
