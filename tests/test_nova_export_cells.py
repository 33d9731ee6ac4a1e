"""The Nova export builds its cells column-wise (Arrow joins, ``repr`` once per distinct
value); every cell must still be exactly what plain Python gives: ``repr`` of the values of
``to_pylist()`` rows (the reference below, written the straightforward way), and each line
of inference_output.jsonl exactly ``json.dumps(row, ensure_ascii=False)``. Rows here are
hostile: quotes, backslashes, control and non-printable characters, repeated top tokens,
missing lists, repeated metric keys, NaN / infinities / -0.0, images."""

from __future__ import annotations

import ast
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nova_eval_assets import storage
from nova_eval_assets.report import nova_export
from nova_eval_assets.report.nova_export import details_table, write_nova_export
from nova_eval_assets.stages.schemas import IMAGE_COLUMNS, METRICS_SCHEMA, TOKEN_LOGPROB

SCHEMA = pa.schema(
    [
        pa.field("row_index", pa.int64(), nullable=False),
        pa.field("prompt", pa.string()),
        pa.field("gold", pa.string()),
        pa.field("metadata", pa.string()),
        *IMAGE_COLUMNS,
        pa.field("prediction", pa.string()),
        pa.field("token_logprobs", pa.list_(TOKEN_LOGPROB)),
        METRICS_SCHEMA.field("metrics"),
    ]
)
NAN, INF = float("nan"), float("inf")
TEXTS = [
    "a",
    "'",
    '"',
    "'\"",
    "\\",
    "\\'",
    "\n",
    "\t\r",
    "\x00",
    "\x7f",
    "é",
    "日本",
    "\u200b",
    "\u2028",
    "\ufffd",
    "🙂",
    "None",
    "a#2",
    "",
    " the",
]
LOGPROBS = [-0.001, -1.5, 0.0, -0.0, 1e-05, -1e16, 5e-324, -123.456789012345678, None]


def tok(text: str | None, logprob: float | None, top: list[tuple[Any, Any]] | None) -> dict:
    return {
        "token": text,
        "logprob": logprob,
        "top": None if top is None else [{"token": t, "logprob": v} for t, v in top],
        "constrained_logprob": None,
        "forced": None,
    }


def row(
    tokens: list[dict] | None,
    metrics: list[tuple[str, float | None]] | None = None,
    metadata: str | None = '{"difficulty": "easy"}',
    images: tuple[int | None, list[str] | None] = (0, []),
    prompt: str | None = "p",
    prediction: str | None = "x",
    gold: str | None = "g",
) -> dict:
    return {
        "prompt": prompt,
        "gold": gold,
        "metadata": metadata,
        "image_count": images[0],
        "image_sha256": images[1],
        "prediction": prediction,
        "token_logprobs": tokens,
        "metrics": metrics,
    }


HOSTILE_ROWS = [
    row([tok("a", -0.1, [("a", -0.1), ("'", -1.0), ('"', -2.0), ("'\"", -3.0)])]),
    # repeated top texts: numbered suffixes, also past a literal 'a#2'
    row([tok("a", -0.1, [("a", -0.1), ("a", -0.2), ("a#2", -0.3), ("a", -0.4)])]),
    row([tok("a", -0.1, [("a#2", -0.1), ("a", -0.2), ("a", -0.3)])]),
    # the same text in two tokens of a row is no repeat
    row([tok("a", -0.1, [("a", -0.1), ("b", -1.0)]), tok("b", -0.2, [("b", -0.2), ("a", -2.0)])]),
    # null top texts and the text 'None'
    row([tok(None, -0.1, [(None, -0.1), ("None", -1.0), (None, -2.0)])]),
    row([]),
    row(None),
    row([tok("a", -0.1, []), tok("b", -0.2, [])]),
    row([tok("x", -0.1, [("x", NAN), ("y", INF), ("z", -INF), ("w", -0.0), ("v", None)])]),
    row([tok("x", -0.1, [(t, v) for t, v in zip(TEXTS, LOGPROBS * 3, strict=False)])]),
    row(
        [tok("\ufffd", -0.5, [("\ufffd", -0.5), ("\ufffd", -0.6), ("\ufffd", -0.7)])],
        metrics=[("em", 1.0), ("f1", 0.5), ("em", 0.0), ("f1", None), ("bleu", 2.0)],
    ),
    row([], metrics=None),
    row([], metrics=[]),
    row([], metrics=[("em", NAN), ("x'y", INF), ('q"', -0.0), ("\n", -INF), ("", None)]),
    row([], metadata=None),
    row([], metadata='it\'s "quoted" \\ \n\u2028\x01', prompt=None, prediction=None, gold=None),
    row([], prompt='\x01\x1f\x7f"\\/\u2028\u2029\ud7ff\U0001f642 é\n\t', prediction="'\""),
    row([], images=(2, ["ab" * 32, "cd" * 32])),
    row([], images=(None, None)),
    row([], images=(1, None)),
]


def reference_top(top: list[dict[str, Any]]) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for entry in top:
        key, n = entry["token"], 1
        while key in mapping:
            n += 1
            key = f"{entry['token']}#{n}"
        mapping[key] = entry["logprob"]
    return mapping


def reference_values(rows: list[dict[str, Any]], images: bool) -> dict[str, list[Any]]:
    """The Python value each details cell is ``repr`` of (example and gold: the text)."""
    values: dict[str, list[Any]] = {
        name: [] for name in ("example", "gold", "predictions", "metrics", "specifics")
    }
    values["pred_logprobs"] = []
    for r in rows:
        extra = {"image_count": r["image_count"] or 0, "image_sha256": r["image_sha256"]}
        values["example"].append(r["prompt"])
        values["gold"].append(r["gold"])
        values["predictions"].append([r["prediction"]])
        values["metrics"].append(dict(r["metrics"] or []))
        values["specifics"].append({"metadata": r["metadata"], **(extra if images else {})})
        values["pred_logprobs"].append(
            [[reference_top(t["top"]) for t in r["token_logprobs"] or []]]
        )
    return values


def reference_lines(rows: list[dict[str, Any]], images: bool) -> bytes:
    text = ""
    for r in rows:
        line = {"prompt": r["prompt"], "inference": r["prediction"], "gold": r["gold"]}
        line["metadata"] = r["metadata"]
        if images:
            line.update(image_count=r["image_count"] or 0, image_sha256=r["image_sha256"])
        text += json.dumps(line, ensure_ascii=False) + "\n"
    return text.encode("utf-8")


def finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(finite(v) for v in value.values())
    if isinstance(value, list):
        return all(finite(v) for v in value)
    return True


def check_details(table: pa.Table, rows: list[dict[str, Any]], images: bool) -> None:
    expected = reference_values(rows, images)
    for name, values in expected.items():
        cells = table.column(name).to_pylist()
        if name in ("example", "gold"):
            assert cells == values, name
            continue
        assert cells == [repr(value) for value in values], name
        for cell, value in zip(cells, values, strict=True):
            if finite(value):  # literal_eval reads no nan / inf
                assert ast.literal_eval(cell) == value, (name, cell)


def random_rows(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    keys = ["em", "f1", "qem", "rouge1", "x'"]

    def top() -> list[tuple[Any, Any]]:
        pool = [*TEXTS, None]
        return [(rng.choice(pool), rng.choice([*LOGPROBS, NAN])) for _ in range(rng.randint(0, 5))]

    rows = []
    for _ in range(count):
        kind = rng.random()
        tokens = (
            None
            if kind < 0.05
            else [tok(rng.choice(TEXTS), rng.random(), top()) for _ in range(rng.randint(0, 6))]
        )
        metrics = (
            None
            if kind > 0.95
            else [(rng.choice(keys), rng.choice(LOGPROBS)) for _ in range(rng.randint(0, 6))]
        )
        count_ = rng.choice([None, 0, 1, 2])
        shas = None if rng.random() < 0.2 else [rng.choice(TEXTS) for _ in range(count_ or 0)]
        rows.append(
            row(
                tokens,
                metrics,
                metadata=rng.choice([None, '{"a": 1}', "it's"]),
                images=(count_, shas),
                prompt=rng.choice(TEXTS),
            )
        )
    return rows


def table_of(rows: list[dict[str, Any]]) -> pa.Table:
    indexed = [{"row_index": i, **r} for i, r in enumerate(rows)]
    return pa.Table.from_pylist(indexed, schema=SCHEMA)


def export(tmp_path: Path, examples: str | pa.Table) -> tuple[pa.Table, bytes]:
    paths = write_nova_export(examples, str(tmp_path / "out"), "org/model", "2025-01-01")
    return pq.read_table(paths["details"]), Path(paths["inference_output"]).read_bytes()


@pytest.mark.parametrize("batch_rows", [1, 3, 7, 1000])
@pytest.mark.parametrize("from_file", [False, True])
def test_hostile_cells_are_plain_python_reprs(tmp_path, monkeypatch, batch_rows, from_file):
    monkeypatch.setenv(storage.BATCH_ROWS_ENV, str(batch_rows))
    table = table_of(HOSTILE_ROWS)
    examples: str | pa.Table = table
    if from_file:
        examples = str(tmp_path / "examples.parquet")
        pq.write_table(table, examples)
    details, lines = export(tmp_path, examples)
    check_details(details, HOSTILE_ROWS, images=True)
    assert lines == reference_lines(HOSTILE_ROWS, images=True)


@pytest.mark.parametrize("seed", range(4))
def test_random_rows_match_the_reference(tmp_path, monkeypatch, seed):
    monkeypatch.setenv(storage.BATCH_ROWS_ENV, "37")
    rows = random_rows(300, seed)
    details, lines = export(tmp_path, table_of(rows))
    images = any((r["image_count"] or 0) > 0 for r in rows)
    check_details(details, rows, images)
    assert lines == reference_lines(rows, images)


def test_without_images_neither_file_names_them(tmp_path):
    rows = [r for r in HOSTILE_ROWS if not r["image_count"]]
    details, lines = export(tmp_path, table_of(rows))
    check_details(details, rows, images=False)
    assert lines == reference_lines(rows, images=False)
    assert b"image_count" not in lines


def test_a_sliced_chunked_table_gives_the_same_cells():
    table = pa.concat_tables([table_of(HOSTILE_ROWS)] * 2).slice(3, len(HOSTILE_ROWS))
    rows = (HOSTILE_ROWS * 2)[3 : 3 + len(HOSTILE_ROWS)]
    check_details(details_table(table, ["image_count", "image_sha256"]), rows, images=True)


@pytest.mark.parametrize(
    "tokens",
    [
        [None],  # a null token
        [tok("a", -0.1, None)],  # a null top list
        [{**tok("a", -0.1, []), "top": [None]}],  # a null top entry
    ],
)
def test_null_structs_inside_token_logprobs_fail_as_plain_python_does(tokens):
    table = table_of([row([]), row(tokens)])
    with pytest.raises(TypeError):
        reference_values(table.to_pylist(), images=False)
    with pytest.raises(TypeError):
        details_table(table, [])


def logprob_like_floats(count: int, seed: int) -> list[float]:
    """Distinct floats as served models give them, and those around where repr's layout
    changes (1e-4: scientific below) or Arrow's might (1e6 and up)."""
    rng = np.random.default_rng(seed)
    low, high = np.array([1e-4, 1e6]).view(np.int64)
    bits = rng.integers(low, high, count, dtype=np.int64).view(np.float64)
    edges = np.array([1e-4, 1e-5, 1e6, 1e7, 1e10, 1e15, 1e16, 1e17, 0.1, 0.5, 1.0, 2.0**52])
    edges = np.concatenate([edges, np.nextafter(edges, 0), np.nextafter(edges, np.inf)])
    values = np.concatenate(
        [
            -rng.exponential(3.0, count),
            -rng.exponential(1e-5, count),
            bits,
            *(np.round(rng.uniform(-30, 0, count // 16), k) for k in range(1, 17)),
            np.round(rng.uniform(-1e6, 0, count // 10)),
            edges,
        ]
    )
    values[rng.random(len(values)) < 0.5] *= -1
    return values.tolist()


def test_distinct_logprobs_match_repr(monkeypatch):
    """Mostly distinct logprobs take Arrow's cast to string where it writes repr's text;
    each must still read as repr gives it."""
    monkeypatch.setenv(storage.BATCH_ROWS_ENV, "500")
    floats = logprob_like_floats(20_000, 0)
    rows = [
        row(
            [tok("t", 0.0, [(f"w{k}", v) for k, v in enumerate(floats[i : i + 20])])],
            metrics=[(f"m{k}", v) for k, v in enumerate(floats[i : i + 5])],
        )
        for i in range(0, len(floats), 20)
    ]
    table = table_of(rows)
    cells = pa.concat_tables(
        details_table(batch, []) for batch in table.to_batches(max_chunksize=500)
    )
    check_details(cells, rows, images=False)


def test_cells_over_the_chunk_size_are_cut_into_string_chunks(monkeypatch):
    """A batch's cells can pass 2 GiB (the limit of a string array); they are cut into
    chunks then, here at a few hundred bytes."""
    monkeypatch.setattr(nova_export, "_CHUNK_BYTES", 300)
    table = details_table(table_of(HOSTILE_ROWS), ["image_count", "image_sha256"])
    assert table.column("pred_logprobs").num_chunks > 1
    assert table.schema == nova_export.DETAILS_SCHEMA
    check_details(table, HOSTILE_ROWS, images=True)
