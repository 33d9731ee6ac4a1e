"""The whole analysis (confidence, calibration, strata, failures, HTML report) and the
comparison of two evaluations, on synthetic examples tables of N rows.

    python bench/analysis.py [--rows 1000000] [--tokens 20] [--top 10] [--repeats 1]
                             [--data-dir /tmp/nova-eval-bench-analysis] [--keep]

A child process first writes two examples.parquet files in the pipeline's typed schema
(A: every row with --tokens generated tokens and --top top log probabilities each, in
row groups of 65,536 rows; B: the same dataset with other outcomes and no token lists,
since the comparison reads no token column). They are classification outputs
``{"class": ..., "thought": "... #<row>", ...}`` over 8 labels (some split over two or
three tokens), unique per row; metadata has 4 fields, one of them a per-row id (not
stratified: too many values); 8 metrics per row plus BLEU statistics.

Then, in this process, each repeat times ``analyze`` + ``write_analysis`` on A and
``compare_evaluations`` + ``write_comparison`` on A and B. Peak memory is this
process's maximum resident set size (``resource.getrusage``), which covers Arrow's
buffers; the data generation ran in the child and is not counted. Prints the median
over repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

LABELS = [
    ("hardware",),
    ("hard", "ware", "_urgent"),
    ("software",),
    ("soft", "ware", "_urgent"),
    ("network",),
    ("network", "_urgent"),
    ("access",),
    ("access", "_urgent"),
]
METRICS = ["em", "qem", "f1", "f1_score_quasi", "rouge1", "rouge2", "rougeL", "class_match"]
GROUP_ROWS = 65_536


def examples_schema() -> pa.Schema:
    from nova_eval_assets.stages import INFERENCE_SCHEMA

    return pa.schema(
        [
            *INFERENCE_SCHEMA,
            pa.field("scored", pa.bool_()),
            pa.field("metrics", pa.map_(pa.string(), pa.float64())),
            pa.field("bleu_stats", pa.list_(pa.float64())),
        ]
    )


def templates(tokens: int) -> tuple[list[list[str]], list[int]]:
    """Per label: its ``tokens`` token texts, with a placeholder for the row number, and
    the index of that placeholder."""
    out, slots = [], []
    for pieces in LABELS:
        head = ["{", '"', "class", '":', ' "', *pieces, '",', ' "', "thought", '":', ' "']
        tail = [" #", "<row>", '"}']
        filler = [" the", " user", " reports", " an", " issue", " with", " it"]
        middle = (filler * 4)[: tokens - len(head) - len(tail)]
        row = [*head, *middle, *tail]
        if len(row) != tokens:
            raise SystemExit(f"--tokens must be at least {len(head) + len(tail) + 1}")
        out.append(row)
        slots.append(row.index("<row>"))
    return out, slots


def label_text(i: int) -> str:
    return "".join(LABELS[i])


def batch(start: int, n: int, args: argparse.Namespace, outcome_seed: int, tokens_on: bool):
    rng = np.random.default_rng([args.seed, start])  # the dataset
    out_rng = np.random.default_rng([args.seed, outcome_seed, start])  # the outcomes
    k, top = args.tokens, args.top
    rows = np.arange(start, start + n)
    gold = rng.integers(len(LABELS), size=n)
    difficulty = rng.integers(3, size=n)
    confidence = np.clip(out_rng.beta(5, 2, size=n) - 0.1 * difficulty, 0.02, 0.999)
    right = out_rng.random(n) < confidence
    predicted = np.where(right, gold, (gold + 1 + out_rng.integers(7, size=n)) % len(LABELS))
    numbers = pc.cast(pa.array(rows), pa.string())
    texts, slots = templates(k)
    gold_text = pa.array([label_text(i) for i in range(len(LABELS))]).take(pa.array(gold))
    golds = pc.binary_join_element_wise(
        '{"class": "', gold_text, '", "thought": "the user reports an issue #', numbers, '"}', ""
    )
    pred_text = pa.array(["".join(t[: slots[0]]) for t in texts])
    prediction = pc.binary_join_element_wise(pred_text.take(pa.array(predicted)), numbers, '"}', "")
    finish = np.where(out_rng.random(n) < 0.01, "length", "stop")
    levels = np.array(["easy", "medium", "hard"])
    metadata = pc.binary_join_element_wise(
        '{"difficulty": "',
        pa.array(levels[difficulty]),
        '", "priority": "',
        pa.array(np.array(["low", "medium", "high", "critical"])[rng.integers(4, size=n)]),
        '", "domain": "',
        pa.array(
            np.array(["hr", "finance", "sales", "it", "legal", "ops"])[rng.integers(6, size=n)]
        ),
        '", "ticket": "T-',
        numbers,
        '"}',
        "",
    )
    offsets8 = pa.array(np.arange(0, 8 * n + 1, 8, dtype=np.int32))
    metric_values = out_rng.random((n, 8))
    metric_values[:, 0] = metric_values[:, 1] = metric_values[:, 7] = right
    metrics = pa.MapArray.from_arrays(
        offsets8,
        pa.array(METRICS * n),
        pa.array(metric_values.ravel()),
    )
    stats = np.column_stack(
        [np.full((n, 2), 20.0), out_rng.integers(5, 15, size=(n, 4)), np.full((n, 4), 20.0)]
    ).astype(float)
    bleu_stats = pa.ListArray.from_arrays(
        pa.array(np.arange(0, 10 * n + 1, 10, dtype=np.int32)), pa.array(stats.ravel())
    )
    if tokens_on:
        vocab = pa.array([t for row in texts for t in row])
        idx = (predicted[:, None] * k + np.arange(k)[None, :]).ravel()
        slot = (np.arange(n) * k + slots[0]).astype(np.int64)
        idx[slot] = len(vocab) + np.arange(n)
        token_text = pa.concat_arrays([vocab, pc.binary_join_element_wise(" ", numbers, "")])
        token_text = token_text.take(pa.array(idx))
        lp = np.log(out_rng.uniform(0.8, 1.0, size=(n, k)))
        lp[:, 5] = np.log(confidence)  # the first label token
        lp = lp.ravel()
        gaps = out_rng.exponential(1.0, size=(n * k, top))
        gaps[:, 0] = 0.0
        top_lp = (lp[:, None] - np.cumsum(gaps, axis=1)).ravel()
        alternatives = pa.array([f" alt{j}" for j in range(200)])
        top_tokens = alternatives.take(pa.array(out_rng.integers(200, size=n * k * top)))
        top_struct = pa.StructArray.from_arrays(
            [top_tokens, pa.array(top_lp)], ["token", "logprob"]
        )
        tops = pa.ListArray.from_arrays(
            pa.array(np.arange(0, n * k * top + 1, top, dtype=np.int32)), top_struct
        )
        entries = pa.StructArray.from_arrays(
            [token_text, pa.array(lp), tops], ["token", "logprob", "top"]
        )
        token_logprobs = pa.ListArray.from_arrays(
            pa.array(np.arange(0, n * k + 1, k, dtype=np.int32)), entries
        )
    else:
        token_logprobs = pa.ListArray.from_arrays(
            pa.array(np.zeros(n + 1, dtype=np.int32)),
            pa.array([], type=examples_schema().field("token_logprobs").type.value_type),
        )
    columns = {
        "row_index": pa.array(rows),
        "line": pa.array(rows + 1),
        "system": pa.nulls(n, pa.string()),
        "prompt": pc.binary_join_element_wise("Ticket ", numbers, ": my laptop will not boot", ""),
        "gold": golds,
        "metadata": metadata,
        "replica": pa.array(np.zeros(n, dtype=np.int32)),
        "prediction": prediction,
        "finish_reason": pa.array(finish),
        "error": pa.nulls(n, pa.string()),
        "prompt_tokens": pa.array(np.full(n, 120, dtype=np.int32)),
        "completion_tokens": pa.array(np.full(n, k if tokens_on else 0, dtype=np.int32)),
        "latency_s": pa.array(np.full(n, 0.05)),
        "token_logprobs": token_logprobs,
        "scored": pa.array(np.ones(n, dtype=bool)),
        "metrics": metrics,
        "bleu_stats": bleu_stats,
    }
    schema = examples_schema()
    return pa.table(
        [
            columns[f.name].cast(f.type) if f.name in columns else pa.nulls(n, f.type)
            for f in schema
        ],
        schema=schema,
    )


def generate(path: Path, args: argparse.Namespace, outcome_seed: int, tokens_on: bool) -> None:
    schema = examples_schema()
    temp = path.with_suffix(".tmp")
    with pq.ParquetWriter(temp, schema, compression="zstd") as writer:
        for start in range(0, args.rows, GROUP_ROWS):
            n = min(GROUP_ROWS, args.rows - start)
            writer.write_table(batch(start, n, args, outcome_seed, tokens_on), GROUP_ROWS)
    os.replace(temp, path)


def data_paths(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    folder = Path(args.data_dir) / f"rows{args.rows}_t{args.tokens}_k{args.top}_s{args.seed}"
    return folder, folder / "a" / "examples.parquet", folder / "b" / "examples.parquet"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--data-dir", default="/tmp/nova-eval-bench-analysis")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    parser.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    folder, path_a, path_b = data_paths(args)

    if args.generate_only:
        for path, seed, tokens_on in ((path_a, 1, True), (path_b, 2, False)):
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                generate(path, args, seed, tokens_on)
        return 0

    started = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--generate-only", *(argv or sys.argv[1:])], check=True
    )
    generated_s = time.perf_counter() - started
    size_mb = path_a.stat().st_size / 2**20

    from nova_eval_assets.analysis.pipeline import (
        analyze,
        compare_evaluations,
        write_analysis,
        write_comparison,
    )
    from nova_eval_assets.recipe import AnalysisConfig

    config = AnalysisConfig(label_field="class")
    print(
        f"{args.rows:,} rows x {args.tokens} tokens x {args.top} top log probabilities; "
        f"A: {size_mb:,.0f} MiB Parquet (data ready in {generated_s:.1f} s); "
        f"{os.cpu_count()} CPUs, python {platform.python_version()}, pyarrow {pa.__version__}",
        flush=True,
    )
    analysis_s, comparison_s = [], []
    for repeat in range(args.repeats):
        out = folder / f"out{repeat}"
        t0 = time.perf_counter()
        result = analyze(str(path_a), config, name="bench", model="synthetic")
        write_analysis(result, str(out / "analysis"))
        t1 = time.perf_counter()
        comparison = compare_evaluations(
            str(path_a), str(path_b), config, baseline_name="a", candidate_name="b"
        )
        write_comparison(comparison, str(out / "comparison"))
        t2 = time.perf_counter()
        analysis_s.append(t1 - t0)
        comparison_s.append(t2 - t1)
        calib = result.summary["calibration"]
        accuracy = comparison.summary["overall"][0]
        print(
            f"  repeat {repeat + 1}: analysis {t1 - t0:6.1f} s "
            f"(ECE {calib['ece_equal_width']:.4f}, "
            f"{len(result.strata)} strata rows), comparison {t2 - t1:6.1f} s "
            f"({accuracy['metric']} diff {accuracy['diff']:+.4f}, p {accuracy['p_value']:.3g}), "
            f"peak RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB",
            flush=True,
        )
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    a_med, c_med = statistics.median(analysis_s), statistics.median(comparison_s)
    print()
    print(
        json.dumps(
            {
                "rows": args.rows,
                "analysis_s": round(a_med, 1),
                "comparison_s": round(c_med, 1),
                "total_s": round(a_med + c_med, 1),
                "peak_rss_gib": round(peak_gib, 2),
                "repeats": args.repeats,
            }
        )
    )
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
