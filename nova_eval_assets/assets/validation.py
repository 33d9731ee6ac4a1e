"""Dataset validation in every recipe's graph: the ``validated_dataset`` asset's metadata and
its blocking ``dataset_is_valid`` check, both read from the recipe's validation report."""

from typing import Any

import dagster as dg

from nova_eval_assets import storage
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import LoadedRecipe

VALIDATION_CHECK = "dataset_is_valid"
PREFLIGHT_CHECK = "remote_access"


def validation_metadata(summary: dict[str, Any]) -> dict[str, Any]:
    """What ``validated_dataset`` shows in the UI: row counts, the policy, the files."""
    return {
        "valid_rows": summary["valid_rows"],
        "rejected_rows": summary["rejected_rows"],
        "lines_read": summary["lines_read"],
        "policy": summary["policy"],
        "dataset": dg.MetadataValue.path(summary["source"]),
        "dataset_sha256": summary["dataset_sha256"],
        "rejected_rows_file": dg.MetadataValue.path(summary["rejected_path"]),
    }


def stop_message(summary: dict[str, Any], what: str = "dataset") -> str | None:
    """The one message a CLI run stops with when validation leaves it nothing to do (None:
    go on): an invalid dataset under ``on_invalid: fail``, or no valid row at all."""
    if summary["ok"]:
        return None
    if summary["policy"] == "fail":
        return f"The {what} is invalid (dataset.on_invalid: fail):\n{summary['report']}"
    if summary.get("no_rows"):
        return f"The {what} has no rows to evaluate:\n{summary['report']}"
    return None


def build_validation_check(
    loaded: LoadedRecipe, asset: dg.AssetsDefinition, description: str
) -> dg.AssetChecksDefinition:
    """The blocking check: it fails (an error under ``on_invalid: fail``, a warning under
    ``skip``) when any line was invalid, so a bad dataset stops the graph in the UI."""

    @dg.asset_check(asset=asset, name=VALIDATION_CHECK, blocking=True, description=description)
    def dataset_is_valid() -> dg.AssetCheckResult:
        summary = storage.read_json(EvalLayout.for_recipe(loaded).validation_report)
        strict = summary["policy"] == "fail"
        return dg.AssetCheckResult(
            passed=bool(summary["ok"]),
            severity=dg.AssetCheckSeverity.ERROR if strict else dg.AssetCheckSeverity.WARN,
            description=None if summary["ok"] else summary["report"],
            metadata={
                "problem_count": summary["problem_count"],
                "rejected_rows": summary["rejected_rows"],
                "first_problems": dg.MetadataValue.md(
                    "\n".join(f"- {p}" for p in summary["problems"]) or "none"
                ),
            },
        )

    return dataset_is_valid


def build_preflight_checks(
    loaded: LoadedRecipe, asset: dg.AssetsDefinition
) -> list[dg.AssetChecksDefinition]:
    """The blocking ``remote_access`` check (preflight.py) on the first asset of a recipe
    that uses remote parts (S3, Lambda, Bedrock, MLflow, an OpenAI-compatible endpoint): it
    fails with one line per problem, so nothing downstream (no model) runs. None for a
    recipe that is all local."""
    from nova_eval_assets.preflight import failures, remote_parts, run_preflight

    if not remote_parts(loaded):
        return []

    @dg.asset_check(
        asset=asset,
        name=PREFLIGHT_CHECK,
        blocking=True,
        description="Every remote part the recipe names is reachable and allowed "
        "(credentials, S3 read/write, Lambda DryRun, Bedrock model, MLflow, endpoint).",
    )
    def remote_access() -> dg.AssetCheckResult:
        results = run_preflight(loaded)
        failed = failures(results)
        return dg.AssetCheckResult(
            passed=not failed,
            description="\n".join(r.message for r in failed) or None,
            metadata={
                "checks": dg.MetadataValue.md("\n".join(f"- {r.message}" for r in results)),
                "failed": len(failed),
            },
        )

    return [remote_access]


def preflight_stop(result: dg.ExecuteInProcessResult) -> str | None:
    """The failed ``remote_access`` check's lines in a run's result (None: it passed or did
    not run), for the CLI to print instead of Dagster's check-failure error."""
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.check_name == PREFLIGHT_CHECK and not evaluation.passed:
            return evaluation.description
    return None
