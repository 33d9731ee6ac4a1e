"""Tables benchmark: write and read back N synthetic example rows (default 1,000,000).

    python bench/tables.py [--rows N] [--tokens T] [--top K] [--batch-rows B] [--root DIR]

Rows look like a real evaluation's ``examples.parquet`` (prompt, gold, prediction, JSON
metadata, eight per-example metrics, ``T`` generated tokens each with its ``K`` top
alternatives) and go through the same path as an evaluation's rows: the ``eval_examples``
transform (example ids, parsed metadata, mean log probability) and the partition writer,
in record batches of ``B`` rows. Then every column of every row is read back with pyarrow,
and a DuckDB query (metrics by metadata stratum, over the Athena-named view) runs on
them. Prints the time of each phase and the peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nova_eval_assets import storage  # noqa: E402
from nova_eval_assets.tables import build, duck, writer  # noqa: E402
from nova_eval_assets.tables.schemas import TOKEN_LOGPROB, TOP_TOKEN  # noqa: E402

METRICS = ("em", "qem", "f1", "f1_score_quasi", "rouge1", "rouge2", "rougeL", "class_correct")
DIFFICULTY = ("easy", "medium", "hard")
PRIORITY = ("low", "medium", "high", "critical")
DOMAIN = ("finance", "sales", "engineering", "hr", "legal", "support")
CLASSES = ("hardware", "software", "network", "access")


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024)


def synthetic_batch(start: int, rows: int, tokens: int, top: int, seed: int) -> pa.Table:
    """``rows`` rows shaped like examples.parquet, built with numpy (no per-token Python)."""
    rng = np.random.default_rng(seed)
    vocab = pa.array([f"tok{i}" for i in range(2000)])
    index = np.arange(start, start + rows)
    classes = rng.integers(0, len(CLASSES), rows)
    guessed = np.where(rng.random(rows) < 0.7, classes, rng.integers(0, len(CLASSES), rows))
    metadata = [
        json.dumps(
            {
                "difficulty": DIFFICULTY[a],
                "priority": PRIORITY[b],
                "domain": DOMAIN[c],
            }
        )
        for a, b, c in zip(
            rng.integers(0, 3, rows),
            rng.integers(0, 4, rows),
            rng.integers(0, 6, rows),
            strict=True,
        )
    ]
    gold = [
        f'{{"class": "{CLASSES[c]}", "thought": "ticket {i}"}}'
        for i, c in zip(index, classes, strict=True)
    ]
    prediction = [f'{{"class": "{CLASSES[c]}", "thought": "..."}}' for c in guessed]
    n_tok = rows * tokens
    top_logprobs = np.sort(-rng.exponential(2.0, (n_tok, top)), axis=1)[:, ::-1].ravel()
    top_structs = pa.StructArray.from_arrays(
        [vocab.take(rng.integers(0, len(vocab), n_tok * top)), pa.array(top_logprobs)],
        fields=list(TOP_TOKEN),
    )
    top_lists = pa.ListArray.from_arrays(
        pa.array(np.arange(n_tok + 1) * top, pa.int32()), top_structs
    )
    token_structs = pa.StructArray.from_arrays(
        [vocab.take(rng.integers(0, len(vocab), n_tok)), pa.array(top_logprobs[::top]), top_lists],
        fields=list(TOKEN_LOGPROB),
    )
    token_lists = pa.ListArray.from_arrays(
        pa.array(np.arange(rows + 1) * tokens, pa.int32()), token_structs
    )
    values = rng.random((rows, len(METRICS)))
    values[:, 0] = (classes == guessed).astype(float) * (rng.random(rows) < 0.2)
    values[:, -1] = (classes == guessed).astype(float)
    metric_keys = pa.array(np.tile(np.array(METRICS, dtype=object), rows), pa.string())
    metrics = pa.MapArray.from_arrays(
        pa.array(np.arange(rows + 1) * len(METRICS), pa.int32()),
        metric_keys,
        pa.array(values.ravel()),
    )
    return pa.table(
        {
            "row_index": pa.array(index, pa.int64()),
            "line": pa.array(index + 1, pa.int64()),
            "system": pa.repeat(pa.scalar("You triage IT support tickets."), rows),
            "prompt": [
                f"Ticket {i}: my laptop will not connect to the VPN since this morning."
                for i in index
            ],
            "gold": gold,
            "metadata": metadata,
            "replica": pa.array(index % 4, pa.int32()),
            "prediction": prediction,
            "finish_reason": pa.repeat(pa.scalar("stop"), rows),
            "error": pa.nulls(rows, pa.string()),
            "prompt_tokens": pa.array(rng.integers(40, 200, rows), pa.int32()),
            "completion_tokens": pa.repeat(pa.scalar(tokens, pa.int32()), rows),
            "latency_s": pa.array(rng.random(rows) * 0.5),
            "token_logprobs": token_lists,
            "scored": pa.repeat(pa.scalar(True), rows),
            "metrics": metrics,
            "gold_label": pa.array(np.array(CLASSES, dtype=object)[classes], pa.string()),
            "predicted_label": pa.array(np.array(CLASSES, dtype=object)[guessed], pa.string()),
        }
    )


QUERY = """
SELECT metadata_map['difficulty'] AS difficulty,
       count(*) AS n,
       avg(metrics['class_correct']) AS accuracy,
       avg(mean_logprob) AS mean_logprob
FROM eval_examples
WHERE eval_name = 'bench'
GROUP BY ALL
ORDER BY difficulty
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tokens", type=int, default=16, help="generated tokens per row")
    parser.add_argument("--top", type=int, default=5, help="top log probabilities per token")
    parser.add_argument("--batch-rows", type=int, default=storage.batch_rows())
    parser.add_argument("--root", help="tables root (default: a temporary folder, removed)")
    args = parser.parse_args()

    root = args.root or tempfile.mkdtemp(prefix="nova-eval-tables-bench-")
    run = build.RunInfo("bench", "bench-run", datetime.now(UTC), "synthetic", "gen_qa", "0" * 64)
    print(
        f"{args.rows:,} rows, {args.tokens} tokens x top {args.top}, batches of {args.batch_rows:,}"
    )
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, root {root}")
    try:
        generate = transform = 0.0

        def batches():
            nonlocal generate, transform
            for start in range(0, args.rows, args.batch_rows):
                t0 = time.perf_counter()
                rows = min(args.batch_rows, args.rows - start)
                raw = synthetic_batch(start, rows, args.tokens, args.top, seed=start)
                t1 = time.perf_counter()
                out = build.to_eval_examples(raw, run)
                generate += t1 - t0
                transform += time.perf_counter() - t1
                yield out

        started = time.perf_counter()
        writer.ensure_tables(root)
        summary = writer.write_run(root, "eval_examples", run.partition, batches())
        written = time.perf_counter() - started
        size = sum(os.path.getsize(f) for f in summary.files)
        print(
            f"write: {written:.1f} s for {summary.rows:,} rows in {len(summary.files)} file(s), "
            f"{size / 2**20:.0f} MiB (of which generating synthetic rows {generate:.1f} s, "
            f"eval_examples transform {transform:.1f} s, Parquet writing "
            f"{written - generate - transform:.1f} s); peak RSS so far {peak_rss_gib():.2f} GiB"
        )

        started = time.perf_counter()
        dataset = duck.arrow_dataset(root, "eval_examples")
        assert dataset is not None
        count = tokens = 0
        # one row group in flight at a time: memory stays flat however many rows there are
        scan = dataset.to_batches(
            batch_size=args.batch_rows, batch_readahead=1, fragment_readahead=1
        )
        for batch in scan:
            count += batch.num_rows
            tokens += len(batch.column("token_logprobs").flatten())
        read = time.perf_counter() - started
        assert count == args.rows, (count, args.rows)
        assert tokens == args.rows * args.tokens, tokens
        print(
            f"read back (every column): {read:.1f} s, {count:,} rows, {tokens:,} tokens; "
            f"peak RSS so far {peak_rss_gib():.2f} GiB"
        )

        started = time.perf_counter()
        with duck.connection(root) as con:
            result = con.sql(QUERY).fetchall()
        queried = time.perf_counter() - started
        print(f"DuckDB query (metrics by metadata stratum): {queried:.2f} s")
        for row in result:
            print(f"  {row}")
        total = written + read + queried
        print(f"total {total:.1f} s; peak RSS {peak_rss_gib():.2f} GiB")
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
