"""The classification report (checked against scikit-learn), label extraction, the case-study
ticket processor, and the recipe keys that configure BYOM and classification."""

from __future__ import annotations

import json
import random

import pytest
from rouge_score import rouge_scorer
from sklearn.metrics import classification_report as sk_report
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import precision_recall_fscore_support

from nova_eval_assets.byom.runner import load_handler
from nova_eval_assets.metrics.classification import (
    INVALID_COLUMN,
    classification_markdown,
    classification_report,
    extract_label,
)
from nova_eval_assets.metrics.custom import aggregate_custom
from nova_eval_assets.recipe import RecipeError, load_recipe, parse_recipe
from tests.conftest import PROJECT, ticket_lines

SENTINEL = "<invalid>"


# ---------------------------------------------------------------- label extraction


@pytest.mark.parametrize(
    ("text", "mode", "label", "problem"),
    [
        ('{"class": "network"}', "strict", "network", None),
        ('  \n{"class": "network", "x": 1}\n ', "strict", "network", None),
        ('Answer: {"class": "network"}', "strict", None, "not_json"),
        ('```json\n{"class": "network"}\n```', "strict", None, "not_json"),
        ('Answer: {"class": "network"} done', "embedded", "network", None),
        ('```json\n{"class": "network"}\n```', "embedded", "network", None),
        ('{broken {"class": "access"}', "embedded", "access", None),
        ("no json at all", "embedded", None, "not_json"),
        ('["network"]', "strict", None, "not_object"),
        ('["network"]', "embedded", None, "not_object"),
        ('{"klass": "network"}', "strict", None, "missing_field"),
        ('{"class": 3}', "strict", None, "not_string"),
        ('{"class": null}', "strict", None, "not_string"),
        ('{"class": "  "}', "strict", None, "empty_label"),
        ('{"class": "Network"}', "strict", "Network", None),  # taken exactly, no case folding
        (None, "strict", None, "not_json"),
        ("", "embedded", None, "not_json"),
    ],
)
def test_extract_label(text, mode, label, problem):
    parsed = extract_label(text, "class", mode)
    assert (parsed.label, parsed.problem) == (label, problem)


def test_extract_label_against_a_closed_label_set():
    labels = ["network", "access"]
    assert extract_label('{"class": "access"}', "class", labels=labels).valid
    unknown = extract_label('{"class": "printer"}', "class", labels=labels)
    assert (unknown.label, unknown.problem, unknown.valid) == ("printer", "unknown_label", False)


# ---------------------------------------------------------------- the report vs scikit-learn


def random_case(seed: int, n: int = 300):
    rng = random.Random(seed)
    classes = ["access", "hardware", "network", "software", "software_urgent"]
    gold = [rng.choice(classes) for _ in range(n)]
    predicted, problems = [], []
    for g in gold:
        roll = rng.random()
        if roll < 0.15:
            predicted.append(None)
            problems.append(rng.choice(["not_json", "missing_field"]))
        else:
            predicted.append(g if roll < 0.65 else rng.choice([*classes, "printer"]))
            problems.append(None)
    return gold, predicted, problems


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("fixed_labels", [False, True])
def test_report_agrees_with_scikit_learn(seed, fixed_labels):
    gold, predicted, problems = random_case(seed)
    labels = ["software_urgent", "network", "access", "software", "hardware", "printer"]
    report = classification_report(gold, predicted, problems, labels if fixed_labels else None)
    classes = report["classes"]
    assert classes == (labels if fixed_labels else sorted(set(gold) | {"printer"}))
    y_pred = [p if p is not None else SENTINEL for p in predicted]

    reference = sk_report(gold, y_pred, labels=classes, output_dict=True, zero_division=0)
    for name in classes:
        for key in ("precision", "recall", "f1-score", "support"):
            ours = report["per_class"][name][key.replace("-score", "")]
            assert ours == pytest.approx(reference[name][key]), (name, key)
    assert report["macro_f1"] == pytest.approx(reference["macro avg"]["f1-score"])
    assert report["macro_precision"] == pytest.approx(reference["macro avg"]["precision"])
    assert report["macro_recall"] == pytest.approx(reference["macro avg"]["recall"])
    p, r, f, _ = precision_recall_fscore_support(
        gold, y_pred, labels=classes, average="micro", zero_division=0
    )
    assert (report["micro_precision"], report["micro_recall"], report["micro_f1"]) == (
        pytest.approx(p),
        pytest.approx(r),
        pytest.approx(f),
    )
    assert report["accuracy"] == pytest.approx(
        sum(g == p for g, p in zip(gold, y_pred, strict=True)) / len(gold)
    )
    assert report["micro_recall"] == pytest.approx(report["accuracy"])

    matrix = sk_confusion(gold, y_pred, labels=[*classes, SENTINEL])
    assert report["confusion_matrix"]["rows"] == classes
    assert report["confusion_matrix"]["columns"] == [*classes, INVALID_COLUMN]
    assert report["confusion_matrix"]["matrix"] == matrix[: len(classes)].tolist()

    invalid = [p for p in problems if p is not None]
    assert report["invalid_count"] == len(invalid)
    assert report["invalid_rate"] == pytest.approx(len(invalid) / len(gold))
    assert report["invalid_reasons"] == {k: invalid.count(k) for k in sorted(set(invalid))}


def test_report_on_a_small_hand_computed_case():
    gold = ["a", "a", "b", "b", "c"]
    pred = ["a", "b", "b", None, "a"]
    report = classification_report(gold, pred, [None, None, None, "not_json", None])
    assert report["accuracy"] == pytest.approx(2 / 5)
    assert report["per_class"]["a"] == {
        "precision": 0.5,
        "recall": 0.5,
        "f1": 0.5,
        "support": 2,
        "predicted": 2,
    }
    assert (
        report["per_class"]["b"]["precision"] == 0.5 and report["per_class"]["b"]["recall"] == 0.5
    )
    assert report["per_class"]["c"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 1,
        "predicted": 0,
    }
    assert report["macro_f1"] == pytest.approx((0.5 + 0.5 + 0) / 3)
    # micro: TP 2, FP 2 (the valid wrong predictions), FN 3
    assert report["micro_precision"] == pytest.approx(2 / 4)
    assert report["micro_f1"] == pytest.approx(4 / 9)
    assert report["confusion_matrix"]["matrix"] == [[1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 0, 0]]
    text = classification_markdown({**report, "label_field": "class"})
    assert "accuracy 0.4000" in text and "invalid outputs 20.0 % (1; not_json 1)" in text
    assert "| gold \\ predicted | a | b | c | (invalid) |" in text


def test_report_with_no_examples_is_null_not_an_error():
    report = classification_report([], [], [], labels=["a", "b"])
    assert report["examples"] == 0
    assert report["accuracy"] is None and report["micro_f1"] is None
    assert report["invalid_rate"] is None
    assert "n/a" in classification_markdown(report)


def test_report_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="2 gold labels but 1 predictions"):
        classification_report(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="gold label 'z' is not among the classes"):
        classification_report(["z"], ["a"], labels=["a"])


def test_custom_aggregation_rejects_an_unknown_reducer():
    with pytest.raises(ValueError, match="aggregation must be one of"):
        aggregate_custom({"m": [1.0]}, "median")
    assert aggregate_custom({"m": [2.0]}, "max") == {"m": 2.0, "m_stderr": 0.0}
    assert aggregate_custom({"m": []}, "sum") == {}


# ---------------------------------------------------------------- the case-study processor


@pytest.fixture(scope="module")
def tickets():
    return load_handler("processors/ticket_classification.py:lambda_handler", PROJECT / "recipes")


def metrics_for(handler, ticket: str, output: str, gold: str) -> dict[str, float]:
    event = {
        "process_type": "postprocess",
        "data": {"prompt": ticket, "inference_output": output, "gold": gold},
    }
    answer = handler(event, None)
    assert answer["statusCode"] == 200
    return {m["metric"]: m["value"] for m in answer["body"]}


def test_ticket_processor_scores_class_schema_and_reasoning(tickets):
    row = json.loads(ticket_lines(1)[0])
    ticket, gold = row["query"], row["response"]
    expected = json.loads(gold)
    perfect = metrics_for(tickets, ticket, gold, gold)
    assert perfect["class_correct"] == 1.0 and perfect["schema_valid"] == 1.0
    assert perfect["thought_rougeL"] == 1.0
    assert perfect["reasoning_quality"] == pytest.approx((1.0 + perfect["thought_grounding"]) / 2)

    wrong = json.dumps({**expected, "class": "network", "thought": "Adobe Reader asks again"})
    scores = metrics_for(tickets, ticket, wrong, gold)
    assert scores["class_correct"] == 0.0 and scores["schema_valid"] == 1.0
    reference = rouge_scorer.RougeScorer(["rougeL"]).score(
        expected["thought"], "Adobe Reader asks again"
    )
    assert scores["thought_rougeL"] == pytest.approx(reference["rougeL"].fmeasure)
    # content words: adobe, reader, asks, again -> all four are in the ticket
    assert scores["thought_grounding"] == 1.0

    extra_field = json.dumps({**expected, "priority": "low"})
    scores = metrics_for(tickets, ticket, extra_field, gold)
    assert scores["schema_valid"] == 0.0 and scores["class_correct"] == 1.0
    not_string = json.dumps({**expected, "thought": 3})
    scores = metrics_for(tickets, ticket, not_string, gold)
    assert scores["schema_valid"] == 0.0 and scores["reasoning_quality"] == 0.0
    fenced = f"```json\n{gold}\n```"
    assert metrics_for(tickets, ticket, fenced, gold) == {
        "class_correct": 0.0,
        "schema_valid": 0.0,
        "thought_rougeL": 0.0,
        "thought_grounding": 0.0,
        "reasoning_quality": 0.0,
    }


def test_ticket_preprocessor_tidies_white_space_only(tickets):
    event = {
        "process_type": "preprocess",
        "data": {"system": "S", "prompt": "  Printer\t\tjammed  \n\n\n\nHelp  ", "gold": "G"},
    }
    assert tickets(event, None) == {
        "statusCode": 200,
        "body": {"system": "S", "prompt": "Printer jammed\n\nHelp", "gold": "G"},
    }


# ---------------------------------------------------------------- recipe keys


BASE = """\
run:
  name: demo
  model_name_or_path: smollm2-135m-instruct
  data_s3_path: rows.jsonl
evaluation:
  task: gen_qa
  strategy: gen_qa
"""


def recipe_error(extra: str) -> str:
    with pytest.raises(RecipeError) as info:
        parse_recipe(BASE + extra, source="r.yaml")
    return str(info.value)


def test_shipped_recipe_uses_the_case_study_processor_and_classification():
    recipe = load_recipe(PROJECT / "recipes" / "support_tickets.yaml").recipe
    assert recipe.processor.handler == "processors/ticket_classification.py:lambda_handler"
    assert recipe.processor.postprocessing.enabled and recipe.processor.aggregation == "average"
    assert recipe.classification.label_field == "class"
    assert len(recipe.classification.labels) == 8


def test_valid_processor_and_classification_sections():
    recipe = parse_recipe(
        BASE
        + """\
processor:
  lambda_arn: arn:aws:lambda:eu-west-1:123456789012:function:my-metrics:prod
  handler: ""
  postprocessing:
    enabled: true
  aggregation: max
  max_error_rate: 0.1
  timeout_s: 30
  concurrency: 16
  max_retries: 6
classification:
  label_field: class
"""
    )
    assert recipe.processor.handler is None  # blank means unset, as Nova recipes leave it
    assert recipe.processor.max_error_rate == 0.1 and recipe.processor.concurrency == 16
    assert recipe.classification.json_mode == "strict" and recipe.classification.labels is None


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "processor:\n  handler: h.py:f\n  lambda_arn: arn:aws:lambda:us-east-1:123456789012:"
            "function:f\n",
            ["processor:", "lambda_arn or handler, not both"],
        ),
        (
            "processor:\n  lambda_arn: my-function\n",
            ["r.yaml:9", "processor.lambda_arn", "not a Lambda function ARN"],
        ),
        ("processor:\n  handler: h.py\n", ["r.yaml:9", "processor.handler", "path/to/file.py"]),
        (
            "processor:\n  handler: h.py:f\n  max_error_rate: 1.5\n",
            ["r.yaml:10", "processor.max_error_rate", "at most 1", "0..1"],
        ),
        ("processor:\n  handler: h.py:f\n  timeout_s: 0\n", ["processor.timeout_s", "900"]),
        ("processor:\n  handler: h.py:f\n  concurrency: 0\n", ["processor.concurrency", "1..256"]),
        ("processor:\n  handler: h.py:f\n  aggregation: median\n", ["'average'", "'sum'"]),
        ("processor:\n  handler: h.py:f\n  retries: 3\n", ["unknown key 'processor.retries'"]),
        ("classification:\n  labels: [a]\n", ["missing required key 'classification.label_field'"]),
        (
            "classification:\n  label_field: class\n  labels: [a, a]\n",
            ["r.yaml:10", "classification.labels", "distinct"],
        ),
        ("classification:\n  label_field: class\n  labels: []\n", ["at least one class"]),
        (
            "classification:\n  label_field: class\n  json_mode: lenient\n",
            ["classification.json_mode", "'strict' or 'embedded'"],
        ),
        ("classification:\n  label_field: ''\n", ["classification.label_field"]),
    ],
)
def test_processor_and_classification_errors_name_the_key(extra, expected):
    message = recipe_error(extra)
    for fragment in expected:
        assert fragment in message, message
