"""The processor SDK: the Nova custom-evaluation contract, as decorators and a handler builder.

A processor is a function ``(event, context) -> answer``. The evaluation sends two kinds of
events, each answered with a status code and a body:

preprocess (before inference; may rewrite what the model sees and what it is scored against)::

    {"process_type": "preprocess", "data": {"system": str | None, "prompt": str, "gold": str}}
    -> {"statusCode": 200, "body": {"system": str | None, "prompt": str, "gold": str}}

postprocess (after inference; returns custom metrics for one example)::

    {"process_type": "postprocess", "data": {"prompt": str, "inference_output": str, "gold": str}}
    -> {"statusCode": 200, "body": [{"metric": str, "value": number}, ...]}

Usage, exactly as with the Nova custom evaluation SDK (only the import lines differ)::

    from nova_eval_assets.byom import build_lambda_handler, postprocess, preprocess

    @preprocess
    def preprocessor(event, context):
        data = event["data"]
        return {"statusCode": 200, "body": {"system": data.get("system"),
                                            "prompt": data["prompt"], "gold": data["gold"]}}

    @postprocess
    def postprocessor(event, context):
        data = event["data"]
        correct = float(data["inference_output"].strip() == data["gold"].strip())
        return {"statusCode": 200, "body": [{"metric": "my_accuracy", "value": correct}]}

    lambda_handler = build_lambda_handler(preprocessor=preprocessor, postprocessor=postprocessor)

``lambda_handler`` runs in process (recipe ``processor.handler``) and, unchanged, as an AWS
Lambda function (recipe ``processor.lambda_arn``) with this package as a layer. It imports
nothing outside the standard library.

Rules, the same as the Nova SDK's (which validates with pydantic models that forbid extra
keys):

- A decorated function must accept two positional arguments ``(event, context)``; otherwise
  the decorator raises :class:`TypeError`. The function receives the whole event.
- The event is validated before the function runs: ``process_type`` must match, ``data``
  must hold exactly the documented keys with string values (``system`` may be null or
  absent in a preprocess event). A bad event raises :class:`PreprocessError` /
  :class:`PostprocessError`.
- The answer is validated after: ``statusCode`` must be 200; a preprocess body holds
  ``prompt`` and ``gold`` (strings) and optionally ``system`` (string or null; an absent
  ``system`` becomes null, as in the Nova SDK's response model) and nothing else; a
  postprocess body is a list of ``{"metric": non-empty str, "value": finite number}`` with
  distinct metric names (booleans, NaN and infinities are rejected). A wrong answer, or an
  exception from the function, raises :class:`PreprocessError` / :class:`PostprocessError`
  naming the problem; on Lambda that surfaces as a function error, which the runner
  records for that example.
- The handler from :func:`build_lambda_handler` routes on ``event["process_type"]`` and
  answers ``{"statusCode": 400, "body": {"error": "Unsupported process_type: ..."}}`` to a
  process type it has no processor for (and to an event that is not a JSON object).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

PREPROCESS = "preprocess"
POSTPROCESS = "postprocess"
PROCESS_TYPES = (PREPROCESS, POSTPROCESS)

Answer = dict[str, Any]
Handler = Callable[[Any, Any], Answer]


class ProcessorError(ValueError):
    """A processor event or answer that breaks the contract, or a processor that failed."""


class PreprocessError(ProcessorError):
    """Preprocessing failed: bad event, bad answer, or the function raised."""


class PostprocessError(ProcessorError):
    """Postprocessing failed: bad event, bad answer, or the function raised."""


# ---------------------------------------------------------------- shape checks (shared)


def kind_of(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _check_keys(obj: dict, where: str, required: tuple[str, ...], optional: tuple[str, ...]):
    missing = [k for k in required if k not in obj]
    if missing:
        raise ProcessorError(f"{where} is missing {', '.join(repr(k) for k in missing)}")
    extra = [k for k in obj if k not in required + optional]
    if extra:
        allowed = ", ".join(required + optional)
        raise ProcessorError(
            f"{where} has unexpected key(s) {', '.join(repr(k) for k in extra)}; allowed: {allowed}"
        )


def _check_string(value: Any, where: str, *, nullable: bool = False) -> None:
    if isinstance(value, str) or (nullable and value is None):
        return
    expected = "a string or null" if nullable else "a string"
    raise ProcessorError(f"{where} must be {expected}, got {kind_of(value)}")


def _check_object(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ProcessorError(f"{where} must be a JSON object, got {kind_of(value)}")
    return value


def check_event(event: Any, process_type: str) -> dict:
    """Validate a processor event; returns it. Raises :class:`ProcessorError`."""
    _check_object(event, "the event")
    _check_keys(event, "the event", ("process_type", "data"), ())
    if event["process_type"] != process_type:
        raise ProcessorError(
            f"event process_type must be {process_type!r}, got {event['process_type']!r}"
        )
    data = _check_object(event["data"], "event.data")
    if process_type == PREPROCESS:
        _check_keys(data, "event.data", ("prompt", "gold"), ("system",))
        _check_string(data.get("system"), "event.data.system", nullable=True)
        fields = ("prompt", "gold")
    else:
        fields = ("prompt", "inference_output", "gold")
        _check_keys(data, "event.data", fields, ())
    for name in fields:
        _check_string(data[name], f"event.data.{name}")
    return event


def _check_status(answer: Any) -> dict:
    _check_object(answer, "the answer")
    _check_keys(answer, "the answer", ("statusCode", "body"), ())
    status = answer["statusCode"]
    if isinstance(status, bool) or not isinstance(status, int):
        raise ProcessorError(f"statusCode must be the integer 200, got {kind_of(status)}")
    if status != 200:
        raise ProcessorError(f"statusCode must be 200, got {status}")
    return answer


def check_preprocess_body(body: Any) -> dict[str, str | None]:
    """A preprocess answer body as ``{"system", "prompt", "gold"}`` (system may be None)."""
    _check_object(body, "body")
    _check_keys(body, "body", ("prompt", "gold"), ("system",))
    _check_string(body.get("system"), "body.system", nullable=True)
    _check_string(body["prompt"], "body.prompt")
    _check_string(body["gold"], "body.gold")
    return {"system": body.get("system"), "prompt": body["prompt"], "gold": body["gold"]}


def check_metric_value(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProcessorError(f"{where} must be a number, got {kind_of(value)}")
    if not math.isfinite(value):
        raise ProcessorError(f"{where} must be a finite number, got {value!r}")
    return value


def check_postprocess_body(body: Any) -> list[dict[str, Any]]:
    """A postprocess answer body: a list of ``{"metric": str, "value": finite number}``."""
    if not isinstance(body, list):
        raise ProcessorError(
            f'body must be a list of {{"metric": str, "value": number}}, got {kind_of(body)}'
        )
    seen: set[str] = set()
    metrics = []
    for i, item in enumerate(body):
        where = f"body[{i}]"
        _check_object(item, where)
        _check_keys(item, where, ("metric", "value"), ())
        name = item["metric"]
        _check_string(name, f"{where}.metric")
        if not name.strip():
            raise ProcessorError(f"{where}.metric must not be empty")
        if name in seen:
            raise ProcessorError(f"{where}.metric {name!r} appears more than once")
        seen.add(name)
        value = check_metric_value(item["value"], f"{where}.value (metric {name!r})")
        metrics.append({"metric": name, "value": value})
    return metrics


def check_answer(answer: Any, process_type: str) -> Answer:
    """Validate a processor answer; returns it normalized. Raises :class:`ProcessorError`."""
    _check_status(answer)
    if process_type == PREPROCESS:
        body: Any = check_preprocess_body(answer["body"])
    else:
        body = check_postprocess_body(answer["body"])
    return {"statusCode": 200, "body": body}


# ---------------------------------------------------------------- decorators


def _check_signature(func: Any, decorator: str) -> None:
    if not callable(func):
        raise TypeError(f"@{decorator} decorates a function, got {kind_of(func)}")
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    try:
        signature.bind(None, None)
    except TypeError:
        count = len(signature.parameters)
        raise TypeError(
            f"Function {getattr(func, '__name__', func)!r} decorated with @{decorator} must take "
            f"exactly 2 parameters (event, context), got {count}"
        ) from None


class Processor:
    """A validated processor (what ``@preprocess`` / ``@postprocess`` return).

    Call it, or its :meth:`process` (the Nova SDK's name), with ``(event, context)``.
    """

    process_type: str = ""
    error_type: type[ProcessorError] = ProcessorError

    def __init__(self, func: Callable[[Any, Any], Any]):
        _check_signature(func, self.process_type)
        self.func = func
        self.__name__ = getattr(func, "__name__", type(self).__name__)
        self.__doc__ = getattr(func, "__doc__", None)
        self.__wrapped__ = func

    def process(self, event: Any, context: Any) -> Answer:
        stage = self.process_type
        try:
            check_event(event, stage)
        except ProcessorError as exc:
            raise self.error_type(f"{stage} event is invalid: {exc}") from exc
        try:
            answer = self.func(event, context)
        except Exception as exc:
            raise self.error_type(f"{self.__name__} raised {type(exc).__name__}: {exc}") from exc
        try:
            return check_answer(answer, stage)
        except ProcessorError as exc:
            raise self.error_type(f"{self.__name__} answered wrongly: {exc}") from exc

    __call__ = process

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.__name__}>"


class PreProcessor(Processor):
    process_type = PREPROCESS
    error_type = PreprocessError


class PostProcessor(Processor):
    process_type = POSTPROCESS
    error_type = PostprocessError


def preprocess(func: Callable[[Any, Any], Any]) -> PreProcessor:
    """Make ``func(event, context)`` a validated preprocessor."""
    return PreProcessor(func)


def postprocess(func: Callable[[Any, Any], Any]) -> PostProcessor:
    """Make ``func(event, context)`` a validated postprocessor."""
    return PostProcessor(func)


# ---------------------------------------------------------------- the handler


def _as_processor(value: Any, cls: type[Processor], argument: str) -> Processor | None:
    if value is None or isinstance(value, cls):
        return value
    if isinstance(value, Processor):
        raise TypeError(
            f"{argument} must be a @{cls.process_type} function, got a @{value.process_type} one"
        )
    if callable(value):
        return cls(value)  # an undecorated function gets the same validation
    raise TypeError(f"{argument} must be a @{cls.process_type} function, got {kind_of(value)}")


def build_lambda_handler(
    preprocessor: PreProcessor | Callable | None = None,
    postprocessor: PostProcessor | Callable | None = None,
) -> Handler:
    """A Lambda handler ``(event, context) -> answer`` that routes on ``process_type``."""
    pre = _as_processor(preprocessor, PreProcessor, "preprocessor")
    post = _as_processor(postprocessor, PostProcessor, "postprocessor")
    routes: dict[str, Processor] = {
        name: p for name, p in ((PREPROCESS, pre), (POSTPROCESS, post)) if p is not None
    }

    def lambda_handler(event: Any, context: Any) -> Answer:
        if not isinstance(event, dict):
            return {
                "statusCode": 400,
                "body": {"error": f"the event must be a JSON object, got {kind_of(event)}"},
            }
        process_type = event.get("process_type")
        processor = routes.get(process_type) if isinstance(process_type, str) else None
        if processor is None:
            supported = ", ".join(routes) or "none"
            return {
                "statusCode": 400,
                "body": {
                    "error": f"Unsupported process_type: {process_type!r} "
                    f"(this handler supports: {supported})"
                },
            }
        return processor.process(event, context)

    lambda_handler.preprocessor = pre  # type: ignore[attr-defined]
    lambda_handler.postprocessor = post  # type: ignore[attr-defined]
    return lambda_handler
