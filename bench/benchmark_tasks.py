"""mmlu's prompts built and answers scored per second, and the memory that takes.

    python bench/benchmark_tasks.py [--rows 14042 140420] [--repeats 3]

For each row count, in a fresh process (so that its peak RSS is its own): MMLU-shaped rows of
our own making (a question of a few dozen words, four choices, an answer, one of the 57
subjects) written as JSONL; then the validation stage's pass over them (each row made
Nova's zero-shot chain-of-thought prompt, written to the validated Parquet in record
batches, rejected rows to their file), and the scorer over record batches of model-like
outputs (a reasoning paragraph ending "The correct answer is (X).", a quarter of them with
another letter, some with none) with Nova's extraction, as the scoring stage runs it (the
scorer's time alone). The
table gives rows/s of each part (medians over the repeats) and the process's peak RSS, which
stays flat from 14,042 rows (MMLU's test split) to ten times that.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = ("the", "of", "a", "which", "planet", "value", "river", "system", "energy", "cell",
         "market", "law", "number", "state", "force", "theory", "rate", "model", "growth",
         "light", "water", "time", "body", "price", "group")  # fmt: skip


def rows(count: int, seed: int = 7):
    from nova_eval_assets.tasks.mmlu import MMLU_SUBJECTS

    rng = random.Random(seed)
    for index in range(count):
        question = " ".join(rng.choices(WORDS, k=40)) + f" ({index})?"
        choices = [" ".join(rng.choices(WORDS, k=6)) for _ in range(4)]
        yield {"question": question, "choices": choices, "answer": rng.randrange(4),
               "subject": MMLU_SUBJECTS[index % len(MMLU_SUBJECTS)]}  # fmt: skip


def outputs(golds: list[str], seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    said = []
    for gold in golds:
        reasoning = " ".join(rng.choices(WORDS, k=80))
        roll = rng.random()
        letter = gold if roll < 0.7 else "ABCD"[(ord(gold) - 64) % 4]
        said.append(
            f"{reasoning}.\nThe correct answer is ({letter})." if roll < 0.95 else reasoning
        )
    return said


def measure(count: int) -> dict[str, float]:
    """One run at ``count`` rows, in this process."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nova_eval_assets import storage
    from nova_eval_assets.dataset import GEN_QA, ValidationOutcome, arrow_schema
    from nova_eval_assets.metrics.batch_scoring import builtin_metric_columns, for_task
    from nova_eval_assets.stages.benchmark_samples import SampleCounts, sample_batches
    from nova_eval_assets.tasks.base import TaskOptions
    from nova_eval_assets.tasks.registry import benchmark_task
    from nova_eval_assets.tasks.sources import resolve_source

    task = benchmark_task("mmlu")
    assert task is not None
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "mmlu.jsonl"
        with data.open("w", encoding="utf-8") as out:
            for row in rows(count):
                out.write(json.dumps(row) + "\n")
        validated = str(Path(tmp) / "validated.parquet")
        started = time.perf_counter()
        outcome = ValidationOutcome(str(data))
        source = resolve_source(task, str(data), None, [])
        batches = sample_batches(outcome, source, task, [], TaskOptions(), SampleCounts())
        with storage.parquet_writer(validated, arrow_schema(GEN_QA)) as writer:
            for valid, _rejected in batches:
                writer.write_batch(valid)
        prompts_s = time.perf_counter() - started
        assert outcome.valid_rows == count, outcome.report()
        scored, scoring_s = 0, 0.0  # the scorer's time alone, not the outputs' making
        batches = pq.ParquetFile(validated).iter_batches(storage.batch_rows(), columns=["response"])
        for batch in batches:
            golds = batch.column("response").to_pylist()
            inputs = pa.record_batch(
                [pa.array(golds), pa.array(outputs(golds)), pa.array([True] * len(golds))],
                names=["gold", "prediction", "scored"],
            )
            started = time.perf_counter()
            metrics = builtin_metric_columns(for_task(inputs, "mmlu", TaskOptions()))
            scoring_s += time.perf_counter() - started
            scored += metrics.num_rows
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return {"rows": count, "prompts_rows_s": count / prompts_s,
            "scoring_rows_s": scored / scoring_s, "peak_rss_gib": peak}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[14_042, 140_420])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child's run
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one)))
        return 0
    print(f"{os.cpu_count()} cores; load average {os.getloadavg()}")
    print("| rows | prompts built (rows/s) | answers scored (rows/s) | peak RSS (GiB) |")
    print("|---:|---:|---:|---:|")
    for count in args.rows:
        runs = []
        for _ in range(args.repeats):
            done = subprocess.run(
                [sys.executable, __file__, "--one", str(count)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            runs.append(json.loads(done.stdout.splitlines()[-1]))
        prompts = statistics.median(r["prompts_rows_s"] for r in runs)
        scoring = statistics.median(r["scoring_rows_s"] for r in runs)
        peak = max(r["peak_rss_gib"] for r in runs)
        print(f"| {count:,} | {prompts:,.0f} | {scoring:,.0f} | {peak:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
