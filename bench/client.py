"""The openai engine against a plain aiohttp client, on the same instant server, in one run.

    python bench/client.py [--rows N] [--concurrency C] [--top-logprobs K] [--repeats R]

bench/instant_server.py runs in its own process on 127.0.0.1 and answers every chat
completion at once (a short JSON classification with per-token log probabilities, as vLLM
sends them), so what is measured is the client. Each repeat runs three paths on the same N
requests (the support tickets, repeated), in rotating order:

- stage: the inference stage (``stages.run_inference`` of a gen_qa recipe with ``engine:
  openai``): the engine, block checkpoints and the typed Parquet output;
- engine: ``OpenAIEngine.generate`` over the same rows in the stage's blocks, nothing written;
- plain: the client a user would write: one ``aiohttp.ClientSession`` with a pool of C
  connections, C coroutines each building a row's body (the engine's, field for field),
  posting it and decoding the answer with ``json.loads``; answers are not kept.

With ``--compare-httpx``, only the plain client runs, written once with aiohttp and once
with httpx (not a dependency: install it first), the measurement behind the engine's choice
of aiohttp (docs/engines.md).

Requests/s = N / wall seconds. The table gives each path's median and the median of the
per-repeat ratios stage / plain and engine / plain (goal: >= 0.9x), each path's CPU
seconds per request in this process (the server's are its own): on a shared machine the
wall time follows the others' load, the CPU time much less; and the most TCP connections
a path opened in one repeat (the server counts them). ``measure(...)`` returns the
figures as a dict.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from bench import workload  # noqa: E402
from bench.instant_server import start_server  # noqa: E402
from nova_eval_assets import stages, storage  # noqa: E402
from nova_eval_assets.engines.base import GenerationRequest, SamplingSettings  # noqa: E402
from nova_eval_assets.engines.openai import OpenAIEngine  # noqa: E402
from nova_eval_assets.layout import EvalLayout  # noqa: E402
from nova_eval_assets.recipe import load_recipe  # noqa: E402

MODEL = "instant"
PATHS = ("stage", "engine", "plain")


def stage_path(loaded: Any) -> float:
    """Seconds of the inference stage, output written."""
    started = time.perf_counter()
    summary = stages.run_inference(loaded, 0)
    seconds = time.perf_counter() - started
    if summary["errors"]:
        raise RuntimeError(f"{summary['errors']} rows failed; see {summary['path']}")
    return seconds


def engine_path(engine: OpenAIEngine, loaded: Any) -> float:
    """Seconds of ``generate`` over the stage's blocks (the prompts table's requests, as
    the stage builds them), nothing written."""
    prompts = stages.build_requests(storage.read_parquet(EvalLayout.for_recipe(loaded).prompts))
    settings = stages.sampling_settings(loaded)
    block = engine.block_size(engine.default_batch_size)
    started = time.perf_counter()
    errors = 0
    for offset in range(0, len(prompts), block):
        generations = engine.generate(prompts[offset : offset + block], settings)
        errors += sum(g.finish_reason == "error" for g in generations)
    seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{errors} rows failed")
    return seconds


def body_of(request: GenerationRequest, fields: dict[str, Any]) -> bytes:
    """The chat-completions body a user's client sends for one row: `fields` (model,
    sampling, log probabilities) and the row's messages."""
    messages = [{"role": "system", "content": request.system}] if request.system else []
    messages.append({"role": "user", "content": request.prompt})
    return json.dumps({**fields, "messages": messages}).encode()


async def _plain(
    url: str, requests: list[GenerationRequest], fields: dict, concurrency: int
) -> int:
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Content-Type": "application/json"}
    answered = 0
    async with aiohttp.ClientSession(connector=connector) as session:
        queue = iter(requests)

        async def worker() -> None:
            nonlocal answered
            for request in queue:
                body = body_of(request, fields)
                async with session.post(url, data=body, headers=headers) as response:
                    answer = json.loads(await response.read())
                    answered += bool(answer["choices"][0]["logprobs"]["content"])

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answered


def plain_path(
    url: str, requests: list[GenerationRequest], fields: dict, concurrency: int
) -> float:
    """Seconds of the plain aiohttp client over the same requests."""
    started = time.perf_counter()
    answered = asyncio.run(_plain(f"{url}/v1/chat/completions", requests, fields, concurrency))
    seconds = time.perf_counter() - started
    if answered != len(requests):
        raise RuntimeError(f"{len(requests) - answered} answers without log probabilities")
    return seconds


async def _plain_httpx(
    url: str, requests: list[GenerationRequest], fields: dict, concurrency: int
) -> int:
    import httpx  # not a dependency: only for --compare-httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Content-Type": "application/json"}
    answered = 0
    async with httpx.AsyncClient(limits=limits, timeout=None) as client:
        queue = iter(requests)

        async def worker() -> None:
            nonlocal answered
            for request in queue:
                body = body_of(request, fields)
                response = await client.post(url, content=body, headers=headers)
                answer = json.loads(response.content)
                answered += bool(answer["choices"][0]["logprobs"]["content"])

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answered


def request_fields(
    engine: OpenAIEngine, request: GenerationRequest, settings: SamplingSettings
) -> dict[str, Any]:
    """The body fields besides the messages, checked against the engine's whole body: the
    plain client sends what the engine sends."""
    body = engine.request_body(request, settings)
    fields = {key: value for key, value in body.items() if key != "messages"}
    if json.loads(body_of(request, fields)) != body:
        raise RuntimeError("the plain client's body differs from the engine's")
    return fields


def compare_libraries(
    rows: int = 20_000, concurrency: int = 64, top_logprobs: int = 5, repeats: int = 5
) -> dict[str, Any]:
    """The same plain client written with aiohttp and with httpx (the two async clients the
    engine could be built on), alternating, on one instant server: requests/s and CPU."""
    server = start_server(model=MODEL)
    try:
        engine = OpenAIEngine(MODEL, server.url, probe=False)
        settings = SamplingSettings(max_new_tokens=64, top_logprobs=top_logprobs)
        requests = [
            GenerationRequest(i, row["query"], row.get("system"))
            for i, row in enumerate(workload.ticket_rows(rows))
        ]
        fields = request_fields(engine, requests[0], settings)
        url = f"{server.url}/v1/chat/completions"
        clients = {"aiohttp": _plain, "httpx": _plain_httpx}
        for client in clients.values():  # warm up
            asyncio.run(client(url, requests[: concurrency * 4], fields, concurrency))
        rates: dict[str, list[float]] = {name: [] for name in clients}
        cpu: dict[str, list[float]] = {name: [] for name in clients}
        for repeat in range(repeats):
            for name in sorted(clients, reverse=repeat % 2 == 1):
                started, cpu_before = time.perf_counter(), time.process_time()
                if asyncio.run(clients[name](url, requests, fields, concurrency)) != rows:
                    raise RuntimeError(f"{name}: answers without log probabilities")
                rates[name].append(rows / (time.perf_counter() - started))
                cpu[name].append((time.process_time() - cpu_before) / rows * 1e6)
    finally:
        server.stop()
    return {
        "rows": rows,
        "concurrency": concurrency,
        "repeats": repeats,
        **{f"{n}_requests_per_s": round(statistics.median(rates[n]), 1) for n in rates},
        **{f"{n}_runs": [round(r, 1) for r in rates[n]] for n in rates},
        **{f"{n}_cpu_us_per_request": round(statistics.median(cpu[n])) for n in cpu},
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def measure(
    rows: int = 20_000,
    concurrency: int = 64,
    top_logprobs: int = 5,
    max_new_tokens: int = 64,
    repeats: int = 5,
) -> dict[str, Any]:
    """The three paths on one server; medians of `repeats` (module docstring)."""
    seconds: dict[str, list[float]] = {path: [] for path in PATHS}
    cpu: dict[str, list[float]] = {path: [] for path in PATHS}  # this process's CPU seconds
    opened: dict[str, list[int]] = {path: [] for path in PATHS}  # TCP connections
    server = start_server(model=MODEL)
    with tempfile.TemporaryDirectory(prefix="nova-eval-client-bench-") as tmp:
        folder = Path(tmp)
        previous_root = os.environ.get("NOVA_EVAL_OUTPUT_ROOT")
        os.environ["NOVA_EVAL_OUTPUT_ROOT"] = str(folder / "outputs")
        try:
            data = workload.write_jsonl(folder / "bench.jsonl", workload.ticket_rows(rows))
            recipe = workload.write_recipe(
                folder / "bench.yaml",
                name="client-bench",
                model=MODEL,
                url=server.url,
                data=data.name,
                temperature=0,
                concurrency=concurrency,
                top_logprobs=top_logprobs,
                max_new_tokens=max_new_tokens,
            )
            loaded = load_recipe(recipe)
            stages.validate_or_raise(loaded)
            stages.build_prompts(loaded)
            engine = OpenAIEngine(MODEL, server.url, concurrency=concurrency)
            settings = stages.sampling_settings(loaded)
            requests = stages.build_requests(
                storage.read_parquet(EvalLayout.for_recipe(loaded).prompts)
            )
            fields = request_fields(engine, requests[0], settings)
            plain_path(server.url, requests[: concurrency * 4], fields, concurrency)  # warm up
            engine.generate(requests[: concurrency * 4], settings)
            for repeat in range(repeats):
                order = PATHS[repeat % 3 :] + PATHS[: repeat % 3]
                for path in order:
                    opened_before = server_connections(server.url)
                    cpu_before = time.process_time()
                    if path == "stage":
                        seconds[path].append(stage_path(loaded))
                    elif path == "engine":
                        seconds[path].append(engine_path(engine, loaded))
                    else:
                        seconds[path].append(plain_path(server.url, requests, fields, concurrency))
                    cpu[path].append(time.process_time() - cpu_before)
                    # less the one that asked for the count before
                    opened[path].append(server_connections(server.url) - opened_before - 1)
            engine.close()
        finally:
            server.stop()
            if previous_root is None:
                os.environ.pop("NOVA_EVAL_OUTPUT_ROOT", None)
            else:
                os.environ["NOVA_EVAL_OUTPUT_ROOT"] = previous_root

    rates = {path: [rows / s for s in seconds[path]] for path in PATHS}
    # each repeat runs the paths back to back, so its ratio cancels the drift of a shared
    # machine's load between repeats; the median of those is the figure
    ratios = {
        path: [r / p for r, p in zip(rates[path], rates["plain"], strict=True)]
        for path in ("stage", "engine")
    }
    return {
        "rows": rows,
        "concurrency": concurrency,
        "top_logprobs": top_logprobs,
        "repeats": repeats,
        **{f"{path}_requests_per_s": round(statistics.median(rates[path]), 1) for path in PATHS},
        **{f"{path}_runs": [round(r, 1) for r in rates[path]] for path in PATHS},
        **{f"{path}_ratio": round(statistics.median(ratios[path]), 3) for path in ratios},
        **{f"{path}_ratios": [round(r, 3) for r in ratios[path]] for path in ratios},
        # the client's CPU per request: what a loaded machine's wall times hide
        **{
            f"{path}_cpu_us_per_request": round(statistics.median(cpu[path]) / rows * 1e6)
            for path in PATHS
        },
        **{f"{path}_connections": opened[path] for path in PATHS},
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def server_connections(url: str) -> int:
    """TCP connections the instant server has accepted so far (its ``GET /stats``)."""
    with urllib.request.urlopen(f"{url}/stats", timeout=30) as answer:
        return int(json.loads(answer.read())["connections"])


def markdown(result: dict[str, Any]) -> str:
    def runs(path: str) -> str:
        return ", ".join(f"{r:.0f}" for r in result[f"{path}_runs"])

    def ratios(path: str) -> str:
        return ", ".join(f"{r:.3f}" for r in result[f"{path}_ratios"])

    return "\n".join(
        [
            f"instant server on 127.0.0.1, {result['rows']} requests, top_logprobs "
            f"{result['top_logprobs']}, concurrency {result['concurrency']}, "
            f"{result['repeats']} repeats, medians",
            "",
            "| path | requests/s | runs | client CPU µs / request | connections |",
            "|---|---:|---|---:|---:|",
            f"| inference stage (openai engine, checkpoints, Parquet) | "
            f"{result['stage_requests_per_s']:.0f} | {runs('stage')} | "
            f"{result['stage_cpu_us_per_request']} | {max(result['stage_connections'])} |",
            f"| openai engine, generate() only | {result['engine_requests_per_s']:.0f} | "
            f"{runs('engine')} | {result['engine_cpu_us_per_request']} | "
            f"{max(result['engine_connections'])} |",
            f"| plain aiohttp client | {result['plain_requests_per_s']:.0f} | {runs('plain')} | "
            f"{result['plain_cpu_us_per_request']} | {max(result['plain_connections'])} |",
            f"| stage / plain (median of per-repeat ratios) | {result['stage_ratio']:.3f}x | "
            f"{ratios('stage')} (goal >= 0.9x) | | |",
            f"| engine / plain | {result['engine_ratio']:.3f}x | {ratios('engine')} | | |",
            "",
            f"load average after the run: {', '.join(map(str, result['load_average']))}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--top-logprobs", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the dict, not the table")
    parser.add_argument(
        "--compare-httpx",
        action="store_true",
        help="only the plain client, written with aiohttp and with httpx (needs httpx)",
    )
    args = parser.parse_args(argv)
    if args.compare_httpx:
        compared = compare_libraries(args.rows, args.concurrency, args.top_logprobs, args.repeats)
        print(json.dumps(compared, indent=2))
        return 0
    result = measure(
        rows=args.rows,
        concurrency=args.concurrency,
        top_logprobs=args.top_logprobs,
        max_new_tokens=args.max_new_tokens,
        repeats=args.repeats,
    )
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
