"""s3:// storage against moto's S3 server on 127.0.0.1 (a real HTTP S3 API): the storage
layer, the tables' partition replacement, and a whole evaluation with its data, outputs and
tables in the bucket, read back with `nova-eval query`."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import dagster as dg
import pandas as pd
import pytest
import yaml
from moto.server import ThreadedMotoServer

from nova_eval_assets import cli, storage
from nova_eval_assets.assets.materialize import run_evaluation
from nova_eval_assets.dataset import validate_dataset
from nova_eval_assets.recipe import load_recipe
from nova_eval_assets.tables import build, duck, writer
from tests.conftest import ticket_lines
from tests.test_tables_writer import examples

BUCKET = "nova-eval-test"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[boto3.client]:
    """moto's S3 server on a free loopback port, dummy credentials, one empty bucket."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name in ("AWS_PROFILE", "NOVA_EVAL_S3_ENDPOINT", "NOVA_EVAL_TABLES_ROOT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield client
    finally:
        server.stop()


def keys(client, prefix: str = "") -> list[str]:
    """Object keys under ``prefix``, without the empty "folder/" markers pyarrow leaves."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    found = (o["Key"] for page in pages for o in page.get("Contents", []))
    return sorted(key for key in found if not key.endswith("/"))


def test_storage_on_s3_writes_atomically(s3):
    location = f"s3://{BUCKET}/a/b.json"
    storage.write_json(location, {"x": 1})
    assert storage.read_json(location) == {"x": 1}
    assert storage.exists(location) and not storage.exists(f"s3://{BUCKET}/a/c.json")
    assert storage.list_files(f"s3://{BUCKET}/a") == [location]

    # an error while writing publishes nothing (closing an S3 stream completes its upload)
    with pytest.raises(RuntimeError), storage.atomic_output(f"s3://{BUCKET}/a/half.bin") as out:
        out.write(b"half")
        raise RuntimeError("killed")
    assert keys(s3, "a/") == ["a/b.json"]
    storage.delete(location)
    assert keys(s3, "a/") == []


def test_dataset_lines_on_s3_are_checked_one_by_one(s3):
    # line 2: a Latin-1 byte at offset 14 of the line (32 + 14 = 46 in the file);
    # line 3: 11 + 2000 + 19 = 2030 bytes, over the limit; lines 1 and 4 are valid
    good = b'{"query": "q", "response": "r"}'
    lines = [good, b'{"query": "caf\xe9", "response": "r"}', b'{"query": "' + b"x" * 2000]
    lines[2] += b'", "response": "r"}'
    s3.put_object(Bucket=BUCKET, Key="d.jsonl", Body=b"\n".join([*lines, good]) + b"\n")
    outcome = validate_dataset(f"s3://{BUCKET}/d.jsonl", max_line_bytes=1024)
    assert outcome.table["line"].to_pylist() == [1, 4]
    assert [str(p).split(";")[0] for p in outcome.problems] == [
        "line 2: not valid UTF-8: byte 0xe9 at byte 14 of the line "
        "(byte offset 46 in the file): invalid continuation byte",
        "line 3: line is 2030 bytes, over dataset.max_line_bytes (1024)",
    ]
    stored = s3.get_object(Bucket=BUCKET, Key="d.jsonl")["Body"].read()
    assert storage.sha256(f"s3://{BUCKET}/d.jsonl") == hashlib.sha256(stored).hexdigest()


def test_tables_on_s3_replace_a_rerun_and_read_back(s3):
    root = f"s3://{BUCKET}/tables"
    first = build.RunInfo("tiny", "r1", datetime(2025, 3, 2, tzinfo=UTC), "m", "gen_qa")
    second = build.RunInfo("tiny", "r2", datetime(2025, 3, 3, tzinfo=UTC), "m", "gen_qa")
    writer.ensure_tables(root)
    for info, n in ((first, 3), (second, 2), (first, 5)):  # r1 twice: replaced
        writer.write_run(
            root, "eval_examples", info.partition, [build.to_eval_examples(examples(n), info)]
        )
    assert len(keys(s3, "tables/eval_examples/eval_name=tiny/")) == 2
    with duck.connection(root) as con:
        rows = con.execute(
            "SELECT run_id, run_date, count(*) FROM eval_examples GROUP BY ALL ORDER BY 1"
        ).fetchall()
    assert [(r[0], str(r[1]), r[2]) for r in rows] == [
        ("r1", "2025-03-02", 5),
        ("r2", "2025-03-03", 2),
    ]


@pytest.mark.model
def test_s3_evaluation_end_to_end_then_query(s3, tmp_path: Path, monkeypatch, capsys):
    s3.put_object(
        Bucket=BUCKET, Key="data/tickets.jsonl", Body="\n".join(ticket_lines(4)).encode() + b"\n"
    )
    monkeypatch.setenv("NOVA_EVAL_TABLES_ROOT", f"s3://{BUCKET}/tables")
    monkeypatch.delenv("NOVA_EVAL_OUTPUT_ROOT", raising=False)
    recipe = {
        "run": {
            "name": "s3_tiny",
            "model_type": "hf",
            "model_name_or_path": "smollm2-135m-instruct",
            "replicas": 2,
            "data_s3_path": f"s3://{BUCKET}/data/tickets.jsonl",
            "output_s3_path": f"s3://{BUCKET}/evals",
        },
        "evaluation": {"task": "gen_qa", "strategy": "gen_qa", "metric": "all"},
        "inference": {"max_new_tokens": 8, "top_logprobs": 2, "batch_size": 2, "temperature": 0},
    }
    path = tmp_path / "s3_tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    outcome = run_evaluation(
        load_recipe(path), instance=dg.DagsterInstance.ephemeral(), show_progress=False
    )
    assert outcome.report is not None, outcome.message
    paths = outcome.report["paths"]
    assert all(str(v).startswith(f"s3://{BUCKET}/") for v in paths.values()), paths

    stored = keys(s3)
    results = [k for k in stored if k.startswith("evals/s3_tiny/eval_results/results_")]
    assert len(results) == 1
    for expected in ("inference_output.jsonl", "examples.parquet"):
        assert f"evals/s3_tiny/eval_results/{expected}" in stored
    assert any(k.startswith("evals/s3_tiny/eval_results/details/") for k in stored)
    assert any(k.startswith("tables/eval_examples/eval_name=s3_tiny/run_date=") for k in stored)
    assert any(k.startswith("tables/eval_metrics/eval_name=s3_tiny/") for k in stored)
    assert "tables/_ddl/all.sql" in stored
    ddl_text = s3.get_object(Bucket=BUCKET, Key="tables/_ddl/eval_examples.sql")["Body"].read()
    assert f"LOCATION 's3://{BUCKET}/tables/eval_examples/'".encode() in ddl_text

    # `nova-eval query` reads the bucket back, printing or writing a file into the bucket
    sql = (
        "SELECT eval_name, count(*) AS n, avg(metrics['rouge1']) AS rouge1 "
        "FROM eval_examples GROUP BY 1"
    )
    assert cli.main(["query", sql]) == 0
    printed = capsys.readouterr().out
    assert "s3_tiny" in printed and "rouge1" in printed
    out = f"s3://{BUCKET}/exports/metrics.csv"
    query = "SELECT metric, value, stderr FROM eval_metrics WHERE stratum = 'all' ORDER BY metric"
    assert cli.main(["query", query, "--output", out]) == 0
    frame = pd.read_csv(
        io.BytesIO(s3.get_object(Bucket=BUCKET, Key="exports/metrics.csv")["Body"].read())
    )
    expected = storage.read_json(paths["results"])["results"]["all"]
    got = dict(zip(frame["metric"], frame["value"], strict=True))
    assert got["rouge1"] == pytest.approx(expected["rouge1"])
    assert got["bleu"] == pytest.approx(expected["bleu"])
