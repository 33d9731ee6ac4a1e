"""Failure analysis: error categories, configurable thresholds, and the low-confidence and
overconfident counts reproduced from the Nova-compatible details export alone, the way a
notebook user would (pandas + ast.literal_eval)."""

from __future__ import annotations

import ast
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nova_eval_assets.analysis import failures
from nova_eval_assets.analysis.pipeline import analyze
from nova_eval_assets.recipe import AnalysisConfig
from nova_eval_assets.report.nova_export import write_nova_export
from tests.analysis_synthetic import make_examples, support_ticket_examples

PROJECT = Path(__file__).resolve().parents[1]


def test_error_categories_and_primary_category():
    n = 8
    flags = failures.error_flags(
        inference_error=np.array([1, 0, 0, 0, 0, 0, 0, 0], bool),
        finish_reason_length=np.array([0, 0, 1, 0, 0, 0, 0, 0], bool),
        output_chars=np.array([0, 0, 40, 30, 30, 30, 200, 5]),
        gold_chars=np.full(n, 40),
        json_invalid=np.array([1, 1, 1, 1, 0, 0, 0, 0], bool),
        has_object=np.array([0, 0, 0, 0, 1, 1, 1, 1], bool),
        has_label=np.array([0, 0, 0, 0, 0, 1, 1, 1], bool),
        correct=np.array([np.nan, 0, 0, 0, 0, 0, 1, 1]),
        uses_labels=True,
        length_ratio_min=0.5,
        length_ratio_max=2.0,
    )
    expected = {
        "inference_error": [0],
        "empty": [1],
        "truncated": [2],
        "invalid_json": [2, 3],
        "missing_label": [4],
        "wrong_label": [5],
        "low_quality": [],
        "too_long": [6],
        "too_short": [7],
    }
    assert {k: list(np.flatnonzero(v)) for k, v in flags.items()} == expected
    primary = failures.primary_category(flags)
    names = (*failures.CATEGORIES, "ok")
    assert [names[c] for c in primary] == [
        "inference_error", "empty", "truncated", "invalid_json", "missing_label",
        "wrong_label", "too_long", "too_short",
    ]  # fmt: skip


def test_examples_are_the_most_telling_ones():
    confidence = np.array([0.3, 0.99, 0.95, np.nan, 0.1, 0.97])
    correct = np.array([0, 0, 0, 0, 1, 1.0])
    found = failures.confidence_findings(confidence, correct, 0.5, 0.9)
    assert list(np.flatnonzero(found["low_confidence"])) == [0, 4]
    assert list(np.flatnonzero(found["overconfident_error"])) == [1, 2]
    assert list(failures.pick(found["overconfident_error"], confidence, 1, largest=True)) == [1]
    assert list(failures.pick(found["low_confidence"], confidence, 5, largest=False)) == [4, 0]


def test_thresholds_come_from_the_settings():
    table = make_examples(300, error_rows=2)
    loose = analyze(table, AnalysisConfig(label_field="class"), plots=False)
    strict = analyze(
        table,
        AnalysisConfig(
            label_field="class", low_confidence_threshold=0.8, overconfident_threshold=0.6
        ),
        plots=False,
    )
    conf = loose.per_example.column("confidence").to_numpy(zero_copy_only=False)
    correct = loose.per_example.column("correct").to_numpy(zero_copy_only=False)
    for result, low, high in ((loose, 0.5, 0.9), (strict, 0.8, 0.6)):
        findings = result.summary["failures"]["findings"]
        assert findings["low_confidence"]["count"] == int(np.sum(conf < low))
        assert findings["overconfident_error"]["count"] == int(
            np.sum((conf >= high) & (correct == 0))
        )
    categories = loose.summary["failures"]["categories"]
    assert categories["inference_error"]["count"] == 2
    assert categories["truncated"]["count"] == 6  # rows 13, 63, ... (i % 50 == 13)
    assert categories["empty"]["count"] == 6
    examples = loose.summary["failures"]["examples"]
    assert len(examples["overconfident_error"]) <= 5
    shown = examples["wrong_label"][0]
    assert shown["predicted_label"] != shown["gold_label"] and shown["prompt"].startswith("ticket")


def notebook_counts(details_path: str, low: float, high: float) -> tuple[int, int, int]:
    """What a notebook user computes from the details Parquet alone: the probability of
    the first token of the predicted class, from the top-k dicts of pred_logprobs (greedy
    decoding: the generated token is the most likely one of each dict)."""
    details = pd.read_parquet(details_path)
    n_conf = n_low = n_over = 0
    for row in details.itertuples():
        prediction = ast.literal_eval(row.predictions)[0]
        (tokens,) = ast.literal_eval(row.pred_logprobs)
        chosen = [next(iter(top)) for top in tokens]
        match = re.search(r'"class"\s*:\s*"', "".join(chosen))
        if match is None:
            continue
        position, confidence = 0, None
        for token, top in zip(chosen, tokens, strict=True):
            position += len(token)
            if position > match.end():
                confidence = math.exp(top[token])
                break
        if confidence is None:
            continue
        try:
            predicted = json.loads(prediction).get("class")
        except ValueError:
            predicted = None
        gold = json.loads(row.gold)["class"]
        n_conf += 1
        n_low += confidence < low
        n_over += confidence >= high and predicted != gold
    return n_conf, n_low, n_over


@pytest.mark.parametrize(("low", "high"), [(0.5, 0.9), (0.7, 0.8)])
def test_counts_reproduced_from_the_nova_details_export(tmp_path, low, high):
    table = support_ticket_examples(PROJECT)
    paths = write_nova_export(table, str(tmp_path), "model", "2025-01-01T00-00-00.000Z")
    config = AnalysisConfig(
        label_field="class", low_confidence_threshold=low, overconfident_threshold=high
    )
    result = analyze(table, config, plots=False)
    findings = result.summary["failures"]["findings"]
    n_conf, n_low, n_over = notebook_counts(paths["details"], low, high)
    assert n_conf == result.summary["counts"]["with_confidence"] > 200
    assert n_low == findings["low_confidence"]["count"] > 0
    assert n_over == findings["overconfident_error"]["count"] > 0
