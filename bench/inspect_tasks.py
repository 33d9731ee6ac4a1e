"""An Inspect task through nova-eval against `inspect eval` itself, on the same server.

    python bench/inspect_tasks.py [--samples N] [--concurrency C] [--repeats R]
                                  [--server-latency-ms MS]

The peer is what a user of Inspect runs: ``inspect eval task.py@arithmetic --model
openai-api/local/<model>`` (Inspect's own provider for OpenAI-compatible servers, the
openai SDK, ``--max-connections C``). nova-eval runs the same task file as an inspect recipe
(``evaluation.task: inspect``, ``engine: openai``, ``concurrency`` C): its blocks of samples
through Inspect's eval with the recipe's engine as the provider, then scoring, the report
(Inspect's own metrics and one .eval log), the tables and the analysis. The task: N
arithmetic questions, ``generate()``, the ``includes`` scorer. bench/instant_server.py
answers every chat completion in its own process on 127.0.0.1, at once or
``--server-latency-ms`` later (a GPU server's decode time with room in its batch).

Per repeat, in alternating order: each command's wall time (a fresh output folder, log
folder and Dagster home each) and its samples/s; nova-eval's inference stage alone (the
``inference_outputs`` step, as the Dagster instance records it). The table gives the
medians and the median of the per-repeat ratios nova-eval / inspect eval.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.instant_server import SERVED_MODEL, start_server  # noqa: E402

TASK = """
from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.scorer import includes
from inspect_ai.solver import generate


@task
def arithmetic(samples: int = 1000) -> Task:
    return Task(
        dataset=[
            Sample(input=f"What is {i} plus {i}?", target=str(2 * i), id=i + 1)
            for i in range(samples)
        ],
        solver=[generate()],
        scorer=includes(),
    )
"""


def write_inputs(folder: Path, samples: int, url: str, concurrency: int) -> tuple[Path, Path]:
    task = folder / "arithmetic.py"
    task.write_text(TASK)
    recipe = {
        "run": {"name": "inspect_bench", "model_type": "hf", "model_name_or_path": SERVED_MODEL,
                "replicas": 1, "data_s3_path": "", "output_s3_path": ""},
        "evaluation": {"task": "inspect", "strategy": "inspect", "metric": "all",
                       "inspect_task": f"{task}@arithmetic",
                       "inspect_args": {"samples": samples}},
        "inference": {"engine": "openai", "endpoint": url, "concurrency": concurrency,
                      "batch_size": concurrency, "max_new_tokens": 64, "temperature": 0},
    }  # fmt: skip
    path = folder / "inspect_bench.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return task, path


def inference_step_s(home: Path) -> float:
    """The inference_outputs step's wall time, from the run's Dagster instance."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    with dg.DagsterInstance.get() as instance:
        for record in instance.get_run_records():
            for stats in instance.get_run_step_stats(record.dagster_run.run_id):
                if stats.step_key.endswith("inference_outputs") and stats.end_time:
                    return stats.end_time - stats.start_time
    raise SystemExit("no inference_outputs step recorded")


def run_nova_eval(folder: Path, recipe: Path) -> tuple[float, float]:
    work = Path(tempfile.mkdtemp(dir=folder))
    (work / "home").mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
        "NOVA_EVAL_OUTPUT_ROOT": str(work / "outputs"),
        "NOVA_EVAL_TABLES_ROOT": str(work / "tables"),
        "DAGSTER_HOME": str(work / "home"),
    }
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "nova_eval_assets.cli", "run", str(recipe), "--quiet"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"nova-eval run failed:\n{done.stdout}\n{done.stderr}")
    return wall, inference_step_s(work / "home")


def run_inspect(folder: Path, task: Path, samples: int, url: str, concurrency: int) -> float:
    work = Path(tempfile.mkdtemp(dir=folder))
    env = {**os.environ, "LOCAL_BASE_URL": f"{url}/v1", "LOCAL_API_KEY": "unused"}
    inspect = Path(sys.executable).with_name("inspect")
    started = time.perf_counter()
    done = subprocess.run(
        [str(inspect), "eval", f"{task}@arithmetic", "-T", f"samples={samples}",
         "--model", f"openai-api/local/{SERVED_MODEL}", "--max-connections", str(concurrency),
         "--max-tokens", "64", "--temperature", "0", "--display", "none",
         "--log-dir", str(work / "logs")],
        cwd=work, env=env, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"inspect eval failed:\n{done.stdout}\n{done.stderr}")
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--server-latency-ms", type=float, default=0.0, metavar="MS")
    args = parser.parse_args(argv)
    print(
        f"{args.samples} samples, concurrency {args.concurrency}, {os.cpu_count()} cores, "
        f"server latency {args.server_latency_ms:g} ms, repeats {args.repeats}; "
        f"load average {os.getloadavg()}"
    )
    server = start_server(latency_s=args.server_latency_ms / 1000)
    ours: list[tuple[float, float]] = []
    peer: list[float] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            task, recipe = write_inputs(folder, args.samples, server.url, args.concurrency)
            for repeat in range(args.repeats):
                for who in (
                    ("nova-eval", "inspect") if repeat % 2 == 0 else ("inspect", "nova-eval")
                ):
                    if who == "nova-eval":
                        wall, stage = run_nova_eval(folder, recipe)
                        ours.append((wall, stage))
                        print(
                            f"  repeat {repeat + 1} nova-eval run: {wall:6.1f} s "
                            f"({args.samples / wall:6.1f} samples/s), inference stage "
                            f"{stage:6.1f} s ({args.samples / stage:6.1f} samples/s)"
                        )
                    else:
                        wall = run_inspect(folder, task, args.samples, server.url, args.concurrency)
                        peer.append(wall)
                        print(
                            f"  repeat {repeat + 1} inspect eval:  {wall:6.1f} s "
                            f"({args.samples / wall:6.1f} samples/s)"
                        )
    finally:
        server.stop()
    command = statistics.median(p / w for (w, _), p in zip(ours, peer, strict=True))
    stage = statistics.median(p / s for (_, s), p in zip(ours, peer, strict=True))
    print(
        f"median nova-eval run {statistics.median(w for w, _ in ours):.1f} s, inference stage "
        f"{statistics.median(s for _, s in ours):.1f} s, inspect eval "
        f"{statistics.median(peer):.1f} s; speed nova-eval / inspect eval: whole command "
        f"{command:.2f}x, inference stage {stage:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
