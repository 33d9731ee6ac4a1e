"""MLflow tracking, as Nova does it: one MLflow run per evaluation.

When ``run.mlflow_tracking_uri`` is set (else ``$MLFLOW_TRACKING_URI``), a finished gen_qa
or judge evaluation is logged as one run in ``run.mlflow_experiment_name`` (default: the
run name), named ``run.mlflow_run_name`` (default: ``<run name>-<results timestamp>``):
the recipe as params, every aggregated metric of the results JSON (with its ``_stderr``)
as metrics, the results JSON, details Parquet, analysis report and recipe file as
artifacts, and tags with the Dagster run id and the code version.

Everything goes through an ``MlflowClient`` bound to the tracking URI (no global
``mlflow.set_tracking_uri``). A SageMaker managed MLflow tracking-server ARN needs the
``sagemaker-mlflow`` plugin (``pip install 'nova-eval[sagemaker]'``). The evaluation's
own outputs are only read here, never written: a tracking server that is down fails this
step with one :class:`TrackingError` line and leaves the results as they are.

No Dagster here: ``assets/tracking.py`` wires it in.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from nova_eval_assets import storage
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import REDACTED, LoadedRecipe
from nova_eval_assets.tasks.base import subtask_of_key

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
SAGEMAKER_EXTRA = "sagemaker"
DAGSTER_RUN_ID_TAG = "dagster_run_id"  # the tag dagster-mlflow uses too
GIT_COMMIT_TAG = "mlflow.source.git.commit"  # MLflow's own tag: the UI links it
#: Client HTTP settings unless the environment sets them: MLflow's defaults (7 retries with
#: exponential backoff, 120 s timeout) keep a closed port busy for minutes.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
# MLflow's limits (mlflow.utils.validation)
MAX_KEY_LENGTH = 250
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

_SAGEMAKER_ARN = re.compile(r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:mlflow-tracking-server/")
_NOT_A_NAME_CHAR = re.compile(r"[^A-Za-z0-9_\-. /]")  # MLflow allows these in key names
_USERINFO = re.compile(r"(?<=://)[^/@]+@")


class TrackingError(RuntimeError):
    """MLflow logging failed; the message is one line naming the tracking URI."""


@dataclass(frozen=True)
class TrackedRun:
    run_id: str
    experiment_id: str
    experiment_name: str
    run_name: str
    tracking_uri: str  # credentials removed
    url: str | None  # the run in the MLflow UI (http(s) servers only)
    metrics: dict[str, float]  # as logged (MLflow names)
    artifacts: list[str]  # artifact paths in the run


# ---------------------------------------------------------------- configuration


def tracking_uri(loaded: LoadedRecipe) -> str | None:
    """``run.mlflow_tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else None (no tracking)."""
    return loaded.recipe.run.mlflow_tracking_uri or os.environ.get(TRACKING_URI_ENV) or None


def is_configured(loaded: LoadedRecipe) -> bool:
    return tracking_uri(loaded) is not None


def uri_source(loaded: LoadedRecipe) -> str:
    """Where the tracking URI came from, for messages."""
    if loaded.recipe.run.mlflow_tracking_uri:
        return f"run.mlflow_tracking_uri in {loaded.path}"
    return f"${TRACKING_URI_ENV}"


def is_sagemaker_arn(uri: str) -> bool:
    return bool(_SAGEMAKER_ARN.match(uri))


def redact(uri: str) -> str:
    """The URI without ``user:password@``."""
    return _USERINFO.sub("***@", uri)


def experiment_name(loaded: LoadedRecipe) -> str:
    return loaded.recipe.run.mlflow_experiment_name or loaded.name


def run_name(loaded: LoadedRecipe, results_timestamp: str) -> str:
    return loaded.recipe.run.mlflow_run_name or f"{loaded.name}-{results_timestamp}"


def run_url(uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI of an http(s) tracking server."""
    if not uri.startswith(("http://", "https://")):
        return None
    return f"{redact(uri).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def check_plugin(loaded: LoadedRecipe, uri: str) -> None:
    """A SageMaker ARN needs the sagemaker-mlflow plugin (it registers the ``arn`` scheme)."""
    if is_sagemaker_arn(uri) and importlib.util.find_spec("sagemaker_mlflow") is None:
        raise TrackingError(
            f"MLflow tracking: {uri_source(loaded)} is a SageMaker MLflow tracking server "
            f"({uri}), which needs the sagemaker-mlflow plugin; install it with "
            f"pip install 'nova-eval[{SAGEMAKER_EXTRA}]'"
        )


# ---------------------------------------------------------------- what is logged


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif value is not None:  # unset keys: the recipe artifact shows the file as written
        out[prefix] = value


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def recipe_params(loaded: LoadedRecipe) -> dict[str, str]:
    """The recipe with its defaults, flattened (``inference.temperature``); values as
    MLflow stores them (strings, JSON for lists), cut to MLflow's length limit."""
    flat: dict[str, Any] = {}
    data = loaded.recipe.model_dump(mode="json")
    data["inference"] = loaded.recipe.inference.public_dump(mode="json")
    _flatten(data, "", flat)
    params = {}
    for key, value in flat.items():
        text = value if isinstance(value, str) else json.dumps(value)
        if key == "run.mlflow_tracking_uri":
            text = redact(text)
        params[mlflow_key(key)] = _truncate(text, MAX_PARAM_LENGTH)
    return params


def mlflow_key(name: str) -> str:
    """A metric or param name MLflow accepts: characters other than letters, digits and
    ``_ - . space /`` become ``_``; no leading ``/`` or ``..`` path parts (MLflow refuses
    names that could resolve to other files); at most 250 characters."""
    key = _NOT_A_NAME_CHAR.sub("_", name)
    key = "/".join("_" if part in (".", "..") else part for part in key.split("/"))
    key = key.lstrip("/") or "_"
    return key[:MAX_KEY_LENGTH]


def results_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """Every finite aggregated metric of a results JSON (``results.all``, ``_stderr``
    siblings included, and a benchmark's subtasks' as ``<subtask>/<metric>``) under its
    MLflow name. Two names that map to the same MLflow name keep apart with a numeric
    suffix, in sorted order, so the mapping is deterministic."""
    values = dict(results["results"]["all"])
    for key, section in results["results"].items():
        subtask = subtask_of_key(key)
        if subtask is not None:
            values.update((f"{subtask}/{name}", value) for name, value in section.items())
    metrics: dict[str, float] = {}
    for name in sorted(values):
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value):
            continue
        key = base = mlflow_key(name)
        suffix = 1
        while key in metrics:
            suffix += 1
            key = f"{base[: MAX_KEY_LENGTH - 4]}_{suffix}"
        metrics[key] = float(value)
    return metrics


@cache
def git_commit() -> tuple[str, bool] | None:
    """(sha, dirty) of the checkout holding this package, None outside git."""
    folder = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return done.stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return sha, dirty


def package_version() -> str:
    try:
        return metadata.version("nova-eval")
    except metadata.PackageNotFoundError:
        return "unknown"


def code_version() -> str:
    """The git commit of the code (``-dirty`` with local changes), else the package version."""
    commit = git_commit()
    if commit is None:
        return package_version()
    sha, dirty = commit
    return sha + ("-dirty" if dirty else "")


def run_tags(
    loaded: LoadedRecipe, results: Mapping[str, Any], dagster_run_id: str | None
) -> dict[str, str]:
    general = results.get("config_general", {})
    tags = {
        "nova_eval.recipe_name": loaded.name,
        "nova_eval.recipe_path": str(loaded.path),
        "nova_eval.task": loaded.recipe.evaluation.task,
        "nova_eval.model": str(general.get("model_name") or loaded.recipe.run.model_name_or_path),
        "nova_eval.model_type": loaded.recipe.run.model_type,
        "nova_eval.results_timestamp": str(general.get("timestamp", "")),
        "nova_eval.version": package_version(),
        "nova_eval.code_version": code_version(),
    }
    if dagster_run_id:
        tags[DAGSTER_RUN_ID_TAG] = dagster_run_id
    commit = git_commit()
    if commit is not None:
        tags[GIT_COMMIT_TAG] = commit[0]
    dataset = general.get("dataset") or {}
    if dataset.get("sha256"):
        tags["nova_eval.dataset_sha256"] = str(dataset["sha256"])
    for key, value in (general.get("lineage") or {}).items():  # model checkpoint, prompts...
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            tags[f"nova_eval.lineage.{key}"] = str(value)
    if general.get("judge_model_id"):
        tags["nova_eval.lineage.judge_model_id"] = str(general["judge_model_id"])
    return {mlflow_key(k): _truncate(v, MAX_TAG_LENGTH) for k, v in tags.items()}


def latest_report(loaded: LoadedRecipe) -> dict[str, Any]:
    """What the evaluation's last report step returned (gen_qa and judge write it alike)."""
    return storage.read_json(EvalLayout.for_recipe(loaded).latest_report)


def analysis_report(loaded: LoadedRecipe) -> str | None:
    """The HTML analysis report of a gen_qa evaluation, when analysis is on and it exists."""
    recipe = loaded.recipe
    if recipe.evaluation.is_judge or not recipe.analysis.enabled:
        return None
    location = EvalLayout.for_recipe(loaded).analysis("report.html")
    return location if storage.exists(location) else None


def artifact_files(loaded: LoadedRecipe, report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(file, artifact folder) pairs: the results JSON, the details Parquet, the analysis
    report and its JSON (when they exist), and the recipe file."""
    paths = report["paths"]
    files = [(paths["results"], "eval_results")]
    if paths.get("details"):
        files.append((paths["details"], "eval_results/details"))
    html = analysis_report(loaded)
    if html is not None:
        files.append((html, "eval_results/analysis"))
        summary = EvalLayout.for_recipe(loaded).analysis("analysis.json")
        if storage.exists(summary):
            files.append((summary, "eval_results/analysis"))
    files.append((str(loaded.path), "recipe"))
    return files


def _redacted_copy(location: str, folder: str, secrets: list[str]) -> str:
    """A copy of a text file in ``folder`` with each secret (inference.server.env values)
    replaced by REDACTED; the file itself when there is none."""
    if not secrets:
        return _local_copy(location, folder)
    text = storage.read_bytes(location).decode("utf-8")
    for secret in secrets:  # a plain word: the YAML stays valid, quoted or not
        text = text.replace(secret, REDACTED.strip("[]"))
    target = Path(folder) / Path(location).name
    target.write_text(text, encoding="utf-8")
    return str(target)


# ---------------------------------------------------------------- logging


@contextmanager
def bounded_http() -> Iterator[None]:
    """MLflow's client reads its HTTP retry and timeout settings from the environment at
    each request: set ours for the duration of one logging step, unless the user set them.
    urllib3's per-retry warnings are held back too: a failure ends in one TrackingError."""
    added = [key for key in HTTP_DEFAULTS if key not in os.environ]
    for key in added:
        os.environ[key] = HTTP_DEFAULTS[key]
    retries = logging.getLogger("urllib3.connectionpool")
    level = retries.level
    retries.setLevel(logging.ERROR)
    try:
        yield
    finally:
        retries.setLevel(level)
        for key in added:
            os.environ.pop(key, None)


def _reason(exc: BaseException) -> str:
    """The gist of an MLflow client error, on one line ('Connection refused', ...)."""
    text = " ".join(str(exc).split())
    errno = re.search(r"\[Errno -?\d+\] ([^'\"\)]+)", text)
    if errno:
        return errno.group(1).strip()
    for gist in ("Read timed out", "Connection aborted", "timed out"):
        if gist in text:
            return gist
    return _truncate(text, 300)


_COPY_CHUNK = 1 << 22


def _local_copy(location: str, folder: str) -> str:
    """A local file to upload: the file itself, or a copy of an s3:// object, copied in
    chunks (a large run's details Parquet is never held whole in memory)."""
    if not storage.is_remote(location):
        return location
    target = Path(folder) / location.rstrip("/").rsplit("/", 1)[-1]
    fs, path = storage.filesystem(location)
    with fs.open_input_stream(path) as source, target.open("wb") as sink:
        shutil.copyfileobj(source, sink, _COPY_CHUNK)
    return str(target)


def _experiment_id(client: Any, name: str) -> str:
    """The experiment's id, created when missing (by another evaluation meanwhile too)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name)
        except Exception:
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise RuntimeError(
            f"the experiment '{name}' is deleted; restore it in MLflow or set "
            "run.mlflow_experiment_name"
        )
    return experiment.experiment_id


def log_evaluation(
    loaded: LoadedRecipe,
    report: Mapping[str, Any],
    dagster_run_id: str | None = None,
) -> TrackedRun | None:
    """Log one finished evaluation as one MLflow run; None when tracking is not configured.

    ``report``: what ``stages.write_report`` (gen_qa) or ``judge.pipeline.run_judge``
    returned, with ``paths.results`` (the results JSON, read here) and ``paths.details``.
    Raises :class:`TrackingError` (one line) when the tracking server cannot be used.
    """
    uri = tracking_uri(loaded)
    if uri is None:
        return None
    check_plugin(loaded, uri)
    results = storage.read_json(report["paths"]["results"])
    stamp = str(results.get("config_general", {}).get("timestamp") or "")
    name = run_name(loaded, stamp or "run")
    metrics = results_metrics(results)
    files = artifact_files(loaded, report)
    secrets = loaded.recipe.inference.secret_values()
    where = f"{uri_source(loaded)} = {redact(uri)}"
    with bounded_http():
        from mlflow import MlflowClient  # slow import: only when tracking
        from mlflow.entities import Metric, Param, RunStatus

        step = "reaching the tracking server"
        run_id = None
        try:
            client = MlflowClient(tracking_uri=uri)
            experiment_id = _experiment_id(client, experiment_name(loaded))
            step = "creating the run"
            run = client.create_run(
                experiment_id,
                run_name=name,
                tags=run_tags(loaded, results, dagster_run_id),
            )
            run_id = run.info.run_id
            step = "logging params and metrics"
            params = [Param(k, v) for k, v in recipe_params(loaded).items()]
            for start in range(0, len(params), MAX_PARAMS_PER_BATCH):
                client.log_batch(run_id, params=params[start : start + MAX_PARAMS_PER_BATCH])
            now = int(time.time() * 1000)
            logged = [Metric(k, v, now, 0) for k, v in metrics.items()]
            for start in range(0, len(logged), MAX_METRICS_PER_BATCH):
                client.log_batch(run_id, metrics=logged[start : start + MAX_METRICS_PER_BATCH])
            step = "uploading the artifacts"
            artifacts = []
            with tempfile.TemporaryDirectory(prefix="nova-eval-mlflow-") as scratch:
                for location, folder in files:
                    if location == str(loaded.path):  # the recipe as written, secrets out
                        local = _redacted_copy(location, scratch, secrets)
                    else:
                        local = _local_copy(location, scratch)
                    client.log_artifact(run_id, local, artifact_path=folder)
                    artifacts.append(f"{folder}/{Path(local).name}")
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
        except Exception as exc:  # the MLflow client raises many kinds; all mean the same
            if run_id is not None:  # best effort: do not leave the run RUNNING
                with suppress(Exception):
                    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
            raise TrackingError(
                f"MLflow tracking failed while {step} ({where}): {_reason(exc)}. "
                "The evaluation's results are unchanged: "
                f"{report['paths']['results']}"
            ) from exc
    return TrackedRun(
        run_id=run_id,
        experiment_id=experiment_id,
        experiment_name=experiment_name(loaded),
        run_name=name,
        tracking_uri=redact(uri),
        url=run_url(uri, experiment_id, run_id),
        metrics=metrics,
        artifacts=artifacts,
    )
