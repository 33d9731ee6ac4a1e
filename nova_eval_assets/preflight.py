"""Preflight: every remote part a recipe uses is reachable and allowed, checked before any
model loads (``nova-eval validate --preflight``, ``nova-eval run``, a blocking asset check).

A recipe without AWS credentials used to generate every row and then fail in
postprocessing; here the same recipe fails in a second, with one line (wrapped here)::

    processor.lambda_arn: no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID,
    or run on a role)

Each check is cheap and has no side effect that lasts:

======================  ============================================================
any AWS part            credentials resolve (boto3's chain); STS ``GetCallerIdentity``
                        says whose they are (``aws.identity``). No credentials, or
                        invalid / expired ones, fail every AWS part with its own key
                        and skip that part's own check.
run.data_s3_path        ``HeadObject`` on the dataset (a prefix: one key listed); a
/ dataset.path          benchmark's ``dataset.path`` the same
evaluation.task         a benchmark's hub dataset: in huggingface_hub's cache, else one
                        metadata request to the hub (gated: the terms must be accepted)
run.output_s3_path      a marker ``<root>/<run.name>/_nova_eval_preflight/<uuid>`` put and
                        deleted (the output root: the key, or $NOVA_EVAL_OUTPUT_ROOT)
processor.lambda_arn    Lambda ``Invoke`` with ``InvocationType=DryRun`` (204: the
                        function exists and this identity may invoke it)
run.model_name_or_path  Bedrock's control plane: ``GetFoundationModel`` (+ its
/ judge.model           ``GetFoundationModelAvailability``), ``GetInferenceProfile``,
                        ``GetCustomModel``, ``GetProvisionedModelThroughput``, ... by the
                        kind of model id or ARN
run.mlflow_tracking_uri http(s): ``GET {uri}/health``, else
                        ``GET {uri}/api/2.0/mlflow/experiments/search?max_results=1``;
                        ``databricks`` / SageMaker ARNs: not checked (the plugin must be
                        installed for an ARN)
inference.endpoint /    ``GET {endpoint}/v1/models`` answers (401/403: the API key in
judge.endpoint          ``*.api_key_env``); a managed ``inference.server`` is not checked
                        (the replica starts it)
======================  ============================================================

Every network call has ``timeout_s`` and at most one retry, so a closed port fails in about
a second. Every failure is one line that starts with the recipe key, names the resource
and says the fix; `describe_remote_error` writes the same kind of line for a remote error
met mid-run.

The AWS clients come from ``clients(service, region)``: boto3 clients by default (S3 on
``$NOVA_EVAL_S3_ENDPOINT`` / ``$AWS_ENDPOINT_URL`` as storage.py does); tests hand in
stubbed ones. HTTP goes through the engines' one HTTP client (engines/openai.py).

No Dagster here; boto3 is imported only for a recipe that has an AWS part.
"""

from __future__ import annotations

import base64
import http.client
import importlib.util
import os
import re
import urllib.error
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nova_eval_assets import storage, tracking
from nova_eval_assets.byom.runner import ARN_PATTERN as LAMBDA_ARN_PATTERN
from nova_eval_assets.engines.bedrock import arn_region
from nova_eval_assets.engines.openai import (
    ConnectionFailure,
    HTTPClient,
    HTTPStatusError,
    base_url,
)
from nova_eval_assets.layout import OUTPUT_ROOT_ENV, output_root
from nova_eval_assets.recipe import LoadedRecipe, resolve_relative
from nova_eval_assets.tasks.sources import hub_problem

#: (service, region) -> a boto3 client; the default makes real ones (module docstring)
ClientFactory = Callable[[str, "str | None"], Any]

#: the key of the one result that says whose AWS credentials the checks use
AWS_IDENTITY_KEY = "aws.identity"
NO_CREDENTIALS = "no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID, or run on a role)"
MARKER_PREFIX = "_nova_eval_preflight"
DEFAULT_TIMEOUT_S = 5.0

_MODEL_ACCESS_FIX = "request model access in the Bedrock console / check the IAM policy"


class RemoteAccessError(RuntimeError):
    """A remote part failed mid-run in a way no retry fixes (credentials gone, access
    denied): its message is the one line `describe_remote_error` gives."""


@dataclass(frozen=True)
class CheckResult:
    """One check of one remote part."""

    key: str  # the recipe key, e.g. "processor.lambda_arn"
    resource: str  # what was checked: the ARN, s3:// URI, URL, model id
    ok: bool
    message: str  # one line; a failure's says what failed and the fix


# ---------------------------------------------------------------- what the recipe uses


@dataclass(frozen=True)
class _Part:
    key: str
    resource: str
    kind: str  # s3_data | s3_output | lambda | bedrock | mlflow | openai | managed_server
    region: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_aws(self) -> bool:
        return self.kind in ("s3_data", "s3_output", "lambda", "bedrock")


def _parts(loaded: LoadedRecipe) -> list[_Part]:
    recipe = loaded.recipe
    run = recipe.run
    parts: list[_Part] = []

    # an Inspect task's rows come from its own code, run when the evaluation runs
    benchmark = None if recipe.evaluation.inspect_specs else recipe.evaluation.benchmark
    if benchmark is not None:
        if recipe.dataset.path is not None:
            data = resolve_relative(recipe.dataset.path, loaded.path.parent)
            if data.startswith("s3://"):
                parts.append(_Part("dataset.path", data, "s3_data"))
        elif benchmark.hub is not None:
            revision = recipe.dataset.revision or benchmark.hub.revision
            resource = f"hf://datasets/{benchmark.hub.repo}@{revision}"
            options = {"task": benchmark, "revision": revision,
                       "subtasks": recipe.evaluation.subtasks}  # fmt: skip
            parts.append(_Part("evaluation.task", resource, "hub_dataset", options=options))
    elif run.data_s3_path is not None and not run.reads_training_channel:
        data = loaded.resolve_data_path()
        if data.startswith("s3://"):
            parts.append(_Part("run.data_s3_path", data, "s3_data"))

    root = output_root(loaded)
    if root.startswith("s3://"):
        source = "run.output_s3_path" if run.output_s3_path else f"${OUTPUT_ROOT_ENV}"
        marker_folder = storage.join(root, loaded.name, MARKER_PREFIX)
        parts.append(
            _Part(
                "run.output_s3_path",
                root,
                "s3_output",
                options={"source": source, "folder": marker_folder},
            )
        )

    processor = recipe.active_processor
    if processor is not None and processor.lambda_arn:
        match = LAMBDA_ARN_PATTERN.match(processor.lambda_arn)
        region = match.group("region") if match else None
        key = "rl_env.reward_lambda_arn" if recipe.rl_env is not None else "processor.lambda_arn"
        options = {"reward": processor.is_reward_function}
        parts.append(_Part(key, processor.lambda_arn, "lambda", region, options))

    inference = recipe.inference
    if recipe.evaluation.is_judge:  # a judge recipe generates nothing: only its judge runs
        judge = recipe.judge
        model = (judge.model if judge else None) or run.model_name_or_path
        if judge is not None and judge.backend == "bedrock":
            parts.append(
                _Part(
                    "judge.model",
                    model,
                    "bedrock",
                    judge.region or arn_region(model),
                    {"section": "judge", "endpoint": judge.endpoint},
                )
            )
        elif judge is not None and judge.backend == "openai" and judge.endpoint:
            parts.append(
                _Part(
                    "judge.endpoint",
                    base_url(judge.endpoint),
                    "openai",
                    options={"section": "judge", "model": model, "api_key_env": judge.api_key_env},
                )
            )
    elif inference.engine == "bedrock":
        model = run.model_name_or_path
        parts.append(
            _Part(
                "run.model_name_or_path",
                model,
                "bedrock",
                inference.region or arn_region(model),
                {"section": "inference", "endpoint": inference.endpoint},
            )
        )
    elif inference.engine == "openai" and inference.server is not None:
        parts.append(_Part("inference.server", inference.server.command, "managed_server"))
    elif inference.engine == "openai" and inference.endpoint:
        parts.append(
            _Part(
                "inference.endpoint",
                base_url(inference.endpoint),
                "openai",
                options={
                    "section": "inference",
                    "model": run.model_name_or_path,
                    "api_key_env": inference.api_key_env,
                },
            )
        )

    uri = tracking.tracking_uri(loaded)
    if uri and _is_remote_tracking_uri(uri):
        source = "run.mlflow_tracking_uri" if run.mlflow_tracking_uri else "$MLFLOW_TRACKING_URI"
        parts.append(
            _Part(
                "run.mlflow_tracking_uri",
                tracking.redact(uri),
                "mlflow",
                options={"uri": uri, "source": source},
            )
        )
    return parts


def _is_remote_tracking_uri(uri: str) -> bool:
    scheme = uri.split(":", 1)[0].lower()  # "databricks", "databricks://profile", ...
    return uri.startswith(("http://", "https://", "arn:")) or scheme.startswith("databricks")


def remote_parts(loaded: LoadedRecipe) -> list[tuple[str, str]]:
    """``(key, resource)`` of every remote part the recipe uses; ``[]`` for a local recipe."""
    return [(part.key, part.resource) for part in _parts(loaded)]


# ---------------------------------------------------------------- running the checks


def failures(results: list[CheckResult]) -> list[CheckResult]:
    """The failed results, in order."""
    return [result for result in results if not result.ok]


def run_preflight(
    loaded: LoadedRecipe,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    clients: ClientFactory | None = None,
) -> list[CheckResult]:
    """Check every remote part of the recipe (module docstring); one result per check, in
    the order: AWS identity, then the parts as `remote_parts` lists them. Nothing here
    raises for a remote problem: it is a failed result."""
    parts = _parts(loaded)
    if not parts:
        return []
    results: list[CheckResult] = []
    aws_parts = [part for part in parts if part.uses_aws]
    aws: _Aws | None = None
    blocked: dict[str, CheckResult] = {}
    if aws_parts:
        aws = _Aws(timeout_s, clients)
        identity, blocked = aws.identity(aws_parts)
        if identity is not None:
            results.append(identity)
    for part in parts:
        if part.key in blocked:
            results.append(blocked[part.key])
            continue
        try:
            results.append(_CHECKS[part.kind](part, aws, timeout_s))
        except Exception as exc:  # a check never raises: an unforeseen error is a failure
            line = describe_remote_error(exc, part.key, part.resource)
            results.append(
                CheckResult(
                    part.key,
                    part.resource,
                    False,
                    line or _line(f"{part.key}: checking {part.resource} failed: {exc!r}"),
                )
            )
    return results


class _Aws:
    """One boto3 session and its clients for one preflight."""

    def __init__(self, timeout_s: float, clients: ClientFactory | None) -> None:
        self.timeout_s = timeout_s
        self._factory = clients
        self._session: Any = None
        self._clients: dict[tuple[str, str | None], Any] = {}

    @property
    def session(self) -> Any:
        if self._session is None:
            import boto3

            self._session = boto3.Session()
        return self._session

    def region(self, preferred: str | None = None) -> str | None:
        return preferred or self.session.region_name

    def client(self, service: str, region: str | None = None) -> Any:
        key = (service, region)
        if key not in self._clients:
            if self._factory is not None:
                self._clients[key] = self._factory(service, region)
            else:
                self._clients[key] = self._boto3_client(service, region)
        return self._clients[key]

    def _boto3_client(self, service: str, region: str | None) -> Any:
        from botocore.config import Config

        config = Config(
            connect_timeout=self.timeout_s,
            read_timeout=self.timeout_s,
            retries={"mode": "standard", "total_max_attempts": 2},  # one retry at most
        )
        endpoint = None
        if service == "s3":  # the endpoint storage.py (pyarrow) uses
            endpoint = (
                os.environ.get("NOVA_EVAL_S3_ENDPOINT")
                or os.environ.get("AWS_ENDPOINT_URL")
                or None
            )
            region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return self.session.client(
            service, region_name=region, endpoint_url=endpoint, config=config
        )

    def identity(self, parts: list[_Part]) -> tuple[CheckResult | None, dict[str, CheckResult]]:
        """The identity result (None when credentials fail) and, when they fail, one failure
        per AWS part by key (its own check is skipped: it could not succeed)."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        def blocked(exc: BaseException) -> dict[str, CheckResult]:
            return {
                part.key: CheckResult(
                    part.key,
                    part.resource,
                    False,
                    describe_remote_error(exc, part.key, part.resource)
                    or _line(
                        f"{part.key}: AWS credentials cannot be used ({exc}); check AWS_PROFILE "
                        "and the AWS config and credentials files"
                    ),
                )
                for part in parts
            }

        try:
            credentials = self.session.get_credentials()
            if credentials is None:
                raise NoCredentialsError()
            frozen = credentials.get_frozen_credentials()  # refreshable ones fetch here
            if not frozen.access_key:
                raise NoCredentialsError()
        except (BotoCoreError, ClientError) as exc:
            return None, blocked(exc)

        used = ", ".join(dict.fromkeys(part.key for part in parts))
        region = self.region() or next((p.region for p in parts if p.region), None)
        try:
            answer = self.client("sts", region or "us-east-1").get_caller_identity()
        except ClientError as exc:
            code = _error_code(exc)
            if code in _EXPIRED_CODES or code in _INVALID_CODES:
                return None, blocked(exc)
            why = describe_remote_error(exc) or _line(str(exc))
            return _identity_not_checked(used, why), {}
        except BotoCoreError as exc:  # STS unreachable (a VPC without an STS endpoint)
            why = describe_remote_error(exc) or _line(str(exc))
            return _identity_not_checked(used, why), {}
        arn = answer.get("Arn", "?")
        account = answer.get("Account", "?")
        return (
            CheckResult(
                AWS_IDENTITY_KEY,
                arn,
                True,
                f"{AWS_IDENTITY_KEY}: {arn} (account {account}), for {used}",
            ),
            {},
        )


def _identity_not_checked(used: str, why: str) -> CheckResult:
    return CheckResult(
        AWS_IDENTITY_KEY,
        "sts:GetCallerIdentity",
        True,
        _line(f"{AWS_IDENTITY_KEY}: credentials found, identity not checked ({why}); for {used}"),
    )


# ---------------------------------------------------------------- S3


def _check_s3_data(part: _Part, aws: _Aws, timeout_s: float) -> CheckResult:
    from botocore.exceptions import ClientError

    client = aws.client("s3")
    bucket, key = storage.split_s3(part.resource)
    fail = _failer(part)
    if not bucket:
        return fail(f"{part.resource} names no bucket; use s3://<bucket>/<key>")

    def one_key(prefix: str) -> str | None:
        listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        found = listing.get("Contents") or []
        return found[0]["Key"] if found else None

    try:
        if not key or key.endswith("/"):
            first = one_key(key)
            if first is None:
                return fail(
                    f"no object under {part.resource}; upload the dataset or fix run.data_s3_path"
                )
            return _ok(part, f"{part.resource} is readable (holds s3://{bucket}/{first})")
        head = client.head_object(Bucket=bucket, Key=key)
        size = head.get("ContentLength")
        shown = f", {size} bytes" if size is not None else ""
        return _ok(part, f"{part.resource} is readable (HeadObject{shown})")
    except ClientError as exc:
        code = _error_code(exc)
        if code not in _NOT_FOUND_CODES:
            line = describe_remote_error(exc, part.key, part.resource) or _line(str(exc))
            if code in ("403", "Forbidden", "AccessDenied"):
                line += " (S3 also answers 403 for a missing key when s3:ListBucket is not allowed)"
            return fail(line, raw=True)
    # not an object: a folder (a prefix), no such bucket, or no such key
    try:
        first = one_key(key + "/")
    except ClientError as exc:
        return fail(describe_remote_error(exc, part.key, part.resource) or str(exc), raw=True)
    if first is not None:
        return _ok(part, f"{part.resource} is readable (a folder holding s3://{bucket}/{first})")
    return fail(
        f"no object at {part.resource} (S3 answered 404); upload the dataset or fix "
        "run.data_s3_path"
    )


def _check_s3_output(part: _Part, aws: _Aws, timeout_s: float) -> CheckResult:
    from botocore.exceptions import ClientError

    client = aws.client("s3")
    marker = storage.join(part.options["folder"], uuid.uuid4().hex)
    bucket, key = storage.split_s3(marker)
    source = part.options["source"]
    via = "" if source == "run.output_s3_path" else f" (from {source})"
    fail = _failer(part)
    try:
        client.put_object(Bucket=bucket, Key=key, Body=b"nova-eval preflight marker\n")
    except ClientError as exc:
        line = describe_remote_error(exc, part.key, part.resource) or _line(str(exc))
        return fail(line + via, raw=True)
    try:
        client.delete_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        why = describe_remote_error(exc) or _line(str(exc))
        return fail(
            f"wrote the marker {marker} but could not delete it ({why}){via}; the run deletes "
            "files it replaces: allow s3:DeleteObject under the output root (and remove the "
            "marker)"
        )
    return _ok(part, f"{part.resource}{via} is writable (a marker was put and deleted)")


# ---------------------------------------------------------------- Lambda


def _check_lambda(part: _Part, aws: _Aws, timeout_s: float) -> CheckResult:
    from botocore.exceptions import ClientError

    client = aws.client("lambda", part.region)
    try:
        answer = client.invoke(FunctionName=part.resource, InvocationType="DryRun")
    except ClientError as exc:
        return _failer(part)(
            describe_remote_error(exc, part.key, part.resource) or str(exc), raw=True
        )
    status = answer.get("StatusCode")
    if status != 204:
        return _failer(part)(
            f"Invoke DryRun on {part.resource} answered {status}, not 204; check the function"
        )
    note = reward_name_note(part.resource) if part.options.get("reward") else ""
    return _ok(part, f"{part.resource} may be invoked (Invoke DryRun: 204){note}")


def reward_name_note(arn: str) -> str:
    """A warning for a reward function Nova on SageMaker HyperPod would refuse: its name
    must contain 'SageMaker', in that casing (the Nova Forge SDK's check); "" otherwise."""
    name = arn.split(":function:", 1)[-1].split(":", 1)[0]
    if "SageMaker" in name:
        return ""
    return (
        f"; warning: Nova on SageMaker HyperPod refuses a reward function whose name lacks "
        f"'SageMaker' (exact casing), as {name!r} does; rename it to run the same recipe there"
    )


# ---------------------------------------------------------------- Bedrock

# a Bedrock ARN: arn:<partition>:bedrock:<region>:<account>:<type>/<id>
_BEDROCK_ARN = re.compile(
    r"^arn:aws[a-z-]*:bedrock:(?P<region>[a-z0-9-]*):(?P<account>[0-9]*):"
    r"(?P<type>[a-z-]+)/(?P<id>.+)$"
)
# a cross-region (system-defined) inference profile id: <geography>.<model id>
_PROFILE_ID = re.compile(r"^(us|us-gov|eu|apac|ap|jp|au|ca|global)\.[a-z0-9-]+\.")
_BEDROCK_ARN_OPERATIONS = {
    "foundation-model": ("GetFoundationModel", "modelIdentifier"),
    "inference-profile": ("GetInferenceProfile", "inferenceProfileIdentifier"),
    "application-inference-profile": ("GetInferenceProfile", "inferenceProfileIdentifier"),
    "custom-model": ("GetCustomModel", "modelIdentifier"),
    "provisioned-model": ("GetProvisionedModelThroughput", "provisionedModelId"),
    "imported-model": ("GetImportedModel", "modelIdentifier"),
    "default-prompt-router": ("GetPromptRouter", "promptRouterArn"),
    "prompt-router": ("GetPromptRouter", "promptRouterArn"),
    "custom-model-deployment": ("GetCustomModelDeployment", "customModelDeploymentIdentifier"),
}


def bedrock_lookup(model: str) -> tuple[str, str] | None:
    """The Bedrock control-plane operation that describes ``model`` and its parameter name
    (None: a kind of id this check does not know)."""
    match = _BEDROCK_ARN.match(model)
    if match:
        return _BEDROCK_ARN_OPERATIONS.get(match.group("type"))
    if model.startswith("arn:"):
        if re.match(r"^arn:aws[a-z-]*:sagemaker:", model):  # a Marketplace model endpoint
            return ("GetMarketplaceModelEndpoint", "endpointArn")
        return None
    if _PROFILE_ID.match(model):
        return ("GetInferenceProfile", "inferenceProfileIdentifier")
    return ("GetFoundationModel", "modelIdentifier")


def _snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


def _geography(region: str) -> str:
    if region.startswith("us-gov"):
        return "us-gov"
    return {"us": "us", "eu": "eu", "ap": "apac", "ca": "ca"}.get(region.split("-")[0], "us")


def _check_bedrock(part: _Part, aws: _Aws, timeout_s: float) -> CheckResult:
    from botocore.exceptions import BotoCoreError, ClientError

    section = part.options["section"]
    model = part.resource
    fail = _failer(part)
    region = aws.region(part.region)
    if region is None:  # the engine resolves it the same way (engines/bedrock.py)
        ignored = " (boto3 does not read AWS_REGION)" if os.environ.get("AWS_REGION") else ""
        return fail(
            f"no AWS region for Bedrock model {model}; set {section}.region, "
            f"AWS_DEFAULT_REGION, or a region in the AWS profile{ignored}"
        )
    lookup = bedrock_lookup(model)
    if lookup is None:
        return _ok(part, f"Bedrock model {model} in {region}: not checked (an unknown kind of ARN)")
    operation, parameter = lookup
    client = aws.client("bedrock", region)
    if operation not in client.meta.service_model.operation_names:
        return _ok(
            part, f"Bedrock model {model} in {region}: not checked (botocore has no {operation})"
        )
    where = f"Bedrock model {model} in {region}"
    try:
        answer = getattr(client, _snake(operation))(**{parameter: model})
    except ClientError as exc:
        code = _error_code(exc)
        if code in _DENIED_CODES:
            return fail(
                f"access denied to {where} ({code} on {operation}: {_aws_message(exc)}); "
                f"{_MODEL_ACCESS_FIX} (bedrock:{operation} and bedrock:InvokeModel)"
            )
        if code in _NOT_FOUND_CODES or code == "ValidationException":
            return fail(
                f"no {where} ({code}: {_aws_message(exc)}); check {part.key} and the region "
                f"({section}.region)"
            )
        return fail(describe_remote_error(exc, part.key, model) or str(exc), raw=True)
    except BotoCoreError as exc:
        line = describe_remote_error(exc) or _line(str(exc))
        if part.options.get("endpoint"):  # the runtime may be reachable where this is not
            return _ok(
                part,
                f"{where}: not checked ({line}; {section}.endpoint overrides only bedrock-runtime, "
                "this check asks the Bedrock control plane)",
            )
        return fail(f"cannot check {where}: {line}")
    if operation == "GetFoundationModel":
        return _foundation_model(part, aws, client, where, region, answer.get("modelDetails") or {})
    if operation == "GetInferenceProfile":
        status = answer.get("status")
        if status and status != "ACTIVE":
            return fail(f"{where}: the inference profile is {status}, not ACTIVE")
        return _ok(part, f"{where} is accessible (inference profile, {status or 'status unknown'})")
    if operation == "GetProvisionedModelThroughput":
        status = answer.get("status")
        if status and status != "InService":
            why = answer.get("failureMessage")
            return fail(
                f"{where}: the provisioned throughput is {status}, not InService"
                + (f" ({why})" if why else "")
                + "; wait for it or use another model"
            )
        return _ok(part, f"{where} is accessible (provisioned throughput, {status})")
    kind = operation.removeprefix("Get")
    return _ok(part, f"{where} is accessible ({kind})")


def _foundation_model(
    part: _Part, aws: _Aws, client: Any, where: str, region: str, details: dict[str, Any]
) -> CheckResult:
    from botocore.exceptions import BotoCoreError, ClientError

    model = part.resource
    fail = _failer(part)
    model_id = details.get("modelId") or model.rsplit("/", 1)[-1]
    supported = set(details.get("inferenceTypesSupported") or [])
    plain_id = model_id.count(":") <= 1  # not a provisioned variant (":0:300k")
    if supported and "ON_DEMAND" not in supported and plain_id:
        if "INFERENCE_PROFILE" in supported:
            return fail(
                f"{where} has no on-demand throughput (it is served through inference "
                f"profiles); use an inference profile id, e.g. {_geography(region)}.{model_id}"
            )
        return fail(
            f"{where} has no on-demand throughput ({', '.join(sorted(supported))}); use the "
            "ARN of its provisioned throughput"
        )
    notes = []
    lifecycle = (details.get("modelLifecycle") or {}).get("status")
    if lifecycle and lifecycle != "ACTIVE":
        notes.append(f"lifecycle {lifecycle}")
    availability = None
    if "GetFoundationModelAvailability" in client.meta.service_model.operation_names:
        try:
            availability = client.get_foundation_model_availability(modelId=model_id)
        except (ClientError, BotoCoreError) as exc:
            notes.append(f"model access not checked: {describe_remote_error(exc) or exc}")
    if availability is not None:
        if availability.get("entitlementAvailability") == "NOT_AVAILABLE":
            return fail(f"{where}: the account has no access to the model; {_MODEL_ACCESS_FIX}")
        if availability.get("authorizationStatus") == "NOT_AUTHORIZED":
            return fail(
                f"{where}: this identity is not authorized to use the model; {_MODEL_ACCESS_FIX}"
            )
        if availability.get("regionAvailability") == "NOT_AVAILABLE":
            return fail(
                f"{where}: the model is not offered in {region}; use a region that offers it "
                f"({part.options['section']}.region) or an inference profile"
            )
        notes.append("model access AVAILABLE")
    shown = f" ({'; '.join(notes)})" if notes else ""
    return _ok(part, f"{where} is accessible{shown}")


# ---------------------------------------------------------------- HTTP: MLflow, OpenAI


class _Client(HTTPClient):
    """The engines' HTTP client with extra headers (MLflow's basic auth)."""

    def __init__(self, extra_headers: dict[str, str] | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.extra_headers = extra_headers or {}

    def headers(self) -> dict[str, str]:
        return {**super().headers(), **self.extra_headers}


def _http_client(timeout_s: float, api_key: str | None = None, **headers: str) -> _Client:
    # one retry at most, after ~0.1 s: a closed port fails at once
    return _Client(headers, api_key=api_key, timeout_s=timeout_s, max_retries=1, backoff_s=0.1)


def _get(client: HTTPClient, url: str) -> tuple[bool, Any]:
    """GET ``url``: (True, its JSON) or (False, None) for a 2xx answer that is not JSON."""
    try:
        return True, client.request(url)
    except ValueError:  # json.loads of a 2xx body: the server answered, not in JSON
        return False, None


def _mlflow_auth(uri: str) -> tuple[str, dict[str, str], str | None]:
    """The URI without userinfo, the Authorization header MLflow's client would send, and
    its bearer token."""
    parsed = urllib.parse.urlsplit(uri)
    headers: dict[str, str] = {}
    user = urllib.parse.unquote(parsed.username or "") or os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = urllib.parse.unquote(parsed.password or "") or os.environ.get(
        "MLFLOW_TRACKING_PASSWORD"
    )
    if parsed.username is not None:
        netloc = parsed.hostname or ""
        if parsed.port:
            netloc += f":{parsed.port}"
        uri = urllib.parse.urlunsplit(parsed._replace(netloc=netloc))
    token = os.environ.get("MLFLOW_TRACKING_TOKEN") or None
    if user and password and not token:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {pair}"
    return uri.rstrip("/"), headers, token


def _check_mlflow(part: _Part, aws: _Aws | None, timeout_s: float) -> CheckResult:
    uri = part.options["uri"]
    source = part.options["source"]
    via = "" if source == "run.mlflow_tracking_uri" else f" (from {source})"
    fail = _failer(part)
    if tracking.is_sagemaker_arn(uri):
        if importlib.util.find_spec("sagemaker_mlflow") is None:  # it adds the arn scheme
            return fail(
                f"{part.resource}{via} is a SageMaker MLflow tracking server, which needs the "
                f"sagemaker-mlflow plugin; pip install 'nova-eval[{tracking.SAGEMAKER_EXTRA}]'"
            )
        return _ok(part, f"{part.resource}{via}: not checked (a SageMaker MLflow ARN)")
    if not uri.startswith(("http://", "https://")):
        return _ok(part, f"{part.resource}{via}: not checked (not an http(s) tracking server)")
    base, headers, token = _mlflow_auth(uri)
    client = _http_client(timeout_s, api_key=token, **headers)
    fix_auth = "set MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD"
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        _get(client, f"{base}/health")
        return _ok(part, f"{part.resource}{via} answers (GET /health)")
    except ConnectionFailure as exc:
        return fail(
            f"cannot reach the MLflow tracking server {part.resource}{via} "
            f"({_reason(exc)}); start it or fix {source}"
        )
    except HTTPStatusError as exc:
        health_status = exc.status
    try:
        answered_json, body = _get(client, base + search)
    except ConnectionFailure as exc:
        return fail(f"cannot reach {part.resource}{via} ({_reason(exc)}); start it or fix {source}")
    except HTTPStatusError as exc:
        if exc.status in (401, 403):
            return fail(f"{part.resource}{via} refused the request (HTTP {exc.status}); {fix_auth}")
        return fail(
            f"{part.resource}{via} answers HTTP {health_status} on /health and HTTP {exc.status} "
            f"on {search.split('?')[0]}: not an MLflow tracking server? fix {source}"
        )
    if not answered_json or not isinstance(body, dict):
        return fail(
            f"{part.resource}{via} answers {search.split('?')[0]} without MLflow's JSON: not an "
            f"MLflow tracking server? fix {source}"
        )
    return _ok(part, f"{part.resource}{via} answers (GET {search.split('?')[0]})")


def _check_openai(part: _Part, aws: _Aws | None, timeout_s: float) -> CheckResult:
    section = part.options["section"]
    model = part.options["model"]
    key_env = part.options["api_key_env"]
    api_key = os.environ.get(key_env) or None if key_env else None
    base = part.resource
    fail = _failer(part)
    client = _http_client(timeout_s, api_key=api_key)
    try:
        answered_json, listing = _get(client, f"{base}/v1/models")
    except ConnectionFailure as exc:
        return fail(f"cannot reach {base} ({_reason(exc)}); start the server or fix {part.key}")
    except HTTPStatusError as exc:
        if exc.status in (401, 403):
            if not key_env:
                fix = f"set {section}.api_key_env to the variable that holds the server's key"
            elif api_key is None:
                fix = f"${key_env} ({section}.api_key_env) is not set: set it to the server's key"
            else:
                fix = f"set ${key_env} ({section}.api_key_env) to a key the server takes"
            return fail(f"{base} refused the API key (HTTP {exc.status} on GET /v1/models); {fix}")
        return fail(
            f"{base} answers HTTP {exc.status} on GET /v1/models: not an OpenAI-compatible "
            f"server? fix {part.key} (the base URL, e.g. http://host:8000)"
        )
    if not answered_json or not isinstance(listing, dict):
        return fail(
            f"{base} answers GET /v1/models without the OpenAI JSON; fix {part.key} (the base "
            "URL of an OpenAI-compatible server)"
        )
    served = [e.get("id") for e in listing.get("data") or [] if isinstance(e, dict)]
    if model in served:
        return _ok(part, f"{base} answers and serves model '{model}'")
    shown = ", ".join(str(s) for s in served[:5]) + (", ..." if len(served) > 5 else "")
    # not a failure: llama.cpp and others answer for any model name (engines/openai.py)
    return _ok(
        part,
        f"{base} answers; it does not list model '{model}' (it lists: {shown or 'nothing'}), "
        "some servers answer for any name",
    )


def _check_managed_server(part: _Part, aws: _Aws | None, timeout_s: float) -> CheckResult:
    return _ok(part, "not checked (started by the replica)")


def _check_hub_dataset(part: _Part, aws: _Aws | None, timeout_s: float) -> CheckResult:
    options = part.options
    problem = hub_problem(options["task"], options["revision"], options["subtasks"], timeout_s)
    if problem is not None:
        return _failer(part)(problem)
    return _ok(part, f"{part.resource} is cached or reachable")


_CHECKS: dict[str, Callable[[_Part, Any, float], CheckResult]] = {
    "s3_data": _check_s3_data,
    "s3_output": _check_s3_output,
    "lambda": _check_lambda,
    "bedrock": _check_bedrock,
    "mlflow": _check_mlflow,
    "openai": _check_openai,
    "managed_server": _check_managed_server,
    "hub_dataset": _check_hub_dataset,
}


# ---------------------------------------------------------------- results and messages


def _line(text: str, limit: int = 600) -> str:
    """One line: whitespace runs (newlines) become one space; long texts are cut."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ok(part: _Part, message: str, raw: bool = False) -> CheckResult:
    return CheckResult(
        part.key, part.resource, True, _line(message if raw else f"{part.key}: {message}")
    )


def _failer(part: _Part) -> Callable[..., CheckResult]:
    def fail(message: str, raw: bool = False) -> CheckResult:
        text = message if raw else f"{part.key}: {message}"
        return CheckResult(part.key, part.resource, False, _line(text))

    return fail


def _reason(exc: BaseException) -> str:
    """``cannot reach URL: <reason>`` -> a short reason (``connection refused``)."""
    text = str(exc)
    if isinstance(exc, ConnectionFailure):
        text = text.split(": ", 1)[-1]
    if "refused" in text.lower():
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    return _line(text, 200)


# AWS error codes, by what they mean
_EXPIRED_CODES = frozenset(
    {"ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired", "RequestExpired"}
)
_INVALID_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidSignatureException",
        "IncompleteSignature",
        "AuthFailure",
        "InvalidToken",
    }
)
_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AuthorizationError",
        "Forbidden",
        "403",
        "UnauthorizedOperation",
        "AllAccessDisabled",
    }
)
_THROTTLED_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "ProvisionedThroughputExceededException",
        "ServiceQuotaExceededException",
        "429",
    }
)
_NOT_FOUND_CODES = frozenset(
    {"ResourceNotFoundException", "NoSuchKey", "NoSuchBucket", "NotFound", "404", "NoSuchEntity"}
)
#: the IAM action an operation needs, for "allow ..." fixes
_IAM_ACTIONS = {
    "HeadObject": "s3:GetObject",
    "GetObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "DeleteObject": "s3:DeleteObject",
    "DeleteObjects": "s3:DeleteObject",
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "Invoke": "lambda:InvokeFunction",
    "Converse": "bedrock:InvokeModel",
    "ConverseStream": "bedrock:InvokeModelWithResponseStream",
    "InvokeModel": "bedrock:InvokeModel",
    "InvokeModelWithResponseStream": "bedrock:InvokeModelWithResponseStream",
}
_BEDROCK_OPERATIONS = frozenset(
    {"Converse", "ConverseStream", "InvokeModel", "InvokeModelWithResponseStream"}
    | {operation for operation, _ in _BEDROCK_ARN_OPERATIONS.values()}
    | {"GetFoundationModelAvailability", "GetMarketplaceModelEndpoint"}
)


def _error_code(exc: Any) -> str:
    error = exc.response.get("Error", {}) if hasattr(exc, "response") else {}
    code = str(error.get("Code") or "")
    if not code:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(status or "")
    return code


def _aws_message(exc: Any) -> str:
    error = exc.response.get("Error", {})
    return _line(error.get("Message") or "no message", 200)


def _describe_client_error(exc: Any, where: str) -> str | None:
    code = _error_code(exc)
    operation = getattr(exc, "operation_name", None) or "the request"
    detail = f"{code} on {operation}"
    message = (exc.response.get("Error") or {}).get("Message")
    if message:
        detail += f": {_line(message, 200)}"
    if code in _EXPIRED_CODES:
        if code == "RequestExpired":
            return (
                f"the request{where} was refused as expired ({detail}); the machine's clock is "
                "off or the credentials expired: sync the clock, refresh the credentials"
            )
        return (
            f"the AWS credentials have expired ({detail}); refresh them (aws sso login, a new "
            "AWS_SESSION_TOKEN, or a new role session)"
        )
    if code in _INVALID_CODES:
        return (
            f"the AWS credentials are not valid ({detail}); check AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN or AWS_PROFILE"
        )
    if code in _DENIED_CODES:
        if operation in _BEDROCK_OPERATIONS:
            fix = _MODEL_ACCESS_FIX
        elif operation in _IAM_ACTIONS:
            fix = f"allow {_IAM_ACTIONS[operation]} on it in the identity's IAM policy"
        else:
            fix = "check the identity's IAM policy"
        return f"access denied{where} ({detail}); {fix}"
    if code in _THROTTLED_CODES:
        return (
            f"throttled by AWS{where} ({detail}); lower the concurrency (inference.concurrency, "
            "processor.concurrency) or ask for a higher quota"
        )
    if code in _NOT_FOUND_CODES:
        bucket = (exc.response.get("Error") or {}).get("BucketName")
        if code == "NoSuchBucket":
            name = f" '{bucket}'" if bucket else ""
            return f"the bucket{name} does not exist{where} ({detail}); create it or fix the URI"
        what = where.replace(" for ", "", 1) + " is" if where else "it is"
        return f"{what} not found ({detail}); check the name, the account and the region"
    return None


def _describe_botocore_error(exc: Any, where: str) -> str | None:
    from botocore import exceptions as bx

    if isinstance(exc, bx.NoCredentialsError):
        return NO_CREDENTIALS
    if isinstance(exc, bx.PartialCredentialsError):
        return (
            f"incomplete AWS credentials ({_line(str(exc), 200)}); set both AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY, or use AWS_PROFILE"
        )
    if isinstance(exc, bx.ProfileNotFound):
        return f"{_line(str(exc), 200)}; fix AWS_PROFILE or add the profile to ~/.aws/config"
    sso = tuple(
        getattr(bx, name)
        for name in ("SSOTokenLoadError", "UnauthorizedSSOTokenError", "TokenRetrievalError")
        if hasattr(bx, name)
    )
    if sso and isinstance(exc, sso):
        return (
            f"the AWS SSO session is missing or expired ({_line(str(exc), 200)}); run "
            "`aws sso login` (with the profile in AWS_PROFILE)"
        )
    if isinstance(exc, bx.CredentialRetrievalError):
        return (
            f"cannot fetch the AWS credentials ({_line(str(exc), 200)}); check the profile's "
            "credential_process / role settings"
        )
    if isinstance(exc, bx.NoRegionError):
        return "no AWS region; set AWS_DEFAULT_REGION or a region in the AWS profile"
    connection = (
        bx.EndpointConnectionError,
        bx.ConnectTimeoutError,
        bx.ReadTimeoutError,
        bx.ConnectionClosedError,
        bx.ProxyConnectionError,
        bx.SSLError,
        bx.HTTPClientError,
    )
    if isinstance(exc, connection):
        url = getattr(exc, "kwargs", {}).get("endpoint_url")
        target = f" {url}" if url else where.replace(" for ", " ", 1)
        kind = (
            "timed out"
            if isinstance(exc, bx.ConnectTimeoutError | bx.ReadTimeoutError)
            else "connection failed"
        )
        return (
            f"cannot reach{target} ({kind}: {_line(str(exc), 200)}); check the network, the "
            "proxy, the region and any VPC endpoint"
        )
    return None


def _describe_http_error(exc: BaseException, key: str | None, where: str) -> str | None:
    section = key.split(".", 1)[0] if key and "." in key else None
    key_env = f"{section}.api_key_env" if section in ("inference", "judge") else "api_key_env"
    if isinstance(exc, HTTPStatusError | urllib.error.HTTPError):
        status = exc.status if isinstance(exc, HTTPStatusError) else exc.code
        url = exc.url if isinstance(exc, HTTPStatusError) else exc.geturl() or exc.filename
        if status in (401, 403):
            return (
                f"{url} refused the request (HTTP {status}); check the API key (the environment "
                f"variable named by {key_env})"
            )
        if status == 404:
            return f"{url} is not found (HTTP 404); check the endpoint URL and the model name"
        if status == 429:
            return f"{url} throttled the request (HTTP 429); lower the concurrency"
        if status >= 500:
            return f"{url} failed (HTTP {status}); check the server and its log"
        return f"{url} answered HTTP {status}; check the endpoint URL and the request"
    if isinstance(exc, ConnectionFailure):
        return f"{_line(str(exc), 300)}; check that the server is up and the URL"
    if isinstance(exc, urllib.error.URLError):  # after HTTPError, its subclass
        return (
            f"cannot reach{where.replace(' for ', ' ', 1)} ({_reason(exc.reason)}); check that "
            "the server is up and the URL"
        )
    if isinstance(exc, ConnectionRefusedError):
        return (
            f"connection refused{where.replace(' for ', ' by ', 1)}; check that the server is "
            "up, the host and the port"
        )
    if isinstance(exc, TimeoutError):
        return f"timed out{where}; check the network and that the server answers"
    if isinstance(exc, ConnectionError | http.client.HTTPException):
        return (
            f"connection failed{where} ({_line(repr(exc), 200)}); check the server and the network"
        )
    return None


def describe_remote_error(
    exc: BaseException, key: str | None = None, resource: str | None = None
) -> str | None:
    """One line for a remote error met mid-run (or in a check): what failed and the fix,
    starting with ``key`` when given; None when ``exc`` (or its cause) is not a remote
    error: botocore's credential and connection errors, ClientErrors about credentials,
    access, throttling and missing resources, and the HTTP errors of engines/openai.py and
    urllib (refused connections, timeouts)."""
    where = f" for {resource}" if resource else ""
    seen: set[int] = set()
    current: BaseException | None = exc
    for _ in range(6):  # the error, then what it was raised from
        if current is None or id(current) in seen:
            break
        seen.add(id(current))
        text = _describe_one(current, key, where)
        if text is not None:
            return _line(f"{key}: {text}" if key else text)
        current = current.__cause__ or current.__context__
    return None


def _describe_one(exc: BaseException, key: str | None, where: str) -> str | None:
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        return _describe_client_error(exc, where)
    if isinstance(exc, BotoCoreError):
        return _describe_botocore_error(exc, where)
    return _describe_http_error(exc, key, where)


__all__ = [
    "AWS_IDENTITY_KEY",
    "NO_CREDENTIALS",
    "CheckResult",
    "ClientFactory",
    "bedrock_lookup",
    "describe_remote_error",
    "failures",
    "remote_parts",
    "run_preflight",
]
