"""Metrics by metadata stratum: the figures match a plain pandas groupby; missing values,
small strata, high-cardinality and non-JSON metadata; corpus BLEU per stratum."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from nova_eval_assets.analysis.strata import MISSING, metadata_fields, stratify
from nova_eval_assets.metrics.gen_qa import bleu_from_stats
from nova_eval_assets.metrics.stats import bootstrap_bleu_stderr


def synthetic(n: int = 2000, seed: int = 0) -> tuple[pd.DataFrame, pa.Array]:
    rng = np.random.default_rng(seed)
    difficulty = rng.choice(["easy", "medium", "hard"], size=n, p=[0.5, 0.3, 0.2])
    domain = rng.choice(
        ["hr", "finance", "legal", "ops", "rare"], size=n, p=[0.4, 0.3, 0.2, 0.09, 0.01]
    )
    metadata = []
    for i in range(n):
        meta = {"difficulty": str(difficulty[i]), "domain": str(domain[i])}
        if i % 3:
            meta["priority"] = ["low", "high"][i % 2]
        meta["level"] = i % 4  # a number: its JSON text is the stratum
        metadata.append(json.dumps(meta))
    frame = pd.DataFrame(
        {
            "difficulty": difficulty,
            "domain": domain,
            "priority": [json.loads(m).get("priority", MISSING) for m in metadata],
            "level": [str(i % 4) for i in range(n)],
            "em": (rng.random(n) < 0.6).astype(float),
            "f1": rng.random(n),
            "custom": rng.normal(5, 2, size=n),
        }
    )
    frame.loc[rng.random(n) < 0.05, "custom"] = np.nan  # a custom metric some rows lack
    return frame, pa.array(metadata)


def test_strata_match_a_pandas_groupby():
    frame, metadata = synthetic()
    fields, notes = metadata_fields(metadata, max_values=50)
    assert [f.name for f in fields] == ["difficulty", "domain", "level", "priority"] and not notes
    metrics = {m: frame[m].to_numpy() for m in ("em", "f1", "custom")}
    rows = stratify(metrics, fields, min_size=30)
    got = pd.DataFrame(rows)
    for field in ("difficulty", "domain", "priority", "level"):
        for metric in ("em", "f1", "custom"):
            expected = frame.groupby(field)[metric].agg(["count", "mean", "sem"])
            part = got[(got.field == field) & (got.metric == metric)].set_index("value")
            assert set(part.index) == set(expected.index)
            for value, want in expected.iterrows():
                row = part.loc[value]
                assert row.n == want["count"]
                assert row["mean"] == pytest.approx(want["mean"], rel=1e-12)
                assert row["stderr"] == pytest.approx(want["sem"], rel=1e-9)
                assert bool(row.small) == (want["count"] < 30)
    overall = got[(got.field == "(all)") & (got.metric == "custom")].iloc[0]
    assert overall.n == frame.custom.count()
    assert overall["mean"] == pytest.approx(frame.custom.mean())
    assert overall["stderr"] == pytest.approx(frame.custom.sem())


def test_small_strata_are_flagged_not_hidden():
    frame, metadata = synthetic()
    fields, _ = metadata_fields(metadata)
    rows = stratify({"em": frame.em.to_numpy()}, fields, min_size=30)
    rare = next(r for r in rows if r["field"] == "domain" and r["value"] == "rare")
    assert 0 < rare["n"] < 30 and rare["small"] and rare["mean"] is not None
    missing = next(r for r in rows if r["field"] == "priority" and r["value"] == MISSING)
    assert missing["n"] == sum(1 for i in range(len(frame)) if i % 3 == 0)


def test_high_cardinality_and_non_json_metadata():
    metadata = pa.array(
        [json.dumps({"id": f"t{i}", "team": "a" if i % 2 else "b"}) for i in range(60)]
        + ["plain text note", None]
    )
    fields, notes = metadata_fields(metadata, max_values=50)
    names = {f.name: f for f in fields}
    assert set(names) == {"team", "metadata"}
    assert "'id' has 60 distinct values" in notes[0]
    assert names["metadata"].values == ["plain text note", MISSING]
    assert names["team"].values == ["b", "a", MISSING]
    assert list(names["team"].codes[-2:]) == [2, 2]


def test_one_row_strata_and_empty_metrics():
    metadata = pa.array([json.dumps({"k": "x"}), json.dumps({"k": "y"}), json.dumps({"k": "y"})])
    fields, _ = metadata_fields(metadata)
    rows = stratify({"m": np.array([1.0, np.nan, np.nan])}, fields, min_size=2)
    by_value = {r["value"]: r for r in rows if r["field"] == "k"}
    assert by_value["x"] == {
        "field": "k", "value": "x", "metric": "m", "n": 1, "mean": 1.0, "stderr": 0.0, "small": True
    }  # fmt: skip
    assert by_value["y"]["n"] == 0 and by_value["y"]["mean"] is None


def test_corpus_bleu_per_stratum():
    rng = np.random.default_rng(0)
    n = 300
    total = rng.integers(5, 30, size=(n, 4)).astype(float)
    correct = np.floor(total * rng.random((n, 4)))
    stats = np.column_stack([total[:, 0], total[:, 0] + rng.integers(-3, 4, n), correct, total])
    stats[::17] = np.nan  # unscored rows
    metadata = pa.array([json.dumps({"half": "a" if i < 120 else "b"}) for i in range(n)])
    fields, _ = metadata_fields(metadata)
    rows = stratify({}, fields, corpus_stats={"bleu": stats}, rounds=2000, seed=7)
    usable = np.isfinite(stats).all(axis=1)
    for value, inside in (("(all)", np.ones(n, bool)), ("a", np.arange(n) < 120)):
        row = next(r for r in rows if r["value"] == value)
        part = stats[usable & inside]
        assert row["n"] == part.shape[0]
        assert row["mean"] == pytest.approx(bleu_from_stats(part.sum(axis=0)))
        # the aggregated report's bootstrap of the same statistic (other random draws)
        reference = bootstrap_bleu_stderr(part, rounds=2000, seed=7)
        assert row["stderr"] == pytest.approx(reference, rel=0.1)


def test_arrow_fast_path_for_many_distinct_metadata_agrees_with_python():
    from nova_eval_assets.analysis.strata import _arrow_fields, _python_fields

    rng = np.random.default_rng(0)
    rows = []
    for i in range(1500):
        meta = {"id": f"t-{i}", "level": int(rng.integers(-3, 3)), "vip": bool(i % 2)}
        if i % 5:
            meta["team"] = ["a", "b", "ünï"][i % 3]
        if i % 7 == 0:
            meta["team"] = None  # null is missing
        rows.append(json.dumps(meta, ensure_ascii=False))
    uniques = pa.array(rows)
    fast = _arrow_fields(uniques)
    assert fast is not None
    slow = _python_fields(uniques)
    assert list(fast) == list(slow)
    for name in slow:
        assert fast[name].to_pylist() == slow[name].to_pylist(), name
    # anything Arrow would render differently goes to Python
    for odd in (
        '{"x": 1.5}',
        '{"x": [1]}',
        '{"x": "2024-01-01T00:00:00"}',
        "not json",
        '{"x": 1} {}',
    ):
        assert _arrow_fields(pa.array([*rows[:1100], odd])) is None, odd


def test_dictionary_encoded_metadata_with_unused_values():
    """The analysis keeps metadata dictionary-encoded; rows taken from it (a comparison's
    pairing) keep the whole dictionary, whose values no row has must not become strata."""
    texts = [
        json.dumps({"topic": t, "lang": lang})
        for t, lang in [("a", "en"), ("b", "en"), ("c", "fr"), ("a", "fr")]
    ] + [None, "not json"]
    whole = pa.array(texts, pa.string())
    taken = pa.compute.dictionary_encode(whole).take(pa.array([0, 3, 4, 5]))
    fields, notes = metadata_fields(taken)
    by_name = {f.name: f for f in fields}
    # worked by hand: rows {"a","en"}, {"a","fr"}, null, "not json"
    assert by_name["topic"].values == ["a", MISSING]
    assert by_name["topic"].codes.tolist() == [0, 0, 1, 1]
    assert by_name["lang"].values == ["en", "fr", MISSING]
    assert by_name["lang"].codes.tolist() == [0, 1, 2, 2]
    assert by_name["metadata"].values == ["not json", MISSING]
    assert by_name["metadata"].codes.tolist() == [1, 1, 1, 0]
    assert notes == []
