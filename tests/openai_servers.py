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
- :class:`FakeChatServer`: fixed answers in OpenAI's wire format, with log probabilities
  left out for chosen prompts, or every request answered by an error that echoes its
  headers (the API key included).
- :class:`DrippingServer`: a chat completion sent one byte at a time.
- :class:`ScriptedInstantServer`: bench/instant_server.py's vLLM-faithful server, counting
  connections and requests in flight, with held answers, 429s and dropped connections.

Each command is an ``inference.server.command`` template ({model}, {port}), run with
:class:`nova_eval_assets.engines.server.ManagedServer`, the engine's own process manager.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shlex
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.instant_server import ANSWERS, InstantServer, error_body
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


# ---------------------------------------------------------------- protocol-faithful fakes


def chat_completion(model: str, tokens: list[str], logprobs: list[dict] | None) -> dict:
    """A chat.completion object as OpenAI and vLLM send it (``logprobs`` null when not asked)."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(tokens)},
                "logprobs": None if logprobs is None else {"content": logprobs},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 7,
            "completion_tokens": len(tokens),
            "total_tokens": 7 + len(tokens),
        },
    }


def models_listing(model: str) -> dict:
    return {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "fake"}]}


class FakeChatServer:
    """A chat-completions server on 127.0.0.1 with fixed answers, in OpenAI's wire format.

    Every answer is :attr:`TOKENS`; token i has log probability :attr:`LOGPROBS`[i], and its
    ``top_logprobs`` list (as many entries as asked) is the token itself, then ``alt1``,
    ``alt2``... each 1.0 lower. A prompt containing one of `without_logprobs` is answered
    without them (``logprobs: null``), as a server that cannot give them for that request.
    With `echo_status`, every request to a path in `echo_paths` is answered with that status
    and a body that echoes the request headers, ``Authorization`` first, after `echo_prefix`
    (a misconfigured proxy's error page).
    """

    TOKENS = ("An", "swer")
    LOGPROBS = (-0.25, -0.5)

    def __init__(
        self,
        model: str = "fake-model",
        without_logprobs: tuple[str, ...] = (),
        echo_status: int | None = None,
        echo_paths: tuple[str, ...] = ("/v1/chat/completions",),
        echo_prefix: str = "upstream refused the request; it sent: ",
    ) -> None:
        self.model = model
        self.without_logprobs = without_logprobs
        self.echo_status = echo_status
        self.echo_paths = echo_paths
        self.echo_prefix = echo_prefix
        self.posts = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _echoed(self) -> bool:
                if server.echo_status is None or self.path not in server.echo_paths:
                    return False
                lines = [f"Authorization: {self.headers.get('Authorization')}"]
                lines += [f"{k}: {v}" for k, v in self.headers.items() if k != "Authorization"]
                self._send(server.echo_status, (server.echo_prefix + "\n".join(lines)).encode())
                return True

            def do_GET(self) -> None:
                if not self._echoed():
                    self._send(200, json.dumps(models_listing(server.model)).encode())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.posts += 1
                if self._echoed():
                    return
                prompt = body["messages"][-1]["content"]
                asked = body.get("logprobs") and not any(
                    marker in prompt for marker in server.without_logprobs
                )
                logprobs = None
                if asked:
                    logprobs = [
                        {
                            "token": token,
                            "logprob": value,
                            "bytes": list(token.encode()),
                            "top_logprobs": [
                                {
                                    "token": token if j == 0 else f"alt{j}",
                                    "logprob": value - j,
                                    "bytes": list((token if j == 0 else f"alt{j}").encode()),
                                }
                                for j in range(body.get("top_logprobs") or 0)
                            ],
                        }
                        for token, value in zip(server.TOKENS, server.LOGPROBS, strict=True)
                    ]
                answer = chat_completion(body["model"], list(server.TOKENS), logprobs)
                self._send(200, json.dumps(answer).encode())

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class DrippingServer:
    """A chat-completions server on 127.0.0.1 that answers ``GET /v1/models`` at once but
    sends each chat completion one byte every `interval_s`: after complete headers
    (`drip="body"`) or from the status line on (`drip="headers"`); without
    `content_length`, the body's end is the connection's close. Every socket read gets a
    byte well within any read timeout, so only a limit on the whole request ends it. A plain
    socket server: http.server cannot send a response slowly."""

    def __init__(
        self,
        drip: str = "body",
        interval_s: float = 0.2,
        model: str = "m",
        content_length: bool = True,
    ) -> None:
        if drip not in ("body", "headers"):
            raise ValueError(f"drip must be 'body' or 'headers', got {drip!r}")
        self.drip, self.interval_s, self.model = drip, interval_s, model
        self.content_length = content_length
        self.stopped = threading.Event()
        self.posts = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)  # so that the accept loop sees `stopped`
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _read_request(conn: socket.socket) -> str:
        """The request line; the headers and the body are read and dropped."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return ""
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return head.split(b"\r\n", 1)[0].decode("latin-1")

    def _head(self, payload: bytes) -> bytes:
        length = f"Content-Length: {len(payload)}\r\n" if self.content_length else ""
        return (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"{length}Connection: close\r\n\r\n"
        ).encode()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            request_line = self._read_request(conn)
            if request_line.startswith("GET"):
                payload = json.dumps(models_listing(self.model)).encode()
                conn.sendall(self._head(payload) + payload)
                return
            self.posts += 1
            payload = json.dumps(chat_completion(self.model, ["slow"], None)).encode()
            slow = self._head(payload) + payload
            if self.drip == "body":
                conn.sendall(self._head(payload))
                slow = payload
            for byte in slow:
                if self.stopped.wait(self.interval_s):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:  # the client gave up
                    return

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()


# ---------------------------------------------------------------- the instant server, scripted


class ScriptedInstantServer(InstantServer):
    """bench/instant_server.py's protocol-faithful server on a thread of the test process,
    which counts connections, requests and requests in flight, and can

    - hold each chat completion `hold_s` seconds before answering (requests pile up in
      flight: the test of the client's bound);
    - answer the first `throttle` chat completions with 429 and ``Retry-After:
      retry_after``;
    - close the connection without an answer to a request whose prompt contains a key of
      `drops`, as many times as its value says (None: every time).

    `prompts` and `arrivals` (monotonic seconds) record every chat completion asked, and
    `targets` the request line's target of every request (a proxied request's is a URL).
    """

    def __init__(
        self,
        model: str = "instant",
        hold_s: float = 0.0,
        throttle: int = 0,
        retry_after: str = "1",
        drops: dict[str, int | None] | None = None,
    ) -> None:
        super().__init__(model=model, latency_s=hold_s)
        self.throttle, self.retry_after, self.throttled = throttle, retry_after, 0
        self.drops = dict(drops or {})
        self.dropped = 0
        self.prompts: list[str] = []
        self.arrivals: list[float] = []
        self.targets: list[str] = []
        self.start()

    def route(self, method: str, target: str) -> tuple[str, bytes] | None:
        self.targets.append(target)
        return super().route(method, target)

    def respond(self, request, reply, drop) -> None:
        prompt = request["messages"][-1]["content"]
        self.prompts.append(prompt)
        self.arrivals.append(time.monotonic())
        for marker, left in self.drops.items():
            if marker in prompt and (left is None or left > 0):
                if left is not None:
                    self.drops[marker] = left - 1
                self.dropped += 1
                drop()
                return
        if self.throttled < self.throttle:
            self.throttled += 1
            body = error_body(429, "RateLimitError", "rate limited")
            reply("429 Too Many Requests", body, f"retry-after: {self.retry_after}\r\n")
            return
        super().respond(request, reply, drop)

    def answer_text(self, prompt: str) -> str:
        """What this server answers to `prompt`, computed from bench/instant_server.py's
        table, not by asking it."""
        return ANSWERS[zlib.crc32(prompt.encode()) % len(ANSWERS)]

    def close(self) -> None:
        self.stop()


class AnsweringServer(InstantServer):
    """bench/instant_server.py's server on a thread of the test process, answering each
    chat completion with ``answers(prompt)`` (the whole text, as a model would write it)."""

    def __init__(self, answers: Callable[[str], str], model: str = "instant") -> None:
        super().__init__(model=model)
        self.answers = answers
        self.start()

    def answer_for(self, prompt: str) -> str:
        return self.answers(prompt)

    def close(self) -> None:
        self.stop()
