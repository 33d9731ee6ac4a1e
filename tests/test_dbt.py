"""The dbt project: `dbt parse` for Athena offline, and `dbt build --target duckdb` (models and
dbt tests) on the tables of a real small evaluation, by the dbt CLI and through Dagster."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pytest

from nova_eval_assets import cli
from nova_eval_assets.assets.dbt import (
    DBT_PROJECT_DIR,
    DUCKDB_PATH_ENV,
    build_dbt_assets,
    dbt_project,
    dbt_resource,
)
from nova_eval_assets.assets.in_process import InProcessRuns
from nova_eval_assets.assets.materialize import run_evaluation
from nova_eval_assets.assets.tables import build_table_assets, materialize_tables
from nova_eval_assets.tables import build, duck, writer
from tests.conftest import ticket_lines
from tests.test_tables_writer import examples

DBT = str(Path(sys.executable).parent / "dbt")


def dbt(*args: str, tmp: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The dbt CLI on the project, with target/ and logs/ in ``tmp`` (not in the tree)."""
    environment = {
        **os.environ,
        "DBT_TARGET_PATH": str(tmp / "target"),
        "DBT_LOG_PATH": str(tmp / "logs"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        **(env or {}),
    }
    folder = str(DBT_PROJECT_DIR)
    command = [DBT, *args, "--project-dir", folder, "--profiles-dir", folder]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)


def project_args() -> list[str]:
    return ["--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)]


def test_dbt_parse_for_athena_works_offline(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "NOVA_EVAL_ATHENA"))}
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "none")
    env["AWS_CONFIG_FILE"] = str(tmp_path / "none")
    done = subprocess.run(
        [DBT, "parse", "--target", "athena", *project_args()],
        env={**env, "DBT_TARGET_PATH": str(tmp_path / "target"), "DBT_LOG_PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((tmp_path / "target" / "manifest.json").read_text())
    models = {n["name"] for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    assert models >= {
        "metrics_over_time",
        "metrics_by_stratum",
        "base_vs_challenger",
        "judge_win_rates",
        "calibration_bins",
    }
    sources = {s["name"]: s for s in manifest["sources"].values()}
    assert set(sources) == {
        "eval_examples",
        "eval_metrics",
        "judge_judgments",
        "judge_criteria",
        "judge_summary",
    }
    assert sources["eval_examples"]["schema"] == "nova_eval"  # the DDL's database
    assert manifest["metadata"]["adapter_type"] == "athena"


def judge_rows(root: str) -> None:
    """A small judge run (no model): the judge models need rows to be worth testing."""
    run = build.RunInfo("judge_tiny", "j1", datetime.now(UTC), "judge", "llm_judge")
    table = pa.table(
        {
            "row_index": [0, 1, 2],
            "prompt": ["p0", "p1", "p2"],
            "response_A": ["a", "a", "a"],
            "response_B": ["b", "b", "b"],
            "forward_preference": ["B", "A", "tie"],
            "backward_preference": ["B", "B", "error"],
        }
    )
    extra = {"baseline": "base", "challenger": "challenger", "judge_model": "judge"}
    writer.write_run(
        root, "judge_judgments", run.partition, [build.to_judge_judgments(table, run, extra)]
    )
    summary = build.judge_summary_table(
        run, {"winrate": 0.7, "lower_rate": 0.4, "upper_rate": 0.9}, extra
    )
    writer.write_run(root, "judge_summary", run.partition, [summary])


def build_both_ways(checkout: Path) -> dict[str, list[tuple]]:
    """`dbt build` as a user runs it in a checkout whose tables are in the default place
    (``checkout/outputs/tables``, no $NOVA_EVAL_TABLES_ROOT): from the checkout's root, then
    from inside ``dbt_athena/`` (sharing the first run's target/, saved parse included).
    Returns, per way, the eval_name and row count of the ``stg_eval_examples`` view."""
    project = checkout / "dbt_athena"
    ignore = shutil.ignore_patterns("target", "logs", "*.duckdb", ".user.yml")
    shutil.copytree(DBT_PROJECT_DIR, project, ignore=ignore)
    drop = ("NOVA_EVAL_TABLES_ROOT", DUCKDB_PATH_ENV, "DBT_TARGET_PATH", "DBT_LOG_PATH")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    ways = {
        "root": (checkout, ["--project-dir", "dbt_athena", "--profiles-dir", "dbt_athena"]),
        "inside": (project, ["--profiles-dir", "."]),
    }
    counts = {}
    for way, (cwd, args) in ways.items():
        command = [DBT, "build", *args, "--target", "duckdb"]
        done = subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"{way}: {done.stdout[-4000:]}{done.stderr[-2000:]}"
        database = cwd / "nova_eval_dbt.duckdb"  # the profile's default: the working dir
        con = duckdb.connect(str(database), read_only=True)
        try:  # the view reads outputs/tables, relative to the checkout as in the profile
            con.execute(f"SET file_search_path = '{checkout}'")
            counts[way] = con.execute(
                "SELECT eval_name, count(*) FROM stg_eval_examples GROUP BY 1 ORDER BY 1"
            ).fetchall()
        finally:
            con.close()
    return counts


def test_dbt_builds_from_the_root_and_from_inside_the_project(tmp_path: Path):
    """Tables written by the project's writer into the default outputs/tables; the DuckDB
    sources find them whichever folder dbt runs from."""
    root = str(tmp_path / "outputs" / "tables")
    writer.ensure_tables(root)
    run = build.RunInfo("tiny", "r1", datetime(2025, 3, 2, tzinfo=UTC), "m", "gen_qa")
    writer.write_run(
        root, "eval_examples", run.partition, [build.to_eval_examples(examples(6), run)]
    )
    results = {
        "config_general": {"num_scored": 5, "task": "gen_qa"},
        "results": {"all": {"em": 0.4, "em_stderr": 0.2}},
    }
    rows = build.overall_metric_rows(results)
    writer.write_run(root, "eval_metrics", run.partition, [build.metrics_table(run, rows)])
    judge_rows(root)
    assert build_both_ways(tmp_path) == {"root": [("tiny", 6)], "inside": [("tiny", 6)]}


@pytest.mark.model
def test_dbt_build_on_the_tables_of_a_real_evaluation(make_recipe, tmp_path, monkeypatch):
    monkeypatch.delenv("NOVA_EVAL_TABLES_ROOT", raising=False)
    monkeypatch.delenv("NOVA_EVAL_RUN_ID", raising=False)
    lines = ticket_lines(4)
    base = make_recipe(lines, name="base", inference={"max_new_tokens": 8})
    challenger = make_recipe(
        lines, name="challenger", inference={"max_new_tokens": 8, "top_logprobs": 0}
    )
    instance = dg.DagsterInstance.ephemeral()
    for loaded in (base, challenger):
        outcome = run_evaluation(loaded, instance=instance, show_progress=False)
        assert outcome.report is not None, outcome.message
    root = outcome.report["paths"]["tables"]
    assert root == str(tmp_path / "outputs" / "tables")

    # rematerializing the tables of a run replaces its partition instead of duplicating it
    again = materialize_tables(base, InProcessRuns(instance, base.name))
    assert not again.message
    judge_rows(root)
    with duck.connection(root) as con:
        counts = con.execute(
            "SELECT eval_name, count(*), count(DISTINCT run_id) FROM eval_examples "
            "GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert counts == [("base", 4, 1), ("challenger", 4, 1)]
        metric_rows = con.execute(
            "SELECT count(*) FROM eval_metrics "
            "WHERE eval_name = 'base' AND stratum = 'all' AND metric = 'em'"
        ).fetchall()
        assert metric_rows == [(1,)]
    assert (Path(root) / "_ddl" / "all.sql").exists()

    env = {"NOVA_EVAL_TABLES_ROOT": root, DUCKDB_PATH_ENV: str(tmp_path / "dbt.duckdb")}
    done = dbt("build", "--target", "duckdb", tmp=tmp_path, env=env)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    results = json.loads((tmp_path / "target" / "run_results.json").read_text())["results"]
    statuses = {r["unique_id"]: r["status"] for r in results}
    assert all(s in ("success", "pass") for s in statuses.values()), statuses
    tests = [u for u in statuses if u.startswith("test.")]
    assert any("unique_stg_eval_examples_example_key" in t for t in tests)
    assert any("accepted_values" in t for t in tests)
    assert len(tests) >= 30

    con = duckdb.connect(str(tmp_path / "dbt.duckdb"), read_only=True)
    try:
        latest = con.execute(
            "SELECT eval_name, metric FROM metrics_over_time "
            "WHERE is_latest AND metric = 'rouge1' ORDER BY 1"
        ).fetchall()
        assert latest == [("base", "rouge1"), ("challenger", "rouge1")]
        pairs = con.execute(
            "SELECT base_eval, challenger_eval, count(*) FROM base_vs_challenger GROUP BY ALL"
        ).fetchall()
        assert pairs and pairs[0][:2] == ("base", "challenger")
        strata = {
            row[0]
            for row in con.execute(
                "SELECT DISTINCT stratum_field FROM metrics_by_stratum"
            ).fetchall()
        }
        assert {"difficulty", "priority", "domain"} <= strata
        bins = con.execute(
            "SELECT eval_name, sum(num_examples) FROM calibration_bins GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert bins == [("base", 4), ("challenger", 4)]  # top_logprobs 0 keeps token logprobs
        (win,) = con.execute(
            "SELECT judgments, a_wins, b_wins, ties, inference_errors, b_win_rate, "
            "bradley_terry_winrate FROM judge_win_rates"
        ).fetchall()
        assert win == (6, 1, 3, 1, 1, pytest.approx(3.5 / 5), 0.7)
    finally:
        con.close()

    # (as a user runs it from the root and from inside dbt_athena/: the test above)

    # the same build as Dagster runs it: the dbt models downstream of the tables
    project = dbt_project()
    monkeypatch.setenv(DUCKDB_PATH_ENV, str(tmp_path / "dagster.duckdb"))
    result = dg.materialize(
        [build_dbt_assets(project)], resources={"dbt": dbt_resource(project)}, instance=instance
    )
    assert result.success
    keys = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {"dbt/base_vs_challenger", "dbt/calibration_bins", "dbt/judge_win_rates"} <= keys
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)

    # the models follow the tables: nothing to do now (they were built after the tables);
    # after base's tables are written again, the staging views over the two tables a gen_qa
    # run writes, then the marts over those views
    defs = dg.Definitions(
        assets=[*build_table_assets([base, challenger], athena=False), build_dbt_assets(project)],
        resources={"dbt": dbt_resource(project)},
    )

    def requested() -> set[str]:
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        graph = defs.resolve_asset_graph()
        return {
            key.to_user_string()
            for key in graph.get_all_asset_keys()
            if result.get_requested_partitions(key)
        }

    assert requested() == set()
    assert not materialize_tables(base, InProcessRuns(instance, base.name)).message
    staging = {"dbt/stg_eval_examples", "dbt/stg_eval_metrics"}
    assert requested() == staging

    def build_models(keys: set[str]) -> None:
        built = dg.materialize(
            [build_dbt_assets(project)],
            resources={"dbt": dbt_resource(project)},
            instance=instance,
            selection=[dg.AssetKey.from_user_string(key) for key in keys],
        )
        assert built.success

    build_models(staging)
    marts = {"dbt/calibration_bins", "dbt/metrics_by_stratum", "dbt/metrics_over_time"}
    assert requested() == marts  # not judge_win_rates: its views did not change
    build_models(marts)
    assert requested() == {"dbt/base_vs_challenger"}  # it reads metrics_over_time
    build_models({"dbt/base_vs_challenger"})
    assert requested() == set()

    # and `nova-eval query` on the same tables
    out = tmp_path / "examples.csv"
    assert (
        cli.main(["query", "SELECT eval_name, row_index FROM eval_examples", "-o", str(out)]) == 0
    )
    assert len(out.read_text().splitlines()) == 9
