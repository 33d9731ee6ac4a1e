"""End to end with the real bundled SmolLM2 model: the asset graph materialized in process,
the Nova export read back as a notebook would, and replica invariance."""

from __future__ import annotations

import ast
import json
import statistics

import dagster as dg
import pandas as pd
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from nova_eval_assets import stages, storage
from nova_eval_assets.assets.materialize import run_evaluation
from nova_eval_assets.layout import EvalLayout
from tests.conftest import ticket_lines

pytestmark = pytest.mark.model


def evaluate(loaded) -> dict:
    outcome = run_evaluation(loaded, instance=dg.DagsterInstance.ephemeral(), show_progress=False)
    assert outcome.report is not None, outcome.message
    return outcome.report


def test_asset_graph_end_to_end_with_independent_metric_check(make_recipe):
    lines = ticket_lines(6)
    loaded = make_recipe(lines, replicas=2, inference={"top_logprobs": 4, "max_new_tokens": 10})
    report = evaluate(loaded)
    paths = report["paths"]

    results = storage.read_json(paths["results"])
    assert set(results["results"]) == {"custom|gen_qa_gen_qa|0", "all"}
    metrics = results["results"]["all"]
    for name in ("em", "qem", "f1", "f1_score_quasi", "rouge1", "rouge2", "rougeL", "bleu"):
        assert f"{name}_stderr" in metrics

    # inference_output.jsonl keeps the input order, gold and metadata
    outputs = [json.loads(x) for x in storage.read_bytes(paths["inference_output"]).splitlines()]
    inputs = [json.loads(x) for x in lines]
    assert [o["gold"] for o in outputs] == [i["response"] for i in inputs]
    assert [o["metadata"] for o in outputs] == [i["metadata"] for i in inputs]
    assert [o["prompt"] for o in outputs] == [i["query"] for i in inputs]

    # the aggregates, recomputed here from the exported text with the reference libraries
    golds = [o["gold"] for o in outputs]
    preds = [o["inference"] for o in outputs]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)
    scores = [scorer.score(g, p) for g, p in zip(golds, preds, strict=True)]
    assert metrics["rouge1"] == pytest.approx(statistics.mean(s["rouge1"].fmeasure for s in scores))
    assert metrics["rougeL"] == pytest.approx(statistics.mean(s["rougeL"].fmeasure for s in scores))
    assert metrics["em"] == statistics.mean(
        float(g.strip() == p.strip()) for g, p in zip(golds, preds, strict=True)
    )
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [golds]).score)
    rouge1 = [s["rouge1"].fmeasure for s in scores]
    assert metrics["rouge1_stderr"] == pytest.approx(statistics.stdev(rouge1) / len(rouge1) ** 0.5)

    # the details Parquet, read as DESIGN.md says notebooks read it
    details = pd.read_parquet(paths["details"])
    examples = storage.read_parquet(paths["examples"]).to_pylist()
    assert len(details) == len(examples) == 6
    for row, typed, source in zip(details.itertuples(), examples, inputs, strict=True):
        assert row.example == source["query"] and row.gold == source["response"]
        assert ast.literal_eval(row.predictions) == [typed["prediction"]]
        per_example = ast.literal_eval(row.metrics)
        assert set(per_example) >= {"em", "f1", "rouge1", "rougeL"}
        assert ast.literal_eval(row.specifics) == {"metadata": source["metadata"]}
        (tokens,) = ast.literal_eval(row.pred_logprobs)
        assert len(tokens) == typed["completion_tokens"] == len(typed["token_logprobs"]) > 0
        for top, token in zip(tokens, typed["token_logprobs"], strict=True):
            assert len(top) == 4  # exactly top_logprobs entries per generated token
            values = list(top.values())
            assert values == sorted(values, reverse=True)
            # greedy: the chosen token is the most likely one
            assert token["logprob"] == pytest.approx(values[0])


def test_replica_count_changes_neither_metrics_nor_row_order(make_recipe):
    # 18 rows, batch_size 2 -> blocks of 8 rows: 3 replicas get 8, 8 and 2 rows
    lines = ticket_lines(18)
    one = make_recipe(lines, name="one", replicas=1)
    three = make_recipe(lines, name="three", replicas=3)

    # one replica through the domain functions directly, three through Dagster
    stages.validate_or_raise(one)
    stages.build_prompts(one)
    stages.run_inference(one, 0)
    stages.score_replica(one, 0)
    single = stages.write_report(one)
    triple = evaluate(three)

    assert [
        storage.read_parquet(EvalLayout.for_recipe(three).inference(i, 3)).num_rows
        for i in range(3)
    ] == [8, 8, 2]
    assert single["metrics"] == triple["metrics"]
    columns = ["row_index", "prompt", "prediction", "token_logprobs", "metrics"]
    a = storage.read_parquet(single["paths"]["examples"], columns=columns).to_pylist()
    b = storage.read_parquet(triple["paths"]["examples"], columns=columns).to_pylist()
    assert [r["row_index"] for r in b] == list(range(18))
    assert a == b
