"""BYOM in the pipeline: preprocessing reaches the model, postprocessing per replica, custom
metrics aggregated with the recipe's aggregation, per-example processor errors, the error
threshold, and the Dagster metadata. Inference is a tiny fake Engine, except in the one
test marked ``model``."""

from __future__ import annotations

import ast
import json
import math
import statistics
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from nova_eval_assets import stages, storage
from nova_eval_assets.assets import build_evaluation_assets
from nova_eval_assets.byom.runner import ProcessorErrorRateExceeded
from nova_eval_assets.engines.base import (
    Engine,
    Generation,
    GenerationRequest,
    SamplingSettings,
    TokenLogprob,
    block_size,
)
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import LoadedRecipe, load_recipe
from tests import byom_lambda_server as fake
from tests.byom_lambda_server import FakeLambda
from tests.conftest import ticket_lines

TICKET_HANDLER = Path(__file__).resolve().parents[1] / "recipes/processors/ticket_classification.py"


class FakeEngine:
    """An Engine that answers ``respond(request)`` and records every request it gets."""

    name = "fake"
    model_id = "fake:1"
    default_batch_size = 2

    def __init__(self, respond: Callable[[GenerationRequest], str] | None = None):
        self.respond = respond or (lambda request: request.prompt)
        self.requests: list[GenerationRequest] = []

    def block_size(self, batch_size: int) -> int:
        return block_size(batch_size)

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        settings: SamplingSettings,
        batch_size: int | None = None,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> list[Generation]:
        self.requests.extend(requests)
        outputs = [
            Generation(
                row_index=r.row_index,
                text=self.respond(r),
                tokens=[TokenLogprob("x", -0.5, [("x", -0.5), ("y", -1.5)])],
                prompt_tokens=len(r.prompt.split()),
                completion_tokens=1,
                latency_s=0.01,
                finish_reason="stop",
            )
            for r in requests
        ]
        if on_batch:
            on_batch(len(requests), len(requests))
        return outputs


def test_fake_engine_implements_the_engine_interface():
    assert isinstance(FakeEngine(), Engine)


def rows(golds: Sequence[str], prompts: Sequence[str] | None = None) -> list[str]:
    prompts = prompts or [f"question {i}" for i in range(len(golds))]
    return [
        json.dumps({"query": q, "response": g, "metadata": json.dumps({"i": i})})
        for i, (q, g) in enumerate(zip(prompts, golds, strict=True))
    ]


@pytest.fixture
def byom_recipe(make_recipe, tmp_path) -> Callable[..., LoadedRecipe]:
    """make_recipe plus a handler file and the processor / classification sections."""

    def make(
        lines: list[str],
        handler_source: str | None = None,
        processor: dict | None = None,
        classification: dict | None = None,
        **options,
    ) -> LoadedRecipe:
        loaded = make_recipe(lines, **options)
        data = yaml.safe_load(loaded.path.read_text())
        if handler_source is not None:
            (tmp_path / "handler.py").write_text(textwrap.dedent(handler_source))
        if processor is not None:
            data["processor"] = {"handler": "handler.py:handler", **processor}
        if classification is not None:
            data["classification"] = classification
        loaded.path.write_text(yaml.safe_dump(data, sort_keys=False))
        return load_recipe(loaded.path)

    return make


def run_stages(loaded: LoadedRecipe, engine: FakeEngine) -> dict:
    stages.validate_or_raise(loaded)
    stages.build_prompts(loaded)
    for replica in range(loaded.recipe.run.replicas):
        stages.run_inference(loaded, replica, engine=engine)
        stages.score_replica(loaded, replica)
    return stages.write_report(loaded)


def examples(report: dict, columns: list[str] | None = None) -> list[dict]:
    return storage.read_parquet(report["paths"]["examples"], columns=columns).to_pylist()


# ---------------------------------------------------------------- preprocessing


REWRITER = """
from nova_eval_assets.byom import build_lambda_handler, preprocess

@preprocess
def rewrite(event, context):
    data = event["data"]
    if data["gold"] == "explode":
        raise ValueError("cannot rewrite this one")
    return {"statusCode": 200, "body": {
        "system": "SYSTEM-MARKER",
        "prompt": "PROMPT-MARKER " + data["gold"],
        "gold": "PROMPT-MARKER " + data["gold"],
    }}

handler = build_lambda_handler(preprocessor=rewrite)
"""


def test_preprocessor_rewrite_reaches_the_model_and_the_outputs(byom_recipe):
    golds = ["alpha", "beta", "explode", "gamma", "delta"]
    loaded = byom_recipe(
        rows(golds), REWRITER, processor={"preprocessing": {"enabled": True}}, replicas=2
    )
    engine = FakeEngine()  # echoes its prompt
    report = run_stages(loaded, engine)

    seen = {r.row_index: r for r in engine.requests}
    assert len(seen) == 5
    for i in (0, 1, 3, 4):
        assert seen[i].prompt == f"PROMPT-MARKER {golds[i]}"
        assert seen[i].system == "SYSTEM-MARKER"
    # the failed row keeps its original text, is still generated, and is not scored
    assert seen[2].prompt == "question 2" and seen[2].system is None

    table = examples(report)
    assert [r["prompt"] for r in table] == [
        "PROMPT-MARKER alpha",
        "PROMPT-MARKER beta",
        "question 2",
        "PROMPT-MARKER gamma",
        "PROMPT-MARKER delta",
    ]
    assert table[0]["gold"] == "PROMPT-MARKER alpha" and table[0]["system"] == "SYSTEM-MARKER"
    assert table[2]["preprocess_error"] == (
        "handler raised PreprocessError: rewrite raised ValueError: cannot rewrite this one"
    )
    assert [r["scored"] for r in table] == [True, True, False, True, True]
    assert all(r["preprocess_seconds"] > 0 for r in table)
    # scored against the rewritten gold: the echo equals it
    assert report["metrics"]["em"] == 1.0
    assert report["counts"]["processor_errors"] == 1 and report["counts"]["scored"] == 4

    results = storage.read_json(report["paths"]["results"])
    processor = results["config_general"]["processor"]
    assert processor["preprocess_errors"] == 1 and processor["postprocess_errors"] == 0
    assert processor["first_errors"][0]["row_index"] == 2
    outputs = [
        json.loads(x) for x in storage.read_bytes(report["paths"]["inference_output"]).splitlines()
    ]
    assert (
        outputs[0]["prompt"] == "PROMPT-MARKER alpha"
        and outputs[0]["gold"] == "PROMPT-MARKER alpha"
    )
    assert "row 2 (preprocess)" in report["summary_markdown"]


def test_preprocessing_error_rate_past_the_threshold_stops_before_inference(byom_recipe):
    loaded = byom_recipe(
        rows(["explode", "explode", "ok", "ok"]),
        REWRITER,
        processor={"preprocessing": {"enabled": True}, "max_error_rate": 0.25},
    )
    stages.validate_or_raise(loaded)
    with pytest.raises(ProcessorErrorRateExceeded, match=r"preprocessing: 2 of 4 examples"):
        stages.build_prompts(loaded)
    # the rows and their errors are written, for the user to look at
    prompts = storage.read_parquet(EvalLayout.for_recipe(loaded).prompts).to_pylist()
    assert [p["preprocess_error"] is not None for p in prompts] == [True, True, False, False]


def test_preprocessor_may_clear_the_system_prompt(byom_recipe):
    source = """
    def handler(event, context):
        data = event["data"]
        return {"statusCode": 200, "body": {"prompt": data["prompt"].upper(), "gold": "G"}}
    """
    lines = [json.dumps({"query": "q", "response": "r", "system": "S"}), *rows(["a"])]
    loaded = byom_recipe(lines, source, processor={"preprocessing": {"enabled": True}})
    engine = FakeEngine()
    report = run_stages(loaded, engine)
    assert [(r.system, r.prompt) for r in engine.requests] == [(None, "Q"), (None, "QUESTION 0")]
    assert [r["gold"] for r in examples(report, ["gold"])] == ["G", "G"]


def test_validate_command_loads_the_handler(byom_recipe, capsys):
    from nova_eval_assets.cli import main

    loaded = byom_recipe(rows(["a"]), None, processor={"postprocessing": {"enabled": True}})
    assert main(["validate", str(loaded.path)]) == 2
    assert "processor.handler: file not found" in capsys.readouterr().err
    (loaded.path.parent / "handler.py").write_text("def handler(event, context):\n    pass\n")
    assert main(["validate", str(loaded.path)]) == 0


# ---------------------------------------------------------------- postprocessing and aggregation


VALUE_HANDLER = """
import time

def handler(event, context):
    data = event["data"]
    mode = data["inference_output"]
    if mode == "raise":
        raise RuntimeError("kaboom")
    if mode == "status500":
        return {"statusCode": 500, "body": {"error": "metrics backend down"}}
    if mode == "malformed":
        return {"statusCode": 200, "body": "value=3"}
    if mode == "slow":
        time.sleep(3)
    value = float(data["gold"])
    return {"statusCode": 200, "body": [
        {"metric": "value", "value": value},
        {"metric": "squared", "value": value * value},
    ]}
"""

VALUES = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]


def bootstrap_reference(values: list[float], reducer: str) -> float:
    """The documented bootstrap, written out: 1000 multinomial resamples, seed 1234."""
    v = np.asarray(values)
    rng = np.random.default_rng(1234)
    counts = rng.multinomial(len(v), np.full(len(v), 1 / len(v)), size=1000)
    if reducer == "sum":
        rounds = counts @ v
    else:
        masked = np.where(counts > 0, v, np.inf if reducer == "min" else -np.inf)
        rounds = masked.min(axis=1) if reducer == "min" else masked.max(axis=1)
    return float(np.std(rounds, ddof=1))


@pytest.mark.parametrize(
    ("aggregation", "value", "squared"),
    [
        ("average", 31 / 8, 173 / 8),
        ("min", 1.0, 1.0),
        ("max", 9.0, 81.0),
        ("sum", 31.0, 173.0),
    ],
)
def test_custom_metrics_are_aggregated_with_the_recipe_aggregation(
    byom_recipe, aggregation, value, squared
):
    golds = [str(v) for v in VALUES]
    loaded = byom_recipe(
        rows(golds),
        VALUE_HANDLER,
        processor={"postprocessing": {"enabled": True}, "aggregation": aggregation},
        replicas=3,
    )
    report = run_stages(loaded, FakeEngine(lambda r: "ok"))
    metrics = report["metrics"]
    assert metrics["value"] == pytest.approx(value)
    assert metrics["squared"] == pytest.approx(squared)
    if aggregation == "average":
        assert metrics["value_stderr"] == pytest.approx(statistics.stdev(VALUES) / math.sqrt(8))
    else:
        assert metrics["value_stderr"] == pytest.approx(bootstrap_reference(VALUES, aggregation))
        assert metrics["squared_stderr"] == pytest.approx(
            bootstrap_reference([v * v for v in VALUES], aggregation)
        )
    # built-ins are untouched by the aggregation choice and stay first
    names = list(metrics)
    assert names.index("em") < names.index("bleu") < names.index("value")
    assert metrics["em"] == 0.0
    # per example: in the typed table and in the details `metrics` cell
    table = examples(report, ["custom_metrics", "metrics"])
    assert [dict(r["custom_metrics"])["value"] for r in table] == VALUES
    details = pd.read_parquet(report["paths"]["details"])
    cells = [ast.literal_eval(c) for c in details["metrics"]]
    assert [c["value"] for c in cells] == VALUES
    assert {"em", "f1", "rougeL", "value", "squared"} <= set(cells[0])
    results = storage.read_json(report["paths"]["results"])
    assert results["results"]["all"]["value"] == pytest.approx(value)
    assert results["results"]["custom|gen_qa_gen_qa|0"]["squared_stderr"] is not None
    assert results["config_general"]["processor"]["aggregation"] == aggregation


def test_processor_failures_are_recorded_per_example_and_the_run_completes(byom_recipe):
    modes = ["ok", "raise", "status500", "ok", "malformed", "slow", "ok", "ok"]
    golds = ["1", "2", "3", "4", "5", "6", "7", "8"]
    loaded = byom_recipe(
        rows(golds, prompts=modes),
        VALUE_HANDLER,
        processor={"postprocessing": {"enabled": True}, "timeout_s": 0.5},
        replicas=2,
    )
    report = run_stages(loaded, FakeEngine())  # echo: the prompt is the mode
    table = examples(report)
    errors = {r["row_index"]: r["postprocess_error"] for r in table}
    assert errors == {
        0: None,
        1: "handler raised RuntimeError: kaboom",
        2: "statusCode 500: metrics backend down",
        3: None,
        4: 'malformed answer: body must be a list of {"metric": str, "value": number}, got string',
        5: "timeout: no answer within 0.5 s",
        6: None,
        7: None,
    }
    # rows with an error have no custom metrics; built-ins are still there
    assert all(not r["custom_metrics"] for r in table if r["postprocess_error"])
    assert all(dict(r["metrics"]).get("em") is not None for r in table)
    # aggregated over the four good rows only
    assert report["metrics"]["value"] == pytest.approx((1 + 4 + 7 + 8) / 4)
    assert report["counts"]["processor_errors"] == 4
    assert report["counts"]["scored"] == 8
    processor = storage.read_json(report["paths"]["results"])["config_general"]["processor"]
    assert processor["postprocess_errors"] == 4 and processor["postprocessed"] == 8
    assert processor["processor_errors"] == 4
    assert [e["row_index"] for e in processor["first_errors"]] == [1, 2, 4, 5]
    assert "postprocess: 4 errors" in report["summary_markdown"]
    assert "processor errors: 4" in report["summary_markdown"]


def test_postprocessing_error_rate_past_the_threshold_fails_after_writing(byom_recipe):
    loaded = byom_recipe(
        rows(["1", "2", "3", "4"], prompts=["raise", "ok", "ok", "ok"]),
        VALUE_HANDLER,
        processor={"postprocessing": {"enabled": True}, "max_error_rate": 0.2},
    )
    with pytest.raises(ProcessorErrorRateExceeded, match=r"processor: 1 of 4 examples .*0.2"):
        run_stages(loaded, FakeEngine())
    report = stages.read_latest_report(loaded)  # everything was written before failing
    assert report["counts"]["processor_errors"] == 1


def test_a_custom_metric_may_not_shadow_a_built_in(byom_recipe):
    source = """
    def handler(event, context):
        return {"statusCode": 200, "body": [{"metric": "em", "value": 1.0}]}
    """
    loaded = byom_recipe(rows(["a", "b"]), source, processor={"postprocessing": {"enabled": True}})
    report = run_stages(loaded, FakeEngine(lambda r: "zzz"))
    (first, _) = examples(report, ["postprocess_error", "metrics"])
    assert "custom metric 'em' clashes with a built-in metric" in first["postprocess_error"]
    assert report["metrics"]["em"] == 0.0


# ---------------------------------------------------------------- the case study, with Dagster


def test_ticket_handler_and_classification_report_through_dagster(byom_recipe, monkeypatch):
    lines = ticket_lines(12)
    golds = [json.loads(line)["response"] for line in lines]
    by_prompt = {json.loads(line)["query"]: g for line, g in zip(lines, golds, strict=True)}

    def respond(request: GenerationRequest) -> str:
        gold = json.loads(by_prompt[request.prompt])
        if request.row_index % 4 == 1:
            return "I think this is a network issue."  # not JSON
        if request.row_index % 4 == 2:
            return json.dumps({**gold, "class": "software"})  # valid JSON, maybe wrong class
        return by_prompt[request.prompt]  # perfect

    loaded = byom_recipe(
        lines,
        processor={
            "handler": f"{TICKET_HANDLER}:lambda_handler",
            "postprocessing": {"enabled": True},
        },
        classification={"label_field": "class"},
        replicas=2,
    )
    engine = FakeEngine(respond)
    monkeypatch.setitem(stages._ENGINES, ("hf", "smollm2-135m-instruct"), engine)
    definitions = build_evaluation_assets(loaded)
    instance = dg.DagsterInstance.ephemeral()

    def materialize(names, partition=None):
        result = dg.materialize(
            definitions,
            instance=instance,
            selection=dg.AssetSelection.assets(*(dg.AssetKey(["tiny", n]) for n in names)),
            partition_key=partition,
        )
        assert result.success
        return {
            e.asset_key.path[-1]: e.materialization.metadata
            for e in result.get_asset_materialization_events()
        }

    materialize(["validated_dataset", "preprocessed_prompts"])
    for replica in ("0", "1"):
        meta = materialize(["inference_outputs", "postprocessed_metrics"], replica)
        post = meta["postprocessed_metrics"]
        assert post["postprocess_errors"].value == 0
        assert post["postprocess_seconds"].value > 0
    meta = materialize(["aggregated_report"])["aggregated_report"]

    gold_classes = [json.loads(g)["class"] for g in golds]
    correct = [i % 4 in (0, 3) or (i % 4 == 2 and gold_classes[i] == "software") for i in range(12)]
    assert meta["class_correct"].value == pytest.approx(sum(correct) / 12)
    assert meta["schema_valid"].value == pytest.approx(9 / 12)
    assert meta["num_processor_errors"].value == 0
    assert meta["classification_accuracy"].value == pytest.approx(sum(correct) / 12)
    assert meta["classification_invalid_rate"].value == pytest.approx(3 / 12)
    assert "Confusion matrix" in meta["summary"].value

    report = stages.read_latest_report(loaded)
    results = storage.read_json(report["paths"]["results"])
    classification = results["classification"]
    assert classification["label_field"] == "class"
    assert classification["examples"] == 12
    assert classification["invalid_reasons"] == {"not_json": 3}
    assert classification["accuracy"] == pytest.approx(sum(correct) / 12)
    table = examples(report, ["gold_label", "predicted_label", "label_valid", "label_problem"])
    assert [r["gold_label"] for r in table] == gold_classes
    assert [r["label_valid"] for r in table] == [i % 4 != 1 for i in range(12)]
    assert [r["label_problem"] for r in table][1] == "not_json"
    assert table[2]["predicted_label"] == "software"
    # a perfect answer gets the best thought scores there are
    custom = examples(report, ["custom_metrics"])[0]["custom_metrics"]
    assert dict(custom)["thought_rougeL"] == 1.0 and dict(custom)["class_correct"] == 1.0


def test_lambda_processor_in_the_pipeline(byom_recipe, monkeypatch):
    """The same pipeline with processor.lambda_arn, against the local Lambda endpoint."""
    from nova_eval_assets.byom.runner import load_handler

    ticket = load_handler(f"{TICKET_HANDLER}:lambda_handler", Path("/"))
    lines = ticket_lines(4)
    with FakeLambda() as lam:
        lam.functions["tickets"] = lambda event, attempt: (
            fake.throttled() if attempt == 1 else fake.run_handler(ticket)(event, attempt)
        )
        for key, value in {
            "AWS_ENDPOINT_URL_LAMBDA": lam.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        }.items():
            monkeypatch.setenv(key, value)
        loaded = byom_recipe(
            lines,
            processor={"postprocessing": {"enabled": True}},
            classification={"label_field": "class", "json_mode": "embedded"},
        )
        data = yaml.safe_load(loaded.path.read_text())
        data["processor"] = {
            "lambda_arn": fake.arn("tickets"),
            "postprocessing": {"enabled": True},
            "max_retries": 2,
        }
        loaded.path.write_text(yaml.safe_dump(data))
        loaded = load_recipe(loaded.path)
        golds = {json.loads(x)["query"]: json.loads(x)["response"] for x in lines}
        report = run_stages(loaded, FakeEngine(lambda r: f"Sure!\n```json\n{golds[r.prompt]}\n```"))
        assert lam.calls_to("tickets") == 8  # each example throttled once, then answered
    assert report["counts"]["processor_errors"] == 0
    assert report["metrics"]["schema_valid"] == 0.0  # strict in the handler
    assert report["classification"]["accuracy"] == 1.0  # embedded JSON in the report
    processor = report["processor"]
    assert processor["kind"] == "lambda" and processor["postprocessed"] == 4


# ---------------------------------------------------------------- the real model


@pytest.mark.model
def test_preprocessor_rewrite_reaches_the_real_model(byom_recipe):
    source = """
    from nova_eval_assets.byom import build_lambda_handler, preprocess

    @preprocess
    def rewrite(event, context):
        data = event["data"]
        return {"statusCode": 200, "body": {
            "system": None, "prompt": "Reply with the word MARKER.", "gold": "MARKER"}}

    handler = build_lambda_handler(preprocessor=rewrite)
    """
    loaded = byom_recipe(
        ticket_lines(2),
        source,
        processor={"preprocessing": {"enabled": True}},
        inference={"max_new_tokens": 4, "top_logprobs": 0},
    )
    real = stages.load_engine(loaded)
    seen: list[GenerationRequest] = []

    class Spy:
        name, model_id = real.name, real.model_id
        default_batch_size = real.default_batch_size
        block_size = staticmethod(real.block_size)

        def generate(self, requests, settings, batch_size=None, on_batch=None):
            seen.extend(requests)
            return real.generate(requests, settings, batch_size, on_batch=on_batch)

    report = run_stages(loaded, Spy())
    assert [r.prompt for r in seen] == ["Reply with the word MARKER."] * 2
    assert all(r.system is None for r in seen)
    table = examples(report, ["prompt", "gold", "prediction", "completion_tokens"])
    assert [r["prompt"] for r in table] == ["Reply with the word MARKER."] * 2
    assert [r["gold"] for r in table] == ["MARKER"] * 2
    # identical prompts, greedy decoding: identical answers from the model
    assert table[0]["prediction"] == table[1]["prediction"]
    assert table[0]["completion_tokens"] > 0
