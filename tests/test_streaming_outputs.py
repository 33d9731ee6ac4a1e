"""Streaming after inference (issue 21): scoring, the replica merge, the aggregates, the
Nova export and the eval_metrics strata read and write record batches, so their memory is
bounded by $NOVA_EVAL_BATCH_ROWS, and what they write does not depend on it.

One evaluation (support tickets repeated to a few hundred rows, a fast fake engine with
log probabilities, failed and clipped rows, a BYOM postprocessor whose metrics and errors
vary by row, the classification extension) is scored and reported twice, with batches of
64 rows and with one batch larger than the dataset: every per-example column, every file
and every aggregate must be bit-for-bit the same, and equal to an independent computation
from the metric functions, sacrebleu and numpy.
"""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sacrebleu
import yaml

from nova_eval_assets import lineage, stages, storage, tracking
from nova_eval_assets.byom.runner import load_handler
from nova_eval_assets.byom.sdk import PostprocessError
from nova_eval_assets.engines.base import (
    Generation,
    GenerationRequest,
    SamplingSettings,
    TokenLogprob,
    block_size,
)
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.metrics import (
    PER_EXAMPLE_METRICS,
    bleu_sufficient_stats,
    bootstrap_bleu_stderr,
    example_metrics,
)
from nova_eval_assets.metrics.batch_scoring import ScoringWorkers
from nova_eval_assets.recipe import LoadedRecipe, load_recipe
from nova_eval_assets.stages import scoring
from nova_eval_assets.tables import build
from tests.conftest import PROJECT, ticket_lines

ROWS = 300
SMALL_BATCH = 64
REQUESTED_TOKENS = 8  # the conftest recipe's max_new_tokens

HANDLER = """
from nova_eval_assets.byom import build_lambda_handler, postprocess


@postprocess
def score(event, context):
    data = event["data"]
    output = data["inference_output"]
    if output.startswith("I think"):
        raise ValueError(f"cannot score prose of {len(output)} characters")
    metrics = [{"metric": "length_ratio", "value": len(output) / len(data["gold"])}]
    if "software" in output:  # a metric only some rows have
        metrics.append({"metric": "mentions_software", "value": output.count("software")})
    return {"statusCode": 200, "body": metrics}


lambda_handler = build_lambda_handler(postprocessor=score)
"""


def dataset_lines(rows: int) -> list[str]:
    """Support tickets repeated to ``rows`` lines, each query made distinct; every 29th row
    without metadata."""
    tickets = [json.loads(line) for line in ticket_lines(254)]
    lines = []
    for i in range(rows):
        row = dict(tickets[i % len(tickets)])
        row["query"] = f"{row['query']} (copy {i // len(tickets)})"
        if i % 29 == 0:
            row.pop("metadata", None)
        lines.append(json.dumps(row))
    return lines


class TicketEngine:
    """A fast fake Engine: per row (by row_index) the gold answer, a wrong class, prose, an
    empty answer, a failed request or a clipped generation budget; three generated tokens
    with top log probabilities (two top entries decode to the same text)."""

    name = "fake"
    model_id = "fake:tickets"
    default_batch_size = 16

    def __init__(self, golds: dict[str, str]):
        self.golds = golds

    def block_size(self, batch_size: int) -> int:
        return block_size(batch_size)

    def answer(self, request: GenerationRequest) -> Generation:
        i, gold = request.row_index, self.golds[request.prompt]
        if i % 11 == 5:
            return Generation.failed(i, f"HTTP 500 from 127.0.0.1:{8000 + i}: boom", latency_s=0.5)
        if i % 7 == 1:
            text = "I think this is a network issue."
        elif i % 7 == 2:
            text = json.dumps({**json.loads(gold), "class": "software"})
        elif i % 7 == 3:
            text = ""
        else:
            text = gold
        tokens = [
            TokenLogprob("{", -0.01 * (i % 5), [("{", -0.01), (" {", -4.5 - i % 3)]),
            TokenLogprob("x", -0.25, [("x", -0.25), ("x", -1.75), ("y", -2.0)]),
            TokenLogprob("}", -0.5, [("}", -0.5)]),
        ]
        return Generation(
            row_index=i,
            text=text,
            tokens=tokens,
            prompt_tokens=len(request.prompt.split()),
            completion_tokens=len(tokens),
            latency_s=0.25,
            finish_reason="stop",
            max_new_tokens=REQUESTED_TOKENS - 3 if i % 13 == 0 else REQUESTED_TOKENS,
        )

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        settings: SamplingSettings,
        batch_size: int | None = None,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> list[Generation]:
        outputs = [self.answer(r) for r in requests]
        if on_batch:
            on_batch(len(requests), len(requests))
        return outputs


def ticket_recipe(
    make_recipe, tmp_path: Path, rows: int, replicas: int, name: str = "stream"
) -> LoadedRecipe:
    loaded = make_recipe(dataset_lines(rows), name=name, replicas=replicas)
    data = yaml.safe_load(loaded.path.read_text())
    (tmp_path / "handler.py").write_text(textwrap.dedent(HANDLER))
    data["processor"] = {
        "handler": "handler.py:lambda_handler",
        "postprocessing": {"enabled": True},
        "aggregation": "average",
    }
    data["classification"] = {"label_field": "class"}
    loaded.path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_recipe(loaded.path)


def run_inference(loaded: LoadedRecipe, lines: list[str]) -> None:
    golds = {json.loads(line)["query"]: json.loads(line)["response"] for line in lines}
    stages.validate_or_raise(loaded)
    stages.build_prompts(loaded)
    for replica in range(loaded.recipe.run.replicas):
        stages.run_inference(loaded, replica, engine=TicketEngine(golds))


# ---------------------------------------------------------------- what each row should get


def parse_class(text: str | None) -> str | None:
    """The class an output names, read as the classification extension documents it
    (strict JSON object, a non-empty string field), or None."""
    try:
        value = json.loads(text or "")
    except ValueError:
        return None
    label = value.get("class") if isinstance(value, dict) else None
    return label if isinstance(label, str) and label.strip() else None


def expected_rows(lines: list[str], handler: Callable) -> list[dict[str, Any]]:
    """Every row's outputs, computed here from the dataset, the fake engine, the metric
    functions and the processor itself; none from the pipeline."""
    golds = {json.loads(line)["query"]: json.loads(line)["response"] for line in lines}
    engine = TicketEngine(golds)
    rows = []
    for i, line in enumerate(lines):
        data = json.loads(line)
        answer = engine.answer(GenerationRequest(row_index=i, prompt=data["query"]))
        row = {
            "row_index": i,
            "prompt": data["query"],
            "gold": data["response"],
            "metadata": data.get("metadata"),
            "prediction": answer.text,
            "scored": answer.error is None,
            "error": answer.error,
            "budget": answer.max_new_tokens,
            "prompt_tokens": len(data["query"].split()),
            "tokens": answer.tokens,
            "builtin": {},
            "custom": {},
            "postprocess_error": None,
        }
        if row["scored"]:
            row["builtin"] = example_metrics(row["gold"], row["prediction"])
            row["bleu_stats"] = bleu_sufficient_stats(row["gold"], row["prediction"])
            data = {"prompt": row["prompt"], "inference_output": answer.text, "gold": row["gold"]}
            try:
                reply = handler({"process_type": "postprocess", "data": data}, None)
            except PostprocessError as exc:  # recorded as the row's postprocess_error
                row["postprocess_error"] = str(exc)
            else:
                row["custom"] = {m["metric"]: float(m["value"]) for m in reply["body"]}
        rows.append(row)
    return rows


def mean_and_stderr(values: list[float]) -> tuple[float, float]:
    array = np.array(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1) / math.sqrt(len(array)))


# ---------------------------------------------------------------- scoring and report twice


def row_group_sizes(location: str) -> list[int]:
    metadata = pq.ParquetFile(location).metadata
    return [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]


def score_and_report(
    loaded: LoadedRecipe, batch_rows: int, monkeypatch, workers: bool = False
) -> dict[str, Any]:
    """Score every replica and write the report with ``batch_rows`` rows per batch (the
    built-in metrics in worker processes if ``workers``); what they wrote, read back."""
    monkeypatch.setenv("NOVA_EVAL_BATCH_ROWS", str(batch_rows))
    replicas = loaded.recipe.run.replicas
    started: list[int] = []
    with monkeypatch.context() as patch:
        if workers:
            patch.setattr(scoring, "POOL_MIN_ROWS", 0)
            patch.setattr(
                scoring, "ScoringWorkers", lambda n: started.append(n) or ScoringWorkers(n)
            )
        scored = [stages.score_replica(loaded, replica) for replica in range(replicas)]
    # with workers, every replica was scored by more than one worker process
    assert started == ([started[0]] * replicas if workers else []) and min(started or [2]) > 1
    report = stages.write_report(loaded)
    monkeypatch.delenv("NOVA_EVAL_BATCH_ROWS")
    layout = EvalLayout.for_recipe(loaded)
    paths = report["paths"]
    return {
        "scored": scored,
        "report": report,
        "results": storage.read_json(paths["results"]),
        "examples": storage.read_parquet(paths["examples"]),
        "examples_row_groups": row_group_sizes(paths["examples"]),
        "metrics": [storage.read_parquet(layout.metrics(r, replicas)) for r in range(replicas)],
        "details": storage.read_parquet(paths["details"]),
        "inference_output": Path(paths["inference_output"]).read_text(encoding="utf-8"),
    }


TIMINGS = ("postprocess_seconds", "preprocess_seconds", "inference_seconds")


def without_timings(run: dict[str, Any]) -> dict[str, Any]:
    """The results JSON and report without what differs on every run: times, stamps."""
    results = json.loads(json.dumps(run["results"]))
    general = results["config_general"]
    for key in ("timestamp", "total_evaluation_time_secondes"):
        general.pop(key)
    for key in TIMINGS:
        general["processor"].pop(key)
    report = {k: v for k, v in run["report"].items() if k not in ("paths", "summary_markdown")}
    report = json.loads(json.dumps(report))
    for key in TIMINGS:
        report["processor"].pop(key)
    scored = [
        {k: v for k, v in s.items() if k not in ("postprocess_seconds", "postprocess_call_seconds")}
        for s in run["scored"]
    ]
    return {"results": results, "report": report, "scored": scored}


@pytest.fixture(params=[1, 3], ids=["1-replica", "3-replicas"])
def two_runs(request, make_recipe, tmp_path, monkeypatch) -> dict[str, Any]:
    lines = dataset_lines(ROWS)
    loaded = ticket_recipe(make_recipe, tmp_path, ROWS, request.param)
    run_inference(loaded, lines)
    small = score_and_report(loaded, SMALL_BATCH, monkeypatch, workers=True)
    whole = score_and_report(loaded, 100_000, monkeypatch)
    handler = load_handler("handler.py:lambda_handler", tmp_path)
    return {"small": small, "whole": whole, "expected": expected_rows(lines, handler)}


def test_every_output_is_the_same_whatever_the_batch_size(two_runs):
    small, whole = two_runs["small"], two_runs["whole"]
    # the small batches did stream: examples.parquet was written a batch of at most 64
    # rows at a time
    assert max(small["examples_row_groups"]) <= SMALL_BATCH
    assert sum(small["examples_row_groups"]) == ROWS
    assert without_timings(small) == without_timings(whole)
    for name in small["examples"].column_names:
        if name != "postprocess_seconds":
            assert small["examples"][name].equals(whole["examples"][name]), name
    assert small["examples"].schema.equals(whole["examples"].schema, check_metadata=True)
    for small_metrics, whole_metrics in zip(small["metrics"], whole["metrics"], strict=True):
        assert small_metrics.drop_columns("postprocess_seconds").equals(
            whole_metrics.drop_columns("postprocess_seconds"), check_metadata=True
        )
    assert small["details"].equals(whole["details"])
    assert small["inference_output"] == whole["inference_output"]


def test_aggregates_equal_an_independent_computation(two_runs):
    expected, run = two_runs["expected"], two_runs["small"]
    metrics = run["results"]["results"]["all"]
    scored = [row for row in expected if row["scored"]]
    for name in PER_EXAMPLE_METRICS:
        mean, stderr = mean_and_stderr([row["builtin"][name] for row in scored])
        assert (metrics[name], metrics[f"{name}_stderr"]) == (mean, stderr), name
    golds, predictions = [row["gold"] for row in scored], [row["prediction"] for row in scored]
    assert metrics["bleu"] == sacrebleu.corpus_bleu(predictions, [golds]).score
    stats = np.array([row["bleu_stats"] for row in scored], dtype=np.float64)
    assert metrics["bleu_stderr"] == bootstrap_bleu_stderr(stats)
    for name in ("length_ratio", "mentions_software"):
        values = [row["custom"][name] for row in scored if name in row["custom"]]
        assert 10 < len(values) < len(scored)  # every name is absent from some rows
        assert (metrics[name], metrics[f"{name}_stderr"]) == mean_and_stderr(values), name
    assert list(metrics) == [
        *(f"{m}{s}" for m in (*PER_EXAMPLE_METRICS, "bleu") for s in ("", "_stderr")),
        *(f"{m}{s}" for m in ("length_ratio", "mentions_software") for s in ("", "_stderr")),
    ]

    failed = [row for row in expected if not row["scored"]]
    counts = run["report"]["counts"]
    post_errors = [row for row in scored if row["postprocess_error"] is not None]
    assert counts == {
        "examples": ROWS,
        "scored": len(scored),
        "inference_errors": len(failed),
        "rejected_rows": 0,
        "replicas": len(run["scored"]),
        "processor_errors": len(post_errors),
    }
    general = run["results"]["config_general"]
    assert general["total_generated_tokens"] == 3 * len(scored)
    coverage = general["coverage"]
    assert (coverage["rows"], coverage["scored_rows"]) == (ROWS, len(scored))
    assert coverage["failed_rows_by_stage"] == {"inference": len(failed)}
    assert [(r["rows"], r["first"]) for r in coverage["failure_reasons"]] == [
        (len(failed), failed[0]["error"])
    ]
    assert [(f["row_index"], f["line"], f["error"]) for f in coverage["first_failures"]] == [
        (row["row_index"], row["row_index"] + 1, row["error"]) for row in failed[:20]
    ]

    processor = general["processor"]
    assert processor["custom_metrics"] == ["length_ratio", "mentions_software"]
    assert (processor["postprocessed"], processor["postprocess_errors"]) == (
        len(scored),
        len(post_errors),
    )
    assert [e["row_index"] for e in processor["first_errors"]] == [
        row["row_index"] for row in post_errors[:10]
    ]

    clipped = [row for row in scored if row["budget"] < REQUESTED_TOKENS]
    contexts = [row["prompt_tokens"] + row["budget"] for row in clipped]
    assert general["warnings"] == [
        f"inference.max_new_tokens {REQUESTED_TOKENS} plus the prompt exceeds the model's "
        f"context of {min(contexts)}..{max(contexts)} tokens for {len(clipped)} of {ROWS} "
        f"rows; clipped to {REQUESTED_TOKENS - 3} tokens (prompt + answer must fit)"
    ]

    classification = run["results"]["classification"]
    gold_classes = [parse_class(row["gold"]) for row in scored]
    predicted = [parse_class(row["prediction"]) for row in scored]
    correct = [float(p == g) for p, g in zip(predicted, gold_classes, strict=True)]
    assert classification["examples"] == len(scored)
    assert (classification["accuracy"], classification["accuracy_stderr"]) == mean_and_stderr(
        correct
    )
    assert classification["invalid_reasons"] == {"not_json": predicted.count(None)}
    classes = classification["classes"]
    assert classes == sorted(set(gold_classes) | {p for p in predicted if p})
    pairs = Counter(zip(gold_classes, predicted, strict=True))
    assert classification["confusion_matrix"]["matrix"] == [
        [pairs[gold, p] for p in classes] + [pairs[gold, None]] for gold in classes
    ]


def test_every_per_example_output_holds_what_the_row_should(two_runs):
    expected, run = two_runs["expected"], two_runs["small"]
    examples = run["examples"].to_pylist()
    assert [row["row_index"] for row in examples] == list(range(ROWS))
    for row, want in zip(examples, expected, strict=True):
        assert (row["prompt"], row["gold"], row["prediction"]) == (
            want["prompt"],
            want["gold"],
            want["prediction"],
        )
        assert row["scored"] is want["scored"]
        assert dict(row["metrics"]) == {**want["builtin"], **want["custom"]}
        assert dict(row["custom_metrics"] or []) == want["custom"]
        assert row["bleu_stats"] == want.get("bleu_stats")
        assert (row["postprocess_error"] is None) == (want["postprocess_error"] is None)
        assert row["predicted_label"] == (
            parse_class(want["prediction"]) if want["scored"] else None
        )

    details = run["details"].to_pylist()
    lines = [json.loads(line) for line in run["inference_output"].splitlines()]
    assert len(details) == len(lines) == ROWS
    for cells, line, want in zip(details, lines, expected, strict=True):
        assert line == {
            "prompt": want["prompt"],
            "inference": want["prediction"],
            "gold": want["gold"],
            "metadata": want["metadata"],
        }
        assert cells["example"] == want["prompt"]
        assert ast.literal_eval(cells["predictions"]) == [want["prediction"]]
        assert ast.literal_eval(cells["metrics"]) == {**want["builtin"], **want["custom"]}
        assert ast.literal_eval(cells["specifics"]) == {"metadata": want["metadata"]}
        tops = [{} for _ in want["tokens"]]
        for top, token in zip(tops, want["tokens"], strict=True):
            for text, logprob in token.top:
                top[text if text not in top else f"{text}#2"] = logprob
        assert ast.literal_eval(cells["pred_logprobs"]) == [tops]


# ---------------------------------------------------------------- memory


PEAK_SCRIPT = """
import json, sys
import pyarrow as pa
from nova_eval_assets import stages
from nova_eval_assets.recipe import load_recipe

loaded = load_recipe(sys.argv[1])
for replica in range(loaded.recipe.run.replicas):
    stages.score_replica(loaded, replica)
stages.write_report(loaded)
print(json.dumps({"peak": pa.default_memory_pool().max_memory()}))
"""


def scoring_and_report_peak(make_recipe, tmp_path: Path, monkeypatch, rows: int) -> int:
    """The peak of Arrow's memory pool while one process scores and reports ``rows`` rows
    (inference done beforehand), the whole pipeline in batches of 200 rows."""
    monkeypatch.setenv("NOVA_EVAL_BATCH_ROWS", "200")
    loaded = ticket_recipe(make_recipe, tmp_path, rows, replicas=1, name=f"rows{rows}")
    # the Inspect log (its own tests: test_inspect_log.py) is Python objects, not Arrow's
    # pool, and would only add its time here
    recipe = yaml.safe_load(loaded.path.read_text())
    recipe["run"]["inspect_log"] = False
    loaded.path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    run_inference(loaded, dataset_lines(rows))
    done = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(loaded.path)],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["peak"]


def test_arrow_memory_of_scoring_and_report_is_bounded_by_the_batch(
    make_recipe, tmp_path, monkeypatch
):
    small = scoring_and_report_peak(make_recipe, tmp_path, monkeypatch, 2_000)
    large = scoring_and_report_peak(make_recipe, tmp_path, monkeypatch, 8_000)
    # four times the rows: a whole-table pass would need about four times the memory
    assert large < 1.5 * small, (small, large)


# ---------------------------------------------------------------- the replica merge


def rewrite_parquet(location: str, change: Callable[[pa.Table], pa.Table]) -> None:
    """Rewrite a stage's Parquet file through ``change``, keeping its recorded lineage."""
    recorded = lineage.read_lineage(location)
    table = change(storage.read_parquet(location))
    storage.write_parquet(location, lineage.with_lineage(table, recorded))


@pytest.fixture
def scored_recipe(make_recipe, tmp_path) -> LoadedRecipe:
    """100 rows in one replica, inferred; scored by each test."""
    loaded = ticket_recipe(make_recipe, tmp_path, 100, replicas=1)
    run_inference(loaded, dataset_lines(100))
    return loaded


def test_a_replica_out_of_row_order_is_refused_not_sorted(scored_recipe, monkeypatch):
    monkeypatch.setenv("NOVA_EVAL_BATCH_ROWS", "32")
    layout = EvalLayout.for_recipe(scored_recipe)
    rewrite_parquet(layout.inference(0, 1), lambda t: t.take(pa.array(range(99, -1, -1))))
    stages.score_replica(scored_recipe, 0)  # its metrics follow the same (wrong) order
    with pytest.raises(RuntimeError) as refused:
        stages.write_report(scored_recipe)
    assert str(refused.value) == (
        "replica 0: inference outputs are not in row order (row 98 comes after row 99); "
        "rematerialize inference_outputs for this partition"
    )
    assert not storage.exists(layout.examples)  # nothing half written


def test_metrics_of_other_rows_than_the_inference_are_refused(scored_recipe, monkeypatch):
    monkeypatch.setenv("NOVA_EVAL_BATCH_ROWS", "32")
    layout = EvalLayout.for_recipe(scored_recipe)
    stages.score_replica(scored_recipe, 0)
    rewrite_parquet(layout.metrics(0, 1), lambda t: t.slice(0, 99))  # one row short
    with pytest.raises(RuntimeError, match=r"^replica 0: metrics do not match inference"):
        stages.write_report(scored_recipe)


# ---------------------------------------------------------------- eval_metrics strata


def test_stratum_metrics_stream_the_examples_file(two_runs, monkeypatch):
    examples_path = two_runs["small"]["report"]["paths"]["examples"]
    monkeypatch.setenv("NOVA_EVAL_BATCH_ROWS", "64")
    streamed = build.stratum_metric_rows(examples_path)
    monkeypatch.setenv("NOVA_EVAL_BATCH_ROWS", "100000")
    assert build.stratum_metric_rows(examples_path) == streamed
    assert build.stratum_metric_rows(two_runs["small"]["examples"]) == streamed
    # one stratum, computed here from the rows themselves
    easy = [
        row
        for row in two_runs["expected"]
        if row["scored"] and json.loads(row["metadata"] or "{}").get("difficulty") == "easy"
    ]
    (em,) = [r for r in streamed if r["stratum"] == "difficulty=easy" and r["metric"] == "em"]
    assert (em["num_examples"], em["value"], em["stderr"]) == (
        len(easy),
        *mean_and_stderr([row["builtin"]["em"] for row in easy]),
    )


# ---------------------------------------------------------------- MLflow artifacts


def test_a_remote_artifact_is_copied_for_mlflow_in_chunks(tmp_path, monkeypatch):
    source = tmp_path / "details.parquet"
    source.write_bytes(np.random.default_rng(7).bytes(3 * tracking._COPY_CHUNK + 5))

    def whole_file(location: str) -> bytes:
        raise AssertionError(f"{location} read whole into memory")

    monkeypatch.setattr(storage, "read_bytes", whole_file)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    local = tracking._local_copy(source.as_uri(), str(scratch))  # file://: remote to storage
    assert Path(local) == scratch / "details.parquet"
    assert Path(local).read_bytes() == source.read_bytes()
