"""The tables' rows and their partition writing (no model, no Dagster)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nova_eval_assets.judge.pairwise import JUDGMENTS_SCHEMA
from nova_eval_assets.stages import TOKEN_LOGPROB as STAGES_TOKEN_LOGPROB
from nova_eval_assets.tables import build, duck, writer
from nova_eval_assets.tables.schemas import EVAL_EXAMPLES, TABLES, TOKEN_LOGPROB

METADATA_TYPE = pa.map_(pa.string(), pa.float64())


def run(run_id: str = "r1", day: int = 2, eval_name: str = "tiny") -> build.RunInfo:
    moment = datetime(2025, 3, day, 12, 0, 0, tzinfo=UTC)
    return build.RunInfo(eval_name, run_id, moment, "model-x", "gen_qa", "ab" * 32)


def examples(n: int = 6, offset: int = 0) -> pa.Table:
    """Rows shaped like eval_results/examples.parquet."""
    tok = {"token": "a", "logprob": -0.5, "top": [{"token": "a", "logprob": -0.5}]}
    rows = [
        {
            "row_index": offset + i,
            "line": offset + i + 1,
            "system": None if i % 2 else "sys",
            "prompt": f"prompt {offset + i}",
            "gold": "gold",
            "prediction": "gold" if i % 3 == 0 else "other",
            "metadata": [
                json.dumps({"difficulty": "easy", "priority": 1}),
                json.dumps({"difficulty": "hard", "tags": ["x"]}),
                "not json",
                json.dumps(["a", "list"]),
                None,
                json.dumps({"difficulty": "hard"}),
            ][i % 6],
            "replica": 0,
            "finish_reason": "stop",
            "error": None,
            "prompt_tokens": 10,
            "completion_tokens": i % 3,
            "latency_s": 0.1,
            "token_logprobs": [tok] * (i % 3),
            "scored": i != 4,
            "metrics": [("em", float(i % 3 == 0)), ("f1", i / 10)] if i != 4 else [],
            "bleu_stats": [float(i + 1)] * 10 if i != 4 else None,
        }
        for i in range(n)
    ]
    schema = pa.schema(
        [
            *[
                pa.field(k, t)
                for k, t in [
                    ("row_index", pa.int64()),
                    ("line", pa.int64()),
                    ("system", pa.string()),
                    ("prompt", pa.string()),
                    ("gold", pa.string()),
                    ("prediction", pa.string()),
                    ("metadata", pa.string()),
                    ("replica", pa.int32()),
                    ("finish_reason", pa.string()),
                    ("error", pa.string()),
                    ("prompt_tokens", pa.int32()),
                    ("completion_tokens", pa.int32()),
                    ("latency_s", pa.float64()),
                    ("token_logprobs", pa.list_(STAGES_TOKEN_LOGPROB)),
                    ("scored", pa.bool_()),
                    ("metrics", METADATA_TYPE),
                    ("bleu_stats", pa.list_(pa.float64())),
                ]
            ]
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def rows_of(root: Path, table: str) -> list[dict]:
    with duck.connection(str(root)) as con:
        return (
            con.sql(f"SELECT * FROM {table} ORDER BY run_id, row_index")
            .to_arrow_table()
            .to_pylist()
        )


def test_token_logprob_type_matches_the_pipeline():
    assert TOKEN_LOGPROB.equals(STAGES_TOKEN_LOGPROB)


def test_eval_examples_rows_parse_metadata_and_summarize_logprobs():
    table = build.to_eval_examples(examples(), run())
    assert table.schema.equals(EVAL_EXAMPLES)
    rows = table.to_pylist()
    assert rows[0]["metadata_map"] == [("difficulty", "easy"), ("priority", "1")]
    assert rows[1]["metadata_map"] == [("difficulty", "hard"), ("tags", '["x"]')]
    assert rows[2]["metadata_map"] == [("metadata", "not json")]
    assert rows[3]["metadata_map"] == [("metadata", '["a", "list"]')]
    assert rows[4]["metadata_map"] is None and rows[4]["metadata"] is None
    assert [r["mean_logprob"] for r in rows[:3]] == [None, -0.5, -0.5]
    assert rows[0]["run_id"] == "r1" and rows[0]["model_name"] == "model-x"
    assert rows[0]["confidence"] is None  # no analysis column: nullable for now
    # the same example has the same id in another run; different examples differ
    again = build.to_eval_examples(examples(), run("r2")).column("example_id").to_pylist()
    assert again == [r["example_id"] for r in rows]
    assert len(set(again)) == len(again)


def test_rerunning_a_run_replaces_its_partition_and_other_runs_stay(tmp_path: Path):
    root = tmp_path / "tables"
    first, second = run("r1", day=2), run("r2", day=3)
    writer.write_run(
        str(root), "eval_examples", first.partition, [build.to_eval_examples(examples(3), first)]
    )
    writer.write_run(
        str(root), "eval_examples", second.partition, [build.to_eval_examples(examples(2), second)]
    )
    assert len(rows_of(root, "eval_examples")) == 5
    # r1 again, on another day and with more rows: replaced, not duplicated
    again = run("r1", day=5)
    summary = writer.write_run(
        str(root), "eval_examples", again.partition, [build.to_eval_examples(examples(4), again)]
    )
    assert [Path(p).parent.name for p in summary.replaced] == ["run_date=2025-03-02"]
    rows = rows_of(root, "eval_examples")
    assert [(r["run_id"], str(r["run_date"])) for r in rows].count(("r1", "2025-03-05")) == 4
    assert sum(r["run_id"] == "r1" for r in rows) == 4
    assert sum(r["run_id"] == "r2" for r in rows) == 2
    assert (
        not (root / "eval_examples" / "eval_name=tiny" / "run_date=2025-03-02")
        .joinpath("run_id=r1")
        .exists()
    )


def test_batches_roll_into_files_and_a_failed_write_publishes_nothing(tmp_path: Path):
    root = str(tmp_path / "tables")
    info = run()
    batches = [build.to_eval_examples(examples(6, offset=6 * i), info) for i in range(3)]
    summary = writer.write_run(root, "eval_examples", info.partition, batches, max_rows_per_file=7)
    assert summary.rows == 18 and len(summary.files) == 3
    assert [pq.read_metadata(f).num_rows for f in summary.files] == [7, 7, 4]

    def failing():
        yield batches[0]
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        writer.write_run(root, "eval_examples", info.partition, failing(), max_rows_per_file=100)
    folder = Path(info.partition.folder(root, "eval_examples"))
    assert list(folder.iterdir()) == []  # no half file, no temp file


def test_partition_values_are_checked():
    with pytest.raises(ValueError, match="run_id"):
        writer.RunPartition("tiny", "a/b", "2025-01-01")
    with pytest.raises(ValueError, match="yyyy-mm-dd"):
        writer.RunPartition("tiny", "r1", "20250101")


def test_empty_tables_have_their_full_schema_and_no_rows(tmp_path: Path):
    root = str(tmp_path / "tables")
    writer.ensure_tables(root)
    with duck.connection(root) as con:
        for name, spec in TABLES.items():
            columns = [row[0] for row in con.sql(f"DESCRIBE {name}").fetchall()]
            assert columns == [*spec.schema.names, "eval_name", "run_date"]
            assert con.execute(f"SELECT count(*) FROM {name}").fetchall() == [(0,)]


def test_stratum_metrics_match_a_pandas_groupby():
    table = examples(6)
    rows = build.stratum_metric_rows(table)
    frame = table.to_pandas()
    frame["difficulty"] = [
        dict(m or []).get("difficulty") for m in build.metadata_maps(table["metadata"]).to_pylist()
    ]
    frame["f1"] = [dict(m).get("f1") for m in frame["metrics"]]
    scored = frame[frame["scored"] & frame["difficulty"].notna()]
    expected = scored.groupby("difficulty")["f1"].agg(["mean", "std", "count"])
    got = {
        r["stratum_value"]: r
        for r in rows
        if r["metric"] == "f1" and r["stratum_field"] == "difficulty"
    }
    assert set(got) == {"easy", "hard"}
    for value, stats in expected.iterrows():
        assert got[value]["value"] == pytest.approx(stats["mean"])
        assert got[value]["num_examples"] == stats["count"]
        stderr = 0.0 if stats["count"] == 1 else stats["std"] / math.sqrt(stats["count"])
        assert got[value]["stderr"] == pytest.approx(stderr)
    # fields with a single value (priority, tags) say nothing and are left out
    assert {r["stratum_field"] for r in rows} == {"difficulty", "metadata"}
    assert any(r["metric"] == "bleu" and r["aggregation"] == "corpus" for r in rows)


def test_overall_metric_rows_from_results_json():
    results = {
        "config_general": {"num_scored": 5, "task": "gen_qa"},
        "results": {
            "all": {
                "em": 0.4,
                "em_stderr": 0.2,
                "bleu": 12.0,
                "bleu_stderr": 3.0,
                "class_correct": 0.6,
                "class_correct_stderr": 0.1,
                "rougeL": None,
                "classification": {"accuracy": 0.6, "labels": ["a"]},
            }
        },
    }
    rows = {r["metric"]: r for r in build.overall_metric_rows(results, "max")}
    assert rows["em"] | {} == rows["em"] and rows["em"]["aggregation"] == "mean"
    assert (rows["bleu"]["aggregation"], rows["bleu"]["stderr"]) == ("corpus", 3.0)
    assert (rows["class_correct"]["aggregation"], rows["class_correct"]["source"]) == (
        "max",
        "custom",
    )
    assert rows["rougeL"]["value"] is None
    assert rows["classification.accuracy"]["value"] == 0.6
    assert all(r["stratum"] == "all" and r["num_examples"] == 5 for r in rows.values())


def test_judge_rows_from_the_judge_table_one_row_per_pass():
    prompts = 3
    data = {name: [None] * prompts for name in JUDGMENTS_SCHEMA.names}
    data.update(
        row_index=list(range(prompts)),
        prompt=[f"p{i}" for i in range(prompts)],
        response_A=["a"] * prompts,
        response_B=["b"] * prompts,
        metadata=['{"difficulty": "easy"}'] * prompts,
        forward_preference=["A", "B", "error"],
        backward_preference=["A", "tie", "B"],
        forward_verdict=["first", "second", None],
        backward_verdict=["second", "tie", "first"],
        forward_rationale=["r1", "r2", None],
        forward_raw=["raw1", "raw2", "garbage"],
        outcome=["A", "B", "B"],
        judge_model=["sha256:judge"] * prompts,
    )
    table = pa.table(data, schema=JUDGMENTS_SCHEMA)
    info = build.RunInfo("judge", "j1", datetime(2025, 3, 2, tzinfo=UTC), task="llm_judge")
    rows = build.to_judge_judgments(
        table, info, {"baseline": "base", "challenger": "chal"}
    ).to_pylist()
    assert len(rows) == 2 * prompts
    forward = [r for r in rows if r["pass"] == "forward"]
    backward = [r for r in rows if r["pass"] == "backward"]
    assert [r["outcome"] for r in forward] == ["A", "B", "inference_error"]
    assert [r["outcome"] for r in backward] == ["A", "tie", "B"]
    assert [r["verdict"] for r in backward] == ["second", "tie", "first"]
    assert forward[0]["raw_output"] == "raw1" and forward[0]["rationale"] == "r1"
    assert rows[0]["response_a"] == "a" and rows[0]["baseline"] == "base"
    assert rows[0]["judge_model"] == "sha256:judge"
    assert rows[0]["metadata_map"] == [("difficulty", "easy")]

    summary = build.judge_summary_table(
        info,
        {"a_scores": 2.0, "a_scores_stderr": 0.5, "winrate": 0.4, "lower_rate": 0.1},
        {"flip_rate": 0.5, "num_prompts": 3, "judge_model": "sha256:judge"},
    ).to_pylist()[0]
    assert (summary["a_scores"], summary["winrate"], summary["flip_rate"]) == (2.0, 0.4, 0.5)
    assert summary["num_prompts"] == 3 and summary["upper_rate"] is None


def test_query_result_files(tmp_path: Path):
    root = str(tmp_path / "tables")
    info = run()
    writer.write_run(
        root, "eval_examples", info.partition, [build.to_eval_examples(examples(), info)]
    )
    with duck.connection(root) as con:
        relation = con.sql("SELECT row_index, metadata_map, metrics FROM eval_examples")
        duck.write_result(relation, str(tmp_path / "out.parquet"))
        duck.write_result(
            con.sql("SELECT row_index, metrics FROM eval_examples"), str(tmp_path / "o.csv")
        )
        with pytest.raises(ValueError, match=r"\.csv or \.parquet"):
            duck.write_result(relation, str(tmp_path / "out.txt"))
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 6
    assert len(pd.read_csv(tmp_path / "o.csv")) == 6
    assert np.array_equal(sorted(pd.read_csv(tmp_path / "o.csv")["row_index"]), np.arange(6))
