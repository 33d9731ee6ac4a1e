"""Replicas side by side: `nova-eval run` with 2 replica processes vs 1, against one server.

    python bench/replicas.py [--rows N] [--concurrency C] [--repeats R] [--client-processes N]
                             [--server-latency-ms MS]

bench/instant_server.py runs in its own process on 127.0.0.1 and answers every chat
completion at once (a short JSON classification with per-token log probabilities, as vLLM
sends them), so the server is not the bottleneck as long as it has a core to itself; with
``--server-latency-ms`` it answers each completion that much later however many are in
flight (a GPU server's decode time with room in its batch), so that neither the server nor
the client's cores are the bottleneck and what replicas add is their requests in flight. Each
repeat runs the same gen_qa recipe (the support tickets repeated to N rows, ``engine:
openai``, ``concurrency`` C per replica, ``top_logprobs: 5``) twice, in alternating order:
with ``run.replicas: 1`` and with ``run.replicas: 2`` (both replicas at once, a process
each: the default of ``nova-eval run``), each in a fresh output folder and Dagster home.

Per run: the wall time of the whole command, and of its replica stage (from the end of the
dataset-and-prompts run to the start of the aggregate run, as the Dagster instance records
them: the replica processes' start-up included; and without it, from the first replica
run's start to the last one's end), the CPU seconds of the server, and how
many of the machine's cores were busy on average during the run (from /proc/stat, every
process counted): near the core count, the cores are the bottleneck, not the server. The
table gives the medians and the median of the per-repeat ratios 1 replica / 2 replicas
(goal: >= 1.7x for the replica stage where the server is not the bottleneck).
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import workload  # noqa: E402
from bench.instant_server import SERVED_MODEL, start_server  # noqa: E402


def write_dataset(folder: Path, rows: int) -> Path:
    """The support tickets repeated to ``rows`` lines, each prompt unique (its copy number)."""
    marked = workload.ticket_rows(rows, mark=lambda copy: f"[{copy}] ")
    return workload.write_jsonl(folder / "tickets.jsonl", marked)


def write_recipe(
    folder: Path,
    data: Path,
    url: str,
    replicas: int,
    concurrency: int,
    client_processes: int | None = None,
) -> Path:
    # inference.client_processes: left out, each replica takes its share of the cores
    chosen = {} if client_processes is None else {"client_processes": client_processes}
    return workload.write_recipe(
        folder / f"replicas-{replicas}.yaml",
        name=f"replicas-{replicas}",
        model=SERVED_MODEL,
        url=url,
        data=str(data),
        replicas=replicas,
        model_type="hf",
        max_new_tokens=64,
        top_k=-1,
        top_p=1.0,
        temperature=0,
        top_logprobs=5,
        concurrency=concurrency,
        **chosen,
    )


def replica_stage_s(home: Path, recipe_name: str) -> tuple[float, float]:
    """(end of the preparation run to start of the aggregate run, first start to last end of
    the replica runs themselves), from the instance."""
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(home))
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"recipe": recipe_name}))
    timed = []
    for run in runs:
        stats = instance.get_run_stats(run.run_id)
        # replica partitions are numbers (the tables' runs are partitioned by eval name)
        replica = run.tags.get("dagster/partition", "").isdigit()
        timed.append((stats.start_time, stats.end_time, replica))
    timed.sort()
    first_replica = next(i for i, t in enumerate(timed) if t[2])
    after = next(t for t in timed[first_replica:] if not t[2])
    replica_runs = [t for t in timed if t[2]]
    runs_s = max(t[1] for t in replica_runs) - min(t[0] for t in replica_runs)
    return after[0] - timed[first_replica - 1][1], runs_s


def server_cpu_s() -> float:
    """CPU seconds so far of this process's instant server (a child of it)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and b"instant_server.py" in command:
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    raise RuntimeError("the instant server process is not found")


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) clock ticks of every core since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return sum(values) - idle, sum(values)


def run_once(folder: Path, recipe: Path, name: str) -> tuple[float, ...]:
    """(whole command s, replica stage s, replica runs s, cores busy, server CPU s) of one
    `nova-eval run` in a fresh folder."""
    work = Path(tempfile.mkdtemp(dir=folder))
    env = {
        **{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
        "NOVA_EVAL_OUTPUT_ROOT": str(work / "outputs"),
        "NOVA_EVAL_TABLES_ROOT": str(work / "tables"),
        "DAGSTER_HOME": str(work / "dagster_home"),
    }
    (work / "dagster_home").mkdir()
    jiffies_before, server_before = machine_jiffies(), server_cpu_s()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "nova_eval_assets.cli", "run", str(recipe), "--quiet"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    (busy_after, total_after), (busy_before, total_before) = machine_jiffies(), jiffies_before
    busy, total = busy_after - busy_before, total_after - total_before
    cores = busy / total * os.cpu_count() if total else 0.0
    server = server_cpu_s() - server_before
    if done.returncode != 0:
        raise SystemExit(f"nova-eval run failed:\n{done.stdout}\n{done.stderr}")
    return (wall, *replica_stage_s(work / "dagster_home", name), cores, server)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--client-processes",
        type=int,
        metavar="N",
        help="inference.client_processes of every replica (default: left to choose)",
    )
    parser.add_argument(
        "--server-latency-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="the server answers each completion this much later (default: at once)",
    )
    args = parser.parse_args(argv)
    print(
        f"{args.rows} rows, concurrency {args.concurrency} per replica, {os.cpu_count()} cores, "
        f"client processes {args.client_processes or 'left to choose'}, "
        f"server latency {args.server_latency_ms:g} ms, "
        f"repeats {args.repeats}; load average {os.getloadavg()}"
    )
    server = start_server(latency_s=args.server_latency_ms / 1000)
    walls: dict[int, list[tuple[float, ...]]] = {1: [], 2: []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            data = write_dataset(folder, args.rows)
            recipes = {
                r: write_recipe(
                    folder, data, server.url, r, args.concurrency, args.client_processes
                )
                for r in (1, 2)
            }
            for repeat in range(args.repeats):
                for replicas in (1, 2) if repeat % 2 == 0 else (2, 1):
                    measured = run_once(folder, recipes[replicas], f"replicas-{replicas}")
                    walls[replicas].append(measured)
                    wall, stage, runs, cores, server_cpu = measured
                    print(
                        f"  repeat {repeat + 1} replicas {replicas}: command {wall:6.1f} s, "
                        f"replica stage {stage:6.1f} s = {args.rows / stage:7.1f} rows/s "
                        f"(the replica runs alone {runs:6.1f} s); "
                        f"server CPU {server_cpu:5.1f} s, {cores:.2f} of {os.cpu_count()} "
                        "cores busy on average"
                    )
    finally:
        server.stop()
    for index, label in ((0, "command"), (1, "replica stage"), (2, "replica runs alone")):
        one = statistics.median(w[index] for w in walls[1])
        two = statistics.median(w[index] for w in walls[2])
        pairs = zip(walls[1], walls[2], strict=True)
        ratio = statistics.median(a[index] / b[index] for a, b in pairs)
        print(
            f"median {label}: 1 replica {one:.1f} s, 2 replicas {two:.1f} s; "
            f"1 / 2 replicas: {ratio:.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
