"""The Dagster layer of the tables: thin wiring around :mod:`nova_eval_assets.tables`.

    <recipe>/aggregated_report ──> tables/eval_examples, eval_metrics, judge_judgments,
    <judge>/judge_results      ──>   judge_summary (one partition per evaluation name)
                                       └──> tables/athena_ddl ──> tables/athena_tables (optional)

The four tables are one multi-asset, partitioned by evaluation name: materializing
partition ``support_tickets`` writes that recipe's latest run into each table (replacing the
run's rows if it was written before). ``athena_ddl`` writes the CREATE EXTERNAL TABLE
statements beside the tables. ``athena_tables`` runs them in Athena through dagster-aws's
Athena resource; it exists only when a workgroup is configured
(``$NOVA_EVAL_ATHENA_WORKGROUP``).
"""

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext
from dagster_aws.athena import AthenaClientResource

from nova_eval_assets import storage, tables
from nova_eval_assets.assets.automation import FOLLOWUP_TAG, followup_condition
from nova_eval_assets.assets.in_process import InProcessRuns, failure_message
from nova_eval_assets.recipe import LoadedRecipe
from nova_eval_assets.tables import ddl
from nova_eval_assets.tables.schemas import TABLE_NAMES, TABLES

PREFIX = "tables"
GROUP = "tables"
RUN_ID_TAG = "nova_eval/run_id"
WORKGROUP_ENV = "NOVA_EVAL_ATHENA_WORKGROUP"
DDL_KEY = dg.AssetKey([PREFIX, "athena_ddl"])
ATHENA_KEY = dg.AssetKey([PREFIX, "athena_tables"])
FOLLOWUP = {FOLLOWUP_TAG: "true"}  # automated after each evaluation (assets/automation.py)
SCHEMA_VERSION = hashlib.sha256(
    "".join(f"{name}:{spec.schema}" for name, spec in TABLES.items()).encode()
).hexdigest()[:16]


def table_key(table: str) -> dg.AssetKey:
    return dg.AssetKey([PREFIX, table])


def final_asset_key(loaded: LoadedRecipe) -> dg.AssetKey:
    """The asset whose outputs a recipe's table rows come from."""
    stage = "judge_results" if loaded.recipe.evaluation.is_judge else "aggregated_report"
    return dg.AssetKey([loaded.key, stage])


def athena_configured() -> bool:
    return bool(os.environ.get(WORKGROUP_ENV))


def athena_resource() -> AthenaClientResource:
    return AthenaClientResource(workgroup=dg.EnvVar(WORKGROUP_ENV))


def _ddl_settings(names: list[str]) -> tuple[str, ddl.DdlSettings]:
    root = tables.tables_root()
    known = set(names) | set(tables.eval_names(root))
    return root, ddl.DdlSettings.from_env(root, known)


def athena_statements(settings: ddl.DdlSettings, folder: str) -> list[str]:
    """What the Athena asset runs: the database, then per table a drop (external tables:
    the files stay) and the CREATE statement the DDL asset wrote."""
    queries = [ddl.create_database(settings)]
    for table in TABLE_NAMES:
        statement = storage.read_bytes(storage.join(folder, f"{table}.sql")).decode("utf-8")
        queries += [ddl.drop_table(table, settings), statement.strip().rstrip(";")]
    return queries


def build_table_assets(recipes: list[LoadedRecipe], athena: bool | None = None) -> list[Any]:
    """The table multi-asset, the DDL asset and (when ``athena``, by default when a
    workgroup is configured) the asset that creates the tables in Athena."""
    by_name = {loaded.name: loaded for loaded in recipes}
    partitions = dg.StaticPartitionsDefinition(sorted(by_name) or ["none"])
    upstream = [final_asset_key(loaded) for loaded in recipes]
    parents_by_partition = {loaded.name: final_asset_key(loaded) for loaded in recipes}
    specs = [
        dg.AssetSpec(
            table_key(table),
            deps=upstream,
            description=spec.description + " Hive-partitioned Parquet for Athena and DuckDB.",
            group_name=GROUP,
            kinds={"parquet"},
            code_version=SCHEMA_VERSION,
            skippable=True,
            tags={"nova_eval/table": table, **FOLLOWUP},
            # a partition follows its own evaluation's final asset only
            automation_condition=followup_condition(parents_by_partition),
        )
        for table, spec in TABLES.items()
    ]

    @dg.multi_asset(
        name="evaluation_tables",
        specs=specs,
        partitions_def=partitions,
        can_subset=True,
        description="The latest run of one evaluation, written into the Athena-ready tables.",
    )
    def evaluation_tables(context: AssetExecutionContext):
        loaded = by_name[context.partition_key]
        root = tables.tables_root()
        only = {key.path[-1] for key in context.selected_asset_keys}
        run_id = context.run.tags.get(RUN_ID_TAG)
        written = tables.write_evaluation_tables(loaded, root, run_id=run_id, only=only)
        for table, summary in written.items():
            context.log.info(f"{table}: {summary.rows} rows -> {summary.folder}")
            yield dg.MaterializeResult(
                asset_key=table_key(table),
                metadata={
                    "rows": summary.rows,
                    "files": len(summary.files),
                    "partition_folder": dg.MetadataValue.path(summary.folder),
                    "replaced_folders": len(summary.replaced),
                    "run_id": summary.folder.rsplit("run_id=", 1)[-1],
                    "tables_root": dg.MetadataValue.path(root),
                },
            )

    @dg.asset(
        key=DDL_KEY,
        deps=[table_key(table) for table in TABLE_NAMES],
        group_name=GROUP,
        tags=FOLLOWUP,
        automation_condition=followup_condition(),
        kinds={"athena", "sql"},
        code_version=SCHEMA_VERSION,
        description="Glue/Athena CREATE EXTERNAL TABLE statements with partition projection, "
        "written to <tables root>/_ddl/.",
    )
    def athena_ddl() -> dg.MaterializeResult:
        root, settings = _ddl_settings(list(by_name))
        tables.ensure_tables(root)
        paths = ddl.write_ddl(root, settings)
        text = storage.read_bytes(paths["all"]).decode("utf-8")
        return dg.MaterializeResult(
            metadata={
                "database": settings.database,
                "location": settings.location,
                "eval_names": ", ".join(settings.eval_names),
                "ddl_file": dg.MetadataValue.path(paths["all"]),
                "ddl": dg.MetadataValue.md(f"```sql\n{text}\n```"),
            }
        )

    assets: list[Any] = [evaluation_tables, athena_ddl]
    if athena if athena is not None else athena_configured():

        @dg.asset(
            key=ATHENA_KEY,
            deps=[athena_ddl],
            group_name=GROUP,
            tags=FOLLOWUP,
            automation_condition=followup_condition(),
            kinds={"athena"},
            description="The tables created (or recreated) in Athena from the generated DDL.",
        )
        def athena_tables(
            context: AssetExecutionContext, athena: AthenaClientResource
        ) -> dg.MaterializeResult:
            root, settings = _ddl_settings(list(by_name))
            queries = athena_statements(settings, ddl.ddl_folder(root))
            client = athena.get_client()
            for query in queries:
                context.log.info(query.splitlines()[0])
                client.execute_query(query)
            return dg.MaterializeResult(
                metadata={
                    "database": settings.database,
                    "workgroup": client.workgroup,
                    "statements": len(queries),
                    "tables": ", ".join(TABLE_NAMES),
                }
            )

        assets.append(athena_tables)
    return assets


def table_resources() -> dict[str, Any]:
    return {"athena": athena_resource()} if athena_configured() else {}


@dataclass
class TablesRun:
    root: str
    message: str = ""  # why it failed; empty on success


def materialize_tables(loaded: LoadedRecipe, runs: InProcessRuns) -> TablesRun:
    """Write one recipe's latest run into the tables and refresh the DDL (the CLI's last
    step), as two of ``runs``: the recipe's table partition, then the DDL."""
    definitions = build_table_assets([loaded], athena=False)
    outcome = TablesRun(root=tables.tables_root())
    for keys, partition in ([table_key(t) for t in TABLE_NAMES], loaded.name), ([DDL_KEY], None):
        result = runs.materialize(definitions, keys, partition)
        if not result.success:
            outcome.message = failure_message(result)
            return outcome
    return outcome
