"""Confidence from token log probabilities: label-to-token matching (SentencePiece and
byte-level BPE prefixes, labels over several tokens, JSON punctuation inside tokens),
the top-k entropy and the sequence measures, checked against hand-worked values."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from nova_eval_assets.analysis.confidence import confidence_columns, normalize_tokens
from nova_eval_assets.analysis.labels import labels_equal, parse_label_column
from nova_eval_assets.stages import TOKEN_LOGPROB


def entries(pieces: list[tuple[str, float]], top: int = 2) -> list[dict]:
    out = []
    for token, lp in pieces:
        alts = [{"token": token, "logprob": lp}]
        alts += [{"token": f"x{j}", "logprob": lp - j} for j in range(1, top)]
        out.append({"token": token, "logprob": lp, "top": alts})
    return out


def measures(rows: list[list[tuple[str, float]] | None], label_field: str | None = "class"):
    column = pa.array(
        [entries(r) if r is not None else None for r in rows], type=pa.list_(TOKEN_LOGPROB)
    )
    return confidence_columns(column, label_field)


CASES = {
    # decoded text, label alone in its token, quote and space in the token before
    "decoded": [("{", -0.1), ('"', -0.2), ("class", -0.01), ('":', -0.02), (' "', -0.03),
                ("network", -0.4), ('"}', -0.05)],
    # SentencePiece: "▁" marks a space; the label's first token carries the opening quote
    "sentencepiece": [("▁{", -0.1), ('"', -0.2), ("class", -0.01), ('":', -0.02),
                      ('▁"net', -0.7), ("work", -0.3), ('"', -0.05), ("}", -0.01)],
    # byte-level BPE: "Ġ" marks a space; key, colon and quote in one token
    "bpe": [("{", -0.1), ('"class":Ġ"', -0.02), ("network", -0.25), ('"}', -0.06)],
    # byte-fallback tokens for the quote and the space
    "byte_tokens": [("{", -0.1), ("<0x22>", -0.2), ("class", -0.01), ("<0x22>", -0.02),
                    (":", -0.02), ("<0x20>", -0.03), ("<0x22>", -0.04), ("network", -0.9),
                    ("<0x22>", -0.1), ("}", -0.01)],
}  # fmt: skip
EXPECTED = {  # (position of the first label token, its logprob, label logprob incl. quote)
    "decoded": (5, -0.4, -0.4 - 0.05),
    "sentencepiece": (4, -0.7, -0.7 - 0.3 - 0.05),
    "bpe": (2, -0.25, -0.25 - 0.06),
    "byte_tokens": (7, -0.9, -0.9 - 0.1),
}


@pytest.mark.parametrize("style", list(CASES))
def test_first_label_token_under_each_tokenizer_style(style):
    out = measures([CASES[style]])
    position, first_lp, label_lp = EXPECTED[style]
    assert out["answer_found"][0]
    assert out["answer_token_position"][0] == position
    assert out["first_token_logprob"][0] == pytest.approx(first_lp)
    assert out["first_token_prob"][0] == pytest.approx(math.exp(first_lp))
    assert out["label_logprob"][0] == pytest.approx(label_lp)
    assert out["label_prob"][0] == pytest.approx(math.exp(label_lp))
    # unconstrained (constrained_logprob null): no label confidence, nothing forced
    assert np.isnan(out["label_confidence"][0]) and out["forced_tokens"][0] == 0


def test_label_over_several_tokens_and_a_shared_first_token():
    """software and software_urgent share their first token; the label probability (with
    the closing quote) tells them apart, the first-token probability cannot."""
    head = [("{", -0.1), ('"', -0.1), ("class", -0.01), ('":', -0.01), (' "', -0.01)]
    plain = [*head, ("software", -0.2), ('",', -1.2), (' "', -0.01)]
    urgent = [*head, ("software", -0.2), ("_", -0.4), ("urg", -0.1), ("ent", -0.05),
              ('",', -0.02), (' "', -0.01)]  # fmt: skip
    out = measures([plain, urgent])
    assert list(out["answer_token_position"]) == [5, 5]
    assert list(out["label_tokens"]) == [1, 4]
    assert out["first_token_prob"][0] == pytest.approx(out["first_token_prob"][1])
    assert out["label_logprob"][0] == pytest.approx(-0.2 - 1.2)
    assert out["label_logprob"][1] == pytest.approx(-0.2 - 0.4 - 0.1 - 0.05 - 0.02)


def test_label_split_mid_word_with_the_closing_quote_glued_to_punctuation():
    row = [('{"class": "', -0.01), ("hard", -0.3), ("ware", -0.2), ('_urgent", "', -0.6),
           ("thought", -0.01)]  # fmt: skip
    out = measures([row])
    assert out["answer_token_position"][0] == 1
    assert out["label_tokens"][0] == 3  # hard, ware, _urgent", "
    assert out["label_logprob"][0] == pytest.approx(-0.3 - 0.2 - 0.6)


def test_single_quoted_and_unquoted_values_and_no_answer():
    single = [("{'", -0.1), ("class", -0.1), ("':", -0.1), (" '", -0.1), ("access", -0.5),
              ("'}", -0.1)]  # fmt: skip
    bare = [('{"class": ', -0.1), ("3", -0.8), ("}", -0.1)]
    prose = [("I", -0.1), (" think", -0.2), (" network", -0.9)]
    out = measures([single, bare, prose, [], None])
    assert list(out["answer_found"]) == [True, True, False, False, False]
    assert out["first_token_logprob"][0] == pytest.approx(-0.5)
    assert out["first_token_logprob"][1] == pytest.approx(-0.8)
    assert np.isnan(out["first_token_prob"][2:]).all()
    # the sequence measures do not need an answer
    assert out["mean_logprob"][2] == pytest.approx((-0.1 - 0.2 - 0.9) / 3)
    assert np.isnan(out["mean_logprob"][3]) and np.isnan(out["mean_logprob"][4])
    assert list(out["n_tokens"]) == [6, 3, 3, 0, 0]


def test_the_key_must_match_exactly():
    row = [('{"subclass": "', -0.1), ("x", -0.1), ('", "class": "', -0.1), ("y", -0.7),
           ('"}', -0.1)]  # fmt: skip
    out = measures([row])
    assert out["answer_token_position"][0] == 3
    assert out["first_token_logprob"][0] == pytest.approx(-0.7)


def test_without_a_label_field_the_answer_is_the_first_non_space_token():
    row = [(" ", -0.5), ("\n", -0.4), (" Paris", -0.3), (" is", -0.2)]
    out = measures([row], label_field=None)
    assert out["answer_token_position"][0] == 2
    assert out["first_token_prob"][0] == pytest.approx(math.exp(-0.3))
    assert np.isnan(out["label_prob"][0])


def test_entropy_of_the_top_k_distribution_at_the_first_answer_token():
    top = [{"token": "network", "logprob": math.log(0.6)},
           {"token": "software", "logprob": math.log(0.3)},
           {"token": "access", "logprob": math.log(0.05)}]  # fmt: skip
    row = [
        {"token": '{"class": "', "logprob": -0.01, "top": []},
        {"token": "network", "logprob": math.log(0.6), "top": top},
        {"token": '"}', "logprob": -0.02, "top": []},
    ]
    out = confidence_columns(pa.array([row], type=pa.list_(TOKEN_LOGPROB)), "class")
    q = np.array([0.6, 0.3, 0.05]) / 0.95
    assert out["first_token_entropy"][0] == pytest.approx(float(-(q * np.log(q)).sum()))
    assert out["first_token_top_mass"][0] == pytest.approx(0.95)


def test_least_likely_token_and_sequence_sums():
    row = [("a", -0.1), ("b", -2.5), ("c", -0.3), ("d", -2.5)]
    out = measures([row], label_field=None)
    assert out["min_logprob"][0] == pytest.approx(-2.5)
    assert out["min_token"][0].as_py() == "b"  # the first of a tie
    assert out["min_token_position"][0] == 1
    assert out["sequence_logprob"][0] == pytest.approx(-5.4)
    assert out["mean_token_prob"][0] == pytest.approx(math.exp(-5.4 / 4))


def test_sliced_and_chunked_columns_give_the_same_values():
    rows = [CASES[s] for s in CASES] * 3
    column = pa.array([entries(r) for r in rows], type=pa.list_(TOKEN_LOGPROB))
    whole = confidence_columns(column, "class")
    sliced = confidence_columns(column.slice(2, 7), "class")
    chunked = confidence_columns(pa.chunked_array([column.slice(0, 5), column.slice(5)]), "class")
    for key in ("answer_token_position", "label_logprob", "first_token_entropy", "min_logprob"):
        np.testing.assert_array_equal(sliced[key], whole[key][2:9])
        np.testing.assert_array_equal(chunked[key], whole[key])


def test_normalize_tokens_resolves_markers_and_byte_tokens():
    tokens = pa.array(["▁hello", "Ġworld", "Ċ", "<0x22>", "<0xE2>", "plain", None])
    assert normalize_tokens(tokens).to_pylist() == [
        " hello", " world", "\n", '"', "\ufffd", "plain", ""
    ]  # fmt: skip


def test_labels_follow_the_json_modes():
    outputs = pa.array(
        [
            '{"class": "network", "thought": "x"}',
            ' {"class": "access"} ',
            'Sure! {"class": "software"} hope that helps',
            '```json\n{"class": "hardware"}\n```',
            '{"thought": "no label"}',
            '{"class": 3}',
            "not json",
            None,
        ]
    )
    strict = parse_label_column(outputs, "class", "strict")
    embedded = parse_label_column(outputs, "class", "embedded")
    assert list(strict.json_status) == [0, 0, 1, 1, 0, 0, 2, 3]
    assert strict.label.to_pylist() == ["network", "access", None, None, None, None, None, None]
    assert embedded.label.to_pylist()[:4] == ["network", "access", "software", "hardware"]
    gold = pa.array(['{"class": "network"}'] * 7 + [None])
    assert list(labels_equal(strict.label, parse_label_column(gold, "class").label))[:7] == [
        1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    ]  # fmt: skip
    assert np.isnan(labels_equal(strict.label, parse_label_column(gold, "class").label)[7])


TRICKY = [
    '{"class": "a"}',
    '  {"class": "b"}\n',
    '{"class": "b", "class": "c"}',
    '{"class": 3}',
    '{"class": true}',
    '{"class": null}',
    '{"class": ""}',
    '{"class": "  "}',
    '{"class": {"n": 1}}',
    '{"x": 1}{"class": "c"}',
    '{"x": NaN, "class": "d"}',
    '{"x": Infinity, "class": "d"}',
    '{"x": [1, 2, {"class": "inner"}], "class": "e\\u00e9"}',
    '{"class": "a\\ud800"}',
    '{"x": 1,}',
    '{"class": "x"} trailing',
    '{"class": "tab\there"}',
    '{\n  "class": "pretty"\n}',
    "{'class': 'python'}",
    '{"class": "q\\"uote"}',
    '{"class": "ünïcødé"}',
    '{"cl\\u0061ss": "escaped key"}',
    '{"class": "a", "cl\\u0061ss": "b"}',
    '{"class": "x", "n": 1e400}',
    '{"class": "x", "n": 01}',
    '{"class": "x" "y": 1}',
    "{}",
    "[]",
    "",
    "   ",
    '```json\n{"class": "fenced"}\n```',
    'Answer: {"class": "embedded"} done',
    '{"a": {"b": {"c": [{"d": "e"}]}}, "class": "deep"}',
    '{"class": "x"}}',
    '{{"class": "x"}',
    None,
]


def reference(texts: list[str | None], field: str, mode: str) -> tuple[list[int], list]:
    from nova_eval_assets.analysis.labels import label_of, parse_object

    usable = 1 if mode == "embedded" else 0
    statuses, labels = [], []
    for text in texts:
        status, obj = parse_object(text)
        statuses.append(status)
        labels.append(label_of(obj, field) if status <= usable else None)
    return statuses, labels


@pytest.mark.parametrize("mode", ["strict", "embedded"])
def test_the_arrow_fast_path_agrees_with_python_json(mode):
    rng = np.random.default_rng(0)
    texts = list(TRICKY)
    # random damage to valid outputs: truncation, deletion, duplication of characters
    base = '{"class": "network_urgent", "thought": "the VPN drops", "n": [1, 2.5, null]}'
    for _ in range(400):
        chars = list(base)
        for _ in range(rng.integers(0, 3)):
            i = int(rng.integers(len(chars)))
            choice = rng.integers(3)
            if choice == 0:
                del chars[i]
            elif choice == 1:
                chars.insert(i, chars[i])
            else:
                chars = chars[:i]
                break
        texts.append("".join(chars))
    got = parse_label_column(pa.array(texts, pa.string()), "class", mode)
    statuses, labels = reference(texts, "class", mode)
    assert list(got.json_status) == statuses
    assert got.label.to_pylist() == labels
