"""Issue 21's run at scale: `nova-eval run` end to end on N rows against an instant server.

    python bench/scale.py [--rows 100000 1000000] [--repeats R] [--replicas 1 2]
                          [--max-parallel P] [--json FILE]

bench/instant_server.py runs in its own process on 127.0.0.1 and answers every chat
completion at once (a short JSON classification with per-token log probabilities, as vLLM
sends them). For each row count and replica count, each repeat runs, in a fresh temporary
folder (its own ``DAGSTER_HOME`` and ``NOVA_EVAL_OUTPUT_ROOT``):

1. ``nova-eval run <recipe> --quiet`` as a subprocess: gen_qa on the support tickets
   (recipes/data/support_tickets.jsonl) repeated to N rows, each copy's query prefixed
   with its copy number so that no two lines are alike; ``inference.engine: openai``,
   ``top_logprobs: 5``, ``concurrency: 64``, the main job's ``classification`` block
   (recipes/support_tickets.yaml), ``run.replicas`` R, ``--max-parallel`` P when given.
   While it runs, the RSS of the CLI's whole process tree (the CLI, the fork server and
   replica processes) is summed every 0.2 s with psutil: the peak of that sum and of the
   largest single process. RSS counts pages a forked child shares with its parent in both.
   Each sum is kept with its time, so that each Dagster step gets the peak of the sums
   taken while it ran (from its start and end in the step stats).
2. The peer, just before and just after the run, against the same server: bench/client.py's
   plain aiohttp client (one session, a pool of C connections, C coroutines) posting the
   bodies the engine posts for the first ``--peer-rows`` rows (checked field for field
   against the engine's body, and row for row against the run's prompts table). Its
   requests/s is the mean of the two, which follows a shared machine's load over the run
   better than either.

Per run: the wall time of the command (interpreter start to exit), rows/s end to end, the
wall time and peak tree RSS of each Dagster step of the runs the CLI launched (from the
instance's step stats, keyed by step and partition), and the generation stage's rows/s: N
over the span of the ``inference_outputs`` steps (first start to last end, over every
replica), engine set-up and Parquet output included; beside it the peer's requests/s and
their ratio. The goals of issue 21 are checked at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import workload  # noqa: E402
from bench.client import plain_path, request_fields  # noqa: E402
from bench.instant_server import SERVED_MODEL, start_server  # noqa: E402
from nova_eval_assets import stages, storage  # noqa: E402
from nova_eval_assets.engines.base import GenerationRequest  # noqa: E402
from nova_eval_assets.engines.openai import OpenAIEngine  # noqa: E402
from nova_eval_assets.layout import EvalLayout  # noqa: E402
from nova_eval_assets.recipe import load_recipe  # noqa: E402

TICKETS = workload.TICKETS
MAIN_RECIPE = ROOT / "recipes" / "support_tickets.yaml"
GIB = 1 << 30
SAMPLE_S = 0.2
#: the step that generates (its span over every replica is the generation stage)
GENERATION_STEP = "inference_outputs"
#: issue 21's figures before the streaming pipeline and the async client (2-core machine)
BEFORE = {100_000: {"wall_s": 538.0, "rows_per_s": 186.0, "peak_rss_gib": 4.26}}


# ------------------------------------------------------------------------ inputs


def write_dataset(path: Path, rows: int) -> None:
    """The support tickets repeated to `rows` lines; copies after the first have their
    query prefixed with the copy number, so every line is distinct."""
    marked = workload.ticket_rows(rows, mark=lambda copy: f"[copy {copy}] " if copy else "")
    workload.write_jsonl(path, marked)


def write_recipe(
    folder: Path,
    data: Path,
    url: str,
    replicas: int,
    concurrency: int,
    top_logprobs: int,
    max_new_tokens: int,
) -> Path:
    """A gen_qa recipe over `data` with the main job's classification block."""
    main_recipe = yaml.safe_load(MAIN_RECIPE.read_text(encoding="utf-8"))
    name = f"scale-{replicas}-replicas"
    return workload.write_recipe(
        folder / f"{name}.yaml",
        name=name,
        model=SERVED_MODEL,
        url=url,
        data=data.name,
        replicas=replicas,
        max_new_tokens=max_new_tokens,
        top_k=-1,
        top_p=1.0,
        temperature=0,
        top_logprobs=top_logprobs,
        concurrency=concurrency,
        classification=main_recipe["classification"],
    )


# ------------------------------------------------------------------------ measuring


class TreeMemory:
    """Samples the RSS of a process and all its descendants every SAMPLE_S seconds on a
    thread: the peak of their sum and the largest single process seen, and every sum with
    the wall-clock time it was taken (`timeline`). A child counts from its second sample
    on: one caught between fork and exec shows its parent's pages as its own, and would
    count them twice."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak_sum = 0
        self.peak_single = 0
        self.peak_single_name = ""
        self.peak_by_process: dict[int, tuple[str, int]] = {}  # pid: (role, peak RSS)
        self.samples = 0
        #: (time.time() after the sample, tree RSS): epoch seconds, as Dagster's step stats
        self.timeline: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        seen_before: set[int] = set()
        while not self._stop.is_set():
            try:
                children = self.root.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            total = 0
            for process in [self.root, *(c for c in children if c.pid in seen_before)]:
                try:
                    rss = process.memory_info().rss
                except psutil.NoSuchProcess:  # ended between listing and reading
                    continue
                total += rss
                role, peak = self.peak_by_process.get(process.pid) or (_role(process), 0)
                self.peak_by_process[process.pid] = (role, max(peak, rss))
                if rss > self.peak_single:
                    self.peak_single = rss
                    self.peak_single_name = role
            seen_before = {child.pid for child in children}
            self.peak_sum = max(self.peak_sum, total)
            self.samples += 1
            self.timeline.append((time.time(), total))
            self._stop.wait(SAMPLE_S)

    def largest(self, count: int) -> list[tuple[str, float]]:
        """The `count` processes with the highest peaks: (role, GiB)."""
        peaks = sorted(self.peak_by_process.values(), key=lambda item: -item[1])
        return [(role, round(peak / GIB, 3)) for role, peak in peaks[:count]]


def _role(process: psutil.Process) -> str:
    """A short name for a process of the tree: the CLI, the fork server or a replica, or
    the script a Python process runs."""
    try:
        command = process.cmdline()
    except psutil.Error:
        return "?"
    joined = " ".join(command)
    if "forkserver" in joined:
        return "fork server or replica"
    if "nova-eval" in joined or "nova_eval_assets.cli" in joined:
        return "CLI"
    script = next((part for part in command[1:] if not part.startswith("-")), command[0])
    return Path(script).name if script else process.name()


def step_times(dagster_home: Path) -> list[dict[str, Any]]:
    """Every step of every run in the instance: step key, partition, start, end, seconds;
    by start time."""
    import dagster as dg  # only here: the bench process needs no Dagster otherwise

    instance = dg.DagsterInstance.from_config(str(dagster_home))
    steps = []
    for run in instance.get_runs():
        partition = run.tags.get("dagster/partition")
        for stat in instance.get_run_step_stats(run.run_id):
            if stat.start_time is None or stat.end_time is None:
                continue
            steps.append(
                {
                    "step": stat.step_key,
                    "partition": partition,
                    "start": stat.start_time,
                    "end": stat.end_time,
                    "seconds": round(stat.end_time - stat.start_time, 2),
                }
            )
    steps.sort(key=lambda step: step["start"])
    instance.dispose()
    return steps


def step_peaks(
    steps: list[dict[str, Any]], timeline: list[tuple[float, int]]
) -> list[dict[str, Any]]:
    """`steps` with ``peak_rss_gib``: the largest tree RSS sampled between the step's start
    and end (None for a step shorter than the sampling gap). Steps that overlap (replicas)
    share their samples; memory a step leaves behind counts in the steps after it."""
    peaked = []
    for step in steps:
        inside = [rss for at, rss in timeline if step["start"] <= at <= step["end"]]
        peaked.append({**step, "peak_rss_gib": round(max(inside) / GIB, 3) if inside else None})
    return peaked


def outside_peak(steps: list[dict[str, Any]], timeline: list[tuple[float, int]]) -> float | None:
    """The largest tree RSS sampled while no step ran (start-up, between runs, exit), GiB."""
    outside = [rss for at, rss in timeline if not any(s["start"] <= at <= s["end"] for s in steps)]
    return round(max(outside) / GIB, 3) if outside else None


def covered_s(steps: list[dict[str, Any]]) -> float:
    """Seconds during which at least one step ran (replica steps overlap)."""
    covered, reached = 0.0, float("-inf")
    for step in sorted(steps, key=lambda s: s["start"]):
        if step["end"] > reached:
            covered += step["end"] - max(step["start"], reached)
            reached = step["end"]
    return covered


def generation_span(steps: list[dict[str, Any]]) -> float:
    """First start to last end of the generation steps (every replica)."""
    generation = [s for s in steps if s["step"].endswith(GENERATION_STEP)]
    if not generation:
        raise RuntimeError(f"no {GENERATION_STEP} step in the instance")
    return max(s["end"] for s in generation) - min(s["start"] for s in generation)


def nova_eval_command() -> list[str]:
    """The installed ``nova-eval`` beside this interpreter, else the module."""
    script = Path(sys.executable).with_name("nova-eval")
    return [str(script)] if script.exists() else [sys.executable, "-m", "nova_eval_assets.cli"]


def run_cli(
    recipe: Path, work: Path, max_parallel: int | None
) -> tuple[dict[str, Any], list[tuple[float, int]]]:
    """`nova-eval run recipe --quiet` in `work`'s instance and output root: wall seconds,
    peak RSS of its process tree and of its largest process; and the tree's RSS samples
    (epoch seconds, bytes)."""
    home = work / "dagster_home"
    home.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
        "DAGSTER_HOME": str(home),
        "NOVA_EVAL_OUTPUT_ROOT": str(work / "outputs"),
    }
    env.pop("NOVA_EVAL_TABLES_ROOT", None)  # the tables go under the output root
    command = [*nova_eval_command(), "run", str(recipe), "--quiet"]
    if max_parallel is not None:
        command += ["--max-parallel", str(max_parallel)]
    log = work / "cli.log"
    with log.open("w") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        with TreeMemory(process.pid) as memory:
            code = process.wait()
        wall = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"nova-eval run exited {code}:\n{log.read_text()[-4000:]}")
    return {
        "wall_s": round(wall, 2),
        "peak_rss_gib": round(memory.peak_sum / GIB, 3),
        "peak_single_rss_gib": round(memory.peak_single / GIB, 3),
        "peak_single_process": memory.peak_single_name,
        "rss_samples": memory.samples,
        "largest_processes_gib": memory.largest(4),
    }, memory.timeline


def peer_requests(data: Path, rows: int) -> list[GenerationRequest]:
    """The first `rows` requests of the dataset, as the prompts stage makes them for gen_qa
    without preprocessing (prompt: the query; checked against the run's prompts table by
    :func:`check_peer_requests`)."""
    requests = []
    with data.open(encoding="utf-8") as lines:
        for index, line in zip(range(rows), lines, strict=False):
            row = json.loads(line)
            requests.append(GenerationRequest(index, row["query"], row.get("system")))
    return requests


def check_peer_requests(requests: list[GenerationRequest], prompts: str) -> None:
    """Raise unless the engine's requests (the run's prompts table) begin with `requests`."""
    batches, count = [], 0
    for batch in pq.ParquetFile(prompts).iter_batches(batch_size=len(requests)):
        batches.append(batch)
        count += batch.num_rows
        if count >= len(requests):
            break
    first = pa.Table.from_batches(batches).slice(0, len(requests))
    if stages.build_requests(first) != requests:
        raise RuntimeError(f"the plain client's requests differ from the prompts in {prompts}")


def check_run(latest_report: str, rows: int) -> None:
    """Raise unless the run's report counts `rows` examples, every one generated and
    scored: a run with failed rows is not the run measured."""
    counts = storage.read_json(latest_report)["counts"]
    if (counts["examples"], counts["scored"], counts["inference_errors"]) != (rows, rows, 0):
        raise RuntimeError(f"the run is not whole ({latest_report}): {counts}")


def peer_rate(url: str, requests: list[GenerationRequest], fields: dict, concurrency: int) -> float:
    """The plain aiohttp client's requests/s over `requests` with the body `fields`."""
    return len(requests) / plain_path(url, requests, fields, concurrency)


def measure(
    url: str,
    rows: int,
    replicas: int,
    max_parallel: int | None,
    concurrency: int,
    top_logprobs: int,
    max_new_tokens: int,
    peer_rows: int,
) -> dict[str, Any]:
    """One CLI run and its peer, in a temporary folder removed after."""
    with tempfile.TemporaryDirectory(prefix="nova-eval-scale-") as tmp:
        work = Path(tmp)
        data = work / "tickets.jsonl"
        write_dataset(data, rows)
        recipe = write_recipe(work, data, url, replicas, concurrency, top_logprobs, max_new_tokens)
        loaded = load_recipe(recipe)
        requests = peer_requests(data, min(rows, peer_rows))
        engine = OpenAIEngine(SERVED_MODEL, url, concurrency=concurrency, probe=False)
        try:  # the engine's body for a row, less its messages
            fields = request_fields(engine, requests[0], stages.sampling_settings(loaded))
        finally:
            engine.close()
        # the peer just before and just after the run: their mean follows a shared
        # machine's load over the run better than either
        peer_before = peer_rate(url, requests, fields, concurrency)
        load_before = os.getloadavg()
        run, timeline = run_cli(recipe, work, max_parallel)
        load_after_run = os.getloadavg()
        peer_after = peer_rate(url, requests, fields, concurrency)
        layout = EvalLayout(str(work / "outputs" / loaded.name))
        check_run(layout.latest_report, rows)
        check_peer_requests(requests, layout.prompts)
        steps = step_peaks(step_times(work / "dagster_home"), timeline)
    peer = (peer_before + peer_after) / 2
    generation_s = generation_span(steps)
    generation = rows / generation_s
    first = steps[0]["start"] if steps else 0.0
    return {
        "rows": rows,
        "replicas": replicas,
        "max_parallel": max_parallel,
        "recipe_key": loaded.key,
        **run,
        "rows_per_s": round(rows / run["wall_s"], 1),
        "generation_s": round(generation_s, 2),
        "generation_rows_per_s": round(generation, 1),
        "peer_rows": min(rows, peer_rows),
        "peer_requests_per_s": round(peer, 1),
        "peer_before_after": [round(peer_before, 1), round(peer_after, 1)],
        "generation_vs_peer": round(generation / peer, 3),
        "in_steps_s": round(covered_s(steps), 2),
        "peak_rss_outside_steps_gib": outside_peak(steps, timeline),
        "steps": [
            {**s, "start": round(s["start"] - first, 2), "end": round(s["end"] - first, 2)}
            for s in steps
        ],
        "load_before": [round(x, 2) for x in load_before],
        "load_after_run": [round(x, 2) for x in load_after_run],
    }


# ------------------------------------------------------------------------ report


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The medians of the repeats of one (rows, replicas)."""
    keys = (
        "wall_s",
        "rows_per_s",
        "peak_rss_gib",
        "peak_single_rss_gib",
        "generation_rows_per_s",
        "peer_requests_per_s",
        "generation_vs_peer",
    )
    return {
        "rows": runs[0]["rows"],
        "replicas": runs[0]["replicas"],
        "repeats": len(runs),
        **{key: round(statistics.median(r[key] for r in runs), 3) for key in keys},
        # a peak is a peak: the largest of the repeats too
        "peak_rss_gib_max": max(r["peak_rss_gib"] for r in runs),
        "step_peak_rss_gib": step_peak_summary(runs),
    }


def step_peak_summary(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    """Each step's peak tree RSS (recipe prefix left out), the largest over the repeats and
    partitions, in the order the steps first started."""
    peaks: dict[str, float | None] = {}
    for run in runs:
        prefix = f"{run['recipe_key']}__"
        for step in run["steps"]:
            name = step["step"].removeprefix(prefix)
            known, peak = peaks.get(name), step.get("peak_rss_gib")
            peaks[name] = peak if known is None else known if peak is None else max(known, peak)
    return peaks


def goals(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 21's goals that these figures can check."""
    checked = []
    one = {s["rows"]: s for s in summaries if s["replicas"] == 1}
    for s in summaries:
        checked.append(
            {
                "goal": f"{s['rows']:,} rows, {s['replicas']} replica(s): generation >= 0.9x "
                "the plain client",
                "value": f"{s['generation_vs_peer']:.3f}x",
                "met": s["generation_vs_peer"] >= 0.9,
            }
        )
    if 1_000_000 in one:
        million = one[1_000_000]
        checked.append(
            {
                "goal": "1,000,000 rows end to end in under 15 minutes",
                "value": f"{million['wall_s'] / 60:.1f} min",
                "met": million["wall_s"] < 15 * 60,
            }
        )
        checked.append(
            {
                "goal": "1,000,000 rows: peak RSS under 2 GiB",
                "value": f"{million['peak_rss_gib_max']:.2f} GiB",
                "met": million["peak_rss_gib_max"] < 2,
            }
        )
        if 100_000 in one:
            ratio = million["peak_rss_gib_max"] / one[100_000]["peak_rss_gib_max"]
            checked.append(
                {
                    "goal": "peak RSS at 1M rows <= 1.3x that at 100k",
                    "value": f"{ratio:.2f}x",
                    "met": ratio <= 1.3,
                }
            )
    return checked


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(
            (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line),
            model,
        )
    except (OSError, subprocess.CalledProcessError):
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / GIB, 1),
        "python": platform.python_version(),
    }


def _gib(value: float | None) -> str:
    return "" if value is None else f"{value:.2f} GiB"


def stage_table(run: dict[str, Any]) -> list[str]:
    """The run's steps (the recipe's asset key prefix left out) and the time outside them,
    with the peak tree RSS in each."""
    prefix = f"{run['recipe_key']}__"
    lines = [
        "| step | partition | start s | seconds | share of wall | peak RSS (tree) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for step in run["steps"]:
        share = step["seconds"] / run["wall_s"]
        lines.append(
            f"| {step['step'].removeprefix(prefix)} | {step['partition'] or ''} | "
            f"{step['start']:.1f} | {step['seconds']:.1f} | {share:.0%} | "
            f"{_gib(step.get('peak_rss_gib'))} |"
        )
    outside = run["wall_s"] - run["in_steps_s"]
    lines.append(
        f"| outside the steps (interpreter start, imports, runs' start-up) | | | "
        f"{outside:.1f} | {outside / run['wall_s']:.0%} | "
        f"{_gib(run.get('peak_rss_outside_steps_gib'))} |"
    )
    return lines


def step_peak_table(summaries: list[dict[str, Any]]) -> list[str]:
    """Peak tree RSS per step, a column per (rows, replicas): which step grows with rows."""
    names = list(dict.fromkeys(n for s in summaries for n in s["step_peak_rss_gib"]))
    columns = [f"{s['rows']:,} rows, {s['replicas']} repl." for s in summaries]
    lines = [
        "Peak RSS of the CLI tree while each step ran (memory a step leaves behind counts in "
        "the steps after it):",
        "",
        f"| step | {' | '.join(columns)} |",
        f"|---|{'---:|' * len(columns)}",
    ]
    for name in names:
        cells = [_gib(s["step_peak_rss_gib"].get(name)) for s in summaries]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| rows | replicas | wall | rows/s end to end | peak RSS (tree) | largest process | "
        "generation rows/s | plain client req/s | generation / plain |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in result["summaries"]:
        lines.append(
            f"| {s['rows']:,} | {s['replicas']} | {s['wall_s']:.0f} s | {s['rows_per_s']:.0f} | "
            f"{s['peak_rss_gib_max']:.2f} GiB | {s['peak_single_rss_gib']:.2f} GiB | "
            f"{s['generation_rows_per_s']:.0f} | {s['peer_requests_per_s']:.0f} | "
            f"{s['generation_vs_peer']:.3f}x |"
        )
    for rows, before in BEFORE.items():
        lines.append(
            f"| {rows:,} (before, issue 21) | 1 | {before['wall_s']:.0f} s | "
            f"{before['rows_per_s']:.0f} | {before['peak_rss_gib']:.2f} GiB | | | | |"
        )
    lines += ["", *step_peak_table(result["summaries"])]
    for run in result["runs"]:
        lines += [
            "",
            f"{run['rows']:,} rows, {run['replicas']} replica(s): steps of the Dagster runs "
            f"(load average {run['load_before'][0]} before, {run['load_after_run'][0]} after)",
            "",
            *stage_table(run),
        ]
    lines += ["", "Goals:", ""]
    lines += [
        f"- {'met' if g['met'] else 'NOT met'}: {g['goal']} ({g['value']})" for g in result["goals"]
    ]
    m = result["machine"]
    lines += [
        "",
        f"{m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Python {m['python']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1])
    parser.add_argument(
        "--max-parallel",
        type=int,
        help="passed to nova-eval run (default: its own, every replica at once)",
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--top-logprobs", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--peer-rows",
        type=int,
        default=100_000,
        help="rows the plain client sends (at most the run's rows; default 100000)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    args = parser.parse_args(argv)
    counts = [*args.rows, *args.replicas, args.repeats, args.concurrency, args.peer_rows]
    if min(counts) < 1 or (args.max_parallel is not None and args.max_parallel < 1):
        parser.error(
            "--rows, --replicas, --max-parallel, --repeats, --concurrency and --peer-rows "
            "must be >= 1"
        )

    server = start_server(model=SERVED_MODEL)
    runs: list[dict[str, Any]] = []
    summaries = []
    try:
        for rows in args.rows:
            for replicas in args.replicas:
                repeats = []
                for repeat in range(args.repeats):
                    print(
                        f"{rows:,} rows, {replicas} replica(s), repeat {repeat + 1}/{args.repeats}",
                        file=sys.stderr,
                        flush=True,
                    )
                    run = measure(
                        server.url,
                        rows,
                        replicas,
                        args.max_parallel,
                        args.concurrency,
                        args.top_logprobs,
                        args.max_new_tokens,
                        args.peer_rows,
                    )
                    print(json.dumps({k: v for k, v in run.items() if k != "steps"}),
                          file=sys.stderr, flush=True)  # fmt: skip
                    repeats.append(run)
                runs += repeats
                summaries.append(summary(repeats))
    finally:
        server.stop()
    result = {
        "command": " ".join(["python", "bench/scale.py", *(argv or sys.argv[1:])]),
        "concurrency": args.concurrency,
        "top_logprobs": args.top_logprobs,
        "max_new_tokens": args.max_new_tokens,
        "machine": machine(),
        "load_at_end": [round(x, 2) for x in os.getloadavg()],
        "summaries": summaries,
        "goals": goals(summaries),
        "runs": runs,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
