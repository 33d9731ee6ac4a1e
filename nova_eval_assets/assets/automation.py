"""What runs when: jobs, schedules, automation conditions and the lineage sources.

An evaluation is three kinds of runs, each its own process (and, under a Kubernetes or ECS
run launcher, its own machine):

    <name>__prepare    observe the dataset file and the model checkpoint, validate the
                       dataset, build the prompts                        (one run)
    <name>__replicas   inference_outputs + postprocessed_metrics         (one run per replica)
    <name>__aggregate  aggregated_report                                  (one run)

A schedule (the recipe's ``schedule``) or the dataset sensor (sensors.py) launches the
prepare run. Declarative automation does the rest: the replica stages are *eager* (every
replica partition runs once its upstream updated, each in its own run), and the aggregate
runs only when every replica of one run is materialized (:func:`aggregate_condition`):
none missing, none queued or running, and all made from the same prompts, model checkpoint
and settings (read from the lineage each replica's Parquet records). The same condition
re-aggregates after a backfill of chosen replica partitions, and holds back while a
backfill is still running or when the replicas are a mix of stale and fresh ones. After
the aggregate come the follow-ups (:func:`followup_condition`): the analysis report, the
evaluation's own partition of the tables, then their DDL, and the MLflow run when tracking
is configured (assets/tracking.py; after the analysis report, for judges after
judge_results).

Runs started by ``nova-eval run`` (tag ``launched_by: nova-eval-cli``) drive their own
sequence in process, ending with their own aggregate; they do not trigger the replica
automation.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from nova_eval_assets import lineage
from nova_eval_assets.recipe import LoadedRecipe

TRIGGER_TAG = "nova_eval/trigger"  # schedule | dataset_sensor | automation
STAGE_TAG = "nova_eval/stage"  # prepare | replica | aggregate | judge | followup: run queue key
FOLLOWUP_TAG = "nova_eval/followup"  # "true" on the assets the follow-up sensor automates
CLI_TAGS = {"launched_by": "nova-eval-cli"}
RUN_TAGS_ENV = "NOVA_EVAL_RUN_TAGS_FILE"
AUTOMATION_INTERVAL_ENV = "NOVA_EVAL_AUTOMATION_INTERVAL_S"
REPLICA_STAGES = ("inference_outputs", "postprocessed_metrics")
PREPARE_STAGES = ("validated_dataset", "preprocessed_prompts")


def asset_key(loaded: LoadedRecipe, stage: str) -> dg.AssetKey:
    return dg.AssetKey([loaded.key, stage])


def dataset_file_key(loaded: LoadedRecipe) -> dg.AssetKey:
    return asset_key(loaded, "dataset_file")


def model_checkpoint_key(loaded: LoadedRecipe) -> dg.AssetKey:
    return asset_key(loaded, "model_checkpoint")


def generates(loaded: LoadedRecipe) -> bool:
    """A recipe whose model generates (gen_qa, a benchmark), not a judge recipe."""
    return not loaded.recipe.evaluation.is_judge


# ---------------------------------------------------------------- run tags for deployments


def deploy_run_tags(kind: str) -> dict[str, str]:
    """Run tags from ``$NOVA_EVAL_RUN_TAGS_FILE`` (deploy/k8s/run_tags.yaml, ...): the
    ``replica`` section goes on replica runs (GPU requests), ``default`` on the others.
    Mapping values are JSON-encoded, as the Kubernetes and ECS run launchers read them."""
    location = os.environ.get(RUN_TAGS_ENV)
    if not location:
        return {}
    data = yaml.safe_load(Path(location).read_text(encoding="utf-8")) or {}
    unknown = set(data) - {"replica", "default"}
    if unknown:
        raise ValueError(
            f"{location}: unknown sections {sorted(unknown)}; allowed: replica, default"
        )
    section = data.get(kind) or {}
    return {
        str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True)
        for k, v in section.items()
    }


# ---------------------------------------------------------------- lineage sources


def source_assets(loaded: LoadedRecipe) -> list[dg.SourceAsset]:
    """The dataset file and the model checkpoint as observable sources: their data versions
    are the file's sha256 and the checkpoint's hash, so a changed dataset or retrained
    model marks the stages downstream stale in the UI."""
    if loaded.recipe.evaluation.is_judge:
        return []
    memo: dict[str, str] = {}
    location = loaded.dataset_file()

    @dg.observable_source_asset(
        key=dataset_file_key(loaded),
        group_name=loaded.key,
        description=f"The dataset file {location}; data version: its sha256.",
    )
    def dataset_file() -> dg.DataVersion:
        assert location is not None
        found = lineage.stat(location)
        if found is None:
            return dg.DataVersion("missing")
        if found.key() not in memo:
            memo[found.key()] = lineage.stream_sha256(location)
        return dg.DataVersion(memo[found.key()])

    @dg.observable_source_asset(
        key=model_checkpoint_key(loaded),
        group_name=loaded.key,
        description=(
            f"The model checkpoint {loaded.recipe.run.model_name_or_path}; data version: the "
            "hash of its weights, config and tokenizer (chat template included)."
        ),
    )
    def model_checkpoint() -> dg.DataVersion:
        return dg.DataVersion(lineage.model_id(loaded))

    # a benchmark reading the hub or a package has no file: its results record the revision
    return [dataset_file, model_checkpoint] if location is not None else [model_checkpoint]


# ---------------------------------------------------------------- automation conditions


def _dependency_updated() -> dg.AutomationCondition:
    """A dependency updated since the previous tick (or will this tick), not by the CLI."""
    newly_updated = (
        dg.AutomationCondition.newly_updated()
        & ~dg.AutomationCondition.executed_with_root_target()
        & ~dg.AutomationCondition.all_new_updates_have_run_tags(tag_values=CLI_TAGS)
    ).with_label("newly_updated, not by nova-eval run")
    return dg.AutomationCondition.any_deps_match(
        newly_updated | dg.AutomationCondition.will_be_requested()
    ).with_label("any_deps_updated")


def replica_condition(loaded: LoadedRecipe) -> dg.AutomationCondition:
    """Eager: every replica partition runs once its upstream updated (a new prompts file, a
    newly observed checkpoint, or its inference output), when nothing upstream is missing or
    in progress. Inference with unchanged lineage reuses its output (stages.run_inference).
    The checkpoint source counts as present even before its first observation (the prepare
    job observes it; a UI run of the prompts alone does not)."""
    unobserved_ok = dg.AssetSelection.assets(model_checkpoint_key(loaded))
    return (
        dg.AutomationCondition.in_latest_time_window()
        & (dg.AutomationCondition.newly_missing() | _dependency_updated()).since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing().ignore(unobserved_ok)
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("eager")


class ReplicasFromOneRun(dg.AutomationCondition):
    """True when the replicas' recorded lineage agrees: same prompts content, same model
    checkpoint, the current inference settings, and metrics that score the current inference
    outputs (:func:`nova_eval_assets.lineage.check_replicas`, which reads Parquet footers)."""

    def __init__(self, loaded: LoadedRecipe):
        self._loaded = loaded

    @property
    def name(self) -> str:
        return "replicas_from_one_run"

    @property
    def description(self) -> str:
        return "every replica made from the same prompts, model checkpoint and settings"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        candidates = context.candidate_subset
        if candidates.is_empty:  # only read the footers when everything else holds
            return dg.AutomationResult(context=context, true_subset=candidates)
        check = lineage.check_replicas(self._loaded)
        if not check.ok:
            context.log.info(check.message(self._loaded))
        return dg.AutomationResult(
            context=context, true_subset=candidates if check.ok else context.get_empty_subset()
        )


class DependencyUpdatedSinceLastRun(dg.AutomationCondition):
    """True when a partition of a dependency was materialized after this asset's latest run
    was created (its latest planned materialization), or when it never ran. Stateless: it
    compares event storage ids, so a replica update that lands in the same tick as the
    aggregate's own completion is not lost, and a failed aggregate is not retried until a
    replica updates again.

    ``parents_by_partition`` is for an asset partitioned by evaluation name whose every
    partition depends on every evaluation (the tables): partition ``p`` then looks at
    ``parents_by_partition[p]`` only, and is compared with its own latest run."""

    def __init__(self, parents_by_partition: dict[str, dg.AssetKey] | None = None):
        self._parents_by_partition = parents_by_partition

    @property
    def name(self) -> str:
        return "dependency_updated_since_last_run"

    @property
    def description(self) -> str:
        return "a dependency was materialized after this asset's latest run was created"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        candidates = context.candidate_subset
        if candidates.is_empty:
            return dg.AutomationResult(context=context, true_subset=candidates)
        instance = context.asset_graph_view.instance
        if self._parents_by_partition is None:
            parents = sorted(context.asset_graph.get(context.key).parent_keys)
            updated = _updated_since_run(instance, context.key, None, parents)
            true_subset = candidates if updated else context.get_empty_subset()
        else:
            partitions = {
                partition
                for partition in candidates.expensively_compute_partition_keys()
                if partition in self._parents_by_partition
                and _updated_since_run(
                    instance, context.key, partition, [self._parents_by_partition[partition]]
                )
            }
            true_subset = candidates.compute_intersection_with_partition_keys(partitions)
        return dg.AutomationResult(context=context, true_subset=true_subset)


def _updated_since_run(
    instance: dg.DagsterInstance,
    key: dg.AssetKey,
    partition: str | None,
    parents: list[dg.AssetKey],
) -> bool:
    """Whether a parent was materialized after ``key``'s latest run was created, by another
    run (a run that makes both, like a dbt build of a view and the table over it, plans
    the child before it makes the parent)."""
    planned = instance.get_latest_planned_materialization_info(key, partition)
    after = planned.storage_id if planned is not None else None
    own_run = planned.run_id if planned is not None else None
    return any(
        record.run_id != own_run
        for parent in parents
        for record in instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=parent, after_storage_id=after), limit=100
        ).records
    )


def aggregate_condition(loaded: LoadedRecipe) -> dg.AutomationCondition:
    """The aggregate runs when some replica updated since it last ran, every replica is
    materialized, none is queued, running or part of a running backfill, and all come from
    one run. Needs a sensor on the user code server (the custom conditions read the event
    log and the replicas' files)."""
    return (
        DependencyUpdatedSinceLastRun()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & ReplicasFromOneRun(loaded)
    ).with_label("every replica of one run materialized")


def followup_condition(
    parents_by_partition: dict[str, dg.AssetKey] | None = None,
) -> dg.AutomationCondition:
    """A step after an evaluation (its analysis report, the tables and their DDL, its MLflow
    run): it runs when what it reads was materialized after its own latest run, once nothing
    it reads is running. After ``nova-eval run`` it does not: the CLI runs these steps
    itself, after the aggregate, so their runs are the newer ones."""
    return (
        DependencyUpdatedSinceLastRun(parents_by_partition)
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("what it reads updated since its last run")


# ---------------------------------------------------------------- jobs and schedules


def prepare_job_name(loaded: LoadedRecipe) -> str:
    return f"{loaded.key}__prepare"


def replicas_job_name(loaded: LoadedRecipe) -> str:
    return f"{loaded.key}__replicas"


def aggregate_job_name(loaded: LoadedRecipe) -> str:
    return f"{loaded.key}__aggregate"


def judge_job_name(loaded: LoadedRecipe) -> str:
    return f"{loaded.key}__judge"


def entry_job_name(loaded: LoadedRecipe) -> str:
    """The job a schedule or the dataset sensor launches for this recipe."""
    return prepare_job_name(loaded) if generates(loaded) else judge_job_name(loaded)


def run_tags(kind: str, stage: str) -> dict[str, str]:
    """The tags of a run of ``stage``: the deployment's (``kind``: replica | default) and
    the stage, which the run queue's tag limits key on (deploy/*/dagster.yaml)."""
    return {**deploy_run_tags(kind), STAGE_TAG: stage}


def build_jobs(loaded: LoadedRecipe) -> list[dg.UnresolvedAssetJobDefinition]:
    """The entry, replica and aggregate jobs. Their steps run one after the other, so they run
    in the run's own process (no process per step: a replica run imports torch once)."""
    recipe_tag = {"recipe": loaded.name}
    serial = dg.in_process_executor
    if not generates(loaded):
        keys = [asset_key(loaded, "validated_dataset"), asset_key(loaded, "judge_results")]
        return [
            dg.define_asset_job(
                judge_job_name(loaded),
                selection=dg.AssetSelection.assets(*keys),
                tags={**recipe_tag, **run_tags("default", "judge")},
                executor_def=serial,
                description=f"The judge evaluation {loaded.name}: dataset, then judgments.",
            )
        ]
    sources = [model_checkpoint_key(loaded)]  # see source_assets
    if loaded.dataset_file() is not None:
        sources.insert(0, dataset_file_key(loaded))
    prepare = [*sources, *(asset_key(loaded, s) for s in PREPARE_STAGES)]
    return [
        dg.define_asset_job(
            prepare_job_name(loaded),
            selection=dg.AssetSelection.assets(*prepare),
            tags={**recipe_tag, **run_tags("default", "prepare")},
            executor_def=serial,
            description=(
                "Observe the dataset file and model checkpoint, validate, build the prompts. "
                "The replicas and the aggregate follow by declarative automation."
            ),
        ),
        dg.define_asset_job(
            replicas_job_name(loaded),
            selection=dg.AssetSelection.assets(*(asset_key(loaded, s) for s in REPLICA_STAGES)),
            tags={**recipe_tag, **run_tags("replica", "replica")},
            executor_def=serial,
            description=(
                "One replica partition: inference, then its metrics. Backfill chosen "
                "partitions here; the aggregate follows when every replica is current."
            ),
        ),
        dg.define_asset_job(
            aggregate_job_name(loaded),
            selection=dg.AssetSelection.assets(asset_key(loaded, "aggregated_report")),
            tags={**recipe_tag, **run_tags("default", "aggregate")},
            executor_def=serial,
            description="The aggregate over every replica (refuses a mix of runs).",
        ),
    ]


def build_schedule(loaded: LoadedRecipe) -> dg.ScheduleDefinition | None:
    """The recipe's ``schedule``: each tick launches the entry job (prepare, or the judge
    job); the automation then runs every replica partition and the aggregate."""
    config = loaded.recipe.schedule
    if config is None:
        return None
    status = (
        dg.DefaultScheduleStatus.RUNNING if config.enabled else dg.DefaultScheduleStatus.STOPPED
    )
    job_name = entry_job_name(loaded)

    @dg.schedule(
        name=f"{loaded.key}__schedule",
        cron_schedule=config.cron,
        execution_timezone=config.timezone,
        job_name=job_name,
        default_status=status,
        description=(
            f"Evaluates {loaded.name} at '{config.cron}' ({config.timezone}): the "
            f"{job_name} run, then every replica partition and the aggregate."
        ),
    )
    def evaluation_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        moment = context.scheduled_execution_time
        stamp = moment.isoformat() if moment is not None else "manual"
        return dg.RunRequest(
            run_key=f"{loaded.name}:{stamp}",
            tags={TRIGGER_TAG: "schedule", "nova_eval/scheduled_for": stamp},
        )

    return evaluation_schedule


# ---------------------------------------------------------------- everything, per location


def automation_interval() -> int:
    return int(os.environ.get(AUTOMATION_INTERVAL_ENV, "30"))


def build_automation_sensors(recipes: list[LoadedRecipe]) -> list[dg.SensorDefinition]:
    """Three automation sensors, all running by default: the replica stages (their runs carry
    the deployment's ``replica`` run tags: GPU requests), the aggregates, and the follow-ups
    (the assets tagged ``nova_eval/followup``: analysis reports, tables, DDL, MLflow runs),
    the last two evaluated on the user code server, where the replicas' lineage can be
    read."""
    interval = automation_interval()
    followups = dg.AutomationConditionSensorDefinition(
        "nova_eval_followups",
        target=dg.AssetSelection.tag(FOLLOWUP_TAG, "true"),
        run_tags={**run_tags("default", "followup"), TRIGGER_TAG: "automation"},
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=interval,
        use_user_code_server=True,
        description=(
            "Analysis reports, tables and their DDL, MLflow runs after an evaluation updated."
        ),
    )
    generating = [r for r in recipes if generates(r)]
    if not generating:
        return [followups]
    replicas = dg.AssetSelection.assets(
        *(asset_key(r, stage) for r in generating for stage in REPLICA_STAGES)
    )
    reports = dg.AssetSelection.assets(*(asset_key(r, "aggregated_report") for r in generating))
    return [
        dg.AutomationConditionSensorDefinition(
            "nova_eval_replicas",
            target=replicas,
            run_tags={**run_tags("replica", "replica"), TRIGGER_TAG: "automation"},
            default_status=dg.DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=interval,
            # one run per partition, straight into the run queue (a partition's inference and
            # metrics share its run); no backfill daemon round trip
            emit_backfills=False,
            description="Runs replica partitions whose upstream updated (eager).",
        ),
        dg.AutomationConditionSensorDefinition(
            "nova_eval_reports",
            target=reports,
            run_tags={**run_tags("default", "aggregate"), TRIGGER_TAG: "automation"},
            default_status=dg.DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=interval,
            use_user_code_server=True,
            description="Aggregates once every replica of one run is materialized.",
        ),
        followups,
    ]


@dataclass
class Orchestration:
    assets: list[Any] = field(default_factory=list)
    jobs: list[Any] = field(default_factory=list)
    schedules: list[dg.ScheduleDefinition] = field(default_factory=list)
    sensors: list[dg.SensorDefinition] = field(default_factory=list)


def build_orchestration(recipes: list[LoadedRecipe]) -> Orchestration:
    """Sources, jobs, schedules and sensors of every recipe in a code location."""
    from nova_eval_assets.assets.sensors import build_dataset_sensor

    built = Orchestration()
    for loaded in recipes:
        built.assets += source_assets(loaded)
        built.jobs += build_jobs(loaded)
        schedule = build_schedule(loaded)
        if schedule is not None:
            built.schedules.append(schedule)
    built.sensors += build_automation_sensors(recipes)
    dataset_sensor = build_dataset_sensor(recipes, {job.name: job for job in built.jobs})
    if dataset_sensor is not None:
        built.sensors.append(dataset_sensor)
    return built
