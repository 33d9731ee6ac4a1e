"""Dataset validation (every error with its line number) and sharding into replicas."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from nova_eval_assets.dataset import (
    GEN_QA,
    JUDGE,
    DatasetFileError,
    shard_ranges,
    validate_dataset,
)

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


def test_missing_and_non_utf8_files(tmp_path: Path):
    with pytest.raises(DatasetFileError, match="not found"):
        validate_dataset(str(tmp_path / "nope.jsonl"), GEN_QA)
    (tmp_path / "latin1.jsonl").write_bytes(b'{"query": "caf\xe9", "response": "r"}\n')
    with pytest.raises(DatasetFileError, match="not UTF-8"):
        validate_dataset(str(tmp_path / "latin1.jsonl"), GEN_QA)


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
