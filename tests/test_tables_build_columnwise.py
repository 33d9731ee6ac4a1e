"""The column-wise paths of the tables build give what their row-by-row definitions give:
example ids (also with images), judge outcomes, per-stratum corpus BLEU computed on
several threads, and eval_examples streamed in batches of $NOVA_EVAL_BATCH_ROWS rows."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nova_eval_assets import storage
from nova_eval_assets.metrics import aggregate_gen_qa
from nova_eval_assets.tables import build

TEXTS = ["plain", "", None, "ünïcødé ✓", "nul\x00 and unit\x1f separators", "x" * 5000]


def reference_id(*parts: str | None) -> str:
    """The id's definition, one row at a time."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(b"\x00" if part is None else b"\x01" + part.encode("utf-8"))
        digest.update(b"\x1f")
    return digest.hexdigest()[:16]


def test_example_ids_match_their_definition():
    rows = [(a, b, c) for a in TEXTS for b in TEXTS for c in TEXTS[:3]]
    columns = [pa.array([row[i] for row in rows], pa.string()) for i in range(3)]
    assert build.example_ids(*columns).to_pylist() == [reference_id(*row) for row in rows]
    assert build.example_ids(pa.array([], pa.string())).to_pylist() == []
    chunked = pa.chunked_array([columns[0][:5], columns[0][5:]])
    assert build.example_ids(chunked.combine_chunks()).equals(build.example_ids(columns[0]))


def test_image_rows_hash_their_image_hashes():
    images = [["aa", "bb"], [], None, ["cc"]]
    batch = pa.table(
        {
            "row_index": pa.array(range(4), pa.int64()),
            "system": ["s"] * 4,
            "prompt": ["p", "p", "q", None],
            "gold": ["g"] * 4,
            "image_count": pa.array([2, 0, None, 1], pa.int32()),
            "image_sha256": pa.array(images, pa.list_(pa.string())),
        }
    )
    info = build.RunInfo("imgs", "r1", datetime(2025, 3, 2, tzinfo=UTC))
    ids = build.to_eval_examples(batch, info)["example_id"].to_pylist()
    assert ids == [
        reference_id("s", "p", "g", "aa,bb"),
        reference_id("s", "p", "g"),  # text rows keep the ids they always had
        reference_id("s", "q", "g"),
        reference_id("s", None, "g", "cc"),
    ]


def test_judge_outcomes_are_renamed_column_wise():
    table = pa.table(
        {
            "prompt": ["p"] * 4,
            "response_A": ["a"] * 4,
            "response_B": ["b"] * 4,
            "pass": ["forward"] * 4,
            "outcome": ["A", "error", None, "tie"],
        }
    )
    info = build.RunInfo("judge", "j1", datetime(2025, 3, 2, tzinfo=UTC), task="llm_judge")
    rows = build.to_judge_judgments(table, info)
    assert rows["outcome"].to_pylist() == ["A", "inference_error", None, "tie"]
    assert rows["example_id"].to_pylist() == [reference_id("p", "a", "b")] * 4


@pytest.mark.parametrize("workers", [1, 3])
def test_corpus_bleu_by_subset_is_aggregate_gen_qa_of_each(workers: int):
    rng = np.random.default_rng(7)
    stats = rng.integers(1, 40, size=(3000, 10)).astype(np.float64)
    stats[:, 2:6] = np.minimum(stats[:, 2:6], stats[:, 6:10])  # matches <= n-grams
    subsets = [rng.random(3000) < share for share in (0.5, 0.05, 0.3, 0.001, 0.9)]
    subsets[3][:] = False
    subsets[3][11] = True  # one example: stderr 0
    got = build.corpus_bleu_by_subset(stats, subsets, workers=workers)
    for subset, (value, stderr) in zip(subsets, got, strict=True):
        expected = aggregate_gen_qa({}, stats[subset])
        assert value == expected["bleu"] and stderr == expected["bleu_stderr"]
    assert build.corpus_bleu_by_subset(stats, [], workers=workers) == []


def _examples(n: int) -> pa.Table:
    rng = np.random.default_rng(3)
    difficulty = np.array(["easy", "medium", "hard"])[rng.integers(0, 3, n)]
    return pa.table(
        {
            "row_index": pa.array(np.arange(n), pa.int64()),
            "system": ["sys"] * n,
            "prompt": [f"prompt {i}" for i in range(n)],
            "gold": ["gold"] * n,
            "metadata": [json.dumps({"difficulty": d}) for d in difficulty],
            "scored": pa.array(rng.random(n) < 0.9),
            "metrics": pa.array(
                [[("em", float(i % 2)), ("f1", i / n)] for i in range(n)],
                pa.map_(pa.string(), pa.float64()),
            ),
            "bleu_stats": [[float(5 + i % 7)] * 10 for i in range(n)],
        }
    )


def test_examples_stream_in_batches_of_the_configured_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path = str(tmp_path / "examples.parquet")
    table = _examples(1000)
    pq.write_table(table, path, row_group_size=400)
    info = build.RunInfo("stream", "r1", datetime(2025, 3, 2, tzinfo=UTC))
    whole = build.to_eval_examples(table, info)
    monkeypatch.setenv(storage.BATCH_ROWS_ENV, "64")
    batches = list(build.examples_batches(path, info))
    assert max(b.num_rows for b in batches) == 64
    assert pa.concat_tables(batches).equals(whole)
    assert [b.num_rows for b in build.examples_batches(path, info, batch_rows=500)] == [400] * 2 + [
        200
    ]

    rows = build.stratum_metric_rows(path)
    monkeypatch.setenv(storage.BATCH_ROWS_ENV, "100000")
    assert build.stratum_metric_rows(path) == rows
    bleu = [r for r in rows if r["metric"] == "bleu"]
    assert [r["stratum"] for r in bleu] == [
        "difficulty=easy",
        "difficulty=hard",
        "difficulty=medium",
    ]
    assert all(r["value"] > 0 and not math.isnan(r["stderr"]) for r in bleu)
