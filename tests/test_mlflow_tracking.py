"""MLflow tracking against a real ``mlflow server`` (SQLite backend store, artifacts served
from tmp), read back with ``MlflowClient``; a closed port; the Dagster asset's metadata.
The evaluations use a fake engine: what is tested is what reaches MLflow."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from mlflow import MlflowClient

from nova_eval_assets import preflight, stages, tracking
from nova_eval_assets.assets import build_evaluation_assets
from nova_eval_assets.assets.automation import FOLLOWUP_TAG, build_orchestration
from nova_eval_assets.assets.materialize import run_evaluation
from nova_eval_assets.assets.tracking import build_tracking_assets, mlflow_run_key
from nova_eval_assets.cli import main as cli_main
from nova_eval_assets.engines.base import Generation, TokenLogprob
from nova_eval_assets.judge import pipeline
from nova_eval_assets.recipe import LoadedRecipe, load_recipe
from tests.conftest import ticket_lines
from tests.orchestration_support import Automation, FakeEngine, run_job

SERVER_START_S = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real tracking server on loopback: SQLite store, artifacts proxied to a folder."""
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = (folder / "server.log").open("wb")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its own process group: the workers stop with it
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "mlflow server did not start:\n" + (folder / "server.log").read_text()[-3000:]
                )
            time.sleep(0.25)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        log.close()


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    engine = FakeEngine()
    monkeypatch.setitem(stages._ENGINES, ("hf", "smollm2-135m-instruct"), engine)
    return engine


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dg.DagsterInstance:
    """`nova-eval run` in tmp: outputs and tables under tmp, an ephemeral instance (a real
    one captures compute logs, which fights capsys), no tracking from the environment."""
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    monkeypatch.delenv("NOVA_EVAL_TABLES_ROOT", raising=False)
    monkeypatch.delenv(tracking.TRACKING_URI_ENV, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    for key in tracking.HTTP_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    instance = dg.DagsterInstance.ephemeral()
    monkeypatch.setattr(dg.DagsterInstance, "get", staticmethod(lambda: instance))
    return instance


def write_recipe(folder: Path, name: str, run: dict | None = None, **sections) -> LoadedRecipe:
    data = folder / f"{name}.jsonl"
    data.write_text("\n".join(ticket_lines(4)) + "\n")
    recipe = {
        "run": {
            "name": name,
            "model_type": "hf",
            "model_name_or_path": "smollm2-135m-instruct",
            "replicas": 1,
            "data_s3_path": data.name,
            "output_s3_path": "",
            **(run or {}),
        },
        "evaluation": {"task": "gen_qa", "strategy": "gen_qa", "metric": "all"},
        "inference": {"max_new_tokens": 6, "temperature": 0, "top_logprobs": 2, "batch_size": 2},
        **sections,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return load_recipe(path)


def results_file(root: Path, name: str) -> Path:
    (found,) = (root / name / "eval_results").glob("results_*.json")
    return found


def details_file(root: Path, name: str) -> Path:
    (found,) = (root / name / "eval_results" / "details").rglob("*.parquet")
    return found


def finite_metrics(results: dict) -> dict[str, float]:
    return {k: v for k, v in results["results"]["all"].items() if isinstance(v, int | float)}


def artifact_names(client: MlflowClient, run_id: str, folder: str) -> set[str]:
    return {Path(a.path).name for a in client.list_artifacts(run_id, folder)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(folder)): (sha256(p), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------- a real tracking server


def test_cli_run_logs_one_mlflow_run(mlflow_server, cli_env, fake_engine, tmp_path, capsys):
    loaded = write_recipe(tmp_path, "mlflow-tiny", run={"mlflow_tracking_uri": mlflow_server})
    assert cli_main(["run", str(loaded.path), "--quiet"]) == 0
    out = capsys.readouterr().out

    outputs = tmp_path / "outputs"
    results = json.loads(results_file(outputs, "mlflow-tiny").read_text())
    stamp = results["config_general"]["timestamp"]
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("mlflow-tiny")  # default: the run name
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    run_id = run.info.run_id
    url = f"{mlflow_server}/#/experiments/{experiment.experiment_id}/runs/{run_id}"
    assert f"MLflow run: {url}" in out
    assert run.info.run_name == f"mlflow-tiny-{stamp}"
    assert run.info.status == "FINISHED"

    # every aggregated metric and its stderr, with the values of the results JSON
    expected = finite_metrics(results)
    assert {"em", "em_stderr", "f1", "rougeL", "bleu", "bleu_stderr"} <= set(expected)
    assert run.data.metrics == expected

    params = run.data.params
    assert params["run.name"] == "mlflow-tiny"
    assert params["evaluation.task"] == "gen_qa"
    assert params["inference.max_new_tokens"] == "6"
    assert params["inference.top_logprobs"] == "2"
    assert float(params["inference.temperature"]) == 0.0
    assert params["run.mlflow_tracking_uri"] == mlflow_server

    # artifacts: the results JSON (byte for byte), the details Parquet, the analysis report
    assert results_file(outputs, "mlflow-tiny").name in artifact_names(
        client, run_id, "eval_results"
    )
    assert details_file(outputs, "mlflow-tiny").name in artifact_names(
        client, run_id, "eval_results/details"
    )
    assert "report.html" in artifact_names(client, run_id, "eval_results/analysis")
    assert artifact_names(client, run_id, "recipe") == {"mlflow-tiny.yaml"}
    downloaded = client.download_artifacts(
        run_id, f"eval_results/{results_file(outputs, 'mlflow-tiny').name}", str(tmp_path)
    )
    assert Path(downloaded).read_bytes() == results_file(outputs, "mlflow-tiny").read_bytes()

    # tags: the Dagster run that logged it, the code version
    dagster_run = run.data.tags[tracking.DAGSTER_RUN_ID_TAG]
    event = cli_env.get_latest_materialization_event(dg.AssetKey(["mlflow_tiny", "mlflow_run"]))
    assert event is not None and event.run_id == dagster_run
    assert dagster_run in out  # among the runs the CLI lists
    assert run.data.tags["nova_eval.code_version"] == tracking.code_version()
    model_id = results["config_general"]["lineage"]["model_id"]
    assert run.data.tags["nova_eval.lineage.model_id"] == model_id
    # the HTTP settings were only set for the logging step
    assert not any(key in os.environ for key in tracking.HTTP_DEFAULTS)


class VerdictJudge:
    """A judge engine that prefers the response saying "Fix", in either position."""

    name = "verdict"
    model_id = "verdict:1"
    default_batch_size = 4

    def block_size(self, batch_size: int) -> int:
        return batch_size * 4

    def generate(self, requests, settings, batch_size=None, on_batch=None) -> list[Generation]:
        out = []
        for r in requests:
            first = r.prompt.split("[Response 1]")[1].split("[Response 2]")[0]
            verdict = "1" if "Fix" in first else "2"
            out.append(
                Generation(
                    row_index=r.row_index,
                    text=f"Verdict: [[{verdict}]]",
                    tokens=[TokenLogprob(verdict, -0.1, [(verdict, -0.1)])],
                    prompt_tokens=20,
                    completion_tokens=1,
                    latency_s=0.0,
                    finish_reason="stop",
                )
            )
        if on_batch:
            on_batch(len(requests), len(requests))
        return out


def test_judge_recipe_logs_its_summary(mlflow_server, cli_env, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "load_judge_engine", lambda loaded: VerdictJudge())
    rows = [
        {"prompt": f"ticket {i}", "response_A": "Restart it.", "response_B": f"Fix {i}."}
        for i in range(3)
    ]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = {
        "run": {
            "name": "judge-pairs",
            "model_name_or_path": "smollm2-135m-instruct",
            "data_s3_path": "pairs.jsonl",
            "output_s3_path": "",
            "mlflow_tracking_uri": mlflow_server,
            "mlflow_experiment_name": "judges",
            "mlflow_run_name": "pairs-run",
        },
        "evaluation": {"task": "llm_judge", "strategy": "judge", "metric": "all"},
        "inference": {"temperature": 0},
    }
    path = tmp_path / "judge-pairs.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert cli_main(["run", str(path), "--quiet"]) == 0

    outputs = tmp_path / "outputs"
    results = json.loads(results_file(outputs, "judge-pairs").read_text())
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("judges")
    (run,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'pairs-run'")
    expected = finite_metrics(results)
    assert {"winrate", "b_scores", "b_scores_stderr", "lower_rate", "upper_rate"} <= set(expected)
    assert expected["b_scores"] == 6  # every judgment prefers B
    assert run.data.metrics == expected
    assert run.data.params["evaluation.task"] == "llm_judge"
    assert results_file(outputs, "judge-pairs").name in artifact_names(
        client, run.info.run_id, "eval_results"
    )
    assert details_file(outputs, "judge-pairs").name in artifact_names(
        client, run.info.run_id, "eval_results/details"
    )
    assert f"MLflow run: {mlflow_server}/#/experiments/" in capsys.readouterr().out


def test_asset_metadata_shows_the_mlflow_run(
    mlflow_server, cli_env, fake_engine, tmp_path, monkeypatch
):
    loaded = write_recipe(
        tmp_path,
        "asset-meta",
        run={"mlflow_run_name": "from-dagster"},
        analysis={"enabled": False},
    )
    assert build_tracking_assets(loaded) == []  # no URI in the recipe or the environment
    done = run_evaluation(loaded, instance=cli_env, show_progress=False)
    assert done.report is not None, done.message
    assert "mlflow" not in done.report

    # the environment variable, read when the definitions load
    monkeypatch.setenv(tracking.TRACKING_URI_ENV, mlflow_server)
    (asset,) = build_tracking_assets(loaded)
    assert asset.key == mlflow_run_key(loaded) == dg.AssetKey(["asset_meta", "mlflow_run"])
    assert set(asset.asset_deps[asset.key]) == {dg.AssetKey(["asset_meta", "aggregated_report"])}
    assert asset.tags_by_key[asset.key][FOLLOWUP_TAG] == "true"  # the follow-up sensor's

    result = dg.materialize([asset], instance=cli_env)
    (event,) = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("asset-meta")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "from-dagster"
    assert metadata["mlflow_run_id"].value == run.info.run_id
    assert isinstance(metadata["mlflow_run_url"], dg.UrlMetadataValue)
    assert metadata["mlflow_run_url"].value == (
        f"{mlflow_server}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}"
    )
    assert run.data.tags[tracking.DAGSTER_RUN_ID_TAG] == result.run_id
    assert "report.html" not in {Path(a.path).name for a in client.list_artifacts(run.info.run_id)}


def test_automation_logs_after_an_automated_aggregate(
    mlflow_server, cli_env, fake_engine, tmp_path, monkeypatch
):
    """In a deployment the follow-up sensor runs mlflow_run once the aggregate updated."""
    monkeypatch.setenv(tracking.TRACKING_URI_ENV, mlflow_server)
    loaded = write_recipe(tmp_path, "auto-eval", analysis={"enabled": False})
    built = build_orchestration([loaded])
    evaluation = build_evaluation_assets(loaded)
    defs = dg.Definitions(
        assets=[
            *(d for d in evaluation if not isinstance(d, dg.AssetChecksDefinition)),
            *build_tracking_assets(loaded),
            *built.assets,
        ],
        asset_checks=[d for d in evaluation if isinstance(d, dg.AssetChecksDefinition)],
        jobs=built.jobs,
        sensors=built.sensors,
        executor=dg.in_process_executor,
    )
    automation = Automation(defs, cli_env)
    run_job(defs, cli_env, "auto_eval__prepare")
    steps = []
    while requested := automation.tick(defs):
        steps.append(requested)
        by_partition: dict[str | None, list[dg.AssetKey]] = {}
        for key, partitions in requested.items():
            for partition in partitions:
                by_partition.setdefault(partition, []).append(dg.AssetKey.from_user_string(key))
        for partition, keys in by_partition.items():  # one run per partition, as the sensor
            dg.materialize(
                list(defs.assets), selection=keys, partition_key=partition, instance=cli_env
            )
        assert len(steps) < 6, steps
    assert steps[-2:] == [{"auto_eval/aggregated_report": {None}}, {"auto_eval/mlflow_run": {None}}]
    experiment = MlflowClient(tracking_uri=mlflow_server).get_experiment_by_name("auto-eval")
    (run,) = MlflowClient(tracking_uri=mlflow_server).search_runs([experiment.experiment_id])
    event = cli_env.get_latest_materialization_event(mlflow_run_key(loaded))
    assert run.data.tags[tracking.DAGSTER_RUN_ID_TAG] == event.run_id


def test_odd_metric_names_and_a_deleted_experiment(mlflow_server, tmp_path, monkeypatch):
    """The domain function alone, on a hand-written results JSON."""
    monkeypatch.delenv(tracking.TRACKING_URI_ENV, raising=False)
    loaded = write_recipe(tmp_path, "odd-names", run={"mlflow_tracking_uri": mlflow_server + "/"})
    results = tmp_path / "results_2026-01-01T00-00-00.000Z.json"
    values = {"acc@1": 0.5, "acc@1_stderr": 0.1, "a|b:c": 2.0, "skipped": None}
    results.write_text(
        json.dumps(
            {
                "config_general": {"timestamp": "2026-01-01T00-00-00.000Z"},
                "results": {"all": values},
            }
        )
    )
    report = {"paths": {"results": str(results)}}
    tracked = tracking.log_evaluation(loaded, report, dagster_run_id="dagster-1")
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(tracked.run_id)
    assert run.data.metrics == {"acc_1": 0.5, "acc_1_stderr": 0.1, "a_b_c": 2.0}
    assert run.info.run_name == "odd-names-2026-01-01T00-00-00.000Z"
    assert tracked.url == (
        f"{mlflow_server}/#/experiments/{run.info.experiment_id}/runs/{tracked.run_id}"
    )
    assert sorted(tracked.artifacts) == [
        f"eval_results/{results.name}",
        "recipe/odd-names.yaml",
    ]

    client.delete_experiment(run.info.experiment_id)
    with pytest.raises(tracking.TrackingError, match="the experiment 'odd-names' is deleted"):
        tracking.log_evaluation(loaded, report)


# ---------------------------------------------------------------- a server that is down


def test_closed_port_fails_clearly_and_leaves_the_results(
    cli_env, fake_engine, tmp_path, monkeypatch, capsys
):
    closed = f"http://127.0.0.1:{free_port()}"  # bound, then released: nothing listens
    loaded = write_recipe(tmp_path, "down-eval", run={"mlflow_tracking_uri": closed})
    results_dir = tmp_path / "outputs" / "down-eval" / "eval_results"
    seen: dict = {}
    real = tracking.log_evaluation

    def timed(*args, **kwargs):  # what the evaluation left, just before MLflow is tried
        seen["before"] = snapshot(results_dir)
        started = time.monotonic()
        try:
            return real(*args, **kwargs)
        finally:
            seen["seconds"] = time.monotonic() - started

    monkeypatch.setattr(tracking, "log_evaluation", timed)
    # the preflight finds it first: one line, nothing run
    assert cli_main(["run", str(loaded.path), "--quiet"]) == 2
    stopped = capsys.readouterr()
    assert f"run.mlflow_tracking_uri: cannot reach the MLflow tracking server {closed}" in (
        stopped.err
    )
    assert not results_dir.exists() and "seconds" not in seen
    # a server that answered the preflight and went away before the MLflow step: only
    # that step fails
    monkeypatch.setattr(preflight, "run_preflight", lambda loaded, **kwargs: [])
    assert cli_main(["run", str(loaded.path), "--quiet"]) == 1
    captured = capsys.readouterr()
    error = captured.err.strip().splitlines()
    assert len(error) == 1, captured.err
    message = error[0]
    assert message.startswith("MLflow tracking failed while reaching the tracking server")
    assert f"run.mlflow_tracking_uri in {loaded.path} = {closed}" in message
    assert "Connection refused" in message
    assert str(results_file(tmp_path / "outputs", "down-eval")) in message
    assert seen["seconds"] < 20  # bounded retries, not MLflow's minutes

    # the results were printed and are on disk, untouched by the failed step
    assert "Results:" in captured.out
    assert seen["before"] == snapshot(results_dir)
    assert results_file(tmp_path / "outputs", "down-eval").name in {
        Path(k).name for k in seen["before"]
    }
    assert details_file(tmp_path / "outputs", "down-eval").exists()
    assert not any(key in os.environ for key in tracking.HTTP_DEFAULTS)


# ---------------------------------------------------------------- plain functions


def test_names_and_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv(tracking.TRACKING_URI_ENV, raising=False)
    loaded = write_recipe(tmp_path, "plain-run")
    assert tracking.tracking_uri(loaded) is None
    assert tracking.log_evaluation(loaded, {"paths": {}}) is None  # no tracking: no-op
    monkeypatch.setenv(tracking.TRACKING_URI_ENV, "http://tracking.example:5000")
    assert tracking.tracking_uri(loaded) == "http://tracking.example:5000"
    assert tracking.uri_source(loaded) == "$MLFLOW_TRACKING_URI"
    assert tracking.experiment_name(loaded) == "plain-run"
    stamp = "2026-01-02T03-04-05.678Z"
    assert tracking.run_name(loaded, stamp) == f"plain-run-{stamp}"

    assert tracking.mlflow_key("custom|gen_qa:acc@1") == "custom_gen_qa_acc_1"
    assert tracking.mlflow_key("/../x/./y") == "_/x/_/y"
    assert tracking.mlflow_key("rouge L/f-1.0") == "rouge L/f-1.0"  # allowed as is
    results = {
        "results": {
            "all": {"a:b": 1.0, "a_b": 2.0, "nan": float("nan"), "none": None, "ok": True, "n": 3}
        }
    }
    assert tracking.results_metrics(results) == {"a_b": 1.0, "a_b_2": 2.0, "n": 3.0}

    assert tracking.run_url("https://mlflow.example/", "7", "abc") == (
        "https://mlflow.example/#/experiments/7/runs/abc"
    )
    assert tracking.run_url("https://user:secret@mlflow.example", "7", "abc") == (
        "https://***@mlflow.example/#/experiments/7/runs/abc"
    )
    assert tracking.run_url("sqlite:///m.db", "1", "abc") is None


def test_params_are_flat_and_fit_mlflow(tmp_path):
    loaded = write_recipe(
        tmp_path,
        "params",
        run={"mlflow_run_name": "x" * 7000},
        classification={"label_field": "class", "labels": ["hardware", "network"]},
    )
    params = tracking.recipe_params(loaded)
    assert params["inference.max_new_tokens"] == "6"
    assert params["dataset.on_invalid"] == "fail"  # defaults too: what ran
    assert json.loads(params["classification.labels"]) == ["hardware", "network"]
    assert "run.mlflow_tracking_uri" not in params  # unset keys are left out
    cut = params["run.mlflow_run_name"]
    assert len(cut) == tracking.MAX_PARAM_LENGTH and cut.endswith("...")


def test_sagemaker_arn_without_the_plugin_names_the_extra(tmp_path, monkeypatch):
    arn = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/my-server"
    assert tracking.is_sagemaker_arn(arn)
    assert not tracking.is_sagemaker_arn("arn:aws:sagemaker:us-east-1:123456789012:endpoint/x")
    loaded = write_recipe(tmp_path, "arn-run", run={"mlflow_tracking_uri": arn})
    real_find_spec = tracking.importlib.util.find_spec
    monkeypatch.setattr(
        tracking.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "sagemaker_mlflow" else real_find_spec(name, *a),
    )
    with pytest.raises(tracking.TrackingError) as caught:
        tracking.log_evaluation(loaded, {"paths": {"results": "unused"}})
    message = str(caught.value)
    assert "sagemaker-mlflow" in message and "pip install 'nova-eval[sagemaker]'" in message
    assert f"run.mlflow_tracking_uri in {loaded.path}" in message and arn in message


def test_server_env_values_are_kept_out_of_params_results_and_the_recipe_artifact(tmp_path):
    """inference.server.env may carry credentials (HF_TOKEN for `vllm serve`): MLflow params,
    the results' inference section and the uploaded recipe show the names, not the values."""
    secret = "hf_live_0123456789abcdef"
    loaded = write_recipe(
        tmp_path,
        "server-env",
        inference={
            "engine": "openai",
            "server": {"command": "serve {model} --port {port}", "env": {"HF_TOKEN": secret}},
        },
    )
    params = tracking.recipe_params(loaded)
    assert params["inference.server.env.HF_TOKEN"] == "[REDACTED]"
    assert not any(secret in value for value in params.values())
    dumped = loaded.recipe.inference.public_dump()
    assert dumped["server"]["env"] == {"HF_TOKEN": "[REDACTED]"}
    assert loaded.recipe.inference.server.env["HF_TOKEN"] == secret  # the server still gets it
    assert secret in loaded.path.read_text()
    (tmp_path / "scratch").mkdir()
    copy = Path(tracking._redacted_copy(str(loaded.path), str(tmp_path / "scratch"), [secret]))
    assert copy.parent == tmp_path / "scratch"
    assert yaml.safe_load(copy.read_text())["inference"]["server"]["env"] == {
        "HF_TOKEN": "REDACTED"
    }
    assert secret in loaded.path.read_text()  # the user's file is untouched
