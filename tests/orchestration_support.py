"""Helpers of the orchestration tests: a fake engine, a code location of a few recipes
(without the tables and dbt layers), staleness, and the automation loop run in process."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import dagster as dg
import yaml
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._time import get_current_datetime

from nova_eval_assets.assets import build_evaluation_assets
from nova_eval_assets.assets.analysis import build_analysis_assets
from nova_eval_assets.assets.automation import build_orchestration
from nova_eval_assets.assets.tables import build_table_assets
from nova_eval_assets.engines.base import Generation, GenerationRequest, TokenLogprob, block_size
from nova_eval_assets.recipe import LoadedRecipe, load_recipe


class FakeEngine:
    """Echoes the first words of the prompt; counts the rows it generated."""

    name = "fake"
    model_id = "fake:1"
    default_batch_size = 2

    def __init__(self) -> None:
        self.generated_rows: list[int] = []

    def block_size(self, batch_size: int) -> int:
        return block_size(batch_size)

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        settings,
        batch_size: int | None = None,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> list[Generation]:
        self.generated_rows += [r.row_index for r in requests]
        words = settings.max_new_tokens
        outputs = [
            Generation(
                row_index=r.row_index,
                text=" ".join(r.prompt.split()[:words]),
                tokens=[TokenLogprob("x", -0.5, [("x", -0.5)])],
                prompt_tokens=len(r.prompt.split()),
                completion_tokens=1,
                latency_s=0.001,
                finish_reason="stop",
            )
            for r in requests
        ]
        if on_batch:
            on_batch(len(requests), len(requests))
        return outputs


def edit_recipe(loaded: LoadedRecipe, **sections: dict) -> LoadedRecipe:
    """Rewrite the recipe file with some sections replaced or merged, and reload it."""
    data = yaml.safe_load(loaded.path.read_text())
    for section, values in sections.items():
        data[section] = {**(data.get(section) or {}), **values}
    loaded.path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_recipe(loaded.path)


def location(recipes: list[LoadedRecipe], followups: bool = False) -> dg.Definitions:
    """The evaluation graphs and the orchestration of ``recipes`` (no dbt; the analysis
    reports and the tables with ``followups``); every run in one process (the runs the
    automation starts too), which keeps tests quick."""
    assets, checks = [], []
    for loaded in recipes:
        for definition in build_evaluation_assets(loaded):
            is_check = isinstance(definition, dg.AssetChecksDefinition)
            (checks if is_check else assets).append(definition)
        if followups:
            assets += build_analysis_assets(loaded, recipes)
    if followups:
        assets += build_table_assets(recipes, athena=False)
    built = build_orchestration(recipes)
    return dg.Definitions(
        assets=assets + built.assets,
        asset_checks=checks,
        jobs=built.jobs,
        schedules=built.schedules,
        sensors=built.sensors,
        executor=dg.in_process_executor,
    )


def stale_status(
    defs: dg.Definitions, instance: dg.DagsterInstance, key: list[str], partition: str | None = None
) -> StaleStatus:
    graph = defs.resolve_asset_graph()
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=graph,
    )
    resolver = CachingStaleStatusResolver(
        instance=instance, asset_graph=graph, loading_context=view
    )
    return resolver.get_status(dg.AssetKey(key), partition)


class Automation:
    """The automation sensors' evaluation, tick by tick, in process."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance):
        self.defs, self.instance, self.cursor = defs, instance, None
        self.tick()  # the first evaluation only records the starting state

    def tick(self, defs: dg.Definitions | None = None) -> dict[str, set]:
        self.defs = defs or self.defs
        result = dg.evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, cursor=self.cursor
        )
        self.cursor = result.cursor
        graph = self.defs.resolve_asset_graph()
        requested = {}
        for key in graph.get_all_asset_keys():
            partitions = result.get_requested_partitions(key)
            if partitions:
                requested[key.to_user_string()] = partitions
        return requested


def run_job(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    job: str,
    partition: str | None = None,
    tags: dict | None = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(job).execute_in_process(
        instance=instance, partition_key=partition, tags=tags, raise_on_error=raise_on_error
    )


def data_version(instance: dg.DagsterInstance, key: list[str], partition: str | None = None):
    record = instance.get_latest_data_version_record(dg.AssetKey(key), partition_key=partition)
    return record.asset_materialization.tags["dagster/data_version"] if record else None
