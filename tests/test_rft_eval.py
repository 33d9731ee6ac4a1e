"""rft_eval and reward functions (byom/rewards.py): Nova's RFT contract, both reply forms,
the row-level errors, a reward Lambda behind botocore's Stubber on a real ``lambda``
client, Nova's published rft_eval recipe end to end on the bundled model against a Lambda
(tests/byom_lambda_server.py: boto3 over HTTP to a server that speaks Lambda's Invoke API),
the dataset's line-level errors, and kill -9 mid-scoring then a resume that does not call
the function again for the rows it already scored."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from nova_eval_assets import resume, stages, storage
from nova_eval_assets.assets.materialize import run_evaluation
from nova_eval_assets.byom.rewards import RewardFunction, RewardOutcome, read_reply
from nova_eval_assets.byom.runner import ProcessorRunner
from nova_eval_assets.dataset import RFT, ValidationOutcome, validate_batches
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import load_recipe
from nova_eval_assets.tables import duck
from tests import byom_lambda_server as fake
from tests.byom_lambda_server import FakeLambda
from tests.conftest import PROJECT

NOVA_RFT = PROJECT / "tests" / "recipes" / "nova" / "nova_lite_2_0_p5_48xl_gpu_rft_eval.yaml"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:SageMaker-rft-grader"


def sample(sample_id: str, answer: str = "4", reference: object = 4) -> dict:
    return {
        "id": sample_id,
        "messages": [
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": answer},
        ],
        "reference_answer": reference,
    }


def entry(sample_id: str, score: object, **metrics: object) -> dict:
    return {
        "id": sample_id,
        "aggregate_reward_score": score,
        "metrics_list": [
            {"name": name, "value": value, "type": "Metric"} for name, value in metrics.items()
        ],
    }


def local(handler) -> RewardFunction:
    return RewardFunction(ProcessorRunner(handler=handler), batch_size=8)


# ---------------------------------------------------------------- the contract


@pytest.mark.parametrize("form", ["bare", "wrapped list", "wrapped string"])
def test_both_reply_forms_give_the_same_rewards(form):
    entries = [entry("b", 0.25, accuracy=1), entry("a", 0.75, accuracy=0.85, fluency=0.9)]
    reply = {
        "bare": entries,
        "wrapped list": {"statusCode": 200, "body": entries},
        "wrapped string": {"statusCode": 200, "body": json.dumps(entries)},
    }[form]
    seen = []

    def handler(event, context):
        seen.append(event)
        return reply

    outcomes = local(handler).score([sample("a"), sample("b")], [{}, {}])
    # one call with a list of both samples, each with the answer as the assistant turn
    assert seen == [[sample("a"), sample("b")]]
    assert outcomes == [
        RewardOutcome(
            [("lambda_reward_score", 0.75), ("lambda_accuracy", 0.85), ("lambda_fluency", 0.9)],
            None,
            outcomes[0].seconds,
        ),
        RewardOutcome(
            [("lambda_reward_score", 0.25), ("lambda_accuracy", 1.0)], None, outcomes[1].seconds
        ),
    ]


def test_wrong_ids_nan_a_partial_reply_and_bad_values_are_that_rows_error():
    reply = [
        entry("a", 1.0),
        entry("b", float("nan")),  # a local handler can return NaN; JSON from Lambda too
        entry("z", 1.0),  # an id that was not sent
        entry("d", "high"),
        entry("e", True),
        {"aggregate_reward_score": 1.0},  # no id: nobody's
        entry("f", 0.5, **{"reward_score": 1.0}),  # would shadow lambda_reward_score
        entry("g", 0.5),
        entry("g", 0.7),
    ]
    ids = ["a", "b", "c", "d", "e", "f", "g"]
    outcomes = local(lambda event, context: reply).score([sample(i) for i in ids], [{}] * 7)
    errors = {i: o.error for i, o in zip(ids, outcomes, strict=True)}
    assert outcomes[0].metrics == [("lambda_reward_score", 1.0)] and errors["a"] is None
    assert errors["b"] == (
        "malformed reply for id 'b': aggregate_reward_score must be a finite number, got nan"
    )
    assert errors["c"] == "the reply has no entry for id 'c' (it answered ids 'z')"
    assert errors["d"] == (
        "malformed reply for id 'd': aggregate_reward_score must be a number, got \"high\""
    )
    assert (
        errors["e"]
        == "malformed reply for id 'e': aggregate_reward_score must be a number, got true"
    )
    assert "the name 'reward_score' appears twice" in errors["f"]
    assert errors["g"] == "the reply has 2 entries for id 'g'"
    assert all(o.metrics == [] for o in outcomes[1:])


def test_a_failed_call_is_the_error_of_each_of_its_rows_and_other_calls_go_on():
    def handler(event, context):
        if event[0]["id"] == "a":
            return {"statusCode": 500, "body": "grader down"}
        return [entry(s["id"], 1.0) for s in event]

    function = RewardFunction(ProcessorRunner(handler=handler), batch_size=2)
    outcomes = function.score([sample(i) for i in "abcd"], [{}] * 4)
    assert [o.error for o in outcomes] == ["statusCode 500: grader down"] * 2 + [None, None]
    assert read_reply({"statusCode": 200, "body": "{"})[1].startswith(
        "malformed reply: the body is a string that is not JSON"
    )
    assert read_reply({"id": "a"})[1].startswith("malformed reply: expected a list")


def test_duplicate_ids_in_one_call_are_errors_for_those_rows():
    outcomes = local(lambda event, context: [entry("a", 1.0)]).score(
        [sample("a"), sample("a")], [{}, {}]
    )
    assert [o.error for o in outcomes] == ["id 'a' is the id of 2 rows of this call"] * 2


# ---------------------------------------------------------------- Lambda (Stubber)


def test_a_reward_lambda_through_a_real_client_retries_throttling(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = boto3.client("lambda", region_name="us-east-1")
    samples = [sample("1", "4"), sample("2", "five")]
    payload = json.dumps(samples).encode()
    reply = json.dumps({"statusCode": 200, "body": json.dumps([entry("2", 0.0), entry("1", 1.0)])})
    expected = {"FunctionName": ARN, "InvocationType": "RequestResponse", "Payload": ANY}
    with Stubber(client) as stub:
        stub.add_client_error(
            "invoke", "TooManyRequestsException", "Rate exceeded", 429, expected_params=expected
        )
        body = StreamingBody(io.BytesIO(reply.encode()), len(reply))
        stub.add_response("invoke", {"StatusCode": 200, "Payload": body}, expected)
        runner = ProcessorRunner(lambda_arn=ARN, client=client, backoff_base_s=0.0)
        sent = []
        original = client.invoke

        def invoke(**kwargs):
            sent.append(kwargs["Payload"])
            return original(**kwargs)

        monkeypatch.setattr(client, "invoke", invoke)
        outcomes = RewardFunction(runner).score(samples, [{}, {}])
        stub.assert_no_pending_responses()
    assert sent == [payload, payload]  # the list of samples, sent again after the 429
    assert [o.metrics for o in outcomes] == [
        [("lambda_reward_score", 1.0)],
        [("lambda_reward_score", 0.0)],
    ]


# ---------------------------------------------------------------- the dataset


def test_rft_lines_become_rows_and_anything_else_is_a_line_error(tmp_path):
    lines = [
        {"messages": [{"role": "user", "content": "Hi"}], "reference_answer": {"x": 4}, "id": 7},
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
                },
            ],
            "reference_answer": None,
        },
        {"messages": [{"role": "user", "content": "Hi"}]},
        {
            "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            "reference_answer": 1,
        },
        {
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}],
            "reference_answer": 1,
        },
        {"messages": [{"role": "user", "content": "Hi"}], "reference_answer": 1, "tools": []},
        {"messages": [{"role": "user", "content": "Hi"}], "reference_answer": 1, "id": ""},
    ]
    path = tmp_path / "rft.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    outcome = ValidationOutcome(str(path), problems_kept=20)
    batches = list(validate_batches(outcome, RFT))
    valid = [row for batch, _ in batches for row in batch.to_pylist()]
    rejected = {r.line: r.reasons for _, rows in batches for r in rows}
    assert [(r["query"], r["system"], r["response"], r["metadata"]) for r in valid] == [
        ("Hi", None, '{"x": 4}', '{"id": "7"}'),
        ("A\nB", "Be brief.", "null", None),
    ]
    assert rejected == {
        3: ["line 3, field 'reference_answer': missing required field"],
        4: [
            "line 4, field 'messages': roles ['user', 'user']: expected one user message, "
            "after an optional system message (RFT evaluation takes single-turn conversations)"
        ],
        5: [
            "line 5, field 'messages': message 0: content parts must be "
            '{"type": "text", "text": ...} (RFT evaluation takes text only)'
        ],
        6: ["line 6, field 'tools': unknown field; allowed: messages, reference_answer, id"],
        7: ["line 7, field 'id': must be a non-empty string or an integer"],
    }


# ---------------------------------------------------------------- end to end


def grader(event, context):
    """A reward function whose rewards the test recomputes from the answers."""
    replies = []
    for s in event:
        answer = s["messages"][-1]["content"]
        words = len(answer.split())
        replies.append(
            {
                "id": s["id"],
                "aggregate_reward_score": (words % 3) / 2,
                "metrics_list": [
                    {"name": "chars", "value": len(answer), "type": "Metric"},
                    {
                        "name": "has_reference",
                        "value": float(str(s["reference_answer"]) in answer),
                        "type": "Reward",
                    },
                ],
            }
        )
    return {"statusCode": 200, "body": json.dumps(replies)}


RFT_LINES = [
    {
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "What is 2 + 2?"},
        ],
        "reference_answer": 4,
        "id": "sum",
    },
    {"messages": [{"role": "user", "content": "Name a colour."}], "reference_answer": {"c": 1}},
    {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}],
        "reference_answer": "hello",
    },
]


def mean_and_stderr(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v)))


@pytest.mark.model
def test_novas_rft_eval_recipe_runs_end_to_end_against_a_reward_lambda(tmp_path, monkeypatch):
    channel = tmp_path / "channel"
    channel.mkdir()
    (channel / "rft.jsonl").write_text("\n".join(json.dumps(line) for line in RFT_LINES) + "\n")
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(channel))
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    with FakeLambda() as lam:
        for key, value in {
            "AWS_ENDPOINT_URL_LAMBDA": lam.url, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        }.items():  # fmt: skip
            monkeypatch.setenv(key, value)
        # the first call is throttled, then answered: retried as for BYOM
        lam.functions["SageMaker-rft-grader"] = lambda event, attempt: (
            fake.throttled() if attempt == 1 else fake.run_handler(grader)(event, attempt)
        )
        loaded = load_recipe(NOVA_RFT).with_overrides(max_new_tokens=6)
        outcome = run_evaluation(
            loaded, instance=dg.DagsterInstance.ephemeral(), show_progress=False
        )
        assert outcome.report is not None, outcome.message
        calls = [event for name, event in lam.requests if name == "SageMaker-rft-grader"]
        assert lam.dry_runs == ["SageMaker-rft-grader"]  # the preflight's Invoke DryRun
    assert len(calls) == 2 and calls[0] == calls[1]  # one batch, asked twice
    sent = calls[1]
    assert [s["id"] for s in sent] == ["sum", "1", "2"]  # the line's id, else the row's
    assert sent[0]["messages"][:2] == RFT_LINES[0]["messages"]
    assert sent[2]["messages"][0] == {"role": "user", "content": "Say hello."}
    assert [s["reference_answer"] for s in sent] == [4, {"c": 1}, "hello"]

    layout = EvalLayout.for_recipe(loaded)
    examples = pq.read_table(layout.examples).to_pylist()
    answers = [row["prediction"] for row in examples]
    assert [s["messages"][-1] for s in sent] == [
        {"role": "assistant", "content": a} for a in answers
    ]
    rewards = [(len(a.split()) % 3) / 2 for a in answers]
    chars = [float(len(a)) for a in answers]
    has = [
        float(str(line["reference_answer"]) in a)
        for line, a in zip(RFT_LINES, answers, strict=True)
    ]
    results = storage.read_json(outcome.report["paths"]["results"])
    key = "custom|rft_eval_rft_eval|0"
    assert set(results["results"]) == {key, "all"}
    got = results["results"][key]
    expected = {}
    for name, values in (("reward_score", rewards), ("chars", chars), ("has_reference", has)):
        expected[f"lambda_{name}"], expected[f"lambda_{name}_stderr"] = mean_and_stderr(values)
    assert got == pytest.approx(expected, abs=1e-12)
    assert results["results"]["all"] == got
    # per row in the details (Nova's Parquet) and the examples table
    details = pq.read_table(outcome.report["paths"]["details"]).to_pylist()
    assert "custom|rft_eval_rft_eval|0" in Path(outcome.report["paths"]["details"]).name
    for row, reward in zip(details, rewards, strict=True):
        assert f"'lambda_reward_score': {reward}" in row["metrics"]
    assert [dict(row["metrics"])["lambda_reward_score"] for row in examples] == rewards
    assert "Reward function" in outcome.report["summary_markdown"]


# ---------------------------------------------------------------- kill -9 and resume


SLOW_GRADER = """
import json, os, time
LOG = os.environ["REWARD_CALL_LOG"]
def grader(event, context):
    with open(LOG, "a") as log:
        log.write(json.dumps([s["id"] for s in event]) + "\\n")
    if os.environ.get("REWARD_HOLD") and int(event[0]["id"]) >= 4:
        time.sleep(600)  # the second batch never answers: the scoring process is killed
    return [{"id": s["id"], "aggregate_reward_score": int(s["id"]) / 10} for s in event]
"""


@pytest.mark.model
def test_kill_9_mid_scoring_then_resume_calls_the_function_only_for_unscored_rows(
    tmp_path, monkeypatch
):
    (tmp_path / "grader.py").write_text(SLOW_GRADER)
    lines = [
        {"messages": [{"role": "user", "content": f"Say {word}."}], "reference_answer": word}
        for word in ["one", "two", "three", "four", "five", "six", "seven", "eight"]
    ]
    (tmp_path / "rft.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    recipe = {
        "run": {"name": "rft-resume", "model_name_or_path": "smollm2-135m-instruct",
                "data_s3_path": "rft.jsonl", "output_s3_path": ""},
        "evaluation": {"task": "rft_eval", "strategy": "rft_eval", "metric": "all"},
        "inference": {"max_new_tokens": 2, "batch_size": 4},
        "rl_env": {"handler": "grader.py:grader", "batch_size": 4},
    }  # fmt: skip
    (tmp_path / "rft.yaml").write_text(yaml.safe_dump(recipe))
    log = tmp_path / "calls.log"
    env = {
        "NOVA_EVAL_OUTPUT_ROOT": str(tmp_path / "outputs"),
        "NOVA_EVAL_BATCH_ROWS": "4",  # two scoring batches of four rows
        "REWARD_CALL_LOG": str(log),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    loaded = load_recipe(tmp_path / "rft.yaml")
    stages.validate_or_raise(loaded)
    stages.build_prompts(loaded)
    stages.run_inference(loaded, 0)
    metrics = EvalLayout.for_recipe(loaded).metrics(0, 1)
    checkpoints = Path(resume.checkpoint_root(metrics))

    script = (
        "import sys\n"
        "from nova_eval_assets import stages\n"
        "from nova_eval_assets.recipe import load_recipe\n"
        "stages.score_replica(load_recipe(sys.argv[1]), 0)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "rft.yaml")],
        cwd=PROJECT,
        env={**os.environ, "REWARD_HOLD": "1", "PYTHONPATH": str(PROJECT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (log.exists() and len(log.read_text().splitlines()) == 2):
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "the second reward call never came"
            time.sleep(0.05)
        assert len(list(checkpoints.rglob("block-*.arrow"))) == 1  # the first batch's
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert not storage.exists(metrics)  # nothing half-written

    summary = stages.score_replica(loaded, 0)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    # the first batch once; the second asked when killed, then again by the resume
    assert calls == [["0", "1", "2", "3"], ["4", "5", "6", "7"], ["4", "5", "6", "7"]]
    assert summary["postprocess_errors"] == 0
    table = pq.read_table(metrics)
    assert [dict(m)["lambda_reward_score"] for m in table["metrics"].to_pylist()] == [
        i / 10 for i in range(8)
    ]
    assert not checkpoints.exists()  # removed once the metrics file is written


# ---------------------------------------------------------------- presets and gen_qa


def test_prime_math_compares_the_boxed_answer_with_the_reference():
    cases = [
        ("So the answer is $\\boxed{4}$.", 4, 1.0),
        ("I think \\boxed{5}", 4, 0.0),
        ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),  # one half either way
        (" 12 ", "\\boxed{12}", 1.0),  # no boxed answer: the whole answer
        ("The result: 12", "12", 0.0),  # ... which is then more than the number
        ("", "3", 0.0),
    ]
    outcomes = RewardFunction(preset="prime_math").score(
        [sample(str(i), answer, reference) for i, (answer, reference, _) in enumerate(cases)],
        [{}] * len(cases),
    )
    assert [o.metrics for o in outcomes] == [[("lambda_reward_score", r)] for *_, r in cases]


def test_prime_code_runs_the_rows_test_cases():
    stdin_cases = {"inputs": ["1 2\n", "3 4\n"], "outputs": ["3", "7"]}
    call_cases = {"fn_name": "add", "inputs": [[1, 2], [3, 4]], "outputs": [3, 7]}
    reading = "a, b = map(int, input().split())\n"
    answers = [
        (f"```python\n{reading}print(a + b)\n```", stdin_cases),  # both pass
        (f"{reading}print(a * b)", stdin_cases),  # 2 and 12: both fail
        (f"{reading}print(a + b if a < 3 else 0)", stdin_cases),  # the first passes
        ("def add(a, b):\n    return a + b\n", call_cases),
        ("import os\nos._exit(0)\n", stdin_cases),  # never gets to its end
        ("print(3)", {}),  # no test cases
    ]
    outcomes = RewardFunction(preset="prime_code").score(
        [sample(str(i), answer) for i, (answer, _) in enumerate(answers)],
        [{"test_cases": cases} if cases else {} for _, cases in answers],
    )
    assert [(o.metrics, o.error) for o in outcomes[:5]] == [
        ([("lambda_reward_score", 1.0), ("lambda_pass_rate", 1.0)], None),
        ([("lambda_reward_score", 0.0), ("lambda_pass_rate", 0.0)], None),
        ([("lambda_reward_score", 0.0), ("lambda_pass_rate", 0.5)], None),
        ([("lambda_reward_score", 1.0), ("lambda_pass_rate", 1.0)], None),
        ([("lambda_reward_score", 0.0), ("lambda_pass_rate", 0.0)], None),
    ]
    assert outcomes[5].metrics == [] and outcomes[5].error.startswith(
        "prime_code needs metadata.test_cases"
    )


GEN_QA_GRADER = """
def grader(event, context):
    return [
        {"id": s["id"], "aggregate_reward_score": float(s["reference_answer"].lower() in
         s["messages"][-1]["content"].lower())}
        for s in event
        if s["reference_answer"] != "no"  # no reward for that row: its error
    ]
"""


@pytest.mark.model
def test_a_gen_qa_processor_of_lambda_type_rft_adds_the_rewards_to_the_metrics(
    make_recipe, tmp_path
):
    (tmp_path / "grader.py").write_text(GEN_QA_GRADER)
    rows = [
        {"query": "Say yes.", "response": "yes"},
        {"query": "Say no.", "response": "no"},
        {"query": "Name a fruit.", "response": "apple"},
    ]
    loaded = make_recipe([json.dumps(r) for r in rows], name="byod-rft")
    document = yaml.safe_load(loaded.path.read_text())
    document["processor"] = {
        "lambda_type": "rft",
        "handler": "grader.py:grader",
        "postprocessing": {"enabled": True},
    }
    loaded.path.write_text(yaml.safe_dump(document))
    loaded = load_recipe(loaded.path)
    outcome = run_evaluation(loaded, instance=dg.DagsterInstance.ephemeral(), show_progress=False)
    assert outcome.report is not None, outcome.message
    examples = pq.read_table(EvalLayout.for_recipe(loaded).examples).to_pylist()
    rewards = [
        float(row["response"] in example["prediction"].lower())
        for row, example in zip(rows, examples, strict=True)
        if row["response"] != "no"
    ]
    metrics = outcome.report["metrics"]
    assert metrics["lambda_reward_score"] == pytest.approx(np.mean(rewards), abs=1e-12)
    assert {"em", "f1", "rougeL", "bleu"} <= set(metrics)  # gen_qa's own metrics stay
    assert outcome.report["counts"]["processor_errors"] == 1
    # the row without a reward, and why, in the typed table
    with duck.connection(outcome.report["paths"]["tables"]) as con:
        found = con.execute(
            "SELECT row_index, postprocess_error FROM eval_examples "
            "WHERE eval_name = 'byod-rft' AND postprocess_error IS NOT NULL"
        ).fetchall()
    assert found == [(1, "the reply has no entry for id '1'")]
