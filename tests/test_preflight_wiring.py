"""The preflight where users meet it: `nova-eval validate --preflight`, `nova-eval run`
(stops before Dagster starts and before any model loads), the blocking `remote_access` check
in the graph, and a remote error mid-run reaching the user as one line."""

from __future__ import annotations

import time

import dagster as dg
import pytest

from nova_eval_assets import cli, stages, storage
from nova_eval_assets.assets.evaluation import build_evaluation_assets
from nova_eval_assets.assets.in_process import failure_message
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.preflight import RemoteAccessError
from tests.test_preflight import LAMBDA_ARN, no_aws  # noqa: F401 (fixture)

NO_CREDENTIALS = (
    "processor.lambda_arn: no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID, "
    "or run on a role)"
)


@pytest.fixture
def lambda_recipe(make_recipe, no_aws, monkeypatch):  # noqa: F811
    from tests.orchestration_support import edit_recipe

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(stages.engine_setup, "create_engine", no_model)
    loaded = make_recipe(name="remote")
    return edit_recipe(
        loaded, processor={"lambda_arn": LAMBDA_ARN, "postprocessing": {"enabled": True}}
    )


def test_validate_preflight_prints_one_line_and_fails(lambda_recipe, capsys):
    started = time.monotonic()
    code = cli.main(["validate", str(lambda_recipe.path), "--preflight"])
    err = capsys.readouterr().err
    assert code == 2 and time.monotonic() - started < 10
    assert f"preflight: FAILED  {NO_CREDENTIALS}" in err
    assert "Traceback" not in err


def test_validate_without_the_flag_checks_nothing_remote(lambda_recipe, capsys):
    assert cli.main(["validate", str(lambda_recipe.path)]) == 0
    assert "preflight" not in capsys.readouterr().out


def test_run_stops_before_any_model_loads(lambda_recipe, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    code = cli.main(["run", str(lambda_recipe.path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and NO_CREDENTIALS in err and "nothing was run" in err
    assert not storage.exists(EvalLayout.for_recipe(lambda_recipe).validation_report)


def test_the_graph_blocks_on_the_remote_access_check(lambda_recipe):
    definitions = build_evaluation_assets(lambda_recipe)
    checks = [d for d in definitions if isinstance(d, dg.AssetChecksDefinition)]
    assert {spec.name for c in checks for spec in c.check_specs} == {
        "dataset_is_valid",
        "remote_access",
    }
    key = lambda_recipe.key
    result = dg.materialize(
        definitions,
        instance=dg.DagsterInstance.ephemeral(),
        selection=dg.AssetSelection.assets(
            dg.AssetKey([key, "validated_dataset"]),
            dg.AssetKey([key, "preprocessed_prompts"]),
            dg.AssetKey([key, "inference_outputs"]),
        ),
        partition_key="0",
        raise_on_error=False,
    )
    (evaluation,) = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "remote_access"
    ]
    assert not evaluation.passed and evaluation.description == NO_CREDENTIALS
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert dg.AssetKey([key, "inference_outputs"]) not in materialized


def test_a_remote_error_mid_run_is_one_line_with_the_traceback_left_in_the_logs():
    @dg.asset
    def postprocessed_metrics() -> None:
        try:
            raise ConnectionError("socket closed")
        except ConnectionError as exc:
            raise RemoteAccessError(NO_CREDENTIALS) from exc

    result = dg.materialize(
        [postprocessed_metrics], instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )
    message = failure_message(result)
    first, pointer = message.splitlines()
    # the class path of our own error is left out: the message speaks for itself
    assert first == f"postprocessed_metrics failed: {NO_CREDENTIALS}"
    assert "Traceback" not in message and result.run_id in pointer


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("part", ["mlflow", "endpoint"])
def test_run_with_a_server_down_stops_before_any_model(
    part, make_recipe, monkeypatch, tmp_path, capsys
):
    from tests.orchestration_support import edit_recipe

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(stages.engine_setup, "create_engine", no_model)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    url = f"http://127.0.0.1:{closed_port()}"
    loaded = make_recipe(name="down")
    if part == "mlflow":
        loaded = edit_recipe(loaded, run={"mlflow_tracking_uri": url})
        key = "run.mlflow_tracking_uri"
    else:
        loaded = edit_recipe(
            loaded, inference={"engine": "openai", "endpoint": url, "top_logprobs": 0}
        )
        key = "inference.endpoint"
    started = time.monotonic()
    assert cli.main(["run", str(loaded.path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"preflight: FAILED  {key}: cannot reach" in err and url in err
    assert time.monotonic() - started < 10
    assert not storage.exists(EvalLayout.for_recipe(loaded).validation_report)
