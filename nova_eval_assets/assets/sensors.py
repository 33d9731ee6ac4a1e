"""The dataset sensor: a new or changed dataset file starts the evaluations that read it.

Each tick looks at every recipe's ``data_s3_path`` (a local file, or an object under an S3
prefix): its size and modification time, and only when those moved, its sha256. The cursor
keeps ``{location: {"stat": "<size>:<mtime_ns>", "sha256": ...}}`` (or ``{"missing": true}``),
so an evaluation starts once per content change: touching a file without changing it starts
nothing, and a file that appears where a recipe expects it counts as new. On the very first
tick the sensor only records what is there.

For each recipe that reads a changed file the sensor launches its entry job (``<name>__prepare``
or ``<name>__judge``); the automation runs the replicas and the aggregate (automation.py).

It is created stopped, as Dagster creates sensors: whoever can write a watched file can then
start runs (recipes run code: docs/security.md), so starting it is the operator's choice,
in the UI (Automation), with ``dagster sensor start``, or ``NOVA_EVAL_DATASET_SENSOR=running``
for a deployment that wants it running from the start.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict

import dagster as dg

from nova_eval_assets import lineage
from nova_eval_assets.assets.automation import TRIGGER_TAG, entry_job_name
from nova_eval_assets.recipe import LoadedRecipe

SENSOR_NAME = "nova_eval_dataset_changes"
INTERVAL_ENV = "NOVA_EVAL_SENSOR_INTERVAL_S"
STATUS_ENV = "NOVA_EVAL_DATASET_SENSOR"
STATUSES = {
    "stopped": dg.DefaultSensorStatus.STOPPED,
    "running": dg.DefaultSensorStatus.RUNNING,
}


def default_status() -> dg.DefaultSensorStatus:
    """The sensor's status until someone turns it on or off: $NOVA_EVAL_DATASET_SENSOR
    (running | stopped), stopped when unset."""
    value = os.environ.get(STATUS_ENV, "").strip().lower() or "stopped"
    if value not in STATUSES:
        raise ValueError(
            f"${STATUS_ENV} = {os.environ[STATUS_ENV]!r} is not allowed; "
            f"allowed: {', '.join(STATUSES)} (unset: stopped)"
        )
    return STATUSES[value]


def watched_locations(recipes: list[LoadedRecipe]) -> dict[str, list[LoadedRecipe]]:
    """Dataset location -> the recipes that read it (judge recipes that join other recipes'
    outputs, and benchmarks reading the hub or a package, read no file)."""
    readers: dict[str, list[LoadedRecipe]] = defaultdict(list)
    for loaded in recipes:
        location = loaded.dataset_file()
        if location is not None:
            readers[location].append(loaded)
    return dict(readers)


def scan(
    readers: dict[str, list[LoadedRecipe]], cursor: dict[str, dict]
) -> tuple[dict[str, dict], list[dg.RunRequest]]:
    """The new cursor and the run requests for files whose content changed."""
    first_tick = not cursor
    state: dict[str, dict] = {}
    requests: list[dg.RunRequest] = []
    for location, recipes in sorted(readers.items()):
        before = cursor.get(location)
        found = lineage.stat(location)
        if found is None:
            state[location] = {"missing": True}
            continue
        if before is not None and before.get("stat") == found.key():
            state[location] = before  # size and mtime unchanged: not read again
            continue
        sha = lineage.stream_sha256(location)
        state[location] = {"stat": found.key(), "sha256": sha}
        if first_tick or before is None or before.get("sha256") == sha:
            continue  # first sight, a recipe added since, or touched without a change
        change = "new" if before.get("missing") else "changed"
        for loaded in recipes:
            requests.append(
                dg.RunRequest(
                    run_key=f"{loaded.name}:{sha[:16]}:{found.mtime_ns}",
                    job_name=entry_job_name(loaded),
                    tags={
                        TRIGGER_TAG: "dataset_sensor",
                        "nova_eval/dataset": location[-200:],
                        "nova_eval/dataset_sha256": sha,
                        "nova_eval/dataset_change": change,
                    },
                )
            )
    return state, requests


def build_dataset_sensor(
    recipes: list[LoadedRecipe], jobs: dict[str, dg.UnresolvedAssetJobDefinition]
) -> dg.SensorDefinition | None:
    """The sensor over every recipe's dataset; ``jobs`` maps job names to the entry jobs."""
    readers = watched_locations(recipes)
    if not readers:
        return None
    names = sorted({entry_job_name(r) for group in readers.values() for r in group})

    @dg.sensor(
        name=SENSOR_NAME,
        jobs=[jobs[name] for name in names],
        minimum_interval_seconds=int(os.environ.get(INTERVAL_ENV, "60")),
        default_status=default_status(),
        description=(
            "Starts the evaluations of the recipes that read a dataset file when the file "
            f"is new or its content changed ({len(readers)} files watched; jobs: "
            f"{', '.join(names)}). Stopped unless started here or ${STATUS_ENV}=running."
        ),
    )
    def dataset_changes(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        state, requests = scan(readers, cursor)
        for request in requests:
            tags = request.tags
            change, where = tags["nova_eval/dataset_change"], tags["nova_eval/dataset"]
            context.log.info(f"{request.job_name}: {change} dataset {where}")
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(state, sort_keys=True))

    return dataset_changes
