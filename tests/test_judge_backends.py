"""The remote judge back ends, tested at their network boundary with no network:

- Bedrock: a real boto3 ``bedrock-runtime`` client with botocore's Stubber, which checks our
  ``converse`` parameters against the service model and returns canned responses;
- OpenAI-compatible: a local ``http.server`` on 127.0.0.1 speaking the chat-completions
  protocol.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from botocore.stub import ANY, Stubber

from nova_eval_assets.engines.base import Engine, GenerationRequest, SamplingSettings
from nova_eval_assets.judge.backends import (
    BedrockConverseEngine,
    OpenAIChatEngine,
    chat_completions_url,
    create_judge_engine,
)
from nova_eval_assets.judge.pairwise import JudgeItem, judge_items

SETTINGS = SamplingSettings(max_new_tokens=64, temperature=0.0, top_p=0.9, seed=7)
ITEMS = [
    JudgeItem(0, "Reset my password", "Try turning it off.", "GOOD: use the reset portal."),
    JudgeItem(1, "VPN drops", "GOOD: update the VPN client.", "No idea."),
]


def b_position(prompt: str) -> str:
    """Where the response containing GOOD is shown: the content-aware judge's answer."""
    first = prompt.split("[Response 1]")[1].split("[Response 2]")[0]
    return "1" if "GOOD" in first else "2"


# ---------------------------------------------------------------- Bedrock (Stubber)


@pytest.fixture
def bedrock(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[BedrockConverseEngine, Stubber]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = boto3.client("bedrock-runtime", region_name="us-east-1")
    engine = BedrockConverseEngine("us.amazon.nova-pro-v1:0", client=client, concurrency=1)
    with Stubber(client) as stubber:
        yield engine, stubber
        stubber.assert_no_pending_responses()


def converse_response(text: str, stop: str = "end_turn") -> dict:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": stop,
        "usage": {"inputTokens": 120, "outputTokens": 9, "totalTokens": 129},
        "metrics": {"latencyMs": 250},
    }


def test_bedrock_converse_request_and_response(bedrock):
    engine, stubber = bedrock
    settings = SamplingSettings(max_new_tokens=32, temperature=0.5, top_p=0.8, top_k=40)
    stubber.add_response(
        "converse",
        converse_response("Verdict: [[2]]", stop="max_tokens"),
        {
            "modelId": "us.amazon.nova-pro-v1:0",
            "messages": [{"role": "user", "content": [{"text": "Which is better?"}]}],
            "system": [{"text": "You are a judge."}],
            "inferenceConfig": {"maxTokens": 32, "temperature": 0.5, "topP": 0.8},
            "additionalModelRequestFields": {"inferenceConfig": {"topK": 40}},
        },
    )
    (generation,) = engine.generate(
        [GenerationRequest(5, "Which is better?", "You are a judge.")], settings
    )
    assert generation.row_index == 5
    assert generation.text == "Verdict: [[2]]"
    assert generation.finish_reason == "length"
    assert (generation.prompt_tokens, generation.completion_tokens) == (120, 9)
    assert generation.tokens == [] and generation.error is None
    # the client's region is part of the model identity (engines/bedrock.py)
    assert engine.model_id == "bedrock:us-east-1:us.amazon.nova-pro-v1:0"
    assert isinstance(engine, Engine)


def test_bedrock_error_becomes_an_error_generation(bedrock):
    engine, stubber = bedrock
    stubber.add_client_error(
        "converse", service_error_code="AccessDeniedException", service_message="no access"
    )
    (generation,) = engine.generate([GenerationRequest(0, "p")], SETTINGS)
    assert generation.finish_reason == "error"
    assert "AccessDeniedException" in generation.error and "no access" in generation.error


def test_bedrock_judge_both_passes(bedrock):
    engine, stubber = bedrock
    for item in ITEMS:
        # forward shows A first, backward B first; the stub judge prefers the GOOD answer
        for first in (item.response_a, item.response_b):
            verdict = "1" if "GOOD" in first else "2"
            expected = {
                "modelId": "us.amazon.nova-pro-v1:0",
                "messages": ANY,
                "system": ANY,
                "inferenceConfig": ANY,
            }
            stubber.add_response(
                "converse", converse_response(f"It is right. Verdict: [[{verdict}]]"), expected
            )
    table = judge_items(engine, ITEMS, SETTINGS, backend="bedrock", baseline="a", challenger="b")
    rows = table.to_pylist()
    assert [r["forward_preference"] for r in rows] == ["B", "A"]
    assert [r["backward_preference"] for r in rows] == ["B", "A"]
    assert [r["outcome"] for r in rows] == ["B", "A"]
    assert rows[0]["forward_verdict"] == "second" and rows[0]["backward_verdict"] == "first"
    assert rows[0]["forward_rationale"] == "It is right."
    assert rows[0]["soft_b_preference"] is None  # Converse returns no log probabilities
    assert rows[0]["judge_backend"] == "bedrock"


# ---------------------------------------------------------------- OpenAI-compatible (HTTP)


class ChatServer:
    """A chat-completions server on 127.0.0.1: answers like a content-aware judge with
    top-3 log probabilities, or with the next scripted (status, body) when one is queued."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.script: list[tuple[int, dict | str, dict]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append({"path": self.path, **body})
                    server.headers.append(dict(self.headers))
                    scripted = server.script.pop(0) if server.script else None
                if scripted is None:
                    status, payload, extra = 200, server.answer(body), {}
                else:
                    status, payload, extra = scripted
                data = payload if isinstance(payload, str) else json.dumps(payload)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data.encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def answer(body: dict) -> dict:
        prompt = body["messages"][-1]["content"]
        verdict = b_position(prompt)
        other = "2" if verdict == "1" else "1"
        pieces = ["Verdict", ":", " [[", verdict, "]]", " Clear", "."]
        content = []
        for piece in pieces:
            item = {"token": piece, "logprob": -0.01, "top_logprobs": []}
            if piece == verdict:
                item["logprob"] = math.log(0.8)
                item["top_logprobs"] = [
                    {"token": verdict, "logprob": math.log(0.8)},
                    {"token": other, "logprob": math.log(0.15)},
                    {"token": "tie", "logprob": math.log(0.05)},
                ]
            content.append(item)
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": "".join(pieces)},
            "finish_reason": "stop",
        }
        if body.get("logprobs"):
            choice["logprobs"] = {"content": content}
        return {
            "id": "x",
            "object": "chat.completion",
            "choices": [choice],
            "usage": {"prompt_tokens": 200, "completion_tokens": len(pieces), "total_tokens": 207},
        }

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    server = ChatServer()
    yield server
    server.close()


def test_chat_completions_url_forms():
    assert chat_completions_url("http://h:8000") == "http://h:8000/v1/chat/completions"
    assert chat_completions_url("http://h:8000/v1/") == "http://h:8000/v1/chat/completions"
    full = "http://h/api/v1/chat/completions"
    assert chat_completions_url(full) == full


def test_openai_request_body_headers_and_logprobs(chat_server, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-test")
    from nova_eval_assets.judge.backends import api_key_from_env

    engine = create_judge_engine(
        "openai", "judge-model", endpoint=chat_server.url, api_key=api_key_from_env("JUDGE_KEY")
    )
    settings = SamplingSettings(max_new_tokens=16, top_k=20, top_logprobs=3, seed=9)
    request = GenerationRequest(3, "[Response 1]\nGOOD\n[Response 2]\nbad", "Judge.")
    (generation,) = engine.generate([request], settings)
    sent = chat_server.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["model"] == "judge-model"
    assert sent["messages"] == [
        {"role": "system", "content": "Judge."},
        {"role": "user", "content": request.prompt},
    ]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"], sent["seed"]) == (
        16,
        0.0,
        1.0,
        9,
    )
    assert sent["top_k"] == 20 and sent["logprobs"] is True and sent["top_logprobs"] == 3
    assert chat_server.headers[0]["Authorization"] == "Bearer sk-test"
    assert generation.text == "Verdict: [[1]] Clear."
    assert [t.token for t in generation.tokens][:4] == ["Verdict", ":", " [[", "1"]
    assert generation.tokens[3].top[1] == ("2", pytest.approx(math.log(0.15)))
    assert generation.completion_tokens == 7 and generation.finish_reason == "stop"


def test_openai_without_logprobs_or_top_k_sends_neither(chat_server):
    engine = OpenAIChatEngine("m", chat_server.url)
    engine.generate([GenerationRequest(0, "[Response 1]\nx\n[Response 2]\nGOOD")], SETTINGS)
    sent = chat_server.requests[0]
    assert (
        "logprobs" not in sent
        and "top_k" not in sent
        and "Authorization" not in str(chat_server.headers[0])
    )


def test_openai_retries_429_and_5xx_then_succeeds(chat_server):
    chat_server.script = [
        (429, {"error": "slow down"}, {"Retry-After": "0"}),
        (503, "unavailable", {}),
    ]
    engine = OpenAIChatEngine("m", chat_server.url, backoff_s=0.01)
    (generation,) = engine.generate([GenerationRequest(0, "[Response 1]\nGOOD")], SETTINGS)
    assert generation.error is None and generation.text.startswith("Verdict: [[1]]")
    assert len(chat_server.requests) == 3


def test_openai_client_error_is_not_retried_and_becomes_an_error(chat_server):
    chat_server.script = [(400, {"error": {"message": "bad model"}}, {})]
    engine = OpenAIChatEngine("m", chat_server.url, backoff_s=0.01)
    (generation,) = engine.generate([GenerationRequest(0, "p")], SETTINGS)
    assert generation.finish_reason == "error"
    assert "HTTP 400" in generation.error and "bad model" in generation.error
    assert len(chat_server.requests) == 1


def test_openai_unreachable_server_is_an_error():
    server = ChatServer()
    url = server.url
    server.close()
    engine = OpenAIChatEngine("m", url, max_retries=1, backoff_s=0.01, timeout_s=2)
    (generation,) = engine.generate([GenerationRequest(0, "p")], SETTINGS)
    assert generation.finish_reason == "error" and "cannot reach" in generation.error


def test_openai_judge_both_passes_with_soft_preference(chat_server):
    engine = OpenAIChatEngine("m", chat_server.url, concurrency=3)
    settings = SamplingSettings(max_new_tokens=16, top_logprobs=3)
    table = judge_items(engine, ITEMS * 3, settings, backend="openai")
    rows = table.to_pylist()
    assert len(chat_server.requests) == 12
    assert [r["outcome"] for r in rows] == ["B", "A"] * 3  # in order despite concurrency
    first = rows[0]
    assert (first["forward_verdict"], first["backward_verdict"]) == ("second", "first")
    assert first["forward_verdict_logprobs"] == {
        "first": pytest.approx(math.log(0.15)),
        "second": pytest.approx(math.log(0.8)),
        "tie": pytest.approx(math.log(0.05)),
    }
    # P(B) per pass: (p_B + p_tie / 2) / total = 0.8 + 0.025 in both passes
    assert first["forward_soft_b"] == pytest.approx(0.825)
    assert first["backward_soft_b"] == pytest.approx(0.825)
    assert first["soft_b_preference"] == pytest.approx(0.825)
    assert rows[1]["soft_b_preference"] == pytest.approx(0.175)


def test_unknown_backend_and_missing_endpoint():
    with pytest.raises(ValueError, match="unknown judge back end"):
        create_judge_engine("carrier-pigeon", "m")
    with pytest.raises(ValueError, match="needs an endpoint"):
        create_judge_engine("openai", "m")
