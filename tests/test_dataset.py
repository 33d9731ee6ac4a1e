"""Dataset validation (every error with its line number) and sharding into replicas."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from nova_eval_assets import cli, stages, storage
from nova_eval_assets.dataset import (
    GEN_QA,
    JUDGE,
    DatasetError,
    DatasetFileError,
    shard_ranges,
    validate_dataset,
)
from nova_eval_assets.layout import EvalLayout

GOOD = {"system": "s", "query": "q", "response": "r", "metadata": '{"difficulty": "easy"}'}


def write_lines(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def row(**changes) -> str:
    data = {**GOOD, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not ...})


def test_valid_rows_keep_order_line_numbers_and_optional_fields(tmp_path: Path):
    path = write_lines(
        tmp_path / "d.jsonl",
        [row(query="first"), "", row(query="second", system=..., metadata=...)],
    )
    outcome = validate_dataset(path)
    assert outcome.ok
    rows = outcome.table.to_pylist()
    assert [r["query"] for r in rows] == ["first", "second"]
    assert [r["row_index"] for r in rows] == [0, 1]
    assert [r["line"] for r in rows] == [1, 3]  # the blank line 2 is not a row
    assert rows[1]["system"] is None and rows[1]["metadata"] is None


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "line 2: invalid JSON"),
        ('["a", "list"]', "line 2: expected a JSON object, got array"),
        (row(query=...), "line 2, field 'query': missing required field"),
        (row(response=...), "line 2, field 'response': missing required field"),
        (row(query="   "), "line 2, field 'query': must not be empty"),
        (row(response=""), "line 2, field 'response': must not be empty"),
        (row(query=None), "line 2, field 'query': must not be null"),
        (row(query=42), "line 2, field 'query': must be a string, got number"),
        (row(system=["x"]), "line 2, field 'system': must be a string, got array"),
        (row(metadata={"a": 1}), "line 2, field 'metadata': must be a string, got object"),
        (
            row(metadata="difficulty=easy"),
            "line 2, field 'metadata': the recipe says metadata is JSON",
        ),
        (row(extra="x"), "line 2, field 'extra': unknown field; allowed: query, response"),
    ],
)
def test_each_error_names_line_and_field(tmp_path: Path, line: str, expected: str):
    path = write_lines(tmp_path / "d.jsonl", [row(), line, row()])
    outcome = validate_dataset(path)
    assert not outcome.ok
    assert outcome.table.num_rows == 2
    assert [r.line for r in outcome.rejected] == [2]
    assert expected in outcome.report()
    assert outcome.rejected[0].raw == line  # the rejected row is kept verbatim


def test_text_metadata_is_allowed_when_the_recipe_says_so(tmp_path: Path):
    path = write_lines(tmp_path / "d.jsonl", [row(metadata="difficulty=easy")])
    assert validate_dataset(path, metadata_format="text").ok


def test_report_lists_first_twenty_and_the_total(tmp_path: Path):
    path = write_lines(tmp_path / "d.jsonl", ["{bad"] * 25 + [row()])
    outcome = validate_dataset(path)
    report = outcome.report()
    assert "25 problem(s) in 25 of 26 rows" in report
    assert "line 20: invalid JSON" in report and "line 21:" not in report
    assert "... and 5 more" in report
    # every input row is accounted for: valid + rejected == read
    assert outcome.table.num_rows + len(outcome.rejected) == outcome.lines_read == 26


def test_several_problems_on_one_line_are_all_reported(tmp_path: Path):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps({"query": "", "system": 3})])
    outcome = validate_dataset(path)
    fields = {p.field for p in outcome.problems}
    assert fields == {"query", "response", "system"}
    assert len(outcome.rejected) == 1


def test_limit_counts_input_rows(tmp_path: Path):
    path = write_lines(tmp_path / "d.jsonl", [row(query=f"q{i}") for i in range(10)])
    outcome = validate_dataset(path, limit=4)
    assert outcome.table.num_rows == 4 and outcome.lines_read == 4


def test_judge_schema(tmp_path: Path):
    good = json.dumps({"prompt": "p", "response_A": "a", "response_B": "b"})
    bad = json.dumps({"prompt": "p", "response_A": "a"})
    outcome = validate_dataset(write_lines(tmp_path / "j.jsonl", [good, bad]), JUDGE)
    assert outcome.table.num_rows == 1
    assert "line 2, field 'response_B': missing required field" in outcome.report()


def test_missing_file(tmp_path: Path):
    with pytest.raises(DatasetFileError, match=r"nope\.jsonl: dataset file not found"):
        validate_dataset(str(tmp_path / "nope.jsonl"), GEN_QA)


# 31 bytes: {"query": "q", "response": "r"}
SHORT = b'{"query": "q", "response": "r"}'
# 14 bytes before the Latin-1 e-acute: {"query": "caf
LATIN1 = b'{"query": "caf\xe9", "response": "r"}'


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "no rows: the file is empty"),
        (b"\n   \r\n\t\n", "no rows: the file has only blank lines (3)"),
    ],
)
def test_a_file_without_rows_is_invalid(tmp_path: Path, content: bytes, expected: str):
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    outcome = validate_dataset(str(path))
    assert not outcome.ok and outcome.no_rows
    assert outcome.lines_read == 0 and not outcome.problems
    assert outcome.report() == f"{path}: {expected}"


def test_every_row_rejected_leaves_no_rows(tmp_path: Path):
    outcome = validate_dataset(write_lines(tmp_path / "d.jsonl", ["{bad", "[1]"]))
    assert outcome.no_rows
    assert "no valid rows: all 2 rows were rejected" in outcome.report()


def test_invalid_utf8_names_the_line_and_byte_offsets(tmp_path: Path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(SHORT + b"\n" + LATIN1 + b"\n" + SHORT + b"\n")
    outcome = validate_dataset(str(path))
    # line 2 starts at byte 32 (31 + the newline); its bad byte is its 15th, offset 14
    assert [str(p) for p in outcome.problems] == [
        "line 2: not valid UTF-8: byte 0xe9 at byte 14 of the line "
        "(byte offset 46 in the file): invalid continuation byte"
    ]
    assert [r["line"] for r in outcome.table.to_pylist()] == [1, 3]  # the others are read
    (rejected,) = outcome.rejected
    assert rejected.line == 2
    assert rejected.raw == '{"query": "caf\ufffd", "response": "r"}'  # readable, marked
    assert f"{path}: line 2: not valid UTF-8" in outcome.report()


def test_a_byte_order_mark_is_not_part_of_the_first_row(tmp_path: Path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + SHORT + b"\n\xff\n")
    outcome = validate_dataset(str(path))
    assert outcome.table.num_rows == 1
    # offsets stay file offsets: the mark (3) + line 1 (31) + newline (1)
    assert "line 2: not valid UTF-8: byte 0xff at byte 0 of the line (byte offset 35 " in str(
        outcome.problems[0]
    )


def long_row(query_bytes: int) -> bytes:
    """A valid row of 30 + query_bytes bytes: {"query": " (11) + query + ", ... } (19)."""
    return b'{"query": "' + b"x" * query_bytes + b'", "response": "r"}'


@pytest.mark.parametrize("chunk", [None, 100])  # None: the default 1 MiB reads
def test_a_line_over_max_line_bytes_is_rejected_with_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int | None
):
    if chunk:  # small reads: the long lines span many chunks
        monkeypatch.setattr(storage, "_READ_CHUNK", chunk)
    path = tmp_path / "d.jsonl"
    # line 1: exactly the limit (994 + 30 = 1024 bytes, CRLF not counted): accepted;
    # line 2: 1000 + 30 = 1030 bytes: rejected; line 3: 5000 + 30 bytes: rejected
    path.write_bytes(long_row(994) + b"\r\n" + long_row(1000) + b"\n" + long_row(5000) + b"\n")
    outcome = validate_dataset(str(path), max_line_bytes=1024)
    assert [r["line"] for r in outcome.table.to_pylist()] == [1]
    assert [str(p) for p in outcome.problems] == [
        f"line {n}: line is {size} bytes, over dataset.max_line_bytes (1024); not parsed "
        "(the rejected row keeps its first 1024 bytes)"
        for n, size in ((2, 1030), (3, 5030))
    ]
    assert [r.raw for r in outcome.rejected] == [
        long_row(1000)[:1024].decode(),
        long_row(5000)[:1024].decode(),
    ]
    assert validate_dataset(str(path), max_line_bytes=1029).table.num_rows == 1
    assert validate_dataset(str(path), max_line_bytes=1030).table.num_rows == 2
    assert validate_dataset(str(path), max_line_bytes=None).table.num_rows == 3


def test_skip_policy_rejects_only_the_bad_lines(make_recipe, tmp_path: Path):
    loaded = make_recipe([], dataset={"on_invalid": "skip", "max_line_bytes": 1024})
    other = b'{"query": "w", "response": "r"}'
    (tmp_path / "tiny.jsonl").write_bytes(b"\n".join([SHORT, LATIN1, long_row(2000), other]))
    _, summary = stages.run_validation(loaded)
    assert summary["lines_read"] == 4 and summary["valid_rows"] == 2
    layout = EvalLayout.for_recipe(loaded)
    assert storage.read_parquet(layout.validated)["line"].to_pylist() == [1, 4]
    rejected = [json.loads(line) for line in Path(layout.rejected_rows).read_text().splitlines()]
    assert rejected == [
        {
            "line": 2,
            "reasons": [
                "line 2: not valid UTF-8: byte 0xe9 at byte 14 of the line "
                "(byte offset 46 in the file): invalid continuation byte"
            ],
            "raw": '{"query": "caf\ufffd", "response": "r"}',
        },
        {
            "line": 3,
            "reasons": [
                "line 3: line is 2030 bytes, over dataset.max_line_bytes (1024); not parsed "
                "(the rejected row keeps its first 1024 bytes)"
            ],
            "raw": long_row(2000)[:1024].decode(),
        },
    ]


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_no_rows_stops_the_validation_stage_under_either_policy(make_recipe, tmp_path, policy):
    loaded = make_recipe([], dataset={"on_invalid": policy})
    (tmp_path / "tiny.jsonl").write_bytes(b"")
    layout = EvalLayout.for_recipe(loaded)
    storage.write_parquet(layout.validated, pa.table({"row_index": [0]}))  # an older run's
    if policy == "skip":
        with pytest.raises(DatasetError, match="no rows: the file is empty"):
            stages.run_validation(loaded)
    else:
        with pytest.raises(DatasetError, match="no rows: the file is empty"):
            stages.validate_or_raise(loaded)
    summary = storage.read_json(layout.validation_report)
    assert summary["ok"] is False and summary["valid_rows"] == 0
    assert summary["report"].endswith("tiny.jsonl: no rows: the file is empty")
    assert not storage.exists(layout.validated)  # nothing left for a later stage to read
    assert Path(layout.rejected_rows).read_text() == ""


@pytest.mark.parametrize(
    ("rows", "replicas", "block", "expected"),
    [
        (10, 1, 4, [(0, 10)]),
        (10, 2, 4, [(0, 8), (8, 10)]),  # 3 blocks: 2 + 1
        (10, 3, 4, [(0, 4), (4, 8), (8, 10)]),
        (10, 4, 4, [(0, 4), (4, 8), (8, 10), (10, 10)]),  # more replicas than blocks
        (0, 2, 4, [(0, 0), (0, 0)]),
        (200, 2, 64, [(0, 128), (128, 200)]),
    ],
)
def test_shard_ranges(rows, replicas, block, expected):
    assert shard_ranges(rows, replicas, block) == expected


@pytest.mark.parametrize("replicas", [1, 2, 3, 5, 8])
def test_shards_cover_every_row_once_on_block_boundaries(replicas):
    ranges = shard_ranges(1003, replicas, 32)
    assert ranges[0][0] == 0 and ranges[-1][1] == 1003
    for (_, end), (start, _) in itertools.pairwise(ranges):
        assert end == start
    assert all(start % 32 == 0 for start, _ in ranges)


@pytest.mark.parametrize("content", [b"", b"\n \n"])
def test_validate_cli_refuses_a_file_without_rows(make_recipe, tmp_path, capsys, content):
    for policy in ("fail", "skip"):
        loaded = make_recipe([], dataset={"on_invalid": policy})
        (tmp_path / "tiny.jsonl").write_bytes(content)
        assert cli.main(["validate", str(loaded.path)]) == 1
        out = capsys.readouterr().out
        assert f"{tmp_path / 'tiny.jsonl'}: no rows: the file " in out
        assert "would be written" not in out


def test_validate_cli_names_the_bad_lines(make_recipe, tmp_path, capsys):
    loaded = make_recipe([], dataset={"max_line_bytes": 1024})
    (tmp_path / "tiny.jsonl").write_bytes(b"\n".join([SHORT, LATIN1, long_row(1000)]))
    assert cli.main(["validate", str(loaded.path)]) == 1
    out = capsys.readouterr().out
    assert "2 problem(s) in 2 of 3 rows" in out
    assert "tiny.jsonl: line 2: not valid UTF-8: byte 0xe9 at byte 14 of the line" in out
    assert "tiny.jsonl: line 3: line is 1030 bytes, over dataset.max_line_bytes (1024)" in out


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_run_cli_stops_at_validation_before_any_model_loads(
    make_recipe, tmp_path, monkeypatch, capsys, policy
):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    # an ephemeral instance: a real one captures compute logs, which fights capsys
    instance = dg.DagsterInstance.ephemeral()
    monkeypatch.setattr(dg.DagsterInstance, "get", staticmethod(lambda: instance))

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded for a dataset without rows")

    monkeypatch.setattr(stages.engine_setup, "create_engine", no_model)
    loaded = make_recipe([], dataset={"on_invalid": policy})
    (tmp_path / "tiny.jsonl").write_bytes(b"\n\n")
    assert cli.main(["run", str(loaded.path), "--limit", "2", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'tiny.jsonl'}: no rows: the file has only blank lines (2)" in err
    first = {"fail": "The dataset is invalid", "skip": "The dataset has no rows to evaluate"}
    assert err.startswith(first[policy]), err  # one message, no stack trace first
    assert not Path(EvalLayout.for_recipe(loaded).prompts).exists()
