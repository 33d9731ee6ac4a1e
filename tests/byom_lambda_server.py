"""A local HTTP server that speaks the AWS Lambda Invoke API, for testing the Lambda path at
its network boundary: boto3 (pointed at it with ``AWS_ENDPOINT_URL_LAMBDA``) sends real
``POST /2015-03-31/functions/<name>/invocations`` requests and parses real responses.

Each function is a Python callable ``behaviour(event, attempt) -> Reply`` where ``attempt``
counts the calls made so far with this same event (1 for the first). Replies say what the
Lambda service would answer: the function's result, a function error (the function raised;
HTTP 200 with ``X-Amz-Function-Error``), throttling (HTTP 429
``TooManyRequestsException``), a service error (HTTP 500 ``ServiceException``), a raw
payload, or a delay before answering. A ``DryRun`` invocation of a known function answers 204.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

ACCOUNT = "123456789012"
REGION = "us-east-1"


def arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


@dataclass
class Reply:
    status: int = 200
    payload: bytes = b"null"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def result(answer: Any, delay_s: float = 0.0) -> Reply:
    return Reply(payload=json.dumps(answer).encode(), delay_s=delay_s)


def function_error(error_type: str, message: str) -> Reply:
    body = {"errorMessage": message, "errorType": error_type, "stackTrace": []}
    return Reply(payload=json.dumps(body).encode(), headers={"X-Amz-Function-Error": "Unhandled"})


def service_error(status: int, code: str, message: str) -> Reply:
    body = {"Type": "Service" if status >= 500 else "User", "message": message}
    return Reply(
        status=status, payload=json.dumps(body).encode(), headers={"x-amzn-ErrorType": code}
    )


def throttled() -> Reply:
    return service_error(429, "TooManyRequestsException", "Rate exceeded")


def raw(payload: bytes) -> Reply:
    return Reply(payload=payload)


def run_handler(handler: Callable[[Any, Any], Any]) -> Callable[[Any, int], Reply]:
    """A behaviour that runs a Python Lambda handler as the Lambda runtime would: its
    return value is the payload; an exception becomes an Unhandled function error."""

    def behaviour(event: Any, attempt: int) -> Reply:
        try:
            return result(handler(event, None))
        except Exception as exc:
            return function_error(type(exc).__name__, str(exc))

    return behaviour


class FakeLambda:
    """``with FakeLambda() as fake: fake.functions["name"] = behaviour; ... fake.url``"""

    def __init__(self) -> None:
        self.functions: dict[str, Callable[[Any, int], Reply]] = {}
        self.requests: list[tuple[str, Any]] = []
        self.dry_runs: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._attempts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                fake._serve(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # a client that gave up
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeLambda:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def calls_to(self, name: str) -> int:
        return sum(1 for n, _ in self.requests if n == name)

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        parts = request.path.split("?")[0].split("/")
        # /2015-03-31/functions/<name>/invocations
        if len(parts) != 5 or parts[1] != "2015-03-31" or parts[4] != "invocations":
            self._send(request, service_error(404, "UnknownOperationException", request.path))
            return
        name = unquote(parts[3])  # a function name or an ARN (with an optional qualifier)
        if ":function:" in name:
            name = name.split(":function:")[1].split(":")[0]
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        event = json.loads(body) if body else None
        invocation = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if invocation not in ("RequestResponse", "DryRun"):
            self._send(request, service_error(400, "InvalidParameterValueException", "sync only"))
            return
        behaviour = self.functions.get(name)
        if behaviour is None:
            self._send(
                request,
                service_error(404, "ResourceNotFoundException", f"Function not found: {name}"),
            )
            return
        if invocation == "DryRun":  # Lambda: 204, the caller may invoke it; nothing runs
            self.dry_runs.append(name)
            self._send(request, Reply(status=204, payload=b""))
            return
        with self._lock:
            self.requests.append((name, event))
            key = (name, json.dumps(event, sort_keys=True))
            self._attempts[key] += 1
            attempt = self._attempts[key]
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            reply = behaviour(event, attempt)
            if reply.delay_s:
                time.sleep(reply.delay_s)
        finally:
            with self._lock:
                self.in_flight -= 1
        self._send(request, reply)

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, reply: Reply) -> None:
        try:
            request.send_response(reply.status)
            request.send_header("Content-Type", "application/json")
            request.send_header("Content-Length", str(len(reply.payload)))
            request.send_header("X-Amz-Executed-Version", "$LATEST")
            for key, value in reply.headers.items():
                request.send_header(key, value)
            request.end_headers()
            request.wfile.write(reply.payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
