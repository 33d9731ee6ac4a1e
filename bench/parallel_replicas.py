"""Replica processes side by side on one machine: the engine's share of the cores vs torch's
default of every core in every process, measured alternately in one run.

    python bench/parallel_replicas.py [--processes P] [--rows N] [--max-new-tokens M]
                                      [--repeats R]

Each of P processes loads the bundled model (from the conversion cache) and generates, at the
default batch size, greedy with top_logprobs 10, its own N tickets of
recipes/data/support_tickets.jsonl, as P replica runs launched together would (a backfill
from the UI, the daemon's queue). The wall time counts from the moment every process has
loaded its model to the last one's end. "shared" leaves the thread count to the engine
(engines/cpu_threads.py: cores // live engine processes); "every core" fixes each process at
all the machine's cores (NOVA_EVAL_TORCH_THREADS), which is what torch does by itself.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nova_eval_assets.engines.cpu_threads import THREADS_ENV, available_cores  # noqa: E402

WORKER = """
import json, sys, time, torch
from nova_eval_assets.engines import GenerationRequest, SamplingSettings, create_engine
offset, rows, max_new = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
lines = open("recipes/data/support_tickets.jsonl").read().splitlines()[offset : offset + rows]
tickets = [json.loads(line) for line in lines]
requests = [GenerationRequest(i, t["query"], t.get("system")) for i, t in enumerate(tickets)]
engine = create_engine("hf", "smollm2-135m-instruct", device="cpu")
print("loaded", flush=True)
sys.stdin.readline()
settings = SamplingSettings(max_new_tokens=max_new, temperature=0.0, top_logprobs=10)
out = engine.generate(requests, settings)
print(sum(len(g.tokens) for g in out), torch.get_num_threads(), flush=True)
"""


def run_once(processes: int, rows: int, max_new: int, fixed: int | None) -> tuple[float, int, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", THREADS_ENV)}
    env["PYTHONPATH"] = str(ROOT)
    if fixed:
        env[THREADS_ENV] = str(fixed)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(i * rows), str(rows), str(max_new)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for i in range(processes)
    ]
    for worker in workers:
        if worker.stdout.readline().strip() != "loaded":
            raise SystemExit("a worker failed to load the model")
    started = time.perf_counter()
    for worker in workers:
        worker.stdin.write("go\n")
        worker.stdin.flush()
    results = [worker.stdout.readline().split() for worker in workers]
    wall = time.perf_counter() - started
    for worker in workers:
        worker.stdin.close()
        worker.wait()
    tokens = sum(int(r[0]) for r in results)
    threads = int(results[0][1])
    return wall, tokens, threads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    cores = available_cores()
    print(
        f"{args.processes} processes x {args.rows} tickets, max_new_tokens {args.max_new_tokens},"
        f" {cores} cores, repeats {args.repeats}; load average {os.getloadavg()}"
    )
    walls: dict[str, list[float]] = {"shared": [], "every core": []}
    for repeat in range(args.repeats):
        for label, fixed in (("shared", None), ("every core", cores)):
            wall, tokens, threads = run_once(args.processes, args.rows, args.max_new_tokens, fixed)
            walls[label].append(wall)
            print(
                f"  repeat {repeat + 1} {label:10s} {threads} threads/process: {tokens} tokens"
                f" in {wall:6.1f} s = {tokens / wall:6.1f} tokens/s"
            )
    shared, every = (statistics.median(walls[k]) for k in ("shared", "every core"))
    print(f"median wall: shared {shared:.1f} s, every core {every:.1f} s")
    print(f"every core / shared: {every / shared:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
