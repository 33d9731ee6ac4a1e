"""A real Dagster deployment on this machine: `dagster dev` (webserver + daemon) over an
instance configured with deploy/local/dagster.yaml, the bundled model in every replica run.

1. The UI's Materialize button: the launchPipelineExecution mutation materializes the
   dataset and prompts; the run succeeds.
2. The automation takes over: the daemon runs the 2 replica partitions (in parallel, one
   process each, through the queued run coordinator), then the aggregate.
3. A backfill of the 2 replica partitions from the CLI (`dagster job backfill`): 2 more
   successful runs, then the aggregate again, over the same run's replicas.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from nova_eval_assets import stages
from nova_eval_assets.assets.tables import DDL_KEY
from nova_eval_assets.recipe import load_recipe
from tests.conftest import PROJECT
from tests.test_resume import short_rows

pytestmark = pytest.mark.model

BIN = PROJECT / ".venv" / "bin"
LOCATION = "nova_eval_test"
REPLICAS = 2
LAUNCH = """
mutation Launch($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""
WORKSPACE = """
{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
RUN = "query Run($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, check: Callable[[], object], timeout: float, server=None) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.process.poll() is not None:
            raise AssertionError(f"dagster dev exited while waiting for {what}:\n{server.log()}")
        value = check()
        if value:
            return value
        time.sleep(1)
    log = f"\n{server.log()}" if server is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{log}")


class Server:
    def __init__(self, home: Path, env: dict[str, str], workspace: Path):
        self.home, self.env, self.workspace = home, env, workspace
        self.port = free_port()
        self.log_path = home / "dagster_dev.log"
        self.process = subprocess.Popen(
            [
                *(str(BIN / "dagster"), "dev", "-w", str(workspace)),
                *("-h", "127.0.0.1", "-p", str(self.port)),
            ],
            cwd=PROJECT,
            env=env,
            stdout=self.log_path.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the daemon, code server, runs
        )

    def log(self) -> str:
        return self.log_path.read_text()[-4000:]

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/graphql",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        assert "errors" not in answer, answer["errors"]
        return answer["data"]

    def location_loaded(self) -> bool:
        try:
            data = self.graphql(WORKSPACE)["workspaceOrError"]
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False
        entries = {e["name"]: e for e in data.get("locationEntries", [])}
        entry = entries.get(LOCATION)
        if entry and entry["locationOrLoadError"]["__typename"] == "PythonError":
            raise AssertionError(entry["locationOrLoadError"]["message"])
        return bool(entry) and entry["loadStatus"] == "LOADED"

    def stop(self) -> None:
        # SIGTERM to dagster dev alone: it stops the webserver and the daemon itself; whatever
        # of its process group is left after that is killed
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[Server, dict]]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "tiny.jsonl").write_text("\n".join(short_rows(16)) + "\n")
    recipe = {
        "run": {
            "name": "tiny",
            "model_name_or_path": "smollm2-135m-instruct",
            "replicas": REPLICAS,
            "data_s3_path": "tiny.jsonl",
        },
        "evaluation": {"task": "gen_qa", "strategy": "gen_qa"},
        # batch_size 1: blocks of 4 rows, so each of the 2 replicas gets 8 of the 16 rows
        "inference": {"max_new_tokens": 2, "batch_size": 1, "top_logprobs": 1},
    }
    (recipes / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        yaml.safe_dump(
            {
                "load_from": [
                    {
                        "python_module": {
                            "module_name": "tests.server_location",
                            "working_directory": str(PROJECT),
                            "location_name": LOCATION,
                        }
                    }
                ]
            }
        )
    )
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "NOVA_EVAL_RECIPES_DIR": str(recipes),
        "NOVA_EVAL_OUTPUT_ROOT": str(tmp_path / "outputs"),
        "NOVA_EVAL_AUTOMATION_INTERVAL_S": "3",  # the automation sensors tick every 3 s
        "NOVA_EVAL_SENSOR_INTERVAL_S": "3600",
        "PYTHONPATH": str(PROJECT),
        "OMP_NUM_THREADS": "1",  # two model processes on two shared cores
        "DAGSTER_TELEMETRY_DISABLED": "1",
    }
    server = Server(home, env, workspace)
    try:
        wait_for("the code location", server.location_loaded, 180, server)
        yield server, env
    finally:
        server.stop()


def runs(instance: dg.DagsterInstance, **tags: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags=tags)))


def failure_of(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str:
    events = instance.all_logs(run.run_id)
    errors = [e.dagster_event for e in events if e.dagster_event and e.dagster_event.is_failure]
    return "\n".join(str(e.event_specific_data)[:2000] for e in errors) or "no failure event"


def finished(
    instance: dg.DagsterInstance, found: list[dg.DagsterRun], count: int
) -> list[dg.DagsterRun] | None:
    failed = [r for r in found if r.status == dg.DagsterRunStatus.FAILURE]
    assert not failed, "\n".join(f"{r.run_id} {r.tags}: {failure_of(instance, r)}" for r in failed)
    done = [r for r in found if r.status == dg.DagsterRunStatus.SUCCESS]
    return done if len(done) >= count else None


def test_ui_launch_then_daemon_runs_replicas_in_parallel_and_a_cli_backfill_reaggregates(
    deployment, monkeypatch
):
    server, env = deployment
    launched = server.graphql(
        LAUNCH,
        {
            "executionParams": {
                "selector": {
                    "repositoryLocationName": LOCATION,
                    "repositoryName": "__repository__",
                    "pipelineName": "__ASSET_JOB",
                    "assetSelection": [
                        {"path": ["tiny", "validated_dataset"]},
                        {"path": ["tiny", "preprocessed_prompts"]},
                    ],
                    "assetCheckSelection": [
                        {
                            "assetKey": {"path": ["tiny", "validated_dataset"]},
                            "name": "dataset_is_valid",
                        }
                    ],
                },
                "mode": "default",
                "runConfigData": {},
                "executionMetadata": {"tags": [{"key": "launched_from", "value": "test"}]},
            }
        },
    )["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    def status() -> str | None:
        state = server.graphql(RUN, {"id": run_id})["runOrError"]["status"]
        assert state not in ("FAILURE", "CANCELED"), f"{state}\n{server.log()}"
        return state == "SUCCESS"

    wait_for("the UI-launched run", status, 180, server)

    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    try:
        # the automation: every replica partition, each its own run, then the aggregate
        replica_runs = wait_for(
            "the replica runs",
            lambda: finished(instance, runs(instance, **{"nova_eval/stage": "replica"}), REPLICAS),
            300,
            server,
        )
        assert sorted(r.tags["dagster/partition"] for r in replica_runs) == ["0", "1"]
        records = [instance.get_run_record_by_id(r.run_id) for r in replica_runs]
        spans = sorted((r.start_time, r.end_time) for r in records)
        overlapping = max(
            sum(1 for start, end in spans if start <= moment < end) for moment, _ in spans
        )
        assert overlapping >= 2, f"the replica runs did not run in parallel: {spans}"
        wait_for(
            "the aggregate",
            lambda: finished(instance, runs(instance, **{"nova_eval/stage": "aggregate"}), 1),
            180,
            server,
        )
        loaded = load_recipe(Path(env["NOVA_EVAL_RECIPES_DIR"]) / "tiny.yaml")
        monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", env["NOVA_EVAL_OUTPUT_ROOT"])
        first = stages.read_latest_report(loaded)
        assert first["counts"]["examples"] == 16 and first["counts"]["replicas"] == REPLICAS

        # then the follow-ups: the analysis report, the tables partition, the DDL
        wait_for(
            "the follow-ups",
            lambda: (
                instance.get_latest_materialization_event(DDL_KEY)
                and finished(instance, runs(instance, **{"nova_eval/stage": "followup"}), 1)
            ),
            240,
            server,
        )
        assert instance.get_latest_materialization_event(dg.AssetKey(["tiny", "analysis_report"]))
        root = Path(env["NOVA_EVAL_OUTPUT_ROOT"]) / "tables"
        with duckdb.connect() as con:
            (count,) = con.execute(
                f"select count(*) from read_parquet('{root}/eval_examples/eval_name=tiny/"
                "*/*/*.parquet')"
            ).fetchone()
        assert count == 16

        # a backfill of the 2 replica partitions from the CLI: 2 runs, then the aggregate
        backfill = subprocess.run(
            [
                *(str(BIN / "dagster"), "job", "backfill", "-w", str(server.workspace)),
                *("-l", LOCATION, "-j", "tiny__replicas", "--partitions", "0,1", "--noprompt"),
            ],
            cwd=PROJECT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert backfill.returncode == 0, backfill.stdout + backfill.stderr

        def from_the_cli() -> list[dg.DagsterRun]:
            replicas = runs(instance, **{"nova_eval/stage": "replica"})
            return [r for r in replicas if "nova_eval/trigger" not in r.tags]

        backfill_runs = wait_for(
            "the backfill's runs", lambda: finished(instance, from_the_cli(), REPLICAS), 300, server
        )
        assert all("dagster/backfill" in r.tags for r in backfill_runs)
        assert sorted(r.tags["dagster/partition"] for r in backfill_runs) == ["0", "1"]
        wait_for(
            "the aggregate after the backfill",
            lambda: finished(instance, runs(instance, **{"nova_eval/stage": "aggregate"}), 2),
            180,
            server,
        )
        second = stages.read_latest_report(loaded)
        assert second["metrics"] == first["metrics"]  # same run: the same numbers
        assert second["paths"]["results"] != first["paths"]["results"]
    finally:
        instance.dispose()
