"""The openai engine against the same server driven directly, side by side in one run.

    python bench/openai_engine.py [--rows N] [--max-new-tokens M] [--top-logprobs K]
                                  [--concurrency C] [--repeats R] [--server llama|transformers]
                                  [--threads T]

A real OpenAI-compatible server is started on 127.0.0.1 (llama.cpp's, from
llama-cpp-python, over the bundled SmolLM2 GGUF; or ``transformers serve`` over the same
model, which returns no log probabilities, so --top-logprobs is 0 there). Each repeat then
runs, in alternating order, on the first N rows of recipes/data/support_tickets.jsonl:

- engine: the whole inference stage (``stages.run_inference``: the openai engine, block
  checkpoints, the typed Parquet output) of a gen_qa recipe with ``engine: openai``;
- plain: a thread pool of the same width posting the same request bodies with urllib and
  reading ``usage.completion_tokens``, the least a client can do.

Tokens/s = generated tokens / wall seconds; the table shows the medians and the median of
the per-repeat ratios engine / plain (goal: >= 0.95x). ``measure(...)`` returns the same
figures as a dict.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import workload  # noqa: E402
from nova_eval_assets import stages  # noqa: E402
from nova_eval_assets.engines.models import load_dir, resolve_model  # noqa: E402
from nova_eval_assets.engines.server import ManagedServer  # noqa: E402
from nova_eval_assets.recipe import load_recipe  # noqa: E402

BUNDLED = "smollm2-135m-instruct"
SEED = 1234


def server_command(server: str, threads: int) -> tuple[str, str]:
    """(inference.server.command, the served model name) for a bench server."""
    python = shlex.quote(sys.executable)
    if server == "llama":
        gguf = shlex.quote(str(resolve_model(BUNDLED).path))
        command = (
            f"{python} -m llama_cpp.server --model {gguf} --model_alias {{model}} "
            f"--host 127.0.0.1 --port {{port}} --n_threads {threads} --n_ctx 4096"
        )
        return command, BUNDLED
    if server == "transformers":
        cli = shlex.quote(str(Path(sys.executable).with_name("transformers")))
        command = f"{cli} serve {{model}} --host 127.0.0.1 --port {{port}} --device cpu"
        return command, str(load_dir(resolve_model(BUNDLED)))
    raise ValueError(f"unknown server {server!r}; use llama or transformers")


def body_of(row: dict[str, Any], model: str, max_new_tokens: int, top_logprobs: int) -> dict:
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    messages.append({"role": "user", "content": row["query"]})
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": max_new_tokens,
        "temperature": 0.0,
        "top_p": 1.0,
        "seed": SEED,
    }
    if top_logprobs:
        body.update(logprobs=True, top_logprobs=top_logprobs)
    return body


def plain_client(url: str, bodies: list[dict], concurrency: int) -> tuple[float, int]:
    """(seconds, generated tokens) of the bodies posted by a plain thread pool."""

    def post(body: dict) -> int:
        request = urllib.request.Request(
            f"{url}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=600) as response:
            return int(json.loads(response.read())["usage"]["completion_tokens"])

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        tokens = sum(pool.map(post, bodies))
    return time.perf_counter() - started, tokens


def engine_stage(loaded) -> tuple[float, int]:
    """(seconds, generated tokens) of the inference stage, output written."""
    started = time.perf_counter()
    summary = stages.run_inference(loaded, 0)
    seconds = time.perf_counter() - started
    if summary["errors"]:
        raise RuntimeError(f"{summary['errors']} rows failed; see {summary['path']}")
    return seconds, int(summary["generated_tokens"])


def measure(
    rows: int = 32,
    max_new_tokens: int = 32,
    top_logprobs: int = 5,
    concurrency: int = 4,
    repeats: int = 3,
    server: str = "llama",
    threads: int = 2,
) -> dict[str, Any]:
    """Both paths on one server; medians of `repeats` (see the module docstring)."""
    if server == "transformers":
        top_logprobs = 0  # it answers without them (the engine would refuse the run)
    command, model = server_command(server, threads)
    data = list(workload.ticket_rows(rows))
    bodies = [body_of(row, model, max_new_tokens, top_logprobs) for row in data]
    results: dict[str, list[tuple[float, int]]] = {"engine": [], "plain": []}
    with tempfile.TemporaryDirectory(prefix="nova-eval-openai-bench-") as tmp:
        folder = Path(tmp)
        previous_root = os.environ.get("NOVA_EVAL_OUTPUT_ROOT")
        os.environ["NOVA_EVAL_OUTPUT_ROOT"] = str(folder / "outputs")
        server_env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
        try:
            with ManagedServer(
                command, model, env=server_env, log_location=str(folder / "server.log")
            ) as managed:
                recipe = workload.write_recipe(
                    folder / "bench.yaml",
                    name="openai-bench",
                    model=model,
                    url=managed.url,
                    data=workload.write_jsonl(folder / "bench.jsonl", data).name,
                    temperature=0,
                    max_new_tokens=max_new_tokens,
                    top_logprobs=top_logprobs,
                    concurrency=concurrency,
                )
                loaded = load_recipe(recipe)
                stages.validate_or_raise(loaded)
                stages.build_prompts(loaded)
                plain_client(managed.url, bodies[:concurrency], concurrency)  # warm up
                for repeat in range(repeats):
                    order = ("engine", "plain") if repeat % 2 == 0 else ("plain", "engine")
                    for path in order:
                        if path == "engine":
                            results[path].append(engine_stage(loaded))
                        else:
                            results[path].append(plain_client(managed.url, bodies, concurrency))
        finally:
            if previous_root is None:
                os.environ.pop("NOVA_EVAL_OUTPUT_ROOT", None)
            else:
                os.environ["NOVA_EVAL_OUTPUT_ROOT"] = previous_root

    def rate(path: str) -> list[float]:
        return [tokens / seconds for seconds, tokens in results[path]]

    engine_tps, plain_tps = statistics.median(rate("engine")), statistics.median(rate("plain"))
    # each repeat runs both paths back to back, so its ratio cancels the drift of a shared
    # machine's load between repeats; the median of those is the figure
    paired = [e / p for e, p in zip(rate("engine"), rate("plain"), strict=True)]
    return {
        "server": server,
        "rows": rows,
        "max_new_tokens": max_new_tokens,
        "top_logprobs": top_logprobs,
        "concurrency": concurrency,
        "repeats": repeats,
        "threads": threads,
        "engine_tokens_per_s": round(engine_tps, 2),
        "plain_tokens_per_s": round(plain_tps, 2),
        "ratio": round(statistics.median(paired), 3),
        "ratio_of_medians": round(engine_tps / plain_tps, 3),
        "paired_ratios": [round(r, 3) for r in paired],
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "engine_runs": [round(r, 2) for r in rate("engine")],
        "plain_runs": [round(r, 2) for r in rate("plain")],
        "engine_tokens": [tokens for _, tokens in results["engine"]],
        "plain_tokens": [tokens for _, tokens in results["plain"]],
    }


def markdown(result: dict[str, Any]) -> str:
    runs = f"{result['repeats']} repeats, medians"
    return "\n".join(
        [
            f"openai engine vs plain client: {result['server']} server on 127.0.0.1, "
            f"{result['rows']} rows, {result['max_new_tokens']} new tokens, top_logprobs "
            f"{result['top_logprobs']}, concurrency {result['concurrency']}, {runs}",
            "",
            "| path | tokens/s | runs |",
            "|---|---:|---|",
            f"| openai engine (inference stage) | {result['engine_tokens_per_s']:.1f} | "
            f"{', '.join(f'{r:.1f}' for r in result['engine_runs'])} |",
            f"| plain client (urllib thread pool) | {result['plain_tokens_per_s']:.1f} | "
            f"{', '.join(f'{r:.1f}' for r in result['plain_runs'])} |",
            f"| ratio engine / plain (median of per-repeat ratios) | {result['ratio']:.3f}x | "
            f"{', '.join(f'{r:.3f}' for r in result['paired_ratios'])} (goal >= 0.95x) |",
            "",
            f"load average after the run: {', '.join(map(str, result['load_average']))}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--top-logprobs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--server", choices=("llama", "transformers"), default="llama")
    parser.add_argument("--threads", type=int, default=2, help="the server's CPU threads")
    parser.add_argument("--json", action="store_true", help="print the dict, not the table")
    args = parser.parse_args(argv)
    result = measure(
        rows=args.rows,
        max_new_tokens=args.max_new_tokens,
        top_logprobs=args.top_logprobs,
        concurrency=args.concurrency,
        repeats=args.repeats,
        server=args.server,
        threads=args.threads,
    )
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
