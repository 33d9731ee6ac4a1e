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


def test_nova_eval_run_command_end_to_end(make_recipe, tmp_path):
    """`nova-eval run` as a user types it (what `make eval` does), on 4 of 6 rows and 2
    replicas: the summary, the output paths, and the runs recorded in the Dagster home."""
    import os
    import subprocess
    import sys

    from tests.conftest import PROJECT

    lines = ticket_lines(6)
    loaded = make_recipe(lines, inference={"top_logprobs": 2, "max_new_tokens": 6})
    home = tmp_path / "dagster_home"
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(PROJECT)}
    command = [sys.executable, "-m", "nova_eval_assets.cli", "run", str(loaded.path)]
    done = subprocess.run(
        [*command, "--limit", "4", "--replicas", "2", "--quiet"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "Evaluation 'tiny' of smollm2-135m-instruct" in out
    assert "examples: 4, scored: 4, inference errors: 0, rejected rows: 0, replicas: 2" in out
    assert "| em |" in out and "| rougeL |" in out

    listed = out.split("Results:\n", 1)[1].splitlines()
    paths = dict(line.split(None, 1) for line in listed if line.startswith("  "))
    results = storage.read_json(paths["results"])
    assert results["config_general"]["model_name"] == "smollm2-135m-instruct"
    with open(paths["inference_output"]) as handle:
        written = [json.loads(line) for line in handle]
    queries = [json.loads(line)["query"] for line in lines[:4]]  # --limit 4: the first four
    assert [row["prompt"] for row in written] == queries

    run_ids = out.split("Dagster runs: ", 1)[1].split(" (see them", 1)[0].split(", ")
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        runs = [instance.get_run_by_id(run_id) for run_id in run_ids]
        assert all(run is not None and run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
        assert all(run.tags["launched_by"] == "nova-eval-cli" for run in runs)
        partitions = sorted(run.tags.get("dagster/partition", "-") for run in runs)
        assert partitions.count("0") == 1 and partitions.count("1") == 1
    finally:
        instance.dispose()
