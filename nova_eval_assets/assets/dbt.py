"""The dbt project ``dbt_athena/`` as Dagster assets, downstream of the tables.

dbt sources ``nova_eval.<table>`` map to the table assets ``tables/<table>`` and models to
``dbt/<model>``, so the asset graph reads dataset -> evaluation -> tables -> dbt models.
dbt tests become asset checks. The target is ``$NOVA_EVAL_DBT_TARGET`` (``duckdb`` by
default, reading the local Parquet tables; ``athena`` in production).

The manifest is prepared when the code location loads: ``dbt parse`` runs (offline, a few
seconds) when ``target/manifest.json`` is missing, older than the project's files, or under
``dagster dev``; a clean clone therefore needs no build step.
"""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from dagster_dbt.dbt_project import using_dagster_dev

from nova_eval_assets import storage, tables
from nova_eval_assets.assets.automation import FOLLOWUP_TAG, followup_condition
from nova_eval_assets.assets.tables import table_key

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt_athena"
TARGET_ENV = "NOVA_EVAL_DBT_TARGET"
DUCKDB_PATH_ENV = "NOVA_EVAL_DUCKDB_PATH"
PREFIX = "dbt"
GROUP = "dbt"


def dbt_target() -> str:
    return os.environ.get(TARGET_ENV, "duckdb")


def _stale(project: DbtProject) -> bool:
    manifest = project.manifest_path
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    folder = Path(project.project_dir)
    sources = [folder / "dbt_project.yml", folder / "profiles.yml"]
    for sub in ("models", "macros", "tests"):
        sources += [p for p in (folder / sub).rglob("*") if p.is_file()]
    return any(p.stat().st_mtime > built for p in sources if p.exists())


def dbt_executable() -> str:
    """dbt beside this interpreter (the project's .venv), else whatever is on PATH."""
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


def prepare_manifest(project: DbtProject) -> None:
    """``dbt parse`` (offline) into the project's target folder."""
    folder = str(project.project_dir)
    command = [dbt_executable(), "parse", "--quiet", "--project-dir", folder]
    command += ["--profiles-dir", str(project.profiles_dir), "--target", project.target or ""]
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    env["DBT_TARGET_PATH"] = str(Path(folder, project.target_path))
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not project.manifest_path.exists():
        raise RuntimeError(
            f"dbt parse of {folder} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}"
        )


def dbt_project(project_dir: Path = DBT_PROJECT_DIR) -> DbtProject:
    """The project, its manifest prepared (``dbt parse``) when missing or out of date."""
    project = DbtProject(project_dir=project_dir, profiles_dir=project_dir, target=dbt_target())
    if using_dagster_dev() or _stale(project):
        prepare_manifest(project)
    return project


class NovaEvalDbtTranslator(DagsterDbtTranslator):
    """Sources are the table assets; models and tests live under ``dbt/``. Models are
    follow-ups (assets/automation.py): they rebuild after the tables they read updated, so
    the marts (tables in dbt) follow scheduled evaluations and CLI runs alike."""

    def get_automation_condition(
        self, dbt_resource_props: Mapping[str, Any]
    ) -> dg.AutomationCondition | None:
        return followup_condition()

    def get_tags(self, dbt_resource_props: Mapping[str, Any]) -> Mapping[str, str]:
        return {**super().get_tags(dbt_resource_props), FOLLOWUP_TAG: "true"}

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return table_key(dbt_resource_props["name"])
        return dg.AssetKey([PREFIX, dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return GROUP


def default_duckdb_path(root: str) -> str:
    """Beside a local tables root (the DuckDB file of the dbt models)."""
    folder = DBT_PROJECT_DIR.parent / "outputs" if storage.is_remote(root) else Path(root).parent
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / "nova_eval_dbt.duckdb")


def dbt_build_args(root: str) -> list[str]:
    return ["build", "--vars", json.dumps({"tables_root": root})]


def build_dbt_assets(project: DbtProject | None = None) -> dg.AssetsDefinition:
    project = project or dbt_project()

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        dagster_dbt_translator=NovaEvalDbtTranslator(),
        name="nova_eval_dbt",
    )
    def nova_eval_dbt(context: AssetExecutionContext, dbt: DbtCliResource):
        root = tables.tables_root()
        if dbt_target() == "duckdb":
            if storage.is_remote(root):
                raise RuntimeError(
                    f"the duckdb dbt target reads local tables, but the tables root is {root}; "
                    f"use the athena target ({TARGET_ENV}=athena) for tables on S3"
                )
            tables.ensure_tables(root)  # every source has a file, even with no judge runs yet
            os.environ.setdefault(DUCKDB_PATH_ENV, default_duckdb_path(root))
        yield from dbt.cli(dbt_build_args(root), context=context).stream()

    return nova_eval_dbt


def dbt_resource(project: DbtProject | None = None) -> DbtCliResource:
    return DbtCliResource(
        project_dir=project or dbt_project(), target=dbt_target(), dbt_executable=dbt_executable()
    )
