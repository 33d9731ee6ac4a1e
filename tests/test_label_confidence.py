"""The label confidence under constrained decoding: the probability of the chosen label
among the labels the constraint allowed, exp of the summed ``constrained_logprob`` from the
token holding the value's opening quote through the one holding its closing quote; the
forced-token count; and the analysis' ``auto`` measure. Expected values are worked out by
hand from the token lists below."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from nova_eval_assets import storage
from nova_eval_assets.analysis.confidence import confidence_columns
from nova_eval_assets.analysis.pipeline import analyze
from nova_eval_assets.recipe import AnalysisConfig, RecipeError, parse_recipe
from nova_eval_assets.stages import TOKEN_LOGPROB
from tests.analysis_synthetic import EXAMPLES_SCHEMA

# (token, raw logprob, constrained logprob, forced)
Piece = tuple[str, float, float | None, bool | None]


def column(rows: list[list[Piece] | None], struct: pa.DataType = TOKEN_LOGPROB) -> pa.Array:
    out = []
    for row in rows:
        if row is None:
            out.append(None)
            continue
        out.append(
            [
                {
                    "token": t,
                    "logprob": lp,
                    "top": [{"token": t, "logprob": lp}],
                    "constrained_logprob": clp,
                    "forced": forced,
                }
                for t, lp, clp, forced in row
            ]
        )
    return pa.array(out, type=pa.list_(struct))


def measures(rows: list[list[Piece] | None], label_field: str | None = "class"):
    return confidence_columns(column(rows), label_field)


# {"class": "software_urgent", "thought": "x"}: the opening quote is its own token (' "'),
# the closing quote is glued to the comma ('",'). The tokens outside the label carry
# constrained log probabilities too, so a wrong span would show.
OWN_QUOTE: list[Piece] = [
    ('{"', -0.01, -0.7, False),
    ("class", -0.01, -0.6, False),
    ('":', -0.02, -0.9, False),
    (' "', -0.05, -0.3, False),  # opening quote: picks among ' "' and ' "soft', ' "hard', ...
    ("software", -0.4, -0.2, False),
    ("_", -0.6, -0.5, True),
    ("urgent", -0.2, -0.1, False),
    ('",', -0.03, -0.05, False),  # closing quote: separates software from software_urgent
    (' "', -0.01, -0.8, False),
    ("thought", -0.01, -0.4, False),
    ('": "', -0.01, -0.3, False),
    ("x", -1.0, -1.1, True),
    ('"}', -0.01, -0.2, False),
]
OWN_QUOTE_EXPECTED = math.exp(-0.3 - 0.2 - 0.5 - 0.1 - 0.05)  # ' "' software _ urgent '",'

# {"class": "software", ...}: the opening quote glued to the label start (' "soft')
GLUED: list[Piece] = [
    ('{"', -0.01, -0.7, False),
    ("class", -0.01, -0.6, False),
    ('":', -0.02, -0.9, False),
    (' "soft', -0.3, -0.4, False),
    ("ware", -0.1, -0.25, False),
    ('"', -0.02, -0.02, False),
    (", ", -0.01, -0.6, False),
    ('"thought": "', -0.01, -0.5, False),
    ("y", -0.3, -0.3, False),
    ('"}', -0.01, -0.1, False),
]
GLUED_EXPECTED = math.exp(-0.4 - 0.25 - 0.02)  # ' "soft' ware '"'

# the key, colon, space and both quotes in one token each side: '": "' ... '", "'
KEY_GLUED: list[Piece] = [
    ('{"class', -0.01, -0.9, False),
    ('": "', -0.01, -0.15, False),
    ("hard", -0.5, -0.35, True),
    ("ware", -0.2, -0.05, False),
    ('", "', -0.01, -0.1, False),
    ("thought", -0.01, -0.8, False),
    ('": "z"}', -0.01, -0.6, False),
]
KEY_GLUED_EXPECTED = math.exp(-0.15 - 0.35 - 0.05 - 0.1)


def test_label_confidence_sums_from_the_opening_through_the_closing_quote():
    out = measures([OWN_QUOTE, GLUED, KEY_GLUED])
    assert out["label_confidence"][0] == pytest.approx(OWN_QUOTE_EXPECTED, rel=1e-12)
    assert out["label_confidence"][1] == pytest.approx(GLUED_EXPECTED, rel=1e-12)
    assert out["label_confidence"][2] == pytest.approx(KEY_GLUED_EXPECTED, rel=1e-12)
    # the raw label probability is unchanged: value and closing quote, raw log probabilities
    assert out["label_prob"][0] == pytest.approx(math.exp(-0.4 - 0.6 - 0.2 - 0.03))
    assert out["label_prob"][1] == pytest.approx(math.exp(-0.3 - 0.1 - 0.02))
    assert list(out["forced_tokens"]) == [2, 0, 1]


def test_opening_quote_as_a_sentencepiece_or_byte_token():
    sentencepiece: list[Piece] = [
        ("▁{", -0.01, -0.5, False),
        ('"', -0.01, -0.5, False),
        ("class", -0.01, -0.5, False),
        ('":', -0.01, -0.5, False),
        ('▁"', -0.01, -0.7, False),
        ("network", -0.2, -0.2, False),
        ('"}', -0.01, -0.01, False),
    ]
    byte_tokens: list[Piece] = [
        ("{", -0.01, -0.5, False),
        ("<0x22>", -0.01, -0.5, False),
        ("class", -0.01, -0.5, False),
        ("<0x22>", -0.01, -0.5, False),
        (":", -0.01, -0.5, False),
        ("<0x20>", -0.01, -0.5, False),
        ("<0x22>", -0.01, -0.9, False),
        ("access", -0.3, -0.3, False),
        ("<0x22>", -0.01, -0.04, False),
        ("}", -0.01, -0.5, False),
    ]
    out = measures([sentencepiece, byte_tokens])
    assert out["label_confidence"][0] == pytest.approx(math.exp(-0.7 - 0.2 - 0.01))
    assert out["label_confidence"][1] == pytest.approx(math.exp(-0.9 - 0.3 - 0.04))


def test_a_null_constrained_logprob_inside_the_label_makes_it_nan_outside_does_not():
    inside = [p if i != 6 else (p[0], p[1], None, None) for i, p in enumerate(OWN_QUOTE)]
    opening = [p if i != 3 else (p[0], p[1], None, None) for i, p in enumerate(OWN_QUOTE)]
    outside = [p if i != 11 else (p[0], p[1], None, None) for i, p in enumerate(OWN_QUOTE)]
    out = measures([inside, opening, outside])
    assert np.isnan(out["label_confidence"][0]) and np.isnan(out["label_confidence"][1])
    assert out["label_confidence"][2] == pytest.approx(OWN_QUOTE_EXPECTED)


def test_label_confidence_is_nan_where_there_is_no_label():
    unconstrained = [(t, lp, None, None) for t, lp, _, _ in OWN_QUOTE]
    prose: list[Piece] = [("I", -0.1, -0.1, False), (" think", -0.2, -0.2, False)]
    cut: list[Piece] = [('{"class": "', -0.01, -0.1, False), ("soft", -0.2, -0.2, False)]
    bare: list[Piece] = [('{"class": ', -0.01, -0.1, False), ("3", -0.2, -0.2, False),
                         ("}", -0.01, -0.1, False)]  # fmt: skip
    out = measures([unconstrained, prose, cut, bare, [], None])
    assert np.isnan(out["label_confidence"]).all()
    assert list(out["forced_tokens"]) == [0, 0, 0, 0, 0, 0]
    assert list(out["answer_found"]) == [True, False, True, True, False, False]
    # without a label field nothing is a label
    assert np.isnan(measures([OWN_QUOTE], label_field=None)["label_confidence"]).all()


def test_a_token_struct_without_the_constrained_fields():
    old = pa.struct(
        [(f.name, f.type) for f in TOKEN_LOGPROB if f.name not in ("constrained_logprob", "forced")]
    )
    rows = [[{"token": t, "logprob": lp, "top": []} for t, lp, _, _ in OWN_QUOTE]]
    out = confidence_columns(pa.array(rows, type=pa.list_(old)), "class")
    assert np.isnan(out["label_confidence"][0])
    assert out["forced_tokens"][0] == 0
    assert out["label_prob"][0] == pytest.approx(math.exp(-0.4 - 0.6 - 0.2 - 0.03))


# -- the analysis: the 'auto' measure

LABELS = ("hardware", "software", "network")
# per row: predicted label, gold label, the label's constrained probability (by hand: the
# first label token carries log p, the other label tokens and both quotes 0)
ROWS = [
    ("hardware", "hardware", 0.9),
    ("software", "software", 0.8),
    ("network", "software", 0.6),
    ("software", "software", 0.7),
    ("hardware", "network", 0.5),
    ("network", "network", 0.95),
]


def examples_table(constrained: bool) -> pa.Table:
    rows = []
    for i, (label, gold, p) in enumerate(ROWS):
        pieces: list[Piece] = [
            ('{"', -0.01, -0.3, False),
            ("class", -0.01, -0.3, False),
            ('": "', -0.01, 0.0, False),
            (label, -1.5, math.log(p), p < 0.55),
            ('", "', -0.01, 0.0, False),
            ("thought", -0.01, -0.3, False),
            ('": "ok", "description": "d"}', -0.01, -0.3, False),
        ]
        if not constrained:
            pieces = [(t, lp, None, None) for t, lp, _, _ in pieces]
        prediction = "".join(t for t, *_ in pieces)
        assert json.loads(prediction)["class"] == label
        rows.append(
            {
                "row_index": i,
                "prompt": f"ticket {i}",
                "gold": json.dumps({"class": gold, "thought": "ok", "description": "d"}),
                "metadata": "{}",
                "prediction": prediction,
                "finish_reason": "stop",
                "token_logprobs": column([pieces])[0].as_py(),
                "scored": True,
                "metrics": [],
            }
        )
    return pa.Table.from_pylist(rows, schema=EXAMPLES_SCHEMA)


def test_auto_uses_the_label_confidence_when_the_output_was_constrained():
    result = analyze(examples_table(True), AnalysisConfig(label_field="class"), plots=False)
    summary = result.summary
    assert summary["confidence"]["measure"] == "label_confidence"
    assert summary["confidence"]["requested"] == "auto"
    assert summary["confidence"]["automatic"] is True
    assert summary["confidence"]["column"] == "label_confidence"
    probabilities = [p for _, _, p in ROWS]
    confidence = result.per_example.column("confidence").to_numpy(zero_copy_only=False)
    np.testing.assert_allclose(confidence, probabilities, rtol=1e-12)
    assert summary["confidence"]["mean"] == pytest.approx(sum(probabilities) / 6)
    by_name = {m["measure"]: m for m in summary["measures"]}
    assert {"first_token", "label_confidence"} <= set(by_name)  # the seed's, for comparison
    assert by_name["label_confidence"]["mean_confidence"] == pytest.approx(4.45 / 6)
    assert by_name["first_token"]["mean_confidence"] == pytest.approx(math.exp(-1.5))
    # brier by hand: correct rows 0, 1, 3, 5; incorrect 2 (0.6) and 4 (0.5)
    brier = (0.1**2 + 0.2**2 + 0.6**2 + 0.3**2 + 0.5**2 + 0.05**2) / 6
    assert by_name["label_confidence"]["brier"] == pytest.approx(brier)
    assert summary["counts"]["with_label_confidence"] == 6
    assert summary["counts"]["with_forced_tokens"] == 1  # row 4 (p = 0.5)
    assert result.per_example.column("forced_tokens").to_pylist() == [0, 0, 0, 0, 1, 0]


def test_auto_reads_the_constrained_values_from_parquet(tmp_path):
    """The analysis reads token_logprobs from Parquet as a few leaves
    (analysis/columns.py TOKEN_LEAVES): constrained_logprob and forced must be among them."""
    path = str(tmp_path / "examples.parquet")
    storage.write_parquet(path, examples_table(True))
    result = analyze(path, AnalysisConfig(label_field="class"), plots=False)
    assert result.summary["confidence"]["measure"] == "label_confidence"
    confidence = result.per_example.column("confidence").to_numpy(zero_copy_only=False)
    np.testing.assert_allclose(confidence, [p for _, _, p in ROWS], rtol=1e-12)
    assert result.per_example.column("forced_tokens").to_pylist() == [0, 0, 0, 0, 1, 0]


def test_auto_falls_back_to_the_first_token_without_constrained_values():
    result = analyze(examples_table(False), AnalysisConfig(label_field="class"), plots=False)
    summary = result.summary
    assert summary["confidence"]["measure"] == "first_token"
    assert summary["confidence"]["automatic"] is True
    assert "label_confidence" not in {m["measure"] for m in summary["measures"]}
    confidence = result.per_example.column("confidence").to_numpy(zero_copy_only=False)
    np.testing.assert_allclose(confidence, math.exp(-1.5), rtol=1e-12)


def test_an_explicit_measure_is_not_automatic():
    config = AnalysisConfig(label_field="class", confidence="label_confidence")
    summary = analyze(examples_table(False), config, plots=False).summary
    assert summary["confidence"]["measure"] == "label_confidence"
    assert summary["confidence"]["automatic"] is False
    assert summary["confidence"]["mean"] is None
    assert any("constrained log probability" in note for note in summary["notes"])
    config = AnalysisConfig(label_field="class", confidence="first_token")
    summary = analyze(examples_table(True), config, plots=False).summary
    assert summary["confidence"]["measure"] == "first_token"
    assert summary["confidence"]["automatic"] is False
    assert "label_confidence" in {m["measure"] for m in summary["measures"]}


RECIPE = """run: {name: a, model_name_or_path: m, data_s3_path: d.jsonl}
evaluation: {task: gen_qa, strategy: gen_qa}
"""


def test_recipe_confidence_defaults_to_auto_and_label_measures_need_a_label_field():
    assert parse_recipe(RECIPE).analysis.confidence == "auto"
    with pytest.raises(RecipeError, match=r"'label_confidence' needs analysis\.label_field"):
        parse_recipe(RECIPE + "analysis: {confidence: label_confidence}", "r.yaml")
    recipe = parse_recipe(RECIPE + "analysis: {label_field: class, confidence: label_confidence}")
    assert recipe.analysis.confidence == "label_confidence"
