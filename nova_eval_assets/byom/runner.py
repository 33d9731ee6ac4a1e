"""The processor runner: calls a recipe's processor once per example, locally or on AWS Lambda.

Targets (recipe ``processor``):

- ``handler: path/to/file.py:function`` (relative to the recipe file) or
  ``handler: package.module:function``: imported once per process and called in process as
  ``function(event, context)``, exactly as Lambda would call it (the event and the answer
  go through a JSON round trip, and ``context`` carries Lambda's attributes).
- ``lambda_arn: arn:aws:lambda:<region>:<account>:function:<name>``: boto3 ``Invoke`` with
  ``InvocationType=RequestResponse``. The endpoint is boto3's usual one; the standard
  ``AWS_ENDPOINT_URL_LAMBDA`` / ``AWS_ENDPOINT_URL`` variables point it elsewhere (the tests
  use a local HTTP server that speaks the Lambda Invoke API).

Policy:

- Calls run with bounded concurrency (``processor.concurrency``: default 8 for Lambda, 1 for a
  local handler, whose module state need not be thread-safe) and keep the example order.
- Every call has a wall-clock limit (``processor.timeout_s``, default 60 s). A local handler
  runs in a worker thread that is abandoned when the limit passes; a Lambda call uses it as
  botocore's ``connect_timeout`` and ``read_timeout``.
- Lambda throttling (``TooManyRequestsException`` and the other throttling codes, HTTP 429),
  Lambda service errors (HTTP 5xx) and connection failures are retried up to
  ``processor.max_retries`` times (default 4) with exponential backoff and full jitter
  (0.25 s doubling, at most 8 s per wait). botocore's own retries are switched off so that
  every attempt is counted here.
- Everything else that goes wrong for one example is recorded for that example as a
  :class:`CallResult` with an ``error`` message, and the run goes on: a function error
  (``FunctionError``: the function raised), a handler that raises, an answer whose
  ``statusCode`` is not 200, a malformed answer (not JSON, wrong shape, a non-finite
  value), a timeout, throttling that outlasts the retries. Nothing is dropped.
- A processor that cannot be set up at all (file not found, import error, no such function)
  is a :class:`ProcessorConfigError` before any example runs.

Whether errors fail the run is the recipe's choice (``processor.max_error_rate``); see
:func:`check_error_rate`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import random
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nova_eval_assets.byom.sdk import (
    POSTPROCESS,
    PREPROCESS,
    ProcessorError,
    check_answer,
    kind_of,
)

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_LAMBDA_CONCURRENCY = 8
DEFAULT_LOCAL_CONCURRENCY = 1
DEFAULT_MAX_RETRIES = 4
BACKOFF_BASE_S = 0.25
BACKOFF_MAX_S = 8.0

THROTTLING_CODES = frozenset(
    {
        "TooManyRequestsException",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "SlowDown",
    }
)
ARN_PATTERN = re.compile(
    r"^arn:aws[a-z-]*:lambda:(?P<region>[a-z]{2}(-[a-z]+)+-\d+):\d{12}:function:"
    r"[A-Za-z0-9_-]{1,140}(:(\$LATEST|[A-Za-z0-9_-]{1,128}))?$"
)

Handler = Callable[[Any, Any], Any]
#: an answer -> (validated body, None) or (None, why it is malformed)
AnswerReader = Callable[[Any], tuple[Any, str | None]]


class ProcessorConfigError(ValueError):
    """The processor cannot be used at all (not a per-example error)."""


class ProcessorErrorRateExceeded(RuntimeError):
    """More examples failed in the processor than ``processor.max_error_rate`` allows."""


@dataclass
class CallResult:
    """One example's processor call: the validated body, or the error, and how long it took.

    ``body`` is ``{"system", "prompt", "gold"}`` for preprocess and a list of
    ``{"metric", "value"}`` for postprocess.
    """

    body: Any = None
    error: str | None = None
    seconds: float = 0.0
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None


# ---------------------------------------------------------------- loading a local handler


_LOADED: dict[tuple[str, int], Any] = {}
_LOAD_LOCK = threading.Lock()


def load_handler(spec: str, base_dir: Path) -> Handler:
    """``path/to/file.py:function`` (relative to ``base_dir``) or ``package.module:function``."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target.strip() or not attr.isidentifier():
        raise ProcessorConfigError(
            f"processor.handler {spec!r} must be 'path/to/file.py:function' or "
            "'package.module:function'"
        )
    if target.endswith(".py") or "/" in target or "\\" in target:
        module = _load_file(Path(target), base_dir)
        where = str(module.__file__)
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise ProcessorConfigError(
                f"processor.handler {spec!r}: cannot import module {target!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        where = f"module {target!r}"
    if not hasattr(module, attr):
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ProcessorConfigError(
            f"processor.handler {spec!r}: {where} has no {attr!r}; callables there: "
            f"{', '.join(public) or 'none'}"
        )
    func = getattr(module, attr)
    if not callable(func):
        raise ProcessorConfigError(
            f"processor.handler {spec!r}: {attr!r} in {where} is {kind_of(func)}, not a function"
        )
    return func


def _load_file(path: Path, base_dir: Path) -> Any:
    path = (path if path.is_absolute() else base_dir / path).resolve()
    if not path.is_file():
        raise ProcessorConfigError(f"processor.handler: file not found: {path}")
    key = (str(path), path.stat().st_mtime_ns)
    with _LOAD_LOCK:
        if key in _LOADED:
            return _LOADED[key]
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
        name = f"nova_eval_handler_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}_{digest}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ProcessorConfigError(f"processor.handler: cannot load {path} as Python")
        module = importlib.util.module_from_spec(spec)
        # Like Lambda's task root: modules beside the handler file are importable.
        if str(path.parent) not in sys.path:
            sys.path.append(str(path.parent))
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise ProcessorConfigError(
                f"processor.handler: importing {path} failed: {type(exc).__name__}: {exc}"
            ) from exc
        _LOADED[key] = module
        return module


class LocalContext:
    """The attributes of Lambda's context object, for handlers that read them."""

    def __init__(self, function_name: str, timeout_s: float):
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"local:{function_name}"
        self.memory_limit_in_mb = "0"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = "local"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


# ---------------------------------------------------------------- reading answers


def read_answer(answer: Any, process_type: str) -> tuple[Any, str | None]:
    """(validated body, None) or (None, error message) for one processor answer."""
    if isinstance(answer, dict) and "statusCode" in answer:
        status = answer["statusCode"]
        if isinstance(status, int) and not isinstance(status, bool) and status != 200:
            body = answer.get("body")
            detail = body.get("error") if isinstance(body, dict) and "error" in body else body
            return None, f"statusCode {status}: {detail}"
    try:
        return check_answer(answer, process_type)["body"], None
    except ProcessorError as exc:
        return None, f"malformed answer: {exc}"


def _json_round_trip(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise ProcessorError(f"{what} is not JSON-serializable: {exc}") from exc


# ---------------------------------------------------------------- the runner


class ProcessorRunner:
    """Calls one processor (a local handler or a Lambda function) for many examples."""

    def __init__(
        self,
        *,
        handler: Handler | None = None,
        lambda_arn: str | None = None,
        name: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        concurrency: int | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        client: Any = None,
    ):
        if (handler is None) == (lambda_arn is None):
            raise ProcessorConfigError("a processor needs exactly one of handler or lambda_arn")
        if timeout_s <= 0:
            raise ProcessorConfigError(f"timeout_s must be positive, got {timeout_s}")
        self.handler = handler
        self.lambda_arn = lambda_arn
        self.timeout_s = float(timeout_s)
        default = DEFAULT_LOCAL_CONCURRENCY if handler is not None else DEFAULT_LAMBDA_CONCURRENCY
        self.concurrency = max(1, concurrency or default)
        self.max_retries = max(0, max_retries)
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.name = name or lambda_arn or getattr(handler, "__name__", "handler")
        self._client = client
        self._client_lock = threading.Lock()
        if lambda_arn is not None and client is None:
            match = ARN_PATTERN.match(lambda_arn)
            if not match:
                raise ProcessorConfigError(
                    f"processor.lambda_arn {lambda_arn!r} is not a Lambda function ARN "
                    "(arn:aws:lambda:<region>:<account id>:function:<name>[:<alias>])"
                )
            self._region = match.group("region")

    @classmethod
    def from_config(cls, config: Any, base_dir: Path, **overrides: Any) -> ProcessorRunner:
        """From a recipe's ``processor`` section; ``base_dir`` is the recipe's folder."""
        options = {
            "timeout_s": config.timeout_s,
            "concurrency": config.concurrency,
            "max_retries": config.max_retries,
        }
        options.update(overrides)
        if config.handler:
            handler = load_handler(config.handler, base_dir)
            return cls(handler=handler, name=config.handler, **options)
        return cls(lambda_arn=config.lambda_arn, **options)

    @property
    def target(self) -> str:
        return f"lambda {self.lambda_arn}" if self.lambda_arn else f"handler {self.name}"

    # ------------------------------------------------------------ public API

    def preprocess(self, rows: Sequence[dict[str, Any]]) -> list[CallResult]:
        """One call per ``{"system", "prompt", "gold"}`` row, in order."""
        events = [
            {
                "process_type": PREPROCESS,
                "data": {"system": r.get("system"), "prompt": r["prompt"], "gold": r["gold"]},
            }
            for r in rows
        ]
        return self.run(events)

    def postprocess(self, rows: Sequence[dict[str, Any]]) -> list[CallResult]:
        """One call per ``{"prompt", "inference_output", "gold"}`` row, in order."""
        events = [
            {
                "process_type": POSTPROCESS,
                "data": {
                    "prompt": r["prompt"],
                    "inference_output": r["inference_output"],
                    "gold": r["gold"],
                },
            }
            for r in rows
        ]
        return self.run(events)

    def run(self, events: Sequence[dict[str, Any]]) -> list[CallResult]:
        return self._each(self.call, events)

    def invoke_each(self, payloads: Sequence[Any], read: AnswerReader) -> list[CallResult]:
        """:meth:`invoke` for each payload, in order, ``processor.concurrency`` at a time."""
        return self._each(lambda payload: self.invoke(payload, read), payloads)

    def _each(self, call: Callable[[Any], CallResult], items: Sequence[Any]) -> list[CallResult]:
        if self.concurrency == 1 or len(items) <= 1:
            return [call(item) for item in items]
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="nova-processor") as pool:
            return list(pool.map(call, items))

    def call(self, event: dict[str, Any]) -> CallResult:
        """One event, with the timeout, retries and error recording described above."""
        process_type = event["process_type"]
        return self.invoke(event, lambda answer: read_answer(answer, process_type))

    def invoke(self, event: Any, read: AnswerReader) -> CallResult:
        """``event`` (any JSON) to the function, its answer through ``read``, with the
        timeout, retries and error recording described above (BYOM calls, reward calls)."""
        started = time.perf_counter()
        if self.handler is not None:
            result = self._call_local(event, read)
        else:
            result = self._call_lambda(event, read)
        result.seconds = time.perf_counter() - started
        return result

    # ------------------------------------------------------------ local handler

    def _call_local(self, event: Any, read: AnswerReader) -> CallResult:
        payload = json.loads(json.dumps(event))  # what Lambda would hand the function
        box: dict[str, Any] = {}
        context = LocalContext(self.name, self.timeout_s)

        def target() -> None:
            try:
                box["answer"] = self.handler(payload, context)  # type: ignore[misc]
            except BaseException as exc:
                box["error"] = exc

        worker = threading.Thread(target=target, name="nova-processor-call", daemon=True)
        worker.start()
        worker.join(self.timeout_s)
        if worker.is_alive():  # abandoned: Python cannot stop a thread
            return CallResult(error=f"timeout: no answer within {self.timeout_s:g} s")
        if "error" in box:
            exc = box["error"]
            return CallResult(error=f"handler raised {type(exc).__name__}: {exc}")
        try:
            answer = _json_round_trip(box.get("answer"), "the answer")
        except ProcessorError as exc:
            return CallResult(error=f"malformed answer: {exc}")
        body, error = read(answer)
        return CallResult(body=body, error=error)

    # ------------------------------------------------------------ AWS Lambda

    def _lambda_client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                config = Config(
                    connect_timeout=self.timeout_s,
                    read_timeout=self.timeout_s,
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    max_pool_connections=max(10, self.concurrency),
                )
                self._client = boto3.client("lambda", region_name=self._region, config=config)
            return self._client

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1)))

    def _call_lambda(self, event: Any, read: AnswerReader) -> CallResult:
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )

        from nova_eval_assets.preflight import RemoteAccessError, describe_remote_error

        client = self._lambda_client()
        payload = json.dumps(event).encode("utf-8")
        attempt = 0
        while True:
            attempt += 1
            retry_reason = None
            try:
                response = client.invoke(
                    FunctionName=self.lambda_arn,
                    InvocationType="RequestResponse",
                    Payload=payload,
                )
            except (NoCredentialsError, PartialCredentialsError) as exc:
                # no row can succeed: stop the stage with one line (the preflight's)
                raise RemoteAccessError(
                    describe_remote_error(exc, "processor.lambda_arn", self.lambda_arn)
                ) from exc
            except ReadTimeoutError:
                return CallResult(
                    error=f"timeout: no answer within {self.timeout_s:g} s", attempts=attempt
                )
            except (ConnectTimeoutError, EndpointConnectionError, ConnectionClosedError) as exc:
                retry_reason = f"connection failed: {exc}"
            except ClientError as exc:
                error = exc.response.get("Error", {})
                code = error.get("Code", "")
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
                message = error.get("Message") or str(exc)
                if code in THROTTLING_CODES or status == 429:
                    retry_reason = f"throttled ({code or status}: {message})"
                elif status >= 500:
                    retry_reason = f"Lambda service error {status} ({code}: {message})"
                else:
                    return CallResult(
                        error=f"Lambda invoke failed {status} ({code}: {message})",
                        attempts=attempt,
                    )
            if retry_reason is not None:
                if attempt > self.max_retries:
                    return CallResult(
                        error=f"{retry_reason}; gave up after {attempt} attempts",
                        attempts=attempt,
                    )
                time.sleep(self._backoff(attempt))
                continue
            return self._read_lambda_response(response, read, attempt)

    @staticmethod
    def _read_lambda_response(response: dict, read: AnswerReader, attempts: int) -> CallResult:
        stream = response.get("Payload")
        raw = stream.read() if stream is not None else b""
        if response.get("FunctionError"):
            detail = raw.decode("utf-8", errors="replace")
            try:
                parsed = json.loads(raw)
                if isinstance(parsed, dict) and "errorMessage" in parsed:
                    detail = f"{parsed.get('errorType', 'Error')}: {parsed['errorMessage']}"
            except ValueError:
                pass
            return CallResult(
                error=f"function error ({response['FunctionError']}): {detail}", attempts=attempts
            )
        try:
            answer = json.loads(raw)
        except ValueError as exc:
            shown = raw[:200].decode("utf-8", errors="replace")
            return CallResult(
                error=f"malformed answer: the Lambda payload is not JSON ({exc}): {shown!r}",
                attempts=attempts,
            )
        body, error = read(answer)
        return CallResult(body=body, error=error, attempts=attempts)


# ---------------------------------------------------------------- error policy


def check_error_rate(stage: str, errors: int, total: int, max_error_rate: float | None) -> None:
    """Raise :class:`ProcessorErrorRateExceeded` when ``errors / total > max_error_rate``.

    ``max_error_rate`` None (the default) never fails: errors are recorded and reported only.
    """
    if max_error_rate is None or total == 0:
        return
    rate = errors / total
    if rate > max_error_rate:
        raise ProcessorErrorRateExceeded(
            f"{stage}: {errors} of {total} examples failed in the processor ({rate:.1%}), "
            f"more than processor.max_error_rate = {max_error_rate:g} allows; the per-example "
            "messages are in the typed tables (preprocess_error / postprocess_error)"
        )
