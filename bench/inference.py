"""Inference throughput: batched vs one example at a time, side by side in one run.

    python bench/inference.py [--rows N] [--max-new-tokens M] [--repeats R]
                              [--batch-size B] [--sweep 8,16,32] [--top-logprobs K]
                              [--threads T]

Prompts are the first N rows of recipes/data/support_tickets.jsonl (query + system)
when it exists, else a small built-in list of realistic prompts. Each repeat runs the
engine at its default batch size (or --batch-size) and at batch_size=1 on the same
prompts, greedy, and counts generated tokens per wall-clock second. Prints the median
over repeats for both and their ratio. --sweep also times each listed batch size
(used to pick the engine's default batch size).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nova_eval_assets.engines import (  # noqa: E402
    GenerationRequest,
    SamplingSettings,
    create_engine,
)
from nova_eval_assets.engines.cpu_threads import THREADS_ENV  # noqa: E402

DATA = ROOT / "recipes" / "data" / "support_tickets.jsonl"

BUILTIN_PROMPTS = [
    "My laptop battery drains from full to empty in about an hour. What should I check?",
    "Explain the difference between a process and a thread in two sentences.",
    "Write a short, polite reply to a customer whose order arrived damaged.",
    "Summarize the main causes of the French Revolution.",
    "What is the capital of Australia, and why was it chosen?",
    "Give three tips for writing a clear bug report.",
    "How do I reset my password if I no longer have access to my email?",
    "Translate 'Where is the train station?' into Spanish and French.",
    "What are the symptoms of dehydration?",
    "Suggest a name for a coffee shop that also sells books.",
    "Explain what a REST API is to a non-technical manager.",
    "The VPN disconnects every ten minutes when I work from home. Any ideas?",
    "Write a haiku about autumn rain.",
    "Why is the sky blue?",
    "List the steps to make a cup of green tea.",
    "What does HTTP status code 503 mean?",
]


def load_prompts(rows: int) -> tuple[list[GenerationRequest], str]:
    if DATA.is_file():
        requests = []
        with DATA.open() as handle:
            for line in handle:
                if len(requests) >= rows:
                    break
                if line.strip():
                    record = json.loads(line)
                    requests.append(
                        GenerationRequest(len(requests), record["query"], record.get("system"))
                    )
        source = str(DATA.relative_to(ROOT))
    else:
        requests = [
            GenerationRequest(i, BUILTIN_PROMPTS[i % len(BUILTIN_PROMPTS)]) for i in range(rows)
        ]
        source = "built-in prompts"
    return requests, source


def timed(engine, requests, settings, batch_size) -> tuple[float, int, float, float]:
    """tokens/s, generated tokens, wall seconds, CPU seconds of this process.

    Generated tokens count every decode step's token: the completion tokens plus the
    end-of-turn token of rows that stopped (it was computed, though not returned).
    """
    started, cpu = time.perf_counter(), time.process_time()
    outputs = engine.generate(requests, settings, batch_size=batch_size)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    tokens = sum(o.completion_tokens + (o.finish_reason == "stop") for o in outputs)
    return tokens / seconds, tokens, seconds, cpu


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="default: engine default")
    parser.add_argument("--top-logprobs", type=int, default=10)
    parser.add_argument("--sweep", default="", help="comma-separated batch sizes to time too")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--attn", default=None, help="attn_implementation (sdpa, eager)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: the engine's share of the cores, engines/cpu_threads.py)",
    )
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        os.environ[THREADS_ENV] = str(args.threads)  # the engine sets it

    options = {"attn_implementation": args.attn} if args.attn else {}
    started = time.perf_counter()
    engine = create_engine("hf", args.model, **options)
    load_s = time.perf_counter() - started
    batch_size = args.batch_size or engine.default_batch_size
    requests, source = load_prompts(args.rows)
    settings = SamplingSettings(max_new_tokens=args.max_new_tokens, top_logprobs=args.top_logprobs)
    prompt_lengths = [len(ids) for ids in engine.encode(requests)]

    print(
        f"model {args.model} ({engine.model_id[:19]}...), device {engine.device}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        f"attention {engine.model.config._attn_implementation}, load {load_s:.1f} s"
    )
    print(
        f"{len(requests)} prompts from {source} (prompt tokens {min(prompt_lengths)}.."
        f"{max(prompt_lengths)}), max_new_tokens {args.max_new_tokens}, "
        f"top_logprobs {args.top_logprobs}, repeats {args.repeats}; "
        f"load average {load_average()}"
    )
    engine.generate(requests[:2], SamplingSettings(max_new_tokens=4), batch_size=2)  # warm-up

    sizes = [batch_size, 1]
    for extra in (int(s) for s in args.sweep.split(",") if s.strip()):
        if extra not in sizes:
            sizes.append(extra)
    rates: dict[int, list[float]] = {size: [] for size in sizes}
    for repeat in range(args.repeats):
        for size in sizes:
            rate, tokens, seconds, cpu = timed(engine, requests, settings, size)
            rates[size].append(rate)
            print(
                f"  repeat {repeat + 1} batch_size={size:<3d} {tokens} tokens in "
                f"{seconds:6.1f} s = {rate:7.1f} tokens/s  (CPU {cpu:6.1f} s, "
                f"load average {load_average()})",
                flush=True,
            )

    medians = {size: statistics.median(values) for size, values in rates.items()}
    print()
    print(f"python {platform.python_version()}, torch {torch.__version__}")
    for size in sizes:
        label = "default" if size == batch_size else ("one at a time" if size == 1 else "sweep")
        print(f"median batch_size={size:<3d} ({label:13s}) {medians[size]:7.1f} tokens/s")
    print(f"ratio batched / one at a time: {medians[batch_size] / medians[1]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
