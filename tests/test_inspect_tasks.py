"""evaluation.task inspect: an Inspect task of our own (tests/inspect_tasks/quiz.py) run as a
nova-eval evaluation through the hf engine (the bundled model) and the openai engine (a
real llama.cpp server), replicas 1 and 3 alike; its results read back from our tables and
from Inspect's own log; an inspect-evals benchmark over data of our own in its cache."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
import pytest
import yaml

from nova_eval_assets import storage
from nova_eval_assets.assets.materialize import run_evaluation
from nova_eval_assets.cli import main as cli_main
from nova_eval_assets.recipe import RecipeError, load_recipe, parse_recipe
from tests.inspect_tasks.quiz import QUESTIONS
from tests.openai_servers import (
    BUNDLED,
    AnsweringServer,
    llama_cpp_available,
    llama_cpp_command,
    post,
    running,
)
from tests.test_s3 import BUCKET, s3  # noqa: F401  (the moto S3 fixture)

QUIZ = Path(__file__).with_name("inspect_tasks") / "quiz.py"
SYSTEM = "Answer in a few words."
TARGETS = {f"q{i}": answer for i, (_, answer, _) in enumerate(QUESTIONS, 1)}
MAX_TOKENS = 12


def write_recipe(
    tmp_path: Path,
    name: str,
    replicas: int,
    inference: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    analysis: dict[str, Any] | None = None,
) -> Path:
    recipe = {
        "run": {"name": name, "model_type": "hf", "model_name_or_path": BUNDLED,
                "replicas": replicas, "data_s3_path": "", "output_s3_path": ""},
        "evaluation": {"task": "inspect", "strategy": "inspect", "metric": "all",
                       "inspect_task": f"{QUIZ}@quiz", **(evaluation or {})},
        "inference": {"max_new_tokens": MAX_TOKENS, "top_k": -1, "top_p": 1.0,
                      "temperature": 0, "top_logprobs": 2, "batch_size": 1,
                      **(inference or {})},
    }  # fmt: skip
    if analysis is not None:
        recipe["analysis"] = analysis
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def run(tmp_path: Path, monkeypatch, path: Path) -> dict[str, Any]:
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    loaded = load_recipe(path)
    outcome = run_evaluation(loaded, instance=dg.DagsterInstance.ephemeral(), show_progress=False)
    assert outcome.report is not None, outcome.message
    paths = outcome.report["paths"]
    examples = pq.read_table(paths["examples"]).to_pylist()
    rows = {}
    for row in examples:
        metadata = json.loads(row["metadata"])
        rows[metadata["sample_id"]] = {
            "prediction": row["prediction"],
            "metrics": dict(row["metrics"]),
            "error": row["error"],
            "note": row["score_note"],
            "topic": metadata.get("topic"),
        }
    return {"report": outcome.report, "rows": rows, "paths": paths,
            "results": storage.read_json(paths["results"]),
            "comparisons": outcome.comparisons, "name": loaded.name}  # fmt: skip


def includes(target: str, answer: str) -> float:
    """Inspect's includes(): the target in the answer, case ignored (worked here alone)."""
    return float(target.lower() in answer.lower())


def check_against_hand(run_: dict[str, Any], key: str) -> None:
    rows = run_["rows"]
    assert sorted(rows) == sorted(TARGETS)
    by_hand = [includes(TARGETS[sid], row["prediction"]) for sid, row in sorted(rows.items())]
    assert [row["metrics"]["includes"] for _, row in sorted(rows.items())] == by_hand
    entry = run_["results"]["results"][key]
    assert entry["includes"] == pytest.approx(statistics.mean(by_hand))
    # Inspect's own accuracy and stderr, computed by Inspect over every row
    assert entry["includes_accuracy"] == pytest.approx(statistics.mean(by_hand))
    stderr = statistics.stdev(by_hand) / math.sqrt(len(by_hand))
    assert entry["includes_stderr"] == pytest.approx(stderr)


def check_inspect_log(run_: dict[str, Any], task: str, key: str) -> None:
    from inspect_ai.log import read_eval_log

    (location,) = Path(run_["paths"]["inspect_logs"]).glob(f"*_{task}.eval")
    log = read_eval_log(str(location))
    assert log.status == "success" and log.eval.task == task
    assert len(log.samples) == len(TARGETS)
    for sample in log.samples:
        ours = run_["rows"][sample.id]
        assert sample.output.completion == ours["prediction"]
        assert sample.scores["includes"].value in ("C", "I")
        assert float(sample.scores["includes"].value == "C") == ours["metrics"]["includes"]
    # our typed table (DuckDB over its Parquet) holds the same score per sample
    from nova_eval_assets.tables import duck

    with duck.connection(run_["paths"]["tables"]) as con:
        table = con.execute(
            "SELECT metadata_map['sample_id'], metadata_map['inspect_task'], "
            "metrics['includes'] FROM eval_examples WHERE eval_name = ?",
            [run_["name"]],
        ).fetchall()
    from_log = {s.id: float(s.scores["includes"].value == "C") for s in log.samples}
    assert {sid: value for sid, _, value in table} == from_log
    assert {name for _, name, _ in table} == {task}
    (scores,) = [s for s in log.results.scores if s.name == "includes"]
    entry = run_["results"]["results"][key]
    assert scores.metrics["accuracy"].value == pytest.approx(entry["includes_accuracy"])
    assert scores.metrics["stderr"].value == pytest.approx(entry["includes_stderr"])


def test_an_inspect_task_runs_on_the_bundled_model_alike_in_1_and_3_replicas(tmp_path, monkeypatch):
    one = run(tmp_path / "one", monkeypatch, write_recipe(tmp_path, "quiz_one", 1))
    three = run(tmp_path / "three", monkeypatch, write_recipe(tmp_path, "quiz_three", 3))
    key = "custom|quiz|0"
    for run_ in (one, three):
        check_against_hand(run_, key)
        check_inspect_log(run_, "quiz", key)
        for row in run_["rows"].values():  # the model graded itself through our engine:
            graded = row["metrics"].get("model_graded_qa")  # C or I as 1 or 0, or unscored
            assert graded in (0.0, 1.0) or "model_graded_qa: Grade not found" in row["note"]
    assert three["report"]["counts"]["replicas"] == 3
    assert {k: (r["prediction"], r["metrics"]) for k, r in one["rows"].items()} == {
        k: (r["prediction"], r["metrics"]) for k, r in three["rows"].items()
    }
    assert one["results"]["results"][key] == three["results"]["results"][key]
    # the sample's metadata is a stratum of ours
    assert {row["topic"] for row in one["rows"].values()} == {"geography", "nature", "arithmetic"}


@pytest.mark.skipif(not llama_cpp_available(), reason="llama-cpp-python is not installed")
def test_an_inspect_task_answers_through_the_openai_engine_as_the_server_does(
    tmp_path, monkeypatch
):
    with running(llama_cpp_command(), BUNDLED, tmp_path / "server.log") as url:
        inference = {"engine": "openai", "endpoint": url, "batch_size": 2, "concurrency": 4}
        evaluation = {"inspect_args": {"grader": False}}
        one = run(
            tmp_path, monkeypatch, write_recipe(tmp_path, "quiz_http_1", 1, inference, evaluation)
        )
        # the same task on the same model, 3 replicas, compared with the first run pair by pair
        compare = {"compare_with": ["quiz_http_1"], "bootstrap_rounds": 100}
        three = run(
            tmp_path,
            monkeypatch,
            write_recipe(tmp_path, "quiz_http_3", 3, inference, evaluation, compare),
        )
        # what the server answers a plain client for the same conversation
        plain = {
            sid: post(url, {"model": BUNDLED, "max_tokens": MAX_TOKENS, "temperature": 0,
                            "messages": [{"role": "system", "content": SYSTEM},
                                         {"role": "user", "content": question}]})
            for sid, question in ((f"q{i}", q) for i, (q, _, _) in enumerate(QUESTIONS, 1))
        }  # fmt: skip
    for sid, answer in plain.items():
        assert one["rows"][sid]["prediction"] == answer["choices"][0]["message"]["content"]
    key = "custom|quiz|0"
    for run_ in (one, three):
        check_against_hand(run_, key)
        check_inspect_log(run_, "quiz", key)
    assert {k: r["metrics"] for k, r in one["rows"].items()} == {
        k: r["metrics"] for k, r in three["rows"].items()
    }
    (comparison,) = three["comparisons"]
    assert comparison.message == "" and comparison.summary["counts"]["paired"] == len(TARGETS)
    overall = next(r for r in comparison.summary["rows"] if r["field"] == "(all)")
    assert (
        overall["metric"] == "correct" and overall["diff"] == 0
    )  # correct: includes, the headline


def test_recipe_keys_of_task_inspect_are_checked():
    base = {
        "run": {"name": "x", "model_type": "hf", "model_name_or_path": BUNDLED,
                "data_s3_path": "", "output_s3_path": ""},
        "inference": {"max_new_tokens": 8},
    }  # fmt: skip
    no_task = {**base, "evaluation": {"task": "inspect", "strategy": "inspect"}}
    with pytest.raises(RecipeError, match=r"evaluation\.inspect_task names"):
        parse_recipe(yaml.safe_dump(no_task))
    mmlu = {"task": "mmlu", "strategy": "zs_cot", "metric": "accuracy"}
    wrong_task = {**base, "evaluation": {**mmlu, "inspect_task": "x.py@y"}}
    with pytest.raises(RecipeError, match=r"evaluation\.inspect_task goes with task inspect"):
        parse_recipe(yaml.safe_dump(wrong_task))
    with_path = {**base, "evaluation": {"task": "inspect", "strategy": "inspect",
                                        "inspect_task": "x.py@y"},
                 "dataset": {"path": "rows.jsonl"}}  # fmt: skip
    with pytest.raises(RecipeError, match=r"leave dataset\.path out"):
        parse_recipe(yaml.safe_dump(with_path))


def test_validate_loads_the_task_and_says_it_is_code(tmp_path, capsys):
    path = write_recipe(tmp_path, "quiz_validate", 1)
    assert cli_main(["validate", str(path)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "Python code" in out and "the 6 samples of Inspect task quiz" in out


def test_a_task_file_relative_to_the_recipe_is_found_from_any_folder(tmp_path, monkeypatch):
    folder = tmp_path / "recipes"
    (folder / "tasks").mkdir(parents=True)
    (folder / "tasks" / "quiz.py").write_text(QUIZ.read_text())
    path = write_recipe(folder, "quiz_relative", 1, evaluation={"inspect_task": "tasks/quiz.py"})
    monkeypatch.chdir(tmp_path)
    loaded = load_recipe(path)
    (spec,) = loaded.recipe.evaluation.inspect_specs
    assert spec == str(folder / "tasks" / "quiz.py")
    assert loaded.recipe.evaluation.benchmark.task_names == ("quiz",)


CYBERMETRIC_QUESTIONS = [
    {"question": "Which port does HTTPS use by default?",
     "answers": {"A": "21", "B": "443", "C": "25", "D": "80"}, "solution": "B"},
    {"question": "What does a firewall filter?",
     "answers": {"A": "Network traffic", "B": "Printer ink", "C": "Paper", "D": "Sound"},
     "solution": "A"},
    {"question": "Which of these is a hash function?",
     "answers": {"A": "AES", "B": "RSA", "C": "SHA-256", "D": "TCP"}, "solution": "C"},
]  # fmt: skip


def test_an_inspect_evals_benchmark_runs_as_a_recipe(tmp_path):
    """inspect_evals/cybermetric_80 over three questions of our own in CyberMetric's record
    layout, put where inspect-evals caches the dataset (it downloads it otherwise)."""
    cache = tmp_path / "inspect-evals-cache"
    (cache / "cybermetric").mkdir(parents=True)
    (cache / "cybermetric" / "CyberMetric-80.jsonl").write_text(
        "".join(json.dumps(q) + "\n" for q in CYBERMETRIC_QUESTIONS)
    )
    recipe = {
        "run": {"name": "cybermetric_mini", "model_type": "hf", "model_name_or_path": BUNDLED,
                "replicas": 1, "data_s3_path": "", "output_s3_path": str(tmp_path / "out")},
        "evaluation": {"task": "inspect", "strategy": "inspect", "metric": "all",
                       "inspect_task": "inspect_evals/cybermetric_80"},
        "inference": {"max_new_tokens": 8, "temperature": 0, "batch_size": 1},
    }  # fmt: skip
    path = tmp_path / "cybermetric.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    env = {**os.environ, "INSPECT_EVALS_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1",
           "DAGSTER_HOME": str(tmp_path / "dagster")}  # fmt: skip
    (tmp_path / "dagster").mkdir()
    done = subprocess.run(
        [str(Path(sys.executable).with_name("nova-eval")), "run", str(path), "--quiet"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = sorted((tmp_path / "out" / "cybermetric_mini" / "eval_results").glob("results_*"))
    document = json.loads(results[-1].read_text())
    entry = document["results"]["custom|cybermetric_80|0"]
    examples = pq.read_table(
        tmp_path / "out" / "cybermetric_mini" / "eval_results" / "examples.parquet"
    ).to_pylist()
    assert len(examples) == 3
    # our questions, as the task's multiple_choice solver asked them
    for row, question in zip(examples, CYBERMETRIC_QUESTIONS, strict=True):
        assert question["question"] in row["prompt"]
    values = [dict(row["metrics"])["choice"] for row in examples]
    assert entry["choice_accuracy"] == pytest.approx(statistics.mean(values))
    assert set(values) <= {0.0, 1.0}


def test_resume_runs_only_the_samples_of_unfinished_blocks(tmp_path, monkeypatch):
    """Blocks of 4 samples (batch 1): the run fails in its second block; the rerun asks
    the server only for that block's samples and scores every row."""
    from nova_eval_assets.engines import inspect_runner

    answers = {q: (a if i % 2 else "I do not know") for i, (q, a, _) in enumerate(QUESTIONS)}
    asked: list[str] = []

    def answer(prompt: str) -> str:
        asked.append(prompt)
        return answers[prompt]

    server = AnsweringServer(answer, model=BUNDLED)
    try:
        inference = {"engine": "openai", "endpoint": server.url, "batch_size": 1}
        path = write_recipe(
            tmp_path, "quiz_resume", 1, inference, {"inspect_args": {"grader": False}}
        )
        evals = inspect_runner.InspectTaskEngine._eval

        def second_block_fails(self, task_name, rows, folder):
            if any(self.rows[r.row_index][1] == "q5" for r in rows):
                raise RuntimeError("stopped in the second block")
            return evals(self, task_name, rows, folder)

        monkeypatch.setattr(inspect_runner.InspectTaskEngine, "_eval", second_block_fails)
        monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
        failed = run_evaluation(
            load_recipe(path), instance=dg.DagsterInstance.ephemeral(), show_progress=False
        )
        assert failed.report is None and "stopped in the second block" in failed.message
        assert sorted(asked) == sorted(q for q, _, _ in QUESTIONS[:4])
        monkeypatch.setattr(inspect_runner.InspectTaskEngine, "_eval", evals)
        asked.clear()
        done = run(tmp_path, monkeypatch, path)
    finally:
        server.close()
    assert sorted(asked) == sorted(q for q, _, _ in QUESTIONS[4:])  # the unfinished block only
    for sid, row in done["rows"].items():
        question = QUESTIONS[int(sid[1:]) - 1][0]
        assert row["prediction"] == answers[question]
        assert row["metrics"]["includes"] == includes(TARGETS[sid], answers[question])


def test_a_conversation_becomes_one_request_with_its_earlier_turns():
    """A solver that talks to the model twice (Inspect's self_critique, a multi-turn chat):
    the system messages joined, the turns before the last as history, the last user turn
    as the prompt with its images; each engine sends the turns in order."""
    from inspect_ai.model import (
        ChatMessageAssistant,
        ChatMessageSystem,
        ChatMessageUser,
        ContentImage,
        ContentText,
    )

    from nova_eval_assets.engines.base import SamplingSettings
    from nova_eval_assets.engines.bedrock import request_params
    from nova_eval_assets.engines.inspect_provider import ToolsNotSupported, request_of
    from nova_eval_assets.engines.vision import chat_messages

    pixel = "data:image/png;base64,iVBORw0KGgo="
    request = request_of(
        [
            ChatMessageSystem(content="Be brief."),
            ChatMessageUser(content="What is 2+2?"),
            ChatMessageAssistant(content="5"),
            ChatMessageSystem(content="Check your work."),
            ChatMessageUser(content=[ContentText(text="Are you sure?"), ContentImage(image=pixel)]),
        ],
        row_index=7,
    )
    assert request.system == "Be brief.\n\nCheck your work."
    assert request.history == (("user", "What is 2+2?"), ("assistant", "5"))
    assert (request.prompt, request.images, request.row_index) == ("Are you sure?", (pixel,), 7)
    params = request_params("amazon.nova-lite-v1:0", request, SamplingSettings())
    assert [(m["role"], m["content"][-1]["text"]) for m in params["messages"]] == [
        ("user", "What is 2+2?"), ("assistant", "5"), ("user", "Are you sure?"),
    ]  # fmt: skip
    assert [m["role"] for m in chat_messages(request)] == ["system", "user", "assistant", "user"]
    with pytest.raises(ValueError, match="end with a user message"):
        request_of([ChatMessageUser(content="hi"), ChatMessageAssistant(content="hello")], 0)
    from inspect_ai.model import ChatMessageTool

    with pytest.raises(ToolsNotSupported):
        request_of(
            [ChatMessageTool(content="42", tool_call_id="t"), ChatMessageUser(content="?")], 0
        )


def test_an_s3_task_file_is_fetched_by_its_content(s3, tmp_path, monkeypatch):  # noqa: F811
    """As AWS's Inspect container takes them: the task file in S3 (moto's server here),
    fetched into the cache under its content's hash, so a changed file is fetched anew."""
    from nova_eval_assets.tasks.inspect_task import load_tasks, task_file

    monkeypatch.setenv("NOVA_EVAL_CACHE", str(tmp_path / "cache"))
    s3.put_object(Bucket=BUCKET, Key="tasks/quiz.py", Body=QUIZ.read_bytes())
    spec = f"s3://{BUCKET}/tasks/quiz.py@quiz"
    first = task_file(spec, tmp_path / "cache")
    assert first.endswith("/quiz.py@quiz") and Path(first.split("@")[0]).read_bytes() == (
        QUIZ.read_bytes()
    )
    (task,) = load_tasks((spec,), json.dumps({"grader": False}))
    assert task.name == "quiz" and len(task.dataset) == len(QUESTIONS)
    changed = QUIZ.read_text().replace("Answer in a few words.", "Answer in one word.")
    s3.put_object(Bucket=BUCKET, Key="tasks/quiz.py", Body=changed.encode())
    second = task_file(spec, tmp_path / "cache")
    assert second != first and Path(second.split("@")[0]).read_text() == changed


def test_a_tasks_response_schema_constrains_the_hf_engine(tmp_path, monkeypatch):
    """The task's structured output (GenerateConfig.response_schema) is our constrained
    decoding: every answer of the bundled model is JSON of the schema (jsonschema says)."""
    import jsonschema

    from tests.inspect_tasks.colours import SCHEMA

    task = Path(__file__).with_name("inspect_tasks") / "colours.py"
    path = write_recipe(
        tmp_path, "colours", 1, {"max_new_tokens": 48}, {"inspect_task": f"{task}@colours"}
    )
    done = run(tmp_path, monkeypatch, path)
    schema = SCHEMA.model_dump(exclude_none=True, by_alias=True)
    assert sorted(done["rows"]) == ["cold", "warm"]
    for row in done["rows"].values():
        jsonschema.validate(json.loads(row["prediction"]), schema)


def test_several_tasks_run_as_one_evaluation_with_a_result_each(tmp_path, monkeypatch):
    """inspect_task as a list, as AWS's container chains benchmarks: each task is a subtask
    with its own key and log; `all` is the mean over the tasks."""
    capitals = Path(__file__).parents[1] / "recipes" / "inspect" / "capitals.py"
    answers = {q: a for q, a, _ in QUESTIONS} | {
        "What is the capital of France?": "Paris",
        "What is the capital of Japan?": "Kyoto",
        "What is the capital of Italy?": "Rome",
        "What is the capital of Egypt?": "Cairo",
    }
    server = AnsweringServer(lambda prompt: answers[prompt], model=BUNDLED)
    try:
        inference = {"engine": "openai", "endpoint": server.url, "batch_size": 2}
        evaluation = {
            "inspect_task": [f"{QUIZ}@quiz", f"{capitals}@capitals"],
            "inspect_args": {"grader": False},
        }
        path = write_recipe(tmp_path, "two_tasks", 2, inference, evaluation)
        monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
        outcome = run_evaluation(
            load_recipe(path), instance=dg.DagsterInstance.ephemeral(), show_progress=False
        )
    finally:
        server.close()
    assert outcome.report is not None, outcome.message
    results = storage.read_json(outcome.report["paths"]["results"])["results"]
    quiz = statistics.mean(includes(a, answers[q]) for q, a, _ in QUESTIONS)
    capitals_by_hand = 3 / 4  # Kyoto is wrong
    assert results["custom|quiz|0"]["includes"] == pytest.approx(quiz)
    assert results["custom|capitals|0"]["includes"] == pytest.approx(capitals_by_hand)
    assert results["custom|capitals|0"]["match_accuracy"] == pytest.approx(capitals_by_hand)
    assert results["all"]["includes"] == pytest.approx((quiz + capitals_by_hand) / 2)
    logs = sorted(
        p.name.split("_", 1)[1]
        for p in Path(outcome.report["paths"]["inspect_logs"]).glob("*.eval")
    )
    assert logs == ["capitals.eval", "quiz.eval"]


def test_inspects_own_provider_answers_when_the_recipe_names_it(tmp_path, monkeypatch):
    """evaluation.inspect_model: Inspect's provider for OpenAI-compatible servers
    (openai-api/<service>/<model>, the openai SDK) asks the server, not our engine; the
    answers are the server's."""
    answers = {q: a.upper() for q, a, _ in QUESTIONS}
    server = AnsweringServer(lambda prompt: answers[prompt], model=BUNDLED)
    monkeypatch.setenv("LOCAL_BASE_URL", f"{server.url}/v1")
    monkeypatch.setenv("LOCAL_API_KEY", "unused")
    try:
        inspect_model = f"openai-api/local/{BUNDLED}"
        evaluation = {"inspect_model": inspect_model, "inspect_args": {"grader": False}}
        done = run(tmp_path, monkeypatch, write_recipe(tmp_path, "own", 1, None, evaluation))
    finally:
        server.close()
    for sid, row in done["rows"].items():
        question = QUESTIONS[int(sid[1:]) - 1][0]
        assert row["prediction"] == answers[question]
        assert row["metrics"]["includes"] == 1.0


def test_inspects_own_command_line_reaches_our_engines(tmp_path):
    """`inspect eval --model nova_eval/<model> -M engine=openai -M endpoint=<url>`: the
    provider found through this package's entry point, our openai engine asking the server;
    the log's answers are the server's."""
    from inspect_ai.log import read_eval_log

    answers = {q: f"It is {a}." for q, a, _ in QUESTIONS}
    server = AnsweringServer(lambda prompt: answers[prompt], model=BUNDLED)
    try:
        inspect = Path(sys.executable).with_name("inspect")
        done = subprocess.run(
            [str(inspect), "eval", f"{QUIZ}@quiz", "-T", "grader=false",
             "--model", f"nova_eval/{BUNDLED}", "-M", "engine=openai",
             "-M", f"endpoint={server.url}", "--max-tokens", "16",
             "--log-dir", str(tmp_path / "logs"), "--display", "none"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        server.close()
    assert done.returncode == 0, done.stderr[-2000:]
    (location,) = (tmp_path / "logs").glob("*.eval")
    log = read_eval_log(str(location))
    assert log.eval.model == f"nova_eval/{BUNDLED}" and len(log.samples) == len(QUESTIONS)
    for sample in log.samples:
        question = QUESTIONS[int(sample.id[1:]) - 1][0]
        assert sample.output.completion == answers[question]
        assert sample.scores["includes"].value == "C"
