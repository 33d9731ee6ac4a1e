"""The preflight (nova_eval_assets/preflight.py) against real parts where they run here:
moto's S3 and STS server on 127.0.0.1, a real `mlflow server`, real closed ports, an HTTP
server for /v1/models; botocore's Stubber on real clients for Lambda and Bedrock (which
moto does not serve: Lambda's Invoke needs Docker there, Bedrock has no foundation models);
boto3's own credential chain with nothing configured."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from botocore.stub import Stubber
from moto.server import ThreadedMotoServer

from nova_eval_assets.engines.openai import HTTPClient, HTTPStatusError
from nova_eval_assets.preflight import (
    AWS_IDENTITY_KEY,
    NO_CREDENTIALS,
    CheckResult,
    bedrock_lookup,
    describe_remote_error,
    failures,
    remote_parts,
    run_preflight,
)
from nova_eval_assets.recipe import LoadedRecipe, load_recipe
from tests.conftest import PROJECT, ticket_lines

BUCKET = "nova-eval-preflight"
LAMBDA_ARN = "arn:aws:lambda:us-west-2:123456789012:function:ticket-metrics"
CALLER = {
    "UserId": "AIDAEXAMPLE",
    "Account": "123456789012",
    "Arn": "arn:aws:iam::123456789012:user/tester",
}


# ---------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def no_ambient_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing from the caller's environment adds a remote part or redirects a client."""
    for name in (
        "MLFLOW_TRACKING_URI",
        "NOVA_EVAL_OUTPUT_ROOT",
        "NOVA_EVAL_S3_ENDPOINT",
        "AWS_ENDPOINT_URL",
        "OPENAI_API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def dummy_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AWS credentials anywhere boto3 looks: no variables, empty files, no IMDS."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    empty = tmp_path / "empty-aws-file"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def write_recipe(tmp_path: Path) -> Callable[..., LoadedRecipe]:
    """A small gen_qa (or judge) recipe in tmp_path; sections merge into the defaults."""

    def write(run: dict | None = None, task: str = "gen_qa", **sections: Any) -> LoadedRecipe:
        data = tmp_path / "tiny.jsonl"
        data.write_text("\n".join(ticket_lines(2)) + "\n")
        recipe = {
            "run": {
                "name": "tiny",
                "model_name_or_path": "smollm2-135m-instruct",
                "data_s3_path": data.name,
                "output_s3_path": str(tmp_path / "outputs"),
                **(run or {}),
            },
            "evaluation": {
                "task": task,
                "strategy": task if task in ("gen_qa", "rft_eval") else "judge",
            },
            **sections,
        }
        path = tmp_path / "tiny.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        return load_recipe(path)

    return write


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def stubbed(service: str, region: str = "us-east-1") -> tuple[Any, Stubber]:
    client = boto3.client(
        service,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return client, Stubber(client)


class Clients:
    """A `clients` factory handing out stubbed real clients; records what was asked."""

    def __init__(self, **clients: Any) -> None:
        self.clients = clients
        self.asked: list[tuple[str, str | None]] = []

    def __call__(self, service: str, region: str | None) -> Any:
        self.asked.append((service, region))
        return self.clients[service]


def sts_stub() -> tuple[Any, Stubber]:
    client, stub = stubbed("sts")
    stub.add_response("get_caller_identity", CALLER, {})
    return client, stub


def by_key(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {result.key: result for result in results}


def one_line(result: CheckResult) -> bool:
    return "\n" not in result.message and result.message.startswith(f"{result.key}: ")


# ---------------------------------------------------------------- local recipes


def test_a_local_recipe_has_no_remote_parts_and_runs_no_check():
    loaded = load_recipe(PROJECT / "recipes" / "support_tickets.yaml")

    def no_client(service: str, region: str | None) -> Any:
        raise AssertionError(f"a local recipe made a {service} client")

    assert remote_parts(loaded) == []
    assert run_preflight(loaded, clients=no_client) == []


def test_remote_parts_names_each_key_and_resource(write_recipe, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    loaded = write_recipe(
        run={
            "data_s3_path": "s3://bucket/data/tickets.jsonl",
            "output_s3_path": "s3://bucket/outputs",
            "model_name_or_path": "us.amazon.nova-lite-v1:0",
        },
        inference={"engine": "bedrock", "region": "us-east-1"},
        processor={"lambda_arn": LAMBDA_ARN, "postprocessing": {"enabled": True}},
    )
    assert remote_parts(loaded) == [
        ("run.data_s3_path", "s3://bucket/data/tickets.jsonl"),
        ("run.output_s3_path", "s3://bucket/outputs"),
        ("processor.lambda_arn", LAMBDA_ARN),
        ("run.model_name_or_path", "us.amazon.nova-lite-v1:0"),
        ("run.mlflow_tracking_uri", "http://mlflow.example:5000"),
    ]
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    judge = write_recipe(
        task="llm_judge",
        judge={"backend": "openai", "endpoint": "http://judge:8000/v1", "model": "qwen"},
    )
    assert remote_parts(judge) == [("judge.endpoint", "http://judge:8000")]


# ---------------------------------------------------------------- no credentials


def test_no_credentials_fail_the_lambda_recipe_in_one_line_fast(no_aws, write_recipe):
    loaded = write_recipe(processor={"lambda_arn": LAMBDA_ARN})
    started = time.monotonic()
    results = run_preflight(loaded)
    elapsed = time.monotonic() - started
    assert elapsed < 3.0
    assert [(r.key, r.resource, r.ok) for r in results] == [
        ("processor.lambda_arn", LAMBDA_ARN, False)
    ]
    assert failures(results)[0].message == (
        "processor.lambda_arn: no AWS credentials found (set AWS_PROFILE or "
        "AWS_ACCESS_KEY_ID, or run on a role)"
    )
    # the error a run meets mid-way says the same
    # a fresh session: an earlier test may have left a default one holding credentials
    client = boto3.session.Session().client("lambda", region_name="us-west-2")
    with pytest.raises(NoCredentialsError) as raised:
        client.invoke(FunctionName=LAMBDA_ARN, InvocationType="DryRun")
    assert describe_remote_error(raised.value, "processor.lambda_arn") == results[0].message


# ---------------------------------------------------------------- S3 (moto's server)


@pytest.fixture
def moto(dummy_aws, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's S3 (and STS) server on a free loopback port, one empty bucket."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # boto3 and storage.py read it
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield client
    finally:
        server.stop()


def bucket_keys(client: Any) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def test_s3_dataset_is_readable_and_output_writable(moto, write_recipe, monkeypatch):
    moto.put_object(Bucket=BUCKET, Key="data/tiny.jsonl", Body=b"{}\n")
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", f"s3://{BUCKET}/outputs")
    loaded = write_recipe(
        run={"data_s3_path": f"s3://{BUCKET}/data/tiny.jsonl", "output_s3_path": ""}
    )
    results = run_preflight(loaded)
    assert failures(results) == []
    found = by_key(results)
    assert list(found) == [AWS_IDENTITY_KEY, "run.data_s3_path", "run.output_s3_path"]
    assert "arn:aws:sts::123456789012:" in found[AWS_IDENTITY_KEY].message  # moto's caller
    assert found["run.data_s3_path"].message == (
        f"run.data_s3_path: s3://{BUCKET}/data/tiny.jsonl is readable (HeadObject, 3 bytes)"
    )
    assert "(from $NOVA_EVAL_OUTPUT_ROOT) is writable" in found["run.output_s3_path"].message
    assert bucket_keys(moto) == ["data/tiny.jsonl"]  # the marker is gone
    assert all(one_line(r) for r in results)

    folder = write_recipe(run={"data_s3_path": f"s3://{BUCKET}/data/"})
    assert by_key(run_preflight(folder))["run.data_s3_path"].ok


def test_a_missing_s3_dataset_fails_naming_the_key_and_uri(moto, write_recipe):
    uri = f"s3://{BUCKET}/data/missing.jsonl"
    results = run_preflight(write_recipe(run={"data_s3_path": uri}))
    (failed,) = failures(results)
    assert failed.key == "run.data_s3_path" and failed.resource == uri
    assert failed.message.startswith(f"run.data_s3_path: no object at {uri}")
    assert "fix run.data_s3_path" in failed.message and one_line(failed)


def test_an_output_bucket_that_does_not_exist_fails(moto, write_recipe):
    results = run_preflight(write_recipe(run={"output_s3_path": "s3://no-such-bucket/out"}))
    (failed,) = failures(results)
    assert failed.key == "run.output_s3_path" and failed.resource == "s3://no-such-bucket/out"
    assert failed.message.startswith(
        "run.output_s3_path: the bucket 'no-such-bucket' does not exist for s3://no-such-bucket/out"
    )
    assert one_line(failed)


def test_an_output_prefix_that_is_not_writable_fails(dummy_aws, write_recipe):
    s3, stub = stubbed("s3")
    stub.add_client_error(
        "put_object",
        service_error_code="AccessDenied",
        service_message="Access Denied",
        http_status_code=403,
    )
    sts, sts_stubber = sts_stub()
    clients = Clients(s3=s3, sts=sts)
    with stub, sts_stubber:
        results = run_preflight(
            write_recipe(run={"output_s3_path": f"s3://{BUCKET}/out"}), clients=clients
        )
    (failed,) = failures(results)
    assert failed.message.startswith(f"run.output_s3_path: access denied for s3://{BUCKET}/out")
    assert "allow s3:PutObject" in failed.message


# ---------------------------------------------------------------- Lambda (Stubber)


def lambda_results(write_recipe, respond: Callable[[Stubber], None]) -> tuple[list, Clients]:
    client, stub = stubbed("lambda", "us-west-2")
    respond(stub)
    sts, sts_stubber = sts_stub()
    clients = Clients(**{"lambda": client, "sts": sts})
    with stub, sts_stubber:
        results = run_preflight(write_recipe(processor={"lambda_arn": LAMBDA_ARN}), clients=clients)
        stub.assert_no_pending_responses()
    return results, clients


def test_lambda_dry_run_204_is_ok(dummy_aws, write_recipe):
    results, clients = lambda_results(
        write_recipe,
        lambda stub: stub.add_response(
            "invoke", {"StatusCode": 204}, {"FunctionName": LAMBDA_ARN, "InvocationType": "DryRun"}
        ),
    )
    assert [r.ok for r in results] == [True, True]
    assert results[0].message == (
        f"{AWS_IDENTITY_KEY}: {CALLER['Arn']} (account 123456789012), for processor.lambda_arn"
    )
    assert (
        results[1].message
        == f"processor.lambda_arn: {LAMBDA_ARN} may be invoked (Invoke DryRun: 204)"
    )
    assert ("lambda", "us-west-2") in clients.asked  # the ARN's region


@pytest.mark.parametrize(
    ("name", "warned"), [("reward-grader", True), ("SageMaker-reward-grader", False)]
)
def test_a_reward_lambda_is_dry_run_and_a_name_nova_would_refuse_is_flagged(
    dummy_aws, write_recipe, name, warned
):
    arn = f"arn:aws:lambda:us-west-2:123456789012:function:{name}"
    client, stub = stubbed("lambda", "us-west-2")
    stub.add_response(
        "invoke", {"StatusCode": 204}, {"FunctionName": arn, "InvocationType": "DryRun"}
    )
    sts, sts_stubber = sts_stub()
    loaded = write_recipe(task="rft_eval", rl_env={"reward_lambda_arn": arn})
    with stub, sts_stubber:
        results = run_preflight(loaded, clients=Clients(**{"lambda": client, "sts": sts}))
        stub.assert_no_pending_responses()
    checked = by_key(results)["rl_env.reward_lambda_arn"]
    assert checked.ok
    assert checked.message.startswith(
        f"rl_env.reward_lambda_arn: {arn} may be invoked (Invoke DryRun: 204)"
    )
    # the Nova Forge SDK refuses such a name on SageMaker HyperPod: said, not failed
    assert ("lacks 'SageMaker' (exact casing)" in checked.message) is warned


@pytest.mark.parametrize(
    ("code", "status", "says"),
    [
        ("ResourceNotFoundException", 404, f"{LAMBDA_ARN} is not found"),
        ("AccessDeniedException", 403, "allow lambda:InvokeFunction"),
    ],
)
def test_lambda_dry_run_errors_fail_with_the_fix(dummy_aws, write_recipe, code, status, says):
    results, _ = lambda_results(
        write_recipe,
        lambda stub: stub.add_client_error(
            "invoke", service_error_code=code, service_message="nope", http_status_code=status
        ),
    )
    (failed,) = failures(results)
    assert failed.key == "processor.lambda_arn" and one_line(failed)
    assert says in failed.message and code in failed.message


# ---------------------------------------------------------------- Bedrock (Stubber)

FOUNDATION_MODEL = {
    "modelDetails": {
        "modelArn": "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0",
        "modelId": "amazon.nova-lite-v1:0",
        "inferenceTypesSupported": ["ON_DEMAND", "INFERENCE_PROFILE"],
        "modelLifecycle": {"status": "ACTIVE"},
    }
}
AVAILABLE = {
    "modelId": "amazon.nova-lite-v1:0",
    "agreementAvailability": {"status": "AVAILABLE"},
    "authorizationStatus": "AUTHORIZED",
    "entitlementAvailability": "AVAILABLE",
    "regionAvailability": "AVAILABLE",
}


def bedrock_results(loaded: LoadedRecipe, respond: Callable[[Stubber], None]) -> list:
    client, stub = stubbed("bedrock")
    respond(stub)
    sts, sts_stubber = sts_stub()
    with stub, sts_stubber:
        results = run_preflight(loaded, clients=Clients(bedrock=client, sts=sts))
        stub.assert_no_pending_responses()
    return results


def bedrock_recipe(write_recipe, model: str = "amazon.nova-lite-v1:0") -> LoadedRecipe:
    return write_recipe(
        run={"model_name_or_path": model}, inference={"engine": "bedrock", "region": "us-east-1"}
    )


def test_an_accessible_bedrock_model_is_ok(dummy_aws, write_recipe):
    def respond(stub: Stubber) -> None:
        stub.add_response(
            "get_foundation_model", FOUNDATION_MODEL, {"modelIdentifier": "amazon.nova-lite-v1:0"}
        )
        stub.add_response(
            "get_foundation_model_availability", AVAILABLE, {"modelId": "amazon.nova-lite-v1:0"}
        )

    results = bedrock_results(bedrock_recipe(write_recipe), respond)
    assert failures(results) == []
    assert results[-1].message == (
        "run.model_name_or_path: Bedrock model amazon.nova-lite-v1:0 in us-east-1 is "
        "accessible (model access AVAILABLE)"
    )


def test_bedrock_access_denied_says_request_model_access(dummy_aws, write_recipe):
    loaded = write_recipe(
        task="llm_judge",
        judge={"backend": "bedrock", "model": "amazon.nova-pro-v1:0", "region": "us-east-1"},
    )

    def respond(stub: Stubber) -> None:
        stub.add_client_error(
            "get_foundation_model",
            service_error_code="AccessDeniedException",
            service_message="You don't have access to the model with the specified model ID.",
            http_status_code=403,
        )

    (failed,) = failures(bedrock_results(loaded, respond))
    assert failed.key == "judge.model" and failed.resource == "amazon.nova-pro-v1:0"
    assert failed.message.startswith(
        "judge.model: access denied to Bedrock model amazon.nova-pro-v1:0 in us-east-1"
    )
    assert "request model access in the Bedrock console / check the IAM policy" in failed.message


def test_a_model_served_only_through_profiles_names_the_profile(dummy_aws, write_recipe):
    details = {**FOUNDATION_MODEL["modelDetails"], "inferenceTypesSupported": ["INFERENCE_PROFILE"]}
    results = bedrock_results(
        bedrock_recipe(write_recipe),
        lambda stub: stub.add_response("get_foundation_model", {"modelDetails": details}),
    )
    (failed,) = failures(results)
    assert "use an inference profile id, e.g. us.amazon.nova-lite-v1:0" in failed.message


def test_an_inference_profile_is_looked_up_as_one(dummy_aws, write_recipe):
    profile = {
        "inferenceProfileName": "US Nova Lite",
        "inferenceProfileArn": (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-lite-v1:0"
        ),
        "models": [
            {"modelArn": "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0"}
        ],
        "inferenceProfileId": "us.amazon.nova-lite-v1:0",
        "status": "ACTIVE",
        "type": "SYSTEM_DEFINED",
    }
    results = bedrock_results(
        bedrock_recipe(write_recipe, "us.amazon.nova-lite-v1:0"),
        lambda stub: stub.add_response(
            "get_inference_profile",
            profile,
            {"inferenceProfileIdentifier": "us.amazon.nova-lite-v1:0"},
        ),
    )
    assert failures(results) == []
    assert "(inference profile, ACTIVE)" in results[-1].message


@pytest.mark.parametrize(
    ("model", "operation"),
    [
        ("amazon.nova-lite-v1:0", "GetFoundationModel"),
        ("amazon.nova-lite-v1:0:300k", "GetFoundationModel"),
        ("eu.anthropic.claude-3-haiku-20240307-v1:0", "GetInferenceProfile"),
        ("apac.amazon.nova-micro-v1:0", "GetInferenceProfile"),
        ("arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0", "GetFoundationModel"),
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-lite-v1:0",
            "GetInferenceProfile",
        ),
        (
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123",
            "GetInferenceProfile",
        ),
        (
            "arn:aws:bedrock:us-east-1:123456789012:custom-model/amazon.nova-lite-v1:0:300k/abcdefghijkl",
            "GetCustomModel",
        ),
        (
            "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abcdefghijkl",
            "GetProvisionedModelThroughput",
        ),
        ("arn:aws:bedrock:us-east-1:123456789012:imported-model/abcdefghijkl", "GetImportedModel"),
    ],
)
def test_bedrock_lookup_picks_the_operation_for_the_id(model, operation):
    found = bedrock_lookup(model)
    assert found is not None and found[0] == operation
    service = boto3.client("bedrock", region_name="us-east-1").meta.service_model
    assert found[1] in service.operation_model(operation).input_shape.members


# ---------------------------------------------------------------- HTTP: MLflow, OpenAI


def test_closed_ports_fail_in_one_line_fast(write_recipe):
    mlflow_port, openai_port = closed_port(), closed_port()
    loaded = write_recipe(
        run={"mlflow_tracking_uri": f"http://127.0.0.1:{mlflow_port}"},
        inference={"engine": "openai", "endpoint": f"http://127.0.0.1:{openai_port}/v1"},
    )
    started = time.monotonic()
    results = run_preflight(loaded, timeout_s=5.0)
    assert time.monotonic() - started < 3.0
    found = by_key(failures(results))
    assert set(found) == {"inference.endpoint", "run.mlflow_tracking_uri"}
    assert found["inference.endpoint"].message == (
        f"inference.endpoint: cannot reach http://127.0.0.1:{openai_port} (connection refused); "
        "start the server or fix inference.endpoint"
    )
    assert found["run.mlflow_tracking_uri"].message == (
        f"run.mlflow_tracking_uri: cannot reach the MLflow tracking server "
        f"http://127.0.0.1:{mlflow_port} (connection refused); start it or fix "
        "run.mlflow_tracking_uri"
    )


class FakeServer(BaseHTTPRequestHandler):
    """/health (or not), MLflow's experiments/search, and /v1/models behind a bearer key."""

    health = True

    def log_message(self, *args: Any) -> None:
        pass

    def answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health" and self.health:
            return self.answer(200, b"OK", "text/plain")
        if self.path.startswith("/api/2.0/mlflow/experiments/search"):
            return self.answer(200, json.dumps({"experiments": []}).encode())
        if self.path == "/v1/models":
            if self.headers.get("Authorization") != "Bearer secret":
                return self.answer(401, b'{"error": "invalid api key"}')
            listing = {"object": "list", "data": [{"id": "tiny-model", "object": "model"}]}
            return self.answer(200, json.dumps(listing).encode())
        return self.answer(404, b'{"error": "not found"}')


@pytest.fixture
def fake_server() -> Iterator[Callable[[bool], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(health: bool = True) -> str:
        handler = type("Handler", (FakeServer,), {"health": health})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_an_openai_endpoint_answers_and_lists_the_model(fake_server, write_recipe, monkeypatch):
    url = fake_server(True)
    loaded = write_recipe(
        run={"model_name_or_path": "tiny-model"},
        inference={"engine": "openai", "endpoint": url, "api_key_env": "TINY_KEY"},
    )
    monkeypatch.setenv("TINY_KEY", "secret")
    (ok,) = run_preflight(loaded)
    assert (
        ok.ok and ok.message == f"inference.endpoint: {url} answers and serves model 'tiny-model'"
    )

    monkeypatch.delenv("TINY_KEY")
    (failed,) = run_preflight(loaded)
    assert not failed.ok and failed.message == (
        f"inference.endpoint: {url} refused the API key (HTTP 401 on GET /v1/models); "
        "$TINY_KEY (inference.api_key_env) is not set: set it to the server's key"
    )


def test_a_managed_server_is_not_checked(write_recipe):
    loaded = write_recipe(inference={"engine": "openai", "server": {"command": "serve {port}"}})
    (result,) = run_preflight(loaded)
    assert result.ok and result.message == "inference.server: not checked (started by the replica)"


def test_mlflow_falls_back_to_experiments_search(fake_server, write_recipe):
    url = fake_server(False)  # no /health
    (result,) = run_preflight(write_recipe(run={"mlflow_tracking_uri": url}))
    assert result.ok
    assert result.message == (
        f"run.mlflow_tracking_uri: {url} answers (GET /api/2.0/mlflow/experiments/search)"
    )


def test_databricks_and_arn_tracking_uris_are_not_checked(write_recipe, monkeypatch):
    (databricks,) = run_preflight(write_recipe(run={"mlflow_tracking_uri": "databricks"}))
    assert databricks.ok and "not checked" in databricks.message
    arn = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/team"
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object())  # plugin present
    (sagemaker,) = run_preflight(write_recipe(run={"mlflow_tracking_uri": arn}))
    assert sagemaker.ok and sagemaker.message == (
        f"run.mlflow_tracking_uri: {arn}: not checked (a SageMaker MLflow ARN)"
    )


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on loopback (SQLite store)."""
    folder = tmp_path_factory.mktemp("mlflow")
    port = closed_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with (folder / "server.log").open("wb") as log:
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"),
                *("--port", str(port), "--workers", "1"),
                *("--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}"),
                *("--artifacts-destination", str(folder / "artifacts")),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((folder / "server.log").read_text()[-3000:]) from None
                time.sleep(0.25)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_a_real_mlflow_server_answers(mlflow_server, write_recipe, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    (result,) = run_preflight(write_recipe())
    assert result.ok and result.message == (
        f"run.mlflow_tracking_uri: {mlflow_server} (from $MLFLOW_TRACKING_URI) answers "
        "(GET /health)"
    )


# ---------------------------------------------------------------- describe_remote_error


def client_error(code: str, operation: str, status: int = 400) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": f"{code} happened"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)  # type: ignore[arg-type]


def test_describe_remote_error_on_aws_errors():
    key = "processor.lambda_arn"
    assert describe_remote_error(NoCredentialsError(), key) == f"{key}: {NO_CREDENTIALS}"
    expired = describe_remote_error(
        client_error("ExpiredTokenException", "Invoke"), key, LAMBDA_ARN
    )
    assert expired == (
        f"{key}: the AWS credentials have expired (ExpiredTokenException on Invoke: "
        "ExpiredTokenException happened); refresh them (aws sso login, a new "
        "AWS_SESSION_TOKEN, or a new role session)"
    )
    throttled = describe_remote_error(
        client_error("ThrottlingException", "Converse", 429), "run.model_name_or_path", "m"
    )
    assert throttled.startswith("run.model_name_or_path: throttled by AWS for m (")
    assert "lower the concurrency" in throttled
    endpoint = "https://lambda.us-west-2.amazonaws.com/"
    unreachable = describe_remote_error(EndpointConnectionError(endpoint_url=endpoint), key)
    assert unreachable.startswith(f"{key}: cannot reach {endpoint} (connection failed")
    # an unknown error, and one from an unknown code, are not described
    assert describe_remote_error(ValueError("bad row")) is None
    assert describe_remote_error(client_error("ValidationException", "Converse")) is None
    # the cause of a wrapping error is
    try:
        try:
            raise NoCredentialsError()
        except NoCredentialsError as exc:
            raise RuntimeError("postprocessing failed") from exc
    except RuntimeError as wrapped:
        assert describe_remote_error(wrapped) == NO_CREDENTIALS


def test_describe_remote_error_on_refused_connections(dummy_aws):
    port = closed_port()
    url = f"http://127.0.0.1:{port}"
    assert describe_remote_error(ConnectionRefusedError(111, "Connection refused"), "k", url) == (
        f"k: connection refused by {url}; check that the server is up, the host and the port"
    )
    with pytest.raises(urllib.error.URLError) as refused:
        urllib.request.urlopen(f"{url}/v1/models", timeout=2)
    assert describe_remote_error(refused.value, "inference.endpoint", url) == (
        f"inference.endpoint: cannot reach {url} (connection refused); check that the server "
        "is up and the URL"
    )
    client = HTTPClient(max_retries=0)
    with pytest.raises(Exception) as failed:
        client.request(f"{url}/v1/models")
    line = describe_remote_error(failed.value, "judge.endpoint")
    assert line.startswith(f"judge.endpoint: cannot reach {url}/v1/models: ")
    lam = boto3.client(
        "lambda",
        region_name="us-west-2",
        endpoint_url=url,
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2),
    )
    with pytest.raises(EndpointConnectionError) as boto_refused:
        lam.invoke(FunctionName=LAMBDA_ARN, InvocationType="DryRun")
    assert describe_remote_error(boto_refused.value, "processor.lambda_arn").startswith(
        f"processor.lambda_arn: cannot reach {url}"
    )
    denied = HTTPStatusError(f"{url}/v1/chat/completions", 401, "bad key")
    assert "inference.api_key_env" in describe_remote_error(denied, "inference.endpoint")
