"""Orchestration in process: schedules, the automation that runs every replica and then the
aggregate, backfills of chosen replicas, staleness and data versions, and the dataset
sensor. Inference is a fake engine here (the real model runs in test_resume.py and
test_dagster_server.py)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import dagster as dg
import duckdb
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.schedules import is_valid_cron_string

from nova_eval_assets import lineage, stages, storage
from nova_eval_assets.assets.sensors import SENSOR_NAME
from nova_eval_assets.cron import cron_problem
from nova_eval_assets.engines.models import resolve_model
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import RecipeError, load_recipe
from tests.conftest import ticket_lines
from tests.orchestration_support import (
    Automation,
    FakeEngine,
    data_version,
    edit_recipe,
    location,
    run_job,
    stale_status,
)
from tests.test_s3 import BUCKET, s3  # noqa: F401  (the moto S3 fixture)

MODEL = "smollm2-135m-instruct"


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    fake = FakeEngine()
    monkeypatch.setitem(stages._ENGINES, ("hf", MODEL), fake)
    return fake


@pytest.fixture
def recipe(make_recipe):
    """16 rows, 2 replicas (batch_size 2: blocks of 8 rows, one per replica), a schedule."""

    def make(**options):
        loaded = make_recipe(ticket_lines(16), replicas=2, **options)
        return edit_recipe(loaded, schedule={"cron": "30 2 * * 1-5", "timezone": "Europe/Paris"})

    return make


def evaluate_everything(defs, instance, automation: Automation) -> list[dict]:
    """Run what the automation requests, tick after tick, until it requests nothing."""
    ticks = []
    for _ in range(6):
        requested = automation.tick(defs)
        ticks.append(requested)
        if not requested:
            return ticks
        name = next(iter(requested)).split("/")[0]
        replicas = requested.get(f"{name}/inference_outputs") or requested.get(
            f"{name}/postprocessed_metrics"
        )
        for partition in sorted(replicas or []):
            run_job(defs, instance, f"{name}__replicas", partition, tags={"via": "automation"})
        if f"{name}/aggregated_report" in requested:
            run_job(defs, instance, f"{name}__aggregate", tags={"via": "automation"})
    raise AssertionError(f"the automation never settled: {ticks}")


# ---------------------------------------------------------------- schedules


def test_recipe_schedule_is_validated_strictly(make_recipe):
    loaded = make_recipe()
    original = loaded.path.read_text()

    def attempt(schedule: dict) -> str:
        loaded.path.write_text(original)
        with pytest.raises(RecipeError) as error:
            edit_recipe(loaded, schedule=schedule)
        return str(error.value)

    message = attempt({"cron": "0 2 * * 8"})
    assert "tiny.yaml:" in message and "schedule.cron" in message
    assert "day of week: 8 is out of range 0..7" in message
    message = attempt({"cron": "0 2 * * *", "timezone": "New_York"})
    assert "schedule.timezone" in message and "did you mean America/New_York" in message
    assert "unknown key 'schedule.every'" in attempt({"cron": "@daily", "every": "day"})
    assert "missing required key 'schedule.cron'" in attempt({"timezone": "UTC"})
    loaded.path.write_text(original)
    assert edit_recipe(loaded, schedule={"cron": "@daily"}).recipe.schedule.timezone == "UTC"


VALID_CRONS = [
    "0 2 * * *",
    "*/15 * * * *",
    "0 9-17/2 * jan-jun mon-fri",
    "5,35 1 1,15 * 0",
    "@daily",
    "0 0 29 2 *",
    "0 2 * * 7",
]
INVALID_CRONS = ["0 2 31 2 *", "61 * * * *", "0 2 * *", "* * * * * *", "@often", "0 2 1-x * *",
                 "*/0 * * * *", "0 2 5-1 * *"]  # fmt: skip


@pytest.mark.parametrize("expression", VALID_CRONS + INVALID_CRONS)
def test_cron_check_is_at_least_as_strict_as_dagster(expression):
    accepted = cron_problem(expression) is None
    assert accepted == (expression in VALID_CRONS)
    if accepted:  # what a recipe may say, a Dagster schedule takes
        assert is_valid_cron_string(expression)


def test_schedule_runs_the_whole_evaluation_through_the_automation(recipe, engine):
    loaded = recipe()
    defs = location([loaded])
    instance = dg.DagsterInstance.ephemeral()
    schedule = defs.get_schedule_def("tiny__schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 2 * * 1-5", "Europe/Paris")
    assert schedule.job_name == "tiny__prepare"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    automation = Automation(defs, instance)

    moment = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=moment)
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.tags["nova_eval/trigger"] == "schedule"
    run_job(defs, instance, schedule.job_name, tags=request.tags)

    ticks = evaluate_everything(defs, instance, automation)
    # every replica partition first (inference and its metrics together), then the aggregate
    assert ticks[0] == {
        "tiny/inference_outputs": {"0", "1"},
        "tiny/postprocessed_metrics": {"0", "1"},
    }
    assert ticks[1] == {"tiny/aggregated_report": {None}}
    assert ticks[2] == {}
    report = stages.read_latest_report(loaded)
    assert report["counts"]["examples"] == 16 and report["counts"]["replicas"] == 2
    assert report["lineage"]["model_id"] == resolve_model(MODEL).model_id
    assert sorted(engine.generated_rows) == list(range(16))


def run_requested(defs: dg.Definitions, instance, requested: dict[str, set]) -> None:
    """Materialize what the automation requested, one run per partition (in process)."""
    by_partition: dict[str | None, list[dg.AssetKey]] = {}
    for key, partitions in requested.items():
        for partition in partitions:
            by_partition.setdefault(partition, []).append(dg.AssetKey.from_user_string(key))
    for partition, keys in by_partition.items():
        dg.materialize(
            list(defs.assets),
            selection=keys,
            partition_key=partition,
            instance=instance,
            tags={"via": "automation"},
        )


def test_after_the_aggregate_the_followups_run_for_that_evaluation_only(
    recipe, make_recipe, engine
):
    """The automation goes on after the aggregate: the analysis report and the evaluation's
    own tables partition, then the DDL; nothing for an evaluation that did not run, and
    nothing after `nova-eval run`, which runs those steps itself."""
    from nova_eval_assets import tables
    from nova_eval_assets.assets.materialize import run_evaluation

    loaded = recipe()
    other = make_recipe(ticket_lines(4), name="other")
    defs = location([loaded, other], followups=True)
    instance = dg.DagsterInstance.ephemeral()
    automation = Automation(defs, instance)
    run_job(defs, instance, "tiny__prepare")
    replicas = automation.tick(defs)
    assert replicas["tiny/inference_outputs"] == {"0", "1"}
    run_requested(defs, instance, replicas)
    assert automation.tick(defs) == {"tiny/aggregated_report": {None}}
    run_requested(defs, instance, {"tiny/aggregated_report": {None}})
    followups = automation.tick(defs)
    table_keys = (
        "eval_examples",
        "eval_metrics",
        "judge_judgments",
        "judge_criteria",
        "judge_summary",
    )
    assert followups == {
        "tiny/analysis_report": {None},
        **{f"tables/{table}": {"tiny"} for table in table_keys},  # not "other"
    }
    run_requested(defs, instance, followups)
    assert automation.tick(defs) == {"tables/athena_ddl": {None}}
    run_requested(defs, instance, {"tables/athena_ddl": {None}})
    assert automation.tick(defs) == {}

    # what they wrote: the 16 rows in the tables, the report, the DDL
    root = tables.tables_root()
    with duckdb.connect() as con:
        rows = con.execute(
            f"select eval_name, count(*) from read_parquet('{root}/eval_examples/"
            "eval_name=*/*/*/*.parquet', hive_partitioning = true) group by 1"
        ).fetchall()
    assert rows == [("tiny", 16)]
    assert storage.exists(EvalLayout.for_recipe(loaded).analysis("report.html"))
    assert storage.exists(f"{root}/_ddl/all.sql")

    # nova-eval run of the other recipe: its own tables and report; the automation stays idle
    assert run_evaluation(other, instance=instance, show_progress=False).report is not None
    assert automation.tick(defs) == {}


# ---------------------------------------------------------------- backfills and staleness


def test_backfill_of_chosen_replicas_reaggregates_only_a_consistent_run(recipe, engine):
    loaded = recipe()
    defs = location([loaded])
    instance = dg.DagsterInstance.ephemeral()
    automation = Automation(defs, instance)
    run_job(defs, instance, "tiny__prepare")
    evaluate_everything(defs, instance, automation)
    keys = {
        stage: ["tiny", stage]
        for stage in ("preprocessed_prompts", "inference_outputs", "postprocessed_metrics")
    }
    assert stale_status(defs, instance, keys["inference_outputs"], "0") == StaleStatus.FRESH

    # a rerun of one replica with unchanged settings re-aggregates (same run)
    run_job(defs, instance, "tiny__replicas", "1")
    assert automation.tick() == {"tiny/aggregated_report": {None}}
    run_job(defs, instance, "tiny__aggregate")
    assert automation.tick() == {}

    # new inference settings: the inference partitions are stale (new code version), the
    # dataset and prompts are not
    edited = edit_recipe(loaded, inference={"max_new_tokens": 3})
    defs = location([edited])
    for partition in ("0", "1"):
        status = stale_status(defs, instance, keys["inference_outputs"], partition)
        assert status == StaleStatus.STALE
    assert stale_status(defs, instance, keys["preprocessed_prompts"]) == StaleStatus.FRESH

    # backfill replica 0 only: replica 1 is stale, so the aggregate waits ...
    run_job(defs, instance, "tiny__replicas", "0")
    assert stale_status(defs, instance, keys["inference_outputs"], "1") == StaleStatus.STALE
    assert stale_status(defs, instance, ["tiny", "aggregated_report"]) == StaleStatus.STALE
    assert automation.tick(defs) == {}
    check = lineage.check_replicas(edited)
    assert not check.ok and "replica 1: made from other inference settings" in str(check.problems)
    # ... and refuses when run anyway
    refused = run_job(defs, instance, "tiny__aggregate", raise_on_error=False)
    assert not refused.success
    failure = next(e for e in refused.all_events if e.is_step_failure)
    error = failure.step_failure_data.error.cause
    assert error.cls_name == "StaleReplicasError" and "not all from the same run" in error.message

    # the rest of the backfill: every replica current again, the aggregate follows
    run_job(defs, instance, "tiny__replicas", "1")
    assert automation.tick(defs) == {"tiny/aggregated_report": {None}}
    run_job(defs, instance, "tiny__aggregate")
    report = stages.read_latest_report(edited)
    assert report["lineage"]["code_version"] == lineage.inference_code_version(edited)
    for partition in ("0", "1"):
        status = stale_status(defs, instance, keys["inference_outputs"], partition)
        assert status == StaleStatus.FRESH


def test_a_replica_in_progress_or_missing_holds_the_aggregate_back(recipe, engine):
    loaded = recipe()
    defs = location([loaded])
    instance = dg.DagsterInstance.ephemeral()
    automation = Automation(defs, instance)
    run_job(defs, instance, "tiny__prepare")
    run_job(defs, instance, "tiny__replicas", "0")  # a backfill that did only replica 0
    assert "tiny/aggregated_report" not in automation.tick()  # replica 1 is missing
    run_job(defs, instance, "tiny__replicas", "1")
    assert automation.tick() == {"tiny/aggregated_report": {None}}
    run_job(defs, instance, "tiny__aggregate")

    # a backfill of both replicas (right after the aggregate, within one tick): 0 is done,
    # 1 is still queued -> no aggregate yet
    run_job(defs, instance, "tiny__replicas", "0")
    job = defs.resolve_job_def("tiny__replicas")
    queued = instance.create_run_for_job(
        job_def=job,
        status=dg.DagsterRunStatus.NOT_STARTED,
        tags={"dagster/partition": "1"},
        asset_selection={
            dg.AssetKey(["tiny", s]) for s in ("inference_outputs", "postprocessed_metrics")
        },
    )
    assert automation.tick() == {}
    instance.report_run_canceled(queued)  # the queued run goes away: replica 0 alone is
    assert automation.tick() == {"tiny/aggregated_report": {None}}  # still the same run


def test_unchanged_inputs_reuse_inference_and_keep_data_versions(recipe, engine):
    loaded = recipe()
    defs = location([loaded])
    instance = dg.DagsterInstance.ephemeral()
    run_job(defs, instance, "tiny__prepare")
    run_job(defs, instance, "tiny__replicas", "0")
    first = data_version(instance, ["tiny", "inference_outputs"], "0")
    generated = len(engine.generated_rows)
    layout = EvalLayout.for_recipe(loaded)
    mtime = os.stat(layout.inference(0, 2)).st_mtime_ns

    # the data and prompts rerun with the same content: same data versions, nothing stale
    prompts_version = data_version(instance, ["tiny", "preprocessed_prompts"])
    run_job(defs, instance, "tiny__prepare")
    assert data_version(instance, ["tiny", "preprocessed_prompts"]) == prompts_version
    assert stale_status(defs, instance, ["tiny", "inference_outputs"], "0") == StaleStatus.FRESH

    result = run_job(defs, instance, "tiny__replicas", "0")
    (materialization, *_) = result.asset_materializations_for_node("tiny__inference_outputs")
    assert materialization.metadata["reused"].value is True
    assert len(engine.generated_rows) == generated  # nothing generated again
    assert os.stat(layout.inference(0, 2)).st_mtime_ns == mtime
    assert data_version(instance, ["tiny", "inference_outputs"], "0") == first

    # a forced recompute regenerates, to the same data version
    run_job(defs, instance, "tiny__replicas", "0", tags={"nova_eval/recompute": "true"})
    assert len(engine.generated_rows) == generated + 8
    assert data_version(instance, ["tiny", "inference_outputs"], "0") == first


def test_data_versions_come_from_dataset_content_and_model_checkpoint(recipe, engine):
    loaded = recipe()
    defs = location([loaded])
    instance = dg.DagsterInstance.ephemeral()
    run_job(defs, instance, "tiny__prepare")
    run_job(defs, instance, "tiny__replicas", "0")
    data = loaded.resolve_data_path()
    observed = instance.get_latest_data_version_record(dg.AssetKey(["tiny", "dataset_file"]))
    assert observed.event_log_entry.asset_observation.data_version == lineage.stream_sha256(data)
    checkpoint = instance.get_latest_data_version_record(dg.AssetKey(["tiny", "model_checkpoint"]))
    model = checkpoint.event_log_entry.asset_observation.data_version
    assert model == resolve_model(MODEL).model_id
    prompts = storage.read_parquet(EvalLayout.for_recipe(loaded).prompts)
    assert data_version(instance, ["tiny", "preprocessed_prompts"]) == lineage.table_sha256(prompts)
    expected = lineage.inference_lineage(loaded, 0, lineage.table_sha256(prompts), model)
    assert data_version(instance, ["tiny", "inference_outputs"], "0") == expected["data_version"]

    # a changed dataset: new data versions from validation on, inference stale
    with open(data, "a") as handle:
        handle.write(ticket_lines(17)[-1] + "\n")
    run_job(defs, instance, "tiny__prepare")
    assert data_version(instance, ["tiny", "preprocessed_prompts"]) != expected["prompts_sha256"]
    status = stale_status(defs, instance, ["tiny", "inference_outputs"], "0")
    assert status == StaleStatus.STALE


# ---------------------------------------------------------------- the dataset sensor


def sensor_tick(defs, instance, cursor):
    sensor = defs.get_sensor_def(SENSOR_NAME)
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    result = sensor.evaluate_tick(context)
    return result.run_requests, result.cursor


def test_dataset_sensor_starts_the_recipes_that_read_a_changed_file_once(make_recipe, tmp_path):
    shared = ticket_lines(16)
    a = make_recipe(shared, name="a")
    b = edit_recipe(make_recipe(ticket_lines(4), name="b"), run={"data_s3_path": "a.jsonl"})
    other = make_recipe(ticket_lines(4), name="other")
    late = edit_recipe(make_recipe(ticket_lines(4), name="late"), run={"data_s3_path": "new.jsonl"})
    defs = location([a, b, other, late])
    instance = dg.DagsterInstance.ephemeral()
    # created stopped (tests/test_sensor_opt_in.py); its ticks are evaluated directly here
    assert defs.get_sensor_def(SENSOR_NAME).default_status == dg.DefaultSensorStatus.STOPPED

    requests, cursor = sensor_tick(defs, instance, None)
    assert requests == []  # the first tick records what is there
    assert json.loads(cursor)[late.resolve_data_path()] == {"missing": True}
    assert sensor_tick(defs, instance, cursor)[0] == []

    path = tmp_path / "a.jsonl"
    os.utime(path, ns=(1, 1))  # touched, same content: nothing to do
    requests, cursor = sensor_tick(defs, instance, cursor)
    assert requests == []

    path.write_text("\n".join(shared[:15]) + "\n")  # changed content
    requests, cursor = sensor_tick(defs, instance, cursor)
    assert sorted(r.job_name for r in requests) == ["a__prepare", "b__prepare"]
    assert {r.tags["nova_eval/dataset_change"] for r in requests} == {"changed"}
    assert len({r.run_key for r in requests}) == 2
    assert sensor_tick(defs, instance, cursor)[0] == []  # once per change

    (tmp_path / "new.jsonl").write_text("\n".join(ticket_lines(3)) + "\n")  # a new file
    requests, cursor = sensor_tick(defs, instance, cursor)
    assert [(r.job_name, r.tags["nova_eval/dataset_change"]) for r in requests] == [
        ("late__prepare", "new")
    ]
    # the launched prepare job validates the new file (the automation does the rest)
    run_job(defs, instance, "late__prepare", tags=requests[0].tags)
    assert storage.read_parquet(EvalLayout.for_recipe(late).prompts).num_rows == 3


def test_dataset_sensor_watches_an_s3_prefix(s3, make_recipe, tmp_path):  # noqa: F811
    uri = f"s3://{BUCKET}/datasets/tickets.jsonl"
    loaded = edit_recipe(make_recipe(name="remote"), run={"data_s3_path": uri})
    defs = location([loaded])
    instance = dg.DagsterInstance.ephemeral()
    requests, cursor = sensor_tick(defs, instance, None)
    assert requests == [] and json.loads(cursor) == {uri: {"missing": True}}
    s3.put_object(Bucket=BUCKET, Key="datasets/tickets.jsonl", Body="\n".join(ticket_lines(4)))
    requests, cursor = sensor_tick(defs, instance, cursor)
    assert [r.job_name for r in requests] == ["remote__prepare"]
    assert sensor_tick(defs, instance, cursor)[0] == []
    s3.put_object(Bucket=BUCKET, Key="datasets/tickets.jsonl", Body="\n".join(ticket_lines(5)))
    requests, _ = sensor_tick(defs, instance, cursor)
    assert [r.tags["nova_eval/dataset_change"] for r in requests] == ["changed"]
    assert load_recipe(loaded.path).resolve_data_path() == uri


def test_the_code_location_carries_the_jobs_schedules_and_sensors(recipe):
    from nova_eval_assets.definitions import build_definitions

    repository = build_definitions([recipe()]).get_repository_def()
    jobs = {job.name for job in repository.get_all_jobs()}
    assert {"tiny__prepare", "tiny__replicas", "tiny__aggregate"} <= jobs
    assert [s.name for s in repository.schedule_defs] == ["tiny__schedule"]
    sensors = {s.name for s in repository.sensor_defs}
    assert sensors == {
        "nova_eval_replicas",
        "nova_eval_reports",
        "nova_eval_followups",
        SENSOR_NAME,
    }
    graph = repository.asset_graph
    inference = graph.get(dg.AssetKey(["tiny", "inference_outputs"]))
    assert dg.AssetKey(["tiny", "model_checkpoint"]) in inference.parent_keys
    assert inference.code_version == lineage.inference_code_version(recipe())
    assert inference.automation_condition is not None


def test_dataset_sensor_records_a_symlink_loop_as_missing(make_recipe, tmp_path):
    """A watched path that is a symlink loop must not crash the tick (pathlib's resolve
    raises RuntimeError on one): the sensor records it missing; the run names the problem."""
    (tmp_path / "loop_a.jsonl").symlink_to(tmp_path / "loop_b.jsonl")
    (tmp_path / "loop_b.jsonl").symlink_to(tmp_path / "loop_a.jsonl")
    looped = edit_recipe(
        make_recipe(ticket_lines(4), name="looped"), run={"data_s3_path": "loop_a.jsonl"}
    )
    assert lineage.stat(looped.resolve_data_path()) is None
    defs = location([looped])
    requests, cursor = sensor_tick(defs, dg.DagsterInstance.ephemeral(), None)
    assert requests == []
    assert json.loads(cursor)[looped.resolve_data_path()] == {"missing": True}
