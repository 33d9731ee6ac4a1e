"""An OpenAI-compatible chat-completions server on 127.0.0.1 that answers at once.

    python bench/instant_server.py [--port 0] [--model NAME] [--latency-ms 0]
                                     prints its URL, serves until killed

    from bench.instant_server import start_server
    server = start_server()          # in its own process; server.url, server.stop()
    url, stop = start_server()       # the same, unpacked

    InstantServer(model=...)         # the same server on a thread of this process, with
                                     # counts (tests): connections, requests, in flight

What it answers is what vLLM sends, field for field, so a client reads it as it would read
vLLM's: ``POST /v1/chat/completions`` gets a ``chat.completion`` whose message is a short
support-ticket classification (a JSON object with ``class``, ``thought``, ``description``;
one of eight, chosen by a CRC of the last message, so the same prompt always gets the same
answer), with ``logprobs.content`` holding per token ``token``, ``logprob``, ``bytes`` and
``top_logprobs`` (the chosen token first, then alternatives, as many as the request's
``top_logprobs``) when the request has ``logprobs: true``, else ``logprobs: null``;
``max_tokens`` below the answer's length cuts it there with ``finish_reason: length``;
``usage`` counts the answer's tokens and about a token per 4 prompt characters. A model name
other than the served one is vLLM's 404; ``GET /v1/models`` lists the served model and
``GET /health`` answers 200. Answers are rendered once per (answer, top_logprobs,
max_tokens) and kept as bytes; only ``usage`` is filled in per request.

It is a plain ``asyncio.Protocol`` over HTTP/1.1 with keep-alive (uvloop's loop in its own
process when uvloop is installed), so that one process answers several thousand requests a
second and the client under test is what a benchmark measures. ``GET /stats`` (not OpenAI's)
returns its counts as JSON. Subclasses change what one request gets by overriding
:meth:`InstantServer.respond` (tests/openai_servers.py: throttling, dropped connections, held
requests).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import subprocess
import sys
import threading
import urllib.parse
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

#: what a support-ticket triage model answers (the classes of recipes/support_tickets.yaml)
ANSWERS = tuple(
    json.dumps({"class": label, "thought": thought, "description": description})
    for label, thought, description in (
        ("hardware", "A worn part, no business impact.", "A laptop key sticks."),
        ("hardware_urgent", "Devices down for a whole team.", "The floor printer is broken."),
        ("software", "A minor annoyance, low impact.", "Reader asks to be the default."),
        ("software_urgent", "Billing is blocked today.", "The invoicing app crashes."),
        ("network", "Slow but working.", "Wi-Fi is slow in room B."),
        ("network_urgent", "The office is offline.", "The VPN is down for everyone."),
        ("access", "One user, no deadline.", "Needs access to a share."),
        ("access_urgent", "Payroll cannot log in.", "An account is locked before payday."),
    )
)
#: BPE-like pieces: a word with its leading space, a run of punctuation
_PIECES = re.compile(r" ?\w+| ?[^\w\s]+|\s+")
#: alternatives offered in top_logprobs after the chosen token
_ALTERNATIVES = ('"', " the", ",", " a", ".", "\n", " and", " to", "_", " is", ":", " of",
                 " in", "}", " for", " on", "{", " it", " with", " that")  # fmt: skip
#: each answer's length in tokens
ANSWER_TOKENS = tuple(len(_PIECES.findall(answer)) for answer in ANSWERS)
SERVED_MODEL = "instant"
HOST = "127.0.0.1"


def answer_tokens(answer: str) -> list[str]:
    return _PIECES.findall(answer)


def token_logprobs(tokens: list[str], top: int) -> list[dict[str, Any]]:
    """vLLM's ``logprobs.content``: chosen token first in its top list, then alternatives
    each less likely (fixed values, so runs compare exactly)."""
    content = []
    for position, token in enumerate(tokens):
        chosen = -0.001 * (1 + position % 7)
        entries = [(token, chosen)]
        alternatives = (a for a in _ALTERNATIVES if a != token)
        entries += [
            (a, chosen - 1.5 * (j + 1)) for j, a in zip(range(top - 1), alternatives, strict=False)
        ]
        content.append(
            {
                "token": token,
                "logprob": chosen,
                "bytes": list(token.encode()),
                "top_logprobs": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in entries
                ]
                if top
                else [],
            }
        )
    return content


def render_completion(model: str, answer: str, top_logprobs: int | None, max_tokens: int) -> bytes:
    """A vLLM ``chat.completion`` for `answer` up to its ``usage`` (filled in per request);
    `top_logprobs` None: not asked for (``logprobs: null``)."""
    tokens = answer_tokens(answer)
    cut = tokens[:max_tokens]
    completion = {
        "id": "chatcmpl-instant",
        "object": "chat.completion",
        "created": 1767225600,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "".join(cut),
                    "refusal": None,
                    "annotations": None,
                    "audio": None,
                    "function_call": None,
                    "tool_calls": [],
                    "reasoning_content": None,
                },
                "logprobs": None
                if top_logprobs is None
                else {"content": token_logprobs(cut, top_logprobs)},
                "finish_reason": "length" if len(cut) < len(tokens) else "stop",
                "stop_reason": None,
            }
        ],
        "service_tier": None,
        "system_fingerprint": None,
        "usage": None,
    }
    text = json.dumps(completion, separators=(",", ":"))
    return text[: text.rindex('"usage":null}')].encode()


def _response(status: str, body: bytes, close: bool, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}"
    )
    return (head + ("connection: close\r\n\r\n" if close else "\r\n")).encode() + body


def error_body(status: int, kind: str, message: str) -> bytes:
    """vLLM's error object."""
    payload = {"object": "error", "message": message, "type": kind, "param": None, "code": status}
    return json.dumps(payload).encode()


class InstantServer:
    """The server on an event loop thread of this process (:func:`start_server`: its own
    process). `url` once constructed; :meth:`stop` ends it."""

    def __init__(
        self,
        model: str = SERVED_MODEL,
        port: int = 0,
        host: str = HOST,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
        latency_s: float = 0.0,
    ) -> None:
        self.model = model
        # every completion answered this long after it came, however many are in flight:
        # a GPU server's decode time with room in its batch (0: at once)
        self.latency_s = latency_s
        self.connections = 0  # TCP connections accepted
        self.requests = 0  # chat completions asked
        self.in_flight = 0  # chat completions asked and not yet answered
        self.max_in_flight = 0
        self._rendered: dict[tuple[str, int, int | None, int], bytes] = {}
        self._models = json.dumps(
            {
                "object": "list",
                "data": [
                    {
                        "id": model,
                        "object": "model",
                        "created": 1767225600,
                        "owned_by": "vllm",
                        "root": model,
                        "parent": None,
                        "max_model_len": 4096,
                    }
                ],
            }
        ).encode()
        self.loop = loop_factory()
        self._thread: threading.Thread | None = None
        self._server = self.loop.run_until_complete(
            self.loop.create_server(lambda: _Connection(self), host, port)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://{host}:{self.port}"

    # ------------------------------------------------------------------ running

    def start(self) -> InstantServer:
        """Serve on a daemon thread."""
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.loop.run_forever()

    def stop(self) -> None:
        def close() -> None:
            self._server.close()
            self.loop.stop()

        if self._thread is not None:
            self.loop.call_soon_threadsafe(close)
            self._thread.join(10)
        self.loop.close()

    def __enter__(self) -> InstantServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ answers

    def completion(self, request: dict[str, Any]) -> tuple[str, bytes]:
        """(status line, body) of one chat completion (module docstring)."""
        model = request.get("model")
        if model != self.model:
            message = f"The model `{model}` does not exist."
            return "404 Not Found", error_body(404, "NotFoundError", message)
        messages = request.get("messages") or [{}]
        prompt = messages[-1].get("content")
        prompt = prompt if isinstance(prompt, str) else json.dumps(prompt)
        top = int(request.get("top_logprobs") or 0) if request.get("logprobs") else None
        max_tokens = int(request.get("max_tokens") or 1 << 16)
        scripted = self.answer_for(prompt)
        if scripted is not None:  # rendered for this request alone
            tokens = min(len(answer_tokens(scripted)), max_tokens)
            body = render_completion(model, scripted, top, max_tokens)
            usage = (
                f'"usage":{{"prompt_tokens":{len(prompt) // 4 + 1},'
                f'"total_tokens":{len(prompt) // 4 + 1 + tokens},"completion_tokens":{tokens},'
                '"prompt_tokens_details":null},"prompt_logprobs":null,"kv_transfer_params":null}'
            )
            return "200 OK", body + usage.encode()
        choice = zlib.crc32(prompt.encode()) % len(ANSWERS)
        key = (model, choice, top, max_tokens)
        rendered = self._rendered.get(key)
        if rendered is None:
            rendered = self._rendered[key] = render_completion(
                model, ANSWERS[choice], top, max_tokens
            )
        prompt_tokens = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 1
        completion_tokens = min(ANSWER_TOKENS[choice], max_tokens)
        usage = (
            f'"usage":{{"prompt_tokens":{prompt_tokens},'
            f'"total_tokens":{prompt_tokens + completion_tokens},'
            f'"completion_tokens":{completion_tokens},"prompt_tokens_details":null}},'
            '"prompt_logprobs":null,"kv_transfer_params":null}'
        )
        return "200 OK", rendered + usage.encode()

    def answer_for(self, prompt: str) -> str | None:
        """The answer to `prompt` in place of a support-ticket classification (None: one
        of those). Subclasses script answers here (tests' benchmark runs)."""
        return None

    def respond(
        self,
        request: dict[str, Any],
        reply: Callable[[str, bytes, str], None],
        drop: Callable[[], None],
    ) -> None:
        """Answer one chat completion: `reply(status line, body, extra header lines)` once,
        now or later, or `drop()` the connection. This server replies at once, or
        `latency_s` later."""
        if self.latency_s > 0:
            self.loop.call_later(self.latency_s, reply, *self.completion(request), "")
        else:
            reply(*self.completion(request), "")

    def route(self, method: str, target: str) -> tuple[str, bytes] | None:
        """The answer to a request that is not a chat completion (None: it is one).
        `target` is the request line's: a path, or a whole URL (what a client sends to a
        proxy: RFC 9112 says a server accepts it too)."""
        path = urllib.parse.urlsplit(target).path if "://" in target else target
        path = path.split("?", 1)[0]
        if method == "POST" and path == "/v1/chat/completions":
            return None
        if method == "GET" and path == "/v1/models":
            return "200 OK", self._models
        if method == "GET" and path == "/health":
            return "200 OK", b""
        if method == "GET" and path == "/stats":
            counts = {
                "connections": self.connections,
                "requests": self.requests,
                "max_in_flight": self.max_in_flight,
            }
            return "200 OK", json.dumps(counts).encode()
        return "404 Not Found", error_body(404, "NotFoundError", f"{method} {path} not found")


class _Connection(asyncio.Protocol):
    """One client connection: HTTP/1.1 requests one after the other (keep-alive)."""

    def __init__(self, server: InstantServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiting = False  # a request is being answered later (respond did not reply yet)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while not self.waiting and self.transport is not None:
            if not self._next_request():
                return

    def _next_request(self) -> bool:
        """Handle the buffer's first request if it is whole; whether one was handled."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        method, target, version = [*lines[0].split(" "), "", ""][:3]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", ""):
            self._send(
                "411 Length Required", error_body(411, "BadRequestError", "send a length"), True
            )
            return False
        length = int(headers.get("content-length") or 0)
        if len(self.buffer) < end + 4 + length:
            return False
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        connection = headers.get("connection", "").lower()
        close = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
        routed = self.server.route(method, target)
        if routed is not None:
            self._send(*routed, close)
            return True
        try:
            request = json.loads(body)
        except ValueError:
            self._send("400 Bad Request", error_body(400, "BadRequestError", "invalid JSON"), close)
            return True
        server = self.server
        server.requests += 1
        server.in_flight += 1
        server.max_in_flight = max(server.max_in_flight, server.in_flight)
        self.waiting = True
        answered = False

        def reply(status: str, payload: bytes, extra: str = "") -> None:
            nonlocal answered
            if answered:
                return
            answered = True
            server.in_flight -= 1
            self.waiting = False
            self._send(status, payload, close, extra)
            if self.buffer and not close:  # a pipelined request came meanwhile
                self.data_received(b"")

        def drop() -> None:
            nonlocal answered
            if not answered:
                answered = True
                server.in_flight -= 1
            if self.transport is not None:
                self.transport.abort()

        server.respond(request, reply, drop)
        return True

    def _send(self, status: str, payload: bytes, close: bool, extra: str = "") -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(_response(status, payload, close, extra))
        if close:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


# ---------------------------------------------------------------- in its own process


class RunningServer(NamedTuple):
    """A server process: its base URL and how to stop it."""

    url: str
    stop: Callable[[], None]


def start_server(
    port: int = 0, model: str = SERVED_MODEL, timeout_s: float = 30.0, latency_s: float = 0.0
) -> RunningServer:
    """The server in a process of its own (this file run by this interpreter), answering
    once this returns."""
    process = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            *("--port", str(port), "--model", model, "--latency-ms", str(latency_s * 1000)),
        ],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    ready = threading.Event()
    lines: list[str] = []

    def read_url() -> None:
        lines.append(process.stdout.readline().strip())
        ready.set()

    threading.Thread(target=read_url, daemon=True).start()
    if not ready.wait(timeout_s) or not lines[0].startswith("http://"):
        process.kill()
        process.wait()
        raise RuntimeError(f"the instant server did not start within {timeout_s:g} s: {lines}")

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with contextlib.suppress(OSError):
            process.stdout.close()

    return RunningServer(lines[0], stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", default=SERVED_MODEL)
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="answer each completion this much later"
    )
    args = parser.parse_args(argv)
    loop_factory = asyncio.new_event_loop
    with contextlib.suppress(ImportError):  # a faster loop where it is installed
        import uvloop

        loop_factory = uvloop.new_event_loop
    server = InstantServer(
        model=args.model,
        port=args.port,
        loop_factory=loop_factory,
        latency_s=args.latency_ms / 1000,
    )
    print(server.url, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
