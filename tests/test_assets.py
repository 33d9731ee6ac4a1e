"""The Dagster layer: the graph a recipe builds, the blocking validation check, and the
code location that loads every shipped recipe."""

from __future__ import annotations

import json

import dagster as dg

from nova_eval_assets import storage
from nova_eval_assets.assets import build_evaluation_assets
from nova_eval_assets.definitions import build_definitions, defs
from nova_eval_assets.layout import EvalLayout
from tests.conftest import ticket_lines

PREPARE = dg.AssetSelection.assets(
    dg.AssetKey(["tiny", "validated_dataset"]), dg.AssetKey(["tiny", "preprocessed_prompts"])
)


def keys_of(definitions) -> set[str]:
    return {
        key.to_user_string()
        for d in definitions
        if isinstance(d, dg.AssetsDefinition) and not isinstance(d, dg.AssetChecksDefinition)
        for key in d.keys
    }


def test_factory_builds_the_stage_graph_keyed_and_grouped_by_recipe(make_recipe):
    loaded = make_recipe(replicas=3)
    definitions = build_evaluation_assets(loaded)
    assert keys_of(definitions) == {
        f"tiny/{stage}"
        for stage in (
            "validated_dataset",
            "preprocessed_prompts",
            "inference_outputs",
            "postprocessed_metrics",
            "aggregated_report",
        )
    }
    graph = build_definitions([loaded]).resolve_asset_graph()
    inference = graph.get(dg.AssetKey(["tiny", "inference_outputs"]))
    assert inference.partitions_def.get_partition_keys() == ["0", "1", "2"]
    assert inference.group_name == "tiny"
    report = graph.get(dg.AssetKey(["tiny", "aggregated_report"]))
    assert report.partitions_def is None
    assert report.parent_keys == {dg.AssetKey(["tiny", "postprocessed_metrics"])}
    checks = [d for d in definitions if isinstance(d, dg.AssetChecksDefinition)]
    (check_spec,) = [spec for c in checks for spec in c.check_specs]
    assert check_spec.blocking and check_spec.asset_key == dg.AssetKey(
        ["tiny", "validated_dataset"]
    )


def test_code_location_loads_every_shipped_recipe():
    definitions = defs()
    keys = {k.to_user_string() for k in definitions.resolve_asset_graph().get_all_asset_keys()}
    assert "support_tickets/aggregated_report" in keys
    assert "support_tickets/inference_outputs" in keys


def test_bad_dataset_stops_the_graph_at_the_blocking_check(make_recipe):
    lines = [*ticket_lines(3), '{"query": "no response"}', "{oops"]
    loaded = make_recipe(lines)
    result = dg.materialize(
        build_evaluation_assets(loaded),
        selection=dg.AssetSelection.assets(
            dg.AssetKey(["tiny", "validated_dataset"]),
            dg.AssetKey(["tiny", "preprocessed_prompts"]),
        ),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "line 4, field 'response': missing required field" in evaluation.description
    assert "line 5: invalid JSON" in evaluation.description
    materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert materialized == {"validated_dataset"}  # preprocessed_prompts never ran
    layout = EvalLayout.for_recipe(loaded)
    assert not storage.exists(layout.validated)
    rejected = [json.loads(x) for x in storage.read_bytes(layout.rejected_rows).splitlines()]
    assert [r["line"] for r in rejected] == [4, 5]


def test_skip_policy_passes_with_a_warning_and_keeps_rejected_rows(make_recipe):
    lines = [*ticket_lines(3), '{"query": "no response"}']
    loaded = make_recipe(lines, dataset={"on_invalid": "skip"})
    result = dg.materialize(
        build_evaluation_assets(loaded),
        selection=dg.AssetSelection.assets(
            dg.AssetKey(["tiny", "validated_dataset"]),
            dg.AssetKey(["tiny", "preprocessed_prompts"]),
        ),
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.severity == dg.AssetCheckSeverity.WARN and not evaluation.passed
    layout = EvalLayout.for_recipe(loaded)
    assert storage.read_parquet(layout.prompts).num_rows == 3
    rejected = [json.loads(x) for x in storage.read_bytes(layout.rejected_rows).splitlines()]
    assert rejected == [
        {
            "line": 4,
            "reasons": ["line 4, field 'response': missing required field"],
            "raw": '{"query": "no response"}',
        }
    ]
