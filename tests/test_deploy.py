"""deploy/: the instance configurations are valid for their run launchers, and the run tags
nova-eval puts on replica runs ask the Kubernetes and ECS launchers for a GPU. (The local
configuration runs for real in test_dagster_server.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_aws.ecs import EcsRunLauncher

from nova_eval_assets.assets.automation import RUN_TAGS_ENV, STAGE_TAG
from tests.conftest import PROJECT
from tests.orchestration_support import location

DEPLOY = PROJECT / "deploy"


@pytest.fixture
def postgres_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        monkeypatch.setenv(name, "x")


def instance_config(folder: Path) -> dict:
    config, _ = dagster_instance_config(str(folder))
    return dict(config)


def test_local_instance_queues_runs_and_launches_them_as_processes(tmp_path):
    shutil.copy(DEPLOY / "local" / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        limits = coordinator.get_run_queue_config()
        assert limits.max_concurrent_runs == 4
        assert {"key": STAGE_TAG, "value": "replica", "limit": 4} in limits.tag_concurrency_limits
        assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"
    finally:
        instance.dispose()


@pytest.mark.parametrize("target", ["k8s", "ecs"])
def test_cluster_instance_configs_are_valid(target, tmp_path, postgres_env):
    shutil.copy(DEPLOY / target / "dagster.yaml", tmp_path / "dagster.yaml")
    config = instance_config(tmp_path)  # the instance schema (raises when invalid)
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    launcher = config["run_launcher"]
    if target == "k8s":
        k8s = pytest.importorskip("dagster_k8s")
        launcher_class = k8s.K8sRunLauncher
        assert launcher["class"] == "K8sRunLauncher"
    else:
        launcher_class = EcsRunLauncher
        assert launcher["class"] == "EcsRunLauncher"
    result = validate_config(launcher_class.config_type(), launcher["config"])
    assert result.success, [e.message for e in result.errors]


def tags_with(monkeypatch, target: str, make_recipe) -> tuple[dict, dict, dict]:
    monkeypatch.setenv(RUN_TAGS_ENV, str(DEPLOY / target / "run_tags.yaml"))
    defs = location([make_recipe(replicas=2)])
    replica_job = defs.resolve_job_def("tiny__replicas")
    prepare_job = defs.resolve_job_def("tiny__prepare")
    sensor = defs.get_sensor_def("nova_eval_replicas")
    return dict(replica_job.tags), dict(prepare_job.tags), dict(sensor.run_tags)


def test_kubernetes_replica_runs_request_a_gpu(monkeypatch, make_recipe):
    k8s_job = pytest.importorskip("dagster_k8s.job")
    replica, prepare, automation = tags_with(monkeypatch, "k8s", make_recipe)
    assert replica[STAGE_TAG] == "replica" and prepare[STAGE_TAG] == "prepare"
    gpu = k8s_job.get_user_defined_k8s_config(replica)
    resources = gpu.container_config["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1"
    assert gpu.pod_spec_config["tolerations"][0]["key"] == "nvidia.com/gpu"
    cpu = k8s_job.get_user_defined_k8s_config(prepare)
    assert "nvidia.com/gpu" not in json.dumps(cpu.container_config)
    # the runs the automation starts for replica partitions carry the same request
    assert automation["dagster-k8s/config"] == replica["dagster-k8s/config"]


def test_ecs_replica_runs_request_a_gpu(monkeypatch, make_recipe):
    replica, prepare, automation = tags_with(monkeypatch, "ecs", make_recipe)
    launcher = EcsRunLauncher.__new__(EcsRunLauncher)  # only its tag parsing is exercised
    run = dg.DagsterRun(job_name="tiny__replicas", run_id="r", tags=replica)
    overrides = launcher._get_container_overrides(run)
    assert overrides["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    kwargs = launcher._get_run_task_kwargs_from_run(run)
    assert kwargs["capacityProviderStrategy"][0]["capacityProvider"] == "nova-eval-gpu"
    assert (replica["ecs/cpu"], replica["ecs/memory"]) == ("4096", "30720")
    plain = dg.DagsterRun(job_name="tiny__prepare", run_id="p", tags=prepare)
    assert launcher._get_container_overrides(plain) == {}
    assert automation["ecs/container_overrides"] == replica["ecs/container_overrides"]


def test_helm_values_and_run_tags_files_parse():
    values = yaml.safe_load((DEPLOY / "k8s" / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    for target in ("k8s", "ecs"):
        tags = yaml.safe_load((DEPLOY / target / "run_tags.yaml").read_text())
        assert set(tags) == {"replica", "default"}
