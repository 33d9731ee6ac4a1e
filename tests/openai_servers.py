"""Real OpenAI-compatible servers on 127.0.0.1 for the openai engine's tests and benchmark.

- :func:`llama_cpp_command`: llama.cpp's OpenAI server (``llama-cpp-python[server]`` from
  PyPI) over the bundled SmolLM2 GGUF: chat completions with ``logprobs.content[{token,
  logprob, bytes, top_logprobs}]`` in the OpenAI format (prefix cache off:
  tests/llama_server.py).
- :func:`transformers_serve_command`: ``transformers serve`` over the converted model folder
  (it answers without the log probabilities it is asked for, and refuses ``top_k``).
- :class:`RecordingProxy`: an HTTP proxy in front of either, which records every request and
  the upstream's raw answer, counts requests in flight, and can answer 429 with
  ``Retry-After`` (for the first N requests, or always) before forwarding.

Each command is an ``inference.server.command`` template ({model}, {port}), run with
:class:`nova_eval_assets.engines.server.ManagedServer`, the engine's own process manager.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shlex
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from nova_eval_assets.engines.models import load_dir, resolve_model
from nova_eval_assets.engines.server import ManagedServer

BUNDLED = "smollm2-135m-instruct"


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def llama_cpp_command(threads: int = 1) -> str:
    """llama.cpp's server on the bundled GGUF, serving it under the bundled model's name
    (tests/llama_server.py: with its prefix cache off, so answers do not depend on order)."""
    gguf = resolve_model(BUNDLED).path
    launcher = Path(__file__).with_name("llama_server.py")
    return (
        f"{shlex.quote(sys.executable)} {shlex.quote(str(launcher))} "
        f"--model {shlex.quote(str(gguf))} "
        f"--model_alias {{model}} --host 127.0.0.1 --port {{port}} --n_threads {threads} "
        "--n_ctx 2048"
    )


def transformers_folder() -> Path:
    """The bundled model as a Hugging Face folder (converted from the GGUF once, cached)."""
    return load_dir(resolve_model(BUNDLED))


def transformers_serve_command() -> str:
    cli = Path(sys.executable).with_name("transformers")
    return f"{shlex.quote(str(cli))} serve {{model}} --host 127.0.0.1 --port {{port}} --device cpu"


@contextlib.contextmanager
def running(command: str, model: str, log: Path, timeout_s: float = 180.0) -> Iterator[str]:
    """The server of `command` started and answering; yields its base URL."""
    server = ManagedServer(
        command,
        model,
        startup_timeout_s=timeout_s,
        env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        log_location=str(log),
    )
    with server:
        yield server.url


def post(url: str, body: dict, timeout_s: float = 120.0) -> dict:
    """A plain chat-completions request: the independent view of what the server sends."""
    request = urllib.request.Request(
        f"{url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # a client killed mid-request (the kill -9 test) leaves a broken pipe: expected
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class RecordingProxy:
    """HTTP proxy on 127.0.0.1 in front of `upstream` (see the module docstring)."""

    def __init__(self, upstream: str, hold_s: float = 0.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.hold_s = hold_s  # extra time each request stays in flight
        self.requests: list[dict] = []  # chat bodies as received
        self.headers: list[dict] = []
        self.answers: list[dict] = []  # upstream's decoded answers, in order of arrival
        # (request body, answer) of each request the server answered: with requests in
        # flight side by side, answers do not arrive in the requests' order
        self.exchanges: list[tuple[dict, dict]] = []
        self.times: list[float] = []  # arrival time of each chat request
        self.throttle = 0  # answer 429 to this many chat requests first
        self.always_throttle = False
        self.retry_after = "0"
        self.throttled = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, data: bytes, extra: dict[str, str] | None = None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _forward(self, data: bytes | None) -> tuple[int, bytes]:
                request = urllib.request.Request(
                    proxy.upstream + self.path,
                    data=data,
                    headers={"Content-Type": "application/json"},
                    method="GET" if data is None else "POST",
                )
                try:
                    with urllib.request.urlopen(request, timeout=300) as response:
                        return response.status, response.read()
                except urllib.error.HTTPError as exc:
                    return exc.code, exc.read()

            def do_GET(self) -> None:
                self._send(*self._forward(None))

            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                with proxy.lock:
                    proxy.requests.append(json.loads(data))
                    proxy.headers.append(dict(self.headers))
                    proxy.times.append(time.monotonic())
                    throttle = proxy.always_throttle or proxy.throttled < proxy.throttle
                    if throttle:
                        proxy.throttled += 1
                    proxy.in_flight += 1
                    proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
                try:
                    if throttle:
                        error = {"error": {"message": "rate limited", "type": "rate_limit"}}
                        body = json.dumps(error).encode()
                        self._send(429, body, {"Retry-After": proxy.retry_after})
                        return
                    time.sleep(proxy.hold_s)
                    status, answer = self._forward(data)
                    if status == 200:
                        with proxy.lock:
                            proxy.answers.append(json.loads(answer))
                            proxy.exchanges.append((json.loads(data), json.loads(answer)))
                    self._send(status, answer)
                finally:
                    with proxy.lock:
                        proxy.in_flight -= 1

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def prompts(self) -> list[str]:
        return [body["messages"][-1]["content"] for body in self.requests]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
