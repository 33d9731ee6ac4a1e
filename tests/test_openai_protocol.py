"""The openai engine's HTTP client without a model: what ``GET /v1/models`` adds to the model
id, the statuses no retry fixes, and the back-off with jitter. A tiny HTTP server on
127.0.0.1 answers with scripted statuses (the real servers are in test_openai_engine.py and
test_managed_server.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nova_eval_assets.engines.base import GenerationRequest, SamplingSettings
from nova_eval_assets.engines.openai import (
    HTTPClient,
    OpenAIEngine,
    ServerCapabilityError,
    base_url,
    retry_after_seconds,
)
from nova_eval_assets.engines.server import free_port


class Scripted:
    """GET /v1/models -> `models`; POST -> `status` with `body`."""

    def __init__(self) -> None:
        self.models: dict = {"object": "list", "data": []}
        self.status, self.body = 200, {}
        self.posts = 0
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200, scripted.models)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                scripted.posts += 1
                self._send(scripted.status, scripted.body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    server = Scripted()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def test_model_id_takes_the_served_root(scripted):
    scripted.models["data"] = [
        {"id": "llama", "object": "model", "owned_by": "vllm", "root": "/weights/llama-8b"}
    ]
    engine = OpenAIEngine("llama", scripted.url + "/v1/")
    assert engine.model_id == f"openai:{scripted.url}#llama@/weights/llama-8b"
    assert engine.server_label == f"{scripted.url} (owned_by 'vllm')"
    assert OpenAIEngine("other", scripted.url).model_id == f"openai:{scripted.url}#other"
    assert OpenAIEngine("llama", scripted.url, identity="fixed").model_id == "fixed"


def test_an_unreachable_endpoint_is_refused_on_creation():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerCapabilityError, match="did not answer GET /v1/models") as refused:
        OpenAIEngine("m", url, max_retries=0)
    assert url in str(refused.value) and "inference.endpoint" in str(refused.value)


@pytest.mark.parametrize(
    ("status", "hint"), [(401, "inference.api_key_env"), (404, "run.model_name_or_path")]
)
def test_statuses_no_retry_fixes_stop_the_run(scripted, status, hint):
    scripted.status, scripted.body = status, {"error": {"message": "nope"}}
    engine = OpenAIEngine("m", scripted.url, max_retries=3)
    requests = [GenerationRequest(i, "hi") for i in range(3)]
    with pytest.raises(ServerCapabilityError, match=f"HTTP {status}") as stopped:
        engine.generate(requests, SamplingSettings(max_new_tokens=2))
    assert hint in str(stopped.value) and "nope" in str(stopped.value)
    assert scripted.posts <= engine.concurrency  # not retried, and the queue was dropped


def test_other_client_errors_are_error_rows(scripted):
    scripted.status, scripted.body = 400, {"error": {"message": "prompt too long"}}
    engine = OpenAIEngine("m", scripted.url)
    (row,) = engine.generate([GenerationRequest(7, "hi")], SamplingSettings(max_new_tokens=2))
    assert row.finish_reason == "error" and row.row_index == 7
    assert "HTTP 400" in row.error and "prompt too long" in row.error
    assert scripted.posts == 1


def test_base_url_forms():
    for form in (
        "http://h:8000",
        "http://h:8000/",
        "http://h:8000/v1",
        "http://h:8000/v1/chat/completions",
    ):
        assert base_url(form) == "http://h:8000"


def test_retry_after_and_backoff_with_jitter():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    moment = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < retry_after_seconds(moment) <= 30
    client = HTTPClient(backoff_s=0.5, max_backoff_s=8.0)
    delays = [client.delay(3, None) for _ in range(200)]
    assert all(2.0 <= d <= 6.0 for d in delays) and len(set(delays)) > 100  # 4 s +- 50 %
    assert all(4.0 <= client.delay(9, None) <= 8.0 for _ in range(50))  # capped
    assert all(5.0 <= client.delay(0, 5.0) <= 5.5 for _ in range(50))  # Retry-After + jitter
    assert client.delay(0, 600.0) <= 8.5  # a Retry-After past the cap waits the cap
