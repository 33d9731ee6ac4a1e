"""The Bedrock engine (engines/bedrock.py) at its network boundary, with no network: a real
boto3 ``bedrock-runtime`` client under botocore's Stubber, which checks every ``converse``
call's parameters against the service model (and, with expected params, equals them
exactly), and returns canned responses or service errors.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import boto3
import pytest
import yaml
from botocore.stub import ANY, Stubber

from nova_eval_assets import stages
from nova_eval_assets.engines import Engine, GenerationRequest, SamplingSettings, create_engine
from nova_eval_assets.engines import bedrock as bedrock_module
from nova_eval_assets.engines.bedrock import (
    BedrockEngine,
    arn_region,
    backoff_delay,
    lineage_model_id,
    make_client,
)
from nova_eval_assets.recipe import RecipeError, load_recipe

PROVISIONED = "arn:aws:bedrock:us-west-2:123456789012:provisioned-model/abc123xyz"
SETTINGS = SamplingSettings(max_new_tokens=48, temperature=0.0, top_p=0.9)


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def sleeps() -> list[float]:
    """Our retry layer's waits (an engine's `sleep=sleeps.append`), recorded, not slept."""
    return []


def stubbed(region: str = "us-east-1") -> tuple[object, Stubber]:
    client = boto3.client("bedrock-runtime", region_name=region)
    return client, Stubber(client)


def reply(text: str, stop: str = "end_turn", tokens_in: int = 31, tokens_out: int = 7) -> dict:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": stop,
        "usage": {
            "inputTokens": tokens_in,
            "outputTokens": tokens_out,
            "totalTokens": tokens_in + tokens_out,
        },
        "metrics": {"latencyMs": 120},
    }


# ---------------------------------------------------------------- requests and responses


def test_system_and_user_row_is_one_exact_converse_request():
    client, stubber = stubbed()
    engine = BedrockEngine("amazon.nova-lite-v1:0", client=client, concurrency=1)
    settings = SamplingSettings(max_new_tokens=64, temperature=0.7, top_p=0.95, top_k=50)
    stubber.add_response(
        "converse",
        reply("Restart the print spooler.", tokens_in=42, tokens_out=6),
        {
            "modelId": "amazon.nova-lite-v1:0",
            "messages": [{"role": "user", "content": [{"text": "The printer is jammed."}]}],
            "system": [{"text": "You are an IT help desk."}],
            "inferenceConfig": {"maxTokens": 64, "temperature": 0.7, "topP": 0.95},
            # Nova takes topK inside an inferenceConfig of additionalModelRequestFields
            "additionalModelRequestFields": {"inferenceConfig": {"topK": 50}},
        },
    )
    with stubber:
        (generation,) = engine.generate(
            [GenerationRequest(7, "The printer is jammed.", "You are an IT help desk.")], settings
        )
        stubber.assert_no_pending_responses()
    assert generation.row_index == 7
    assert generation.text == "Restart the print spooler."
    assert (generation.prompt_tokens, generation.completion_tokens) == (42, 6)
    assert generation.finish_reason == "stop" and generation.error is None
    assert generation.tokens == []  # Converse returns no log probabilities
    assert generation.max_new_tokens == 64
    assert isinstance(engine, Engine)
    assert engine.model_id == "bedrock:us-east-1:amazon.nova-lite-v1:0"


def test_inference_profile_without_system_or_top_k():
    client, stubber = stubbed()
    engine = create_engine("bedrock", "us.amazon.nova-pro-v1:0", client=client, concurrency=1)
    stubber.add_response(
        "converse",
        reply("Paris", stop="max_tokens"),
        {
            "modelId": "us.amazon.nova-pro-v1:0",
            "messages": [{"role": "user", "content": [{"text": "Capital of France?"}]}],
            "inferenceConfig": {"maxTokens": 48, "temperature": 0.0, "topP": 0.9},
        },
    )
    with stubber:
        (generation,) = engine.generate([GenerationRequest(0, "Capital of France?")], SETTINGS)
        stubber.assert_no_pending_responses()
    assert generation.text == "Paris" and generation.finish_reason == "length"
    assert engine.model_id == "bedrock:us-east-1:us.amazon.nova-pro-v1:0"


def test_provisioned_throughput_arn_is_the_model_id_and_names_the_region(monkeypatch):
    client, stubber = stubbed("us-west-2")
    made: list[dict] = []

    def fake_make_client(**kwargs):
        made.append(kwargs)
        return client

    monkeypatch.setattr(bedrock_module, "make_client", fake_make_client)
    engine = create_engine("bedrock", PROVISIONED, concurrency=2, timeout_s=90.0, max_retries=3)
    # no region in the options: the ARN's own region
    assert made == [
        {
            "region": "us-west-2",
            "endpoint_url": None,
            "timeout_s": 90.0,
            "max_retries": 3,
            "retry_mode": "adaptive",
            "concurrency": 2,
        }
    ]
    stubber.add_response(
        "converse",
        reply("ok"),
        {
            "modelId": PROVISIONED,
            "messages": [{"role": "user", "content": [{"text": "ping"}]}],
            "inferenceConfig": {"maxTokens": 48, "temperature": 0.0, "topP": 0.9},
        },
    )
    with stubber:
        (generation,) = engine.generate([GenerationRequest(3, "ping")], SETTINGS)
        stubber.assert_no_pending_responses()
    assert generation.text == "ok"
    assert engine.model_id == f"bedrock:us-west-2:{PROVISIONED}"


ACCOUNT = "111122223333"


@pytest.mark.parametrize(
    ("model", "region"),
    [
        (f"arn:aws:bedrock:eu-central-1:{ACCOUNT}:custom-model/amazon.nova-lite-v1:0/x",
         "eu-central-1"),
        (f"arn:aws:bedrock:us-east-1:{ACCOUNT}:inference-profile/us.amazon.nova-pro-v1:0",
         "us-east-1"),
        (f"arn:aws:bedrock:ap-northeast-1:{ACCOUNT}:provisioned-model/p9", "ap-northeast-1"),
        (f"arn:aws-us-gov:bedrock:us-gov-west-1:{ACCOUNT}:custom-model/m", "us-gov-west-1"),
        ("amazon.nova-lite-v1:0", None),
        ("us.amazon.nova-pro-v1:0", None),
    ],
)  # fmt: skip
def test_arn_region(model, region):
    assert arn_region(model) == region


def test_anthropic_models_take_top_k_at_the_top_level():
    engine = BedrockEngine(
        "anthropic.claude-3-haiku-20240307-v1:0", client=stubbed()[0], concurrency=1
    )
    params = engine.request_params(GenerationRequest(0, "hi"), SamplingSettings(top_k=5))
    assert params["additionalModelRequestFields"] == {"top_k": 5}


def test_region_and_endpoint_reach_a_real_client_with_botocore_retries():
    engine = BedrockEngine(
        "amazon.nova-micro-v1:0",
        region="eu-west-1",
        endpoint_url="https://vpce-0abc.bedrock-runtime.eu-west-1.vpce.amazonaws.com",
        concurrency=32,
        timeout_s=600.0,
        max_retries=7,
    )
    meta = engine.client.meta
    assert meta.region_name == "eu-west-1"
    assert meta.endpoint_url == "https://vpce-0abc.bedrock-runtime.eu-west-1.vpce.amazonaws.com"
    # botocore's total_max_attempts counts the first try: max_retries + 1 attempts
    assert meta.config.retries == {"mode": "adaptive", "total_max_attempts": 8}
    assert meta.config.read_timeout == 600.0
    assert meta.config.max_pool_connections == 32
    assert engine.model_id == "bedrock:eu-west-1:amazon.nova-micro-v1:0"
    assert make_client is bedrock_module.make_client


# ---------------------------------------------------------------- throttling


def throttled(stubber: Stubber, code: str = "ThrottlingException", status: int = 429) -> None:
    stubber.add_client_error(
        "converse",
        service_error_code=code,
        service_message="Too many requests, please wait before trying again.",
        http_status_code=status,
    )


def test_throttling_then_success_waits_with_backoff_and_jitter(sleeps):
    client, stubber = stubbed()
    engine = BedrockEngine(
        "amazon.nova-lite-v1:0",
        client=client,
        concurrency=1,
        backoff_s=1.0,
        max_backoff_s=60.0,
        sleep=sleeps.append,
    )
    throttled(stubber)
    throttled(stubber, "ServiceUnavailableException", 503)
    throttled(stubber, "ModelNotReadyException", 429)
    stubber.add_response(
        "converse", reply("finally"), {"modelId": ANY, "messages": ANY, "inferenceConfig": ANY}
    )
    with stubber:
        (generation,) = engine.generate([GenerationRequest(0, "q")], SETTINGS)
        stubber.assert_no_pending_responses()
    assert generation.text == "finally" and generation.error is None
    # retry n waits between half and all of min(cap, base * 2**n)
    assert len(sleeps) == 3
    for attempt, waited in enumerate(sleeps):
        assert 2**attempt / 2 <= waited <= 2**attempt


def test_throttling_past_the_budget_is_an_error_row_and_the_others_go_on(sleeps):
    client, stubber = stubbed()
    engine = BedrockEngine(
        "amazon.nova-lite-v1:0",
        client=client,
        concurrency=1,
        throttle_retries=2,
        sleep=sleeps.append,
    )
    for _ in range(3):  # the first try and two retries
        throttled(stubber)
    stubber.add_response(
        "converse", reply("second row"), {"modelId": ANY, "messages": ANY, "inferenceConfig": ANY}
    )
    with stubber:
        first, second = engine.generate(
            [GenerationRequest(0, "a"), GenerationRequest(1, "b")], SETTINGS
        )
        stubber.assert_no_pending_responses()
    assert first.finish_reason == "error" and first.text == ""
    assert "ThrottlingException" in first.error and "Too many requests" in first.error
    assert second.text == "second row" and second.error is None
    assert len(sleeps) == 2


def test_other_client_errors_are_not_retried(sleeps):
    client, stubber = stubbed()
    engine = BedrockEngine(
        "amazon.nova-lite-v1:0", client=client, concurrency=1, sleep=sleeps.append
    )
    stubber.add_client_error(
        "converse", service_error_code="ValidationException", service_message="bad topK"
    )
    with stubber:
        (generation,) = engine.generate([GenerationRequest(0, "q")], SETTINGS)
        stubber.assert_no_pending_responses()
    assert generation.finish_reason == "error" and "ValidationException" in generation.error
    assert sleeps == []


class ThrottlingServer:
    """A bedrock-runtime endpoint on 127.0.0.1 that throttles the first `throttles` calls
    (HTTP 429, as Bedrock answers) and then answers; it counts the calls it saw."""

    def __init__(self, throttles: int) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                server.paths.append(self.path)
                if len(server.paths) <= throttles:
                    status, body = 429, {"message": "Too many requests"}
                    headers = {"x-amzn-ErrorType": "ThrottlingException"}
                else:
                    status, body, headers = 200, reply("through"), {}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.paths: list[str] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize(("throttles", "ok"), [(3, True), (4, False)])
def test_botocore_retries_then_ours_over_http(sleeps, throttles, ok):
    """max_retries=1: botocore tries twice per call; throttle_retries=1: we call twice."""
    server = ThrottlingServer(throttles)
    try:
        engine = BedrockEngine(
            "amazon.nova-lite-v1:0",
            region="us-east-1",
            endpoint_url=server.url,
            max_retries=1,
            retry_mode="standard",  # adaptive's rate limiter would only add waiting here
            throttle_retries=1,
            concurrency=1,
            sleep=sleeps.append,
        )
        (generation,) = engine.generate([GenerationRequest(0, "q")], SETTINGS)
    finally:
        server.close()
    assert len(server.paths) == min(throttles + 1, 4)
    assert set(server.paths) == {"/model/amazon.nova-lite-v1%3A0/converse"}
    assert len(sleeps) == 1  # our one wait between botocore's two rounds (it slept its own)
    if ok:
        assert generation.text == "through" and generation.error is None
    else:
        assert generation.finish_reason == "error" and "ThrottlingException" in generation.error


def test_backoff_delay_is_capped():
    import random

    rng = random.Random(0)
    assert all(30.0 <= backoff_delay(12, 2.0, 60.0, rng) <= 60.0 for _ in range(50))


# ---------------------------------------------------------------- concurrency


class SlowClient:
    """A stand-in client that counts the requests in flight."""

    class meta:
        region_name = "us-east-1"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most = 0

    def converse(self, **params):
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        time.sleep(0.02)
        with self.lock:
            self.in_flight -= 1
        return reply(params["messages"][0]["content"][0]["text"].upper())


def test_concurrency_bounds_requests_in_flight_and_keeps_order():
    client = SlowClient()
    engine = BedrockEngine("amazon.nova-lite-v1:0", client=client, concurrency=4)
    requests = [GenerationRequest(i, f"row {i}") for i in range(20)]
    progress: list[int] = []
    out = engine.generate(requests, SETTINGS, on_batch=lambda done, total: progress.append(done))
    assert [g.text for g in out] == [f"ROW {i}" for i in range(20)]
    assert [g.row_index for g in out] == list(range(20))
    assert client.most == 4
    assert progress == list(range(1, 21))


# ---------------------------------------------------------------- recipe and stages


def write_recipe(tmp_path: Path, inference: dict, lines: int = 5) -> Path:
    data = tmp_path / "qa.jsonl"
    rows = [
        {"system": "Answer in one word.", "query": f"Question {i}?", "response": f"answer{i}"}
        for i in range(lines)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = {
        "run": {
            "name": "nova-bedrock-eval",
            "model_type": "amazon.nova-lite-v1:0:300k",
            "model_name_or_path": "amazon.nova-lite-v1:0",
            "replicas": 1,
            "data_s3_path": data.name,
            "output_s3_path": "",
        },
        "evaluation": {"task": "gen_qa", "strategy": "gen_qa", "metric": "all"},
        "inference": {
            "max_new_tokens": 16,
            "top_k": -1,
            "top_p": 1.0,
            "temperature": 0,
            **inference,
        },
    }
    path = tmp_path / "bedrock.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_top_logprobs_with_bedrock_is_a_recipe_error(tmp_path):
    path = write_recipe(tmp_path, {"engine": "bedrock", "top_logprobs": 5})
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    message = str(caught.value)
    assert "top_logprobs" in message
    assert "Bedrock's Converse API returns no log probabilities" in message


def test_gen_qa_evaluation_through_the_stages(tmp_path, monkeypatch):
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    monkeypatch.setattr(stages.engine_setup, "_ENGINES", {})
    path = write_recipe(
        tmp_path,
        {
            "engine": "bedrock",
            "region": "eu-west-3",
            "endpoint": "https://bedrock-runtime.eu-west-3.amazonaws.com",
            "concurrency": 1,
            "timeout_s": 45,
            "max_retries": 2,
        },
    )
    loaded = load_recipe(path)
    client, stubber = stubbed("eu-west-3")
    made: list[dict] = []

    def fake_make_client(**kwargs):
        made.append(kwargs)
        return client

    monkeypatch.setattr(bedrock_module, "make_client", fake_make_client)
    # rows 0, 2, 4 answer right; row 3 is throttled once and then answers
    answers = ["answer0", "wrong", "answer2", "answer3", "answer4"]
    for i, answer in enumerate(answers):
        if i == 3:
            throttled(stubber)
        stubber.add_response(
            "converse",
            reply(answer, tokens_in=20 + i, tokens_out=2),
            {
                "modelId": "amazon.nova-lite-v1:0",
                "messages": [{"role": "user", "content": [{"text": f"Question {i}?"}]}],
                "system": [{"text": "Answer in one word."}],
                "inferenceConfig": {"maxTokens": 16, "temperature": 0.0, "topP": 1.0},
            },
        )
    monkeypatch.setattr(bedrock_module.time, "sleep", lambda s: None)
    with stubber:
        stages.validate_or_raise(loaded)
        stages.build_prompts(loaded)
        summary = stages.run_inference(loaded, 0)
        stubber.assert_no_pending_responses()
    assert made == [
        {
            "region": "eu-west-3",
            "endpoint_url": "https://bedrock-runtime.eu-west-3.amazonaws.com",
            "timeout_s": 45.0,
            "max_retries": 2,
            "retry_mode": "adaptive",
            "concurrency": 1,
        }
    ]
    assert summary["rows"] == 5 and summary["errors"] == 0
    assert summary["generated_tokens"] == 10
    stages.score_replica(loaded, 0)
    report = stages.write_report(loaded)
    assert report["counts"]["examples"] == 5 and report["counts"]["inference_errors"] == 0
    assert report["metrics"]["em"] == pytest.approx(4 / 5)
    outputs = Path(report["paths"]["examples"])
    import pyarrow.parquet as pq

    table = pq.read_table(outputs)
    assert table["prediction"].to_pylist() == answers
    assert table["prompt_tokens"].to_pylist() == [20, 21, 22, 23, 24]
    assert table["token_logprobs"].to_pylist() == [[]] * 5
    assert summary["model_id"] == "bedrock:eu-west-3:amazon.nova-lite-v1:0"
    # the analyses run on outputs without log probabilities (and say so)
    from nova_eval_assets.analysis.pipeline import analyze, effective_settings

    analysis = analyze(str(outputs), effective_settings(loaded), plots=False)
    assert analysis.per_example.num_rows == 5


def test_lineage_model_id_format():
    assert lineage_model_id("amazon.nova-lite-v1:0", "us-east-1") == (
        "bedrock:us-east-1:amazon.nova-lite-v1:0"
    )


def test_rows_that_still_fail_count_against_max_error_rate(tmp_path, monkeypatch):
    """The inference stage's threshold applies to Bedrock's error rows (they are written)."""
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    monkeypatch.setattr(stages.engine_setup, "_ENGINES", {})
    path = write_recipe(
        tmp_path,
        {"engine": "bedrock", "region": "us-east-1", "concurrency": 1, "max_error_rate": 0.2},
    )
    loaded = load_recipe(path)
    client, stubber = stubbed()
    monkeypatch.setattr(bedrock_module, "make_client", lambda **kwargs: client)
    any_params = {"modelId": ANY, "messages": ANY, "system": ANY, "inferenceConfig": ANY}
    for i in range(5):
        if i in (1, 3):  # access denied is not retried: two error rows of five
            stubber.add_client_error(
                "converse", service_error_code="AccessDeniedException", service_message="no"
            )
        else:
            stubber.add_response("converse", reply(f"answer{i}"), any_params)
    with stubber:
        stages.validate_or_raise(loaded)
        stages.build_prompts(loaded)
        with pytest.raises(stages.InferenceErrorRateError, match="2 of 5 rows failed"):
            stages.run_inference(loaded, 0)
        stubber.assert_no_pending_responses()
    import pyarrow.parquet as pq

    from nova_eval_assets.layout import EvalLayout

    table = pq.read_table(EvalLayout.for_recipe(loaded).inference(0, 1))
    assert table["finish_reason"].to_pylist() == ["stop", "error", "stop", "error", "stop"]


def test_what_converse_cannot_do_is_refused_before_any_request():
    client, stubber = stubbed()
    engine = BedrockEngine("amazon.nova-2-lite-v1:0", client=client, concurrency=1)
    with stubber:  # no response queued: any request would fail the test
        with pytest.raises(ValueError, match="returns no log probabilities"):
            engine.generate([GenerationRequest(0, "q")], SamplingSettings(top_logprobs=2))
        with pytest.raises(ValueError, match="reasoning_effort is not supported"):
            engine.generate([GenerationRequest(0, "q")], SamplingSettings(reasoning_effort="low"))


def test_no_region_anywhere_names_the_key_to_set(monkeypatch, tmp_path):
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    with pytest.raises(ValueError, match=r"set inference\.region"):
        create_engine("bedrock", "amazon.nova-lite-v1:0")
    # an ARN carries its region
    engine = create_engine("bedrock", PROVISIONED)
    assert engine.client.meta.region_name == "us-west-2"
