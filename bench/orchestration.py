"""Orchestration overhead: the main job through Dagster against the same domain functions
called directly, on the same data, side by side in one process.

    .venv/bin/python bench/orchestration.py [RECIPE] [--limit N] [--repeats K]

Each repeat runs the recipe (default recipes/support_tickets.yaml, the job `make eval`
runs) on its first N rows (default 8) twice, into fresh output folders:

- dagster: ``assets.materialize.run_evaluation`` (what ``nova-eval run`` does) in a fresh
  on-disk Dagster instance: the preparation run, one run per replica partition, the
  aggregate, the tables and DDL, the analysis report, every event recorded;
- direct: the stage functions those assets call, in the same order, without Dagster
  (validate, prompts, inference and metrics per replica, report, tables, DDL, analysis).

The model is loaded once before timing (both paths share the process's engine), and the
order alternates between repeats. overhead = dagster / direct - 1 per repeat; the script
prints every repeat and the medians, and exits 1 when the median overhead is 15 % or more.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dagster as dg  # noqa: E402

from bench import workload  # noqa: E402
from nova_eval_assets import stages, tables  # noqa: E402
from nova_eval_assets.analysis.pipeline import run_analysis  # noqa: E402
from nova_eval_assets.assets.materialize import run_evaluation  # noqa: E402
from nova_eval_assets.recipe import LoadedRecipe, load_recipe  # noqa: E402
from nova_eval_assets.tables import ddl  # noqa: E402

TARGET = 0.15


def direct(loaded: LoadedRecipe) -> dict:
    """The domain functions, in the order the Dagster runs call them."""
    report = workload.run_stages(loaded)
    root = tables.tables_root()
    tables.write_evaluation_tables(loaded, root)
    tables.ensure_tables(root)
    known = {loaded.name, *tables.eval_names(root)}
    ddl.write_ddl(root, ddl.DdlSettings.from_env(root, known))
    if loaded.recipe.analysis.enabled:
        run_analysis(loaded)
    return report


def through_dagster(loaded: LoadedRecipe, home: Path) -> dict:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        outcome = run_evaluation(loaded, instance=instance, show_progress=False)
    finally:
        instance.dispose()
    if outcome.report is None:
        raise RuntimeError(outcome.message)
    return outcome.report


def timed(path: str, loaded: LoadedRecipe, scratch: Path) -> tuple[float, dict]:
    """One evaluation into its own output folder (so nothing is reused between runs)."""
    out = scratch / path
    os.environ["NOVA_EVAL_OUTPUT_ROOT"] = str(out / "outputs")
    os.environ["NOVA_EVAL_TABLES_ROOT"] = str(out / "tables")
    started = time.perf_counter()
    report = direct(loaded) if path == "direct" else through_dagster(loaded, out / "home")
    return time.perf_counter() - started, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipe", nargs="?", default=str(ROOT / "recipes" / "support_tickets.yaml"))
    parser.add_argument("--limit", type=int, default=8, help="first N rows (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="pairs of runs (default 3)")
    args = parser.parse_args(argv)

    loaded = load_recipe(args.recipe).with_overrides(limit=args.limit)
    engine_started = time.perf_counter()
    stages.load_engine(loaded)  # both paths use this process's engine
    facts = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "recipe": str(loaded.path),
        "rows": args.limit,
        "replicas": loaded.recipe.run.replicas,
        "max_new_tokens": loaded.recipe.inference.max_new_tokens,
        "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "engine_load_seconds": round(time.perf_counter() - engine_started, 1),
    }
    repeats = []
    with tempfile.TemporaryDirectory(prefix="nova-eval-orchestration-") as scratch:
        for repeat in range(args.repeats):
            order = ("direct", "dagster") if repeat % 2 == 0 else ("dagster", "direct")
            seconds, metrics = {}, {}
            for path in order:
                seconds[path], report = timed(path, loaded, Path(scratch) / f"{repeat}-{path}")
                metrics[path] = report["metrics"]
            assert metrics["direct"] == metrics["dagster"], "the two paths disagree"
            overhead = seconds["dagster"] / seconds["direct"] - 1
            repeats.append(
                {
                    "order": "/".join(order),
                    "direct_s": round(seconds["direct"], 2),
                    "dagster_s": round(seconds["dagster"], 2),
                    "difference_s": round(seconds["dagster"] - seconds["direct"], 2),
                    "overhead": round(overhead, 4),
                }
            )
            print(json.dumps(repeats[-1]), flush=True)
    result = {
        **facts,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "repeats": repeats,
        "median_direct_s": round(statistics.median(r["direct_s"] for r in repeats), 2),
        "median_dagster_s": round(statistics.median(r["dagster_s"] for r in repeats), 2),
        "median_difference_s": round(statistics.median(r["difference_s"] for r in repeats), 2),
        "median_overhead": round(statistics.median(r["overhead"] for r in repeats), 4),
        "target": TARGET,
    }
    result["within_target"] = result["median_overhead"] < TARGET
    print(json.dumps(result, indent=2))
    return 0 if result["within_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
