"""The processor runner: loading local handlers, per-example error recording, and the AWS Lambda
path tested at its network boundary (boto3 against a local HTTP server speaking the Lambda
Invoke API; see tests/byom_lambda_server.py)."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest

from nova_eval_assets.byom import build_lambda_handler, postprocess
from nova_eval_assets.byom.runner import (
    CallResult,
    ProcessorConfigError,
    ProcessorErrorRateExceeded,
    ProcessorRunner,
    check_error_rate,
    load_handler,
)
from tests import byom_lambda_server as fake
from tests.byom_lambda_server import FakeLambda

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def post_rows(*outputs: str) -> list[dict]:
    return [{"prompt": f"p{i}", "inference_output": o, "gold": "g"} for i, o in enumerate(outputs)]


def metric_answer(value: float = 1.0) -> dict:
    return {"statusCode": 200, "body": [{"metric": "m", "value": value}]}


def by_mode(event, context):
    """A raw handler (no SDK) whose behaviour the inference output chooses."""
    mode = event["data"]["inference_output"]
    if mode == "raise":
        raise RuntimeError("kaboom")
    if mode == "status500":
        return {"statusCode": 500, "body": {"error": "backend down"}}
    if mode == "malformed":
        return {"statusCode": 200, "body": {"metric": "m", "value": 1}}
    if mode == "nan":
        return {"statusCode": 200, "body": [{"metric": "m", "value": float("nan")}]}
    if mode == "not_json":
        return {"statusCode": 200, "body": [{"metric": "m", "value": object()}]}
    if mode == "slow":
        time.sleep(2)
    return metric_answer(float(len(mode)))


# ---------------------------------------------------------------- loading handlers


def test_file_handler_is_relative_to_the_recipe_and_sees_its_siblings(tmp_path):
    folder = tmp_path / "procs"
    folder.mkdir()
    (folder / "helper_for_byom_test.py").write_text("VALUE = 7.0\n")
    (folder / "h.py").write_text(
        textwrap.dedent(
            """
            from helper_for_byom_test import VALUE

            def handler(event, context):
                return {"statusCode": 200, "body": [{"metric": "v", "value": VALUE}]}
            """
        )
    )
    handler = load_handler("procs/h.py:handler", tmp_path)
    assert handler({}, None)["body"][0]["value"] == 7.0
    assert load_handler(f"{folder / 'h.py'}:handler", Path("/")) is handler  # absolute, cached


def test_module_handler(tmp_path, monkeypatch):
    package = tmp_path / "byom_test_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "metrics.py").write_text("def handler(event, context):\n    return 'module'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_handler("byom_test_pkg.metrics:handler", Path("/nowhere"))({}, None) == "module"


def test_the_shipped_case_study_handler_loads():
    handler = load_handler("processors/ticket_classification.py:lambda_handler", RECIPES)
    assert handler.postprocessor is not None and handler.preprocessor is not None


@pytest.mark.parametrize(
    ("source", "spec", "message"),
    [
        (None, "h.py", "must be 'path/to/file.py:function' or 'package.module:function'"),
        (None, "h.py:not-an-identifier", "must be 'path/to/file.py:function'"),
        (None, "missing.py:handler", "file not found"),
        ("import no_such_module_anywhere\n", "h.py:handler", "importing"),
        ("x = 1\n", "h.py:handler", "has no 'handler'; callables there: none"),
        ("handler = 3\n", "h.py:handler", "'handler' in"),
        (None, "no_such_package_xyz.mod:handler", "cannot import module 'no_such_package_xyz.mod'"),
    ],
)
def test_a_handler_that_cannot_be_loaded_is_a_config_error(tmp_path, source, spec, message):
    if source is not None:
        (tmp_path / "h.py").write_text(source)
    with pytest.raises(ProcessorConfigError, match=r"processor\.handler") as info:
        load_handler(spec, tmp_path)
    assert message in str(info.value)


def test_runner_needs_exactly_one_target():
    with pytest.raises(ProcessorConfigError, match="exactly one"):
        ProcessorRunner()
    with pytest.raises(ProcessorConfigError, match="exactly one"):
        ProcessorRunner(handler=by_mode, lambda_arn=fake.arn("f"))
    with pytest.raises(ProcessorConfigError, match="not a Lambda function ARN"):
        ProcessorRunner(lambda_arn="my-function")


# ---------------------------------------------------------------- local handlers


def test_local_errors_are_recorded_per_example_and_the_run_completes():
    runner = ProcessorRunner(handler=by_mode, timeout_s=0.5)
    modes = ["ok", "raise", "status500", "malformed", "nan", "not_json", "slow", "fine"]
    started = time.perf_counter()
    results = runner.postprocess(post_rows(*modes))
    assert time.perf_counter() - started < 1.9  # the slow call was abandoned at 0.5 s
    errors = dict(zip(modes, [r.error for r in results], strict=True))
    assert errors["ok"] is None and errors["fine"] is None
    assert results[0].body == [{"metric": "m", "value": 2.0}]
    assert results[-1].body == [{"metric": "m", "value": 4.0}]
    assert errors["raise"] == "handler raised RuntimeError: kaboom"
    assert errors["status500"] == "statusCode 500: backend down"
    assert errors["malformed"].startswith("malformed answer: body must be a list")
    assert (
        errors["nan"]
        == "malformed answer: body[0].value (metric 'm') must be a finite number, got nan"
    )
    assert errors["not_json"].startswith("malformed answer: the answer is not JSON-serializable")
    assert errors["slow"] == "timeout: no answer within 0.5 s"
    assert all(r.seconds > 0 for r in results)
    assert 0.45 < results[modes.index("slow")].seconds < 1.5


def test_local_handler_gets_a_json_copy_and_a_lambda_like_context():
    seen = {}

    def handler(event, context):
        seen["remaining"] = context.get_remaining_time_in_millis()
        seen["request_id"] = context.aws_request_id
        event["data"]["prompt"] = "mutated"
        return {"statusCode": 200, "body": {"system": None, "prompt": "p", "gold": "g"}}

    rows = [{"system": None, "prompt": "original", "gold": "g"}]
    (result,) = ProcessorRunner(handler=handler, timeout_s=5).preprocess(rows)
    assert result.ok and result.body == {"system": None, "prompt": "p", "gold": "g"}
    assert rows[0]["prompt"] == "original"
    assert 0 < seen["remaining"] <= 5000 and seen["request_id"]


def test_sdk_handler_errors_are_recorded_with_the_sdk_message():
    @postprocess
    def strict(event, context):
        return {"statusCode": 200, "body": [{"metric": "m", "value": float("inf")}]}

    (result,) = ProcessorRunner(handler=build_lambda_handler(postprocessor=strict)).postprocess(
        post_rows("x")
    )
    assert result.error.startswith("handler raised PostprocessError: strict answered wrongly")
    assert "must be a finite number, got inf" in result.error
    # an SDK handler asked for a stage it does not serve answers 400, recorded as such
    (pre,) = ProcessorRunner(handler=build_lambda_handler(postprocessor=strict)).preprocess(
        [{"system": None, "prompt": "p", "gold": "g"}]
    )
    assert pre.error.startswith("statusCode 400: Unsupported process_type: 'preprocess'")


def test_local_concurrency_keeps_the_order():
    def slow_echo(event, context):
        time.sleep(0.05)
        return metric_answer(float(event["data"]["prompt"][1:]))

    runner = ProcessorRunner(handler=slow_echo, concurrency=4)
    started = time.perf_counter()
    results = runner.postprocess(post_rows(*["o"] * 12))
    assert time.perf_counter() - started < 12 * 0.05
    assert [r.body[0]["value"] for r in results] == [float(i) for i in range(12)]


def test_error_rate_policy():
    check_error_rate("postprocessing", 5, 100, None)  # unset: never fails
    check_error_rate("postprocessing", 5, 100, 0.05)  # at the limit: fine
    check_error_rate("postprocessing", 0, 0, 0.0)
    with pytest.raises(ProcessorErrorRateExceeded, match=r"6 of 100 examples .*6.0%.*0.05"):
        check_error_rate("postprocessing", 6, 100, 0.05)


# ---------------------------------------------------------------- AWS Lambda (network boundary)


@pytest.fixture
def lam(monkeypatch):
    with FakeLambda() as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", server.url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        yield server


def lambda_runner(name: str, **options) -> ProcessorRunner:
    options = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, **options}
    return ProcessorRunner(lambda_arn=fake.arn(name), **options)


def test_lambda_runs_an_sdk_handler_unchanged(lam):
    ticket = load_handler("processors/ticket_classification.py:lambda_handler", RECIPES)
    lam.functions["tickets"] = fake.run_handler(ticket)
    gold = '{"class": "network", "thought": "the VPN drops", "description": "VPN drops"}'
    rows = [
        {"prompt": "VPN drops every hour", "inference_output": gold, "gold": gold},
        {"prompt": "VPN drops every hour", "inference_output": "no idea", "gold": gold},
    ]
    good, bad = lambda_runner("tickets").postprocess(rows)
    assert good.ok and bad.ok
    assert {m["metric"]: m["value"] for m in good.body}["class_correct"] == 1.0
    assert {m["metric"]: m["value"] for m in bad.body}["schema_valid"] == 0.0
    (pre,) = lambda_runner("tickets").preprocess(
        [{"system": "s", "prompt": " a \t b ", "gold": "g"}]
    )
    assert pre.body == {"system": "s", "prompt": "a b", "gold": "g"}
    assert ("tickets", {"process_type": "postprocess", "data": rows[0]}) in lam.requests


def test_lambda_throttling_is_retried_with_backoff(lam):
    def throttled_twice(event, attempt):
        return fake.throttled() if attempt <= 2 else fake.result(metric_answer(attempt))

    lam.functions["busy"] = throttled_twice
    results = lambda_runner("busy", concurrency=3).postprocess(post_rows("a", "b", "c", "d"))
    assert [r.error for r in results] == [None] * 4
    assert [r.attempts for r in results] == [3] * 4
    assert [r.body[0]["value"] for r in results] == [3.0] * 4
    assert lam.calls_to("busy") == 12


def test_lambda_throttling_past_the_retries_is_recorded(lam):
    lam.functions["always_busy"] = lambda event, attempt: fake.throttled()
    (result,) = lambda_runner("always_busy", max_retries=2).postprocess(post_rows("a"))
    assert result.error == (
        "throttled (TooManyRequestsException: Rate exceeded); gave up after 3 attempts"
    )
    assert result.attempts == 3 and lam.calls_to("always_busy") == 3


def test_lambda_5xx_is_retried_then_recorded(lam):
    lam.functions["flaky"] = lambda event, attempt: (
        fake.service_error(500, "ServiceException", "internal")
        if attempt == 1
        else fake.result(metric_answer())
    )
    lam.functions["down"] = lambda event, attempt: fake.service_error(
        502, "EC2UnexpectedException", "ENI failure"
    )
    (flaky,) = lambda_runner("flaky").postprocess(post_rows("a"))
    assert flaky.ok and flaky.attempts == 2
    (down,) = lambda_runner("down", max_retries=1).postprocess(post_rows("a"))
    assert down.error == (
        "Lambda service error 502 (EC2UnexpectedException: ENI failure); gave up after 2 attempts"
    )


def test_lambda_function_errors_are_recorded_per_example(lam):
    lam.functions["mixed"] = lambda event, attempt: {
        "ok": fake.result(metric_answer(5)),
        "raise": fake.function_error("ValueError", "bad gold"),
        "status500": fake.result({"statusCode": 500, "body": {"error": "db down"}}),
        "malformed": fake.raw(b"<html>oops</html>"),
        "shape": fake.result({"statusCode": 200, "body": [{"metric": "m"}]}),
        "slow": fake.result(metric_answer(), delay_s=1.5),
    }[event["data"]["inference_output"]]
    modes = ["ok", "raise", "status500", "malformed", "shape", "slow", "ok"]
    results = lambda_runner("mixed", timeout_s=0.5, concurrency=4).postprocess(post_rows(*modes))
    errors = [r.error for r in results]
    assert errors[0] is None and errors[-1] is None and results[0].body[0]["value"] == 5
    assert errors[1] == "function error (Unhandled): ValueError: bad gold"
    assert errors[2] == "statusCode 500: db down"
    assert errors[3].startswith("malformed answer: the Lambda payload is not JSON")
    assert "<html>oops" in errors[3]
    assert errors[4] == "malformed answer: body[0] is missing 'value'"
    assert errors[5] == "timeout: no answer within 0.5 s"
    assert results[5].attempts == 1  # a timeout is not retried


def test_lambda_client_errors_are_not_retried(lam):
    (result,) = lambda_runner("not_deployed").postprocess(post_rows("a"))
    assert result.error.startswith("Lambda invoke failed 404 (ResourceNotFoundException")
    assert result.attempts == 1


def test_lambda_concurrency_is_bounded(lam):
    lam.functions["sleepy"] = lambda event, attempt: fake.result(metric_answer(), delay_s=0.1)
    results = lambda_runner("sleepy", concurrency=3).postprocess(post_rows(*["x"] * 12))
    assert all(r.ok for r in results)
    assert 2 <= lam.max_in_flight <= 3


def test_call_result_defaults():
    assert CallResult(body=[]).ok and not CallResult(error="x").ok
    assert "byom_lambda_server" in sys.modules["tests.byom_lambda_server"].__name__
