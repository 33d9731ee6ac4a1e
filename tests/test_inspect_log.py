"""Every evaluation's Inspect AI log (report/inspect_log.py), read back with inspect_ai's own
reader: a gen_qa run against a local OpenAI-compatible server (one row's connection always
dropped: an inference error), an mmlu run and a judge run (the fixtures of
test_benchmark_tasks.py and test_judge_pipeline.py); the writer's crash safety; the log
opened in a real ``inspect view`` and rendered in headless Chromium; ``run.inspect_log``."""

from __future__ import annotations

import ast
import asyncio
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from inspect_ai.log import EvalConfig, EvalDataset, EvalSample, EvalSpec, read_eval_log
from inspect_ai.log._recorders.eval import ZipLogFile
from inspect_ai.model import ModelOutput
from PIL import Image

from bench.instant_server import answer_tokens
from nova_eval_assets import storage
from nova_eval_assets.assets.judge import build_judge_assets
from nova_eval_assets.assets.materialize import run_evaluation
from nova_eval_assets.judge import pipeline as judge_pipeline
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import LoadedRecipe, load_recipe
from nova_eval_assets.report import inspect_log
from nova_eval_assets.stages.report import write_report
from tests import browser
from tests.conftest import ticket_lines
from tests.openai_servers import ScriptedInstantServer
from tests.test_benchmark_tasks import ROWS as MMLU_ROWS
from tests.test_benchmark_tasks import run as run_mmlu
from tests.test_benchmark_tasks import server  # noqa: F401  (the mmlu run's server fixture)
from tests.test_judge_pipeline import (
    JUDGE_ROWS,
    ScriptedJudge,
    dataset_judge,
    judge_keys,
    materialize,
)
from tests.test_s3 import BUCKET, s3  # noqa: F401  (the moto S3 fixture)
from tests.test_s3 import keys as s3_keys

MODEL = "instant"
GONE = "Say gone."  # the server hangs up on this prompt every time: the row's error
TICKETS = 5
MAX_NEW_TOKENS = 26  # the server's answers are 24 to 28 tokens: some stop, some are cut


# ---------------------------------------------------------------- a gen_qa run


@pytest.fixture(scope="module")
def gen_qa(tmp_path_factory):
    """A gen_qa run of five support tickets and one row the server never answers."""
    folder = tmp_path_factory.mktemp("inspect_gen_qa")
    served = ScriptedInstantServer(model=MODEL, drops={GONE: None})
    lines = [*ticket_lines(TICKETS), json.dumps({"query": GONE, "response": "gone"})]
    (folder / "rows.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    recipe = {
        "run": {"name": "inspect-gen-qa", "model_name_or_path": MODEL,
                "data_s3_path": "rows.jsonl", "output_s3_path": "outputs"},
        "evaluation": {"task": "gen_qa", "strategy": "gen_qa", "metric": "all"},
        "inference": {"engine": "openai", "endpoint": served.url, "max_new_tokens": MAX_NEW_TOKENS,
                      "temperature": 0, "top_logprobs": 2, "max_retries": 0, "concurrency": 2},
    }  # fmt: skip
    path = folder / "gen_qa.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    try:
        loaded = load_recipe(path)
        outcome = run_evaluation(
            loaded, instance=dg.DagsterInstance.ephemeral(), show_progress=False
        )
    finally:
        served.close()
    assert outcome.report is not None, outcome.message
    return loaded, outcome.report, served


def by_id(samples: list[EvalSample]) -> dict[int, EvalSample]:
    return {sample.id: sample for sample in samples}


def mean_and_stderr(values: list[float]) -> tuple[float, float]:
    """The mean and its standard error (sample std / sqrt(n)), worked out here."""
    n = len(values)
    mean = sum(values) / n
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def test_a_gen_qa_log_holds_every_row_as_our_examples_table_has_it(gen_qa):
    loaded, report, served = gen_qa
    layout = EvalLayout.for_recipe(loaded)
    path = report["paths"]["inspect_log"]
    assert Path(path).parent == Path(layout.inspect_dir) and path.endswith("_gen_qa.eval")
    log = read_eval_log(path)
    examples = pq.read_table(layout.examples).to_pylist()
    assert log.status == "success" and len(log.samples) == len(examples) == TICKETS + 1
    assert (log.eval.task, log.eval.model, log.eval.dataset.samples) == ("gen_qa", MODEL, 6)
    assert log.eval.model_generate_config.max_tokens == MAX_NEW_TOKENS
    assert log.eval.model_generate_config.top_logprobs == 2
    samples = by_id(log.samples)
    errors = [row for row in examples if row["error"] is not None]
    assert [row["prompt"] for row in errors] == [GONE]
    for row in examples:
        sample = samples[row["row_index"]]
        assert sample.input == row["prompt"]
        assert sample.target == row["gold"]
        assert sample.metadata["line"] == row["line"]
        if row is errors[0]:
            assert sample.error is not None and sample.error.message == row["error"]
            assert sample.scores is None
            continue
        assert sample.error is None
        # what the server answers to the prompt, worked out from its table, not asked
        answer = "".join(answer_tokens(served.answer_text(row["prompt"]))[:MAX_NEW_TOKENS])
        assert sample.output.completion == row["prediction"] == answer
        # the conversation: the system prompt, the prompt, the answer
        assert [(m.role, m.text) for m in sample.messages] == [
            ("system", row["system"]), ("user", row["prompt"]), ("assistant", row["prediction"])
        ]  # fmt: skip
        (score,) = sample.scores.values()  # one score, the task's: the row's metrics
        assert list(sample.scores) == ["gen_qa"] and score.value == dict(row["metrics"])
        assert score.answer == row["prediction"]
        assert score.value["em"] == float(row["prediction"].strip() == row["gold"].strip())
        choice = sample.output.choices[0]
        assert choice.stop_reason == {"stop": "stop", "length": "max_tokens"}[row["finish_reason"]]
        logprobs = [(t.token, t.logprob) for t in choice.logprobs.content]
        assert logprobs == [(t["token"], t["logprob"]) for t in row["token_logprobs"]]
        assert [[(t.token, t.logprob) for t in token.top_logprobs] for token in
                choice.logprobs.content] == [[(t["token"], t["logprob"]) for t in token["top"]]
                                             for token in row["token_logprobs"]]  # fmt: skip
        usage = sample.model_usage[MODEL]
        assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (
            row["prompt_tokens"], row["completion_tokens"],
            row["prompt_tokens"] + row["completion_tokens"],
        )  # fmt: skip
        assert json.loads(row["metadata"]).items() <= sample.metadata.items()
    assert {row["finish_reason"] for row in examples} == {"stop", "length", "error"}


def test_a_gen_qa_logs_aggregates_are_the_results_json(gen_qa):
    loaded, report, _ = gen_qa
    log = read_eval_log(report["paths"]["inspect_log"])
    results = storage.read_json(report["paths"]["results"])["results"]["all"]
    scores = {score.name: score for score in log.results.scores}
    names = [name for name in results if not name.endswith("_stderr")]
    assert sorted(scores) == sorted(names)
    assert {score.scorer for score in log.results.scores} == {"gen_qa"}
    for name in names:
        assert scores[name].metrics["value"].value == results[name]
        assert scores[name].metrics["stderr"].value == results[f"{name}_stderr"]
    assert (log.results.total_samples, log.results.completed_samples) == (6, 5)
    assert scores["em"].scored_samples == 5 and scores["em"].unscored_samples == 1
    # the per-example scores the log holds give the aggregates it holds
    for name in ("em", "f1", "rougeL"):
        values = [s.scores["gen_qa"].value[name] for s in log.samples if s.scores]
        mean, stderr = mean_and_stderr(values)
        assert scores[name].metrics["value"].value == pytest.approx(mean)
        assert scores[name].metrics["stderr"].value == pytest.approx(stderr)
    # the eval's token usage is its rows'
    examples = pq.read_table(EvalLayout.for_recipe(loaded).examples)
    usage = log.stats.model_usage[MODEL]
    assert usage.input_tokens == sum(examples["prompt_tokens"].to_pylist())
    assert usage.output_tokens == sum(examples["completion_tokens"].to_pylist())


# ---------------------------------------------------------------- a benchmark and a judge


def test_an_mmlu_log_holds_its_rows_and_each_subtasks_results(tmp_path, monkeypatch, server):  # noqa: F811
    done = run_mmlu(tmp_path, monkeypatch, server.url, {})
    log = read_eval_log(done["report"]["paths"]["inspect_log"])
    examples = pq.read_table(EvalLayout.for_recipe(done["loaded"]).examples).to_pylist()
    assert log.eval.task == "mmlu" and len(log.samples) == len(examples) == len(MMLU_ROWS)
    samples = by_id(log.samples)
    for row in examples:
        sample = samples[row["row_index"]]
        assert sample.output.completion == row["prediction"]
        assert sample.scores["mmlu"].value == dict(row["metrics"])
        assert sample.metadata["subtask"] == json.loads(row["metadata"])["subtask"]
    # right, wrong, wrong, right, wrong (test_benchmark_tasks.py works them out by hand)
    by_question = {s.input: s.scores["mmlu"].value["accuracy"] for s in log.samples}
    assert [
        next(v for text, v in by_question.items() if question["question"] in text)
        for question, _ in MMLU_ROWS
    ] == [1, 0, 0, 1, 0]
    results = done["results"]["results"]
    accuracy = {score.name: score for score in log.results.scores}["accuracy"]
    assert log.results.scores[0] is not None and log.results.scores[0].name == "accuracy"
    metrics = accuracy.metrics
    assert metrics["value"].value == results["all"]["accuracy"]
    assert metrics["stderr"].value == results["all"]["accuracy_stderr"]
    for key, group in (("custom|mmlu_zs_cot:astronomy|0", "astronomy"),
                       ("custom|mmlu_zs_cot:virology|0", "virology"),
                       ("custom|mmlu_zs_cot|0", "custom|mmlu_zs_cot|0")):  # fmt: skip
        assert metrics[f"{group}/value"].value == results[key]["accuracy"]
        assert metrics[f"{group}/stderr"].value == results[key]["accuracy_stderr"]
        assert metrics[f"{group}/value"].group == group
    assert metrics["astronomy/value"].value == pytest.approx(1 / 3)


def test_a_judge_log_holds_each_prompt_with_both_judgments(tmp_path, monkeypatch):
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    monkeypatch.setattr(judge_pipeline, "load_judge_engine", lambda loaded: ScriptedJudge())
    (tmp_path / "recipes").mkdir()
    loaded = dataset_judge(tmp_path / "recipes", baseline_label="old", challenger_label="new")
    assert materialize(build_judge_assets(loaded, [loaded]), *judge_keys("pairs")).success
    report = judge_pipeline.read_latest_report(loaded)
    log = read_eval_log(report["paths"]["inspect_log"])
    assert log.eval.task == "llm_judge" and len(log.samples) == len(JUDGE_ROWS)
    details = storage.read_parquet(report["paths"]["details"]).to_pylist()
    for index, (row, detail) in enumerate(zip(JUDGE_ROWS, details, strict=True)):
        sample = by_id(log.samples)[index]
        for part in (row["prompt"], row["response_A"], row["response_B"], "old", "new"):
            assert part in sample.input
        assert [c.message.text for c in sample.output.choices] == ast.literal_eval(
            detail["predictions"]
        )
        counts = ast.literal_eval(detail["metrics"])
        assert {k: sample.scores["llm_judge"].value[k] for k in counts} == counts
        assert sample.metadata["difficulty"] == json.loads(row["metadata"])["difficulty"]
    # the content judge prefers the GOOD response, whichever side holds it
    judged = [by_id(log.samples)[i].scores["llm_judge"] for i in range(3)]
    assert [score.value["outcome"] for score in judged] == ["B", "A", "B"]
    assert [score.answer for score in judged] == ["B", "A", "B"]
    assert judged[0].explanation == "forward: Better.\n\nbackward: Better."
    summary = storage.read_json(report["paths"]["results"])["results"]["all"]
    scores = {score.name: score for score in log.results.scores}
    assert log.results.scores[0].name == "winrate"
    assert {k: m.value for k, m in scores["winrate"].metrics.items()} == {
        k: summary[k] for k in ("winrate", "lower_rate", "upper_rate")
    }
    for name in ("a_scores", "b_scores", "ties", "inference_error", "score"):
        assert scores[name].metrics["value"].value == summary[name]
        assert scores[name].metrics["stderr"].value == summary[f"{name}_stderr"]
    assert (summary["a_scores"], summary["b_scores"]) == (2, 4)


# ---------------------------------------------------------------- the writer


def minimal_spec() -> EvalSpec:
    return EvalSpec(
        created="2026-12-01T00:00:00+00:00", task="t", dataset=EvalDataset(), model="m",
        config=EvalConfig(),
    )  # fmt: skip


def answered(index: int, text: str) -> EvalSample:
    output = ModelOutput.from_content("m", text)
    return EvalSample(id=index, epoch=1, input=f"question {index}", target=text, output=output)


def test_an_error_mid_stream_leaves_no_log_under_its_name(tmp_path):
    location = tmp_path / "logs" / "run.eval"

    def batches():
        yield [answered(0, "zero"), answered(1, "one")]
        raise RuntimeError("the examples file went away")

    with pytest.raises(RuntimeError, match="went away"):
        inspect_log.write_inspect_log(str(location), minimal_spec(), batches(), None)
    assert list((tmp_path / "logs").iterdir()) == []  # neither the log nor its temporary

    # a complete log stays as it was when a later write of it fails
    inspect_log.write_inspect_log(str(location), minimal_spec(), [[answered(0, "kept")]], None)
    with pytest.raises(RuntimeError, match="went away"):
        inspect_log.write_inspect_log(str(location), minimal_spec(), batches(), None)
    assert [s.output.completion for s in read_eval_log(str(location)).samples] == ["kept"]
    assert [p.name for p in (tmp_path / "logs").iterdir()] == ["run.eval"]


@pytest.mark.parametrize("batched", [False, True])
def test_the_recorder_holds_at_most_a_write_of_samples(tmp_path, monkeypatch, batched):
    monkeypatch.setattr(inspect_log, "SAMPLES_PER_WRITE", 2)
    held = []
    buffer_sample = ZipLogFile.buffer_sample

    async def watched(self, sample):
        await buffer_sample(self, sample)
        held.append(len(self._samples))

    monkeypatch.setattr(ZipLogFile, "buffer_sample", watched)
    words = ["a", "b", "c", "d", "e"]
    samples = [answered(i, word) for i, word in enumerate(words)]
    given = [samples[:3], samples[3:]] if batched else iter(samples)
    location = inspect_log.write_inspect_log(str(tmp_path / "x.eval"), minimal_spec(), given, None)
    assert [s.output.completion for s in read_eval_log(location).samples] == words
    assert held == [1, 2, 1, 2, 1]


def test_an_inspect_logs_samples_written_again_read_back_the_same(gen_qa, tmp_path):
    """What another caller hands the writer: the samples and header of an Inspect log."""
    _, report, _ = gen_qa
    log = read_eval_log(report["paths"]["inspect_log"])
    copy = inspect_log.write_inspect_log(
        str(tmp_path / "copy.eval"), log.eval, iter(log.samples), log.results, log.stats
    )
    again = read_eval_log(copy)
    assert again.results == log.results and again.stats == log.stats
    for first, second in zip(log.samples, again.samples, strict=True):
        assert first.output == second.output and first.scores == second.scores
        assert first.input == second.input and first.error == second.error


# ---------------------------------------------------------------- run.inspect_log


def rewrite_report(gen_qa, tmp_path, monkeypatch, setting) -> tuple[dict, EvalLayout]:
    """The gen_qa run's report written again, from a copy of its outputs, with
    run.inspect_log ``setting``."""
    loaded, _, _ = gen_qa
    source = EvalLayout.for_recipe(loaded)
    copied = tmp_path / "outputs"
    shutil.copytree(Path(source.root).parent, copied)
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(copied))
    recipe = loaded.recipe
    run = recipe.run.model_copy(update={"inspect_log": setting, "output_s3_path": None})
    changed = LoadedRecipe(recipe.model_copy(update={"run": run}), loaded.path)
    layout = EvalLayout.for_recipe(changed)
    shutil.rmtree(layout.inspect_dir)
    return write_report(changed), layout


def test_inspect_log_false_writes_none(gen_qa, tmp_path, monkeypatch):
    report, layout = rewrite_report(gen_qa, tmp_path, monkeypatch, False)
    assert "inspect_log" not in report["paths"] and not os.path.exists(layout.inspect_dir)
    assert report["warnings"] == []


def test_inspect_log_auto_writes_none_above_its_rows_and_says_how_to_ask(
    gen_qa, tmp_path, monkeypatch
):
    monkeypatch.setattr(inspect_log, "INSPECT_LOG_AUTO_MAX_ROWS", 5)  # the run has 6 rows
    report, layout = rewrite_report(gen_qa, tmp_path, monkeypatch, "auto")
    assert "inspect_log" not in report["paths"] and not os.path.exists(layout.inspect_dir)
    (warning,) = report["warnings"]
    assert "6 rows" in warning and "run.inspect_log: true" in warning
    assert f"Warning: {warning}" in report["summary_markdown"]
    results = storage.read_json(report["paths"]["results"])
    assert results["config_general"]["warnings"] == [warning]

    report, layout = rewrite_report(gen_qa, tmp_path / "forced", monkeypatch, True)
    assert len(read_eval_log(report["paths"]["inspect_log"]).samples) == 6
    assert report["warnings"] == []


# ---------------------------------------------------------------- inspect view


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None, f"inspect view exited with {process.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"inspect view did not answer {url}"
        time.sleep(0.2)


@browser.needs_chromium
def test_inspect_view_shows_the_runs_samples_in_a_browser(gen_qa, tmp_path):
    loaded, report, _ = gen_qa
    log = Path(report["paths"]["inspect_log"])
    examples = pq.read_table(EvalLayout.for_recipe(loaded).examples).to_pylist()
    # a phrase of a prediction of ours, near its start (the sample list shows the start)
    phrase = re.search(r'"thought": "([^"]{1,30})', examples[0]["prediction"]).group(1)
    port = free_port()
    # its own data folder: `inspect view` stops whatever its pid file there names
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    command = [str(Path(sys.executable).with_name("inspect")), "view", "--log-dir",
               str(log.parent), "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with open(tmp_path / "view.log", "wb") as output:
        viewer = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/", viewer)
        with browser.devtools_page(tmp_path) as page:
            # the viewer's hash route to a log's samples tab: #/logs/<file>/samples
            page.navigate(f"{base}/#/logs/{log.name}/samples")
            text = page.wait_for_text(lambda shown: phrase in shown and "Say gone." in shown)
            shot = page.screenshot(tmp_path / "inspect_view.png")
    finally:
        browser.stop(viewer)
    assert "gen_qa" in text and "6 samples" in text.lower()
    assert "ConnectionFailure" in text  # the error row, as an error
    for name in ("em", "f1", "rougeL"):
        assert name in text
    # the first row's F1 among the sample list's score columns
    f1 = dict(examples[0]["metrics"])["f1"]
    assert 0 < f1 < 1 and str(f1)[:6] in text
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and shot.stat().st_size > 20_000
    image = Image.open(shot).convert("RGB")
    assert image.size[0] >= 1000
    colors = image.getcolors(maxcolors=1 << 24)
    assert colors is not None and len(colors) > 50  # not a blank page


def test_a_log_for_an_s3_output_root_is_uploaded_once_complete(s3, tmp_path):  # noqa: F811
    location = f"s3://{BUCKET}/run/eval_results/inspect/run.eval"

    def failing():
        yield [answered(0, "zero")]
        raise RuntimeError("the examples file went away")

    with pytest.raises(RuntimeError, match="went away"):
        inspect_log.write_inspect_log(location, minimal_spec(), failing(), None)
    # moto's backend outlives a test's server: other tests' objects may be in the bucket
    assert s3_keys(s3, "run/") == []
    written = inspect_log.write_inspect_log(
        location, minimal_spec(), [[answered(0, "zero"), answered(1, "one")]], None
    )
    assert written == location and s3_keys(s3, "run/") == ["run/eval_results/inspect/run.eval"]
    local = tmp_path / "downloaded.eval"
    local.write_bytes(storage.read_bytes(location))
    assert [s.output.completion for s in read_eval_log(str(local)).samples] == ["zero", "one"]


# ---------------------------------------------------------------- rows to samples


def test_rows_become_samples_field_by_field():
    """A reasoning model's row, a row whose metadata is plain text, and one that failed in
    the processor before inference; the table lacks columns added later (old files)."""
    table = pa.table(
        {
            "row_index": [7, 8, 9],
            "line": [8, 9, 10],
            "system": [None, "Be brief.", None],
            "prompt": ["2+2?", "Capital of France?", None],
            "gold": ["4", "Paris", "x"],
            "metadata": ['{"topic": "math", "line": "theirs"}', "plain text", None],
            "preprocess_error": [None, None, "ValueError: no prompt"],
            "prediction": ["4", "Paris is the capital", ""],
            "reasoning": ["2 and 2 make 4.", None, None],
            "finish_reason": ["stop", "length", "error"],
            "error": [None, None, None],
            "prompt_tokens": [5, 9, None],
            "completion_tokens": [1, 4, None],
            "scored": [True, True, False],
            "metrics": pa.array(
                [[("em", 1.0)], [("em", 0.0), ("f1", 0.4)], None],
                pa.map_(pa.string(), pa.float64()),
            ),
            "score_note": [None, "close", None],
        }
    )
    first, second, third = inspect_log.examples_to_samples(table.to_batches()[0], "m", "gen_qa")
    assert (first.id, first.input, first.target) == (7, "2+2?", "4")
    (answer,) = first.output.message.content[1:]
    assert first.output.message.content[0].reasoning == "2 and 2 make 4."
    assert answer.text == "4" and first.output.completion == "4"
    assert first.output.stop_reason == "stop" and first.output.choices[0].logprobs is None
    # the row's own metadata wins over ours
    assert first.metadata == {"line": "theirs", "topic": "math", "finish_reason": "stop"}
    assert first.scores["gen_qa"].value == {"em": 1.0} and first.scores["gen_qa"].answer == "4"
    usage = first.model_usage["m"]
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (5, 1, 6)

    assert [(m.role, m.text) for m in second.messages] == [
        ("system", "Be brief."), ("user", "Capital of France?"),
        ("assistant", "Paris is the capital"),
    ]  # fmt: skip
    assert second.output.stop_reason == "max_tokens"
    assert second.metadata == {"line": 9, "finish_reason": "length", "metadata": "plain text"}
    assert second.scores["gen_qa"].value == {"em": 0.0, "f1": 0.4}
    assert second.scores["gen_qa"].explanation == "close"

    assert third.error.message == "ValueError: no prompt" and third.scores is None
    assert third.output.stop_reason == "unknown" and third.input == ""


def test_the_writer_runs_inside_a_running_event_loop(tmp_path):
    """A caller that is itself asynchronous (an Inspect task's code, say)."""

    async def caller() -> str:
        location = str(tmp_path / "from_a_loop.eval")
        return inspect_log.write_inspect_log(location, minimal_spec(), [answered(0, "x")], None)

    location = asyncio.run(caller())
    assert [s.output.completion for s in read_eval_log(location).samples] == ["x"]
