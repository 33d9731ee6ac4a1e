"""Local inference throughput: the hf engine against plain batched `model.generate()`,
side by side in one run, in float32 and bfloat16.

    python bench/inference.py [--rows N] [--max-new-tokens M] [--top-logprobs K]
                              [--batch-size B] [--repeats R] [--dtypes float32,bfloat16]
                              [--threads T] [--one-at-a-time] [--sweep 8,16]
                              [--openai] [--json PATH]

Prompts are the first N rows of recipes/data/support_tickets.jsonl (system + query) when
it exists, else a small built-in list, chat-templated by the engine. For each dtype the
run loads the bundled SmolLM2-135M-Instruct twice: once as the hf engine
(``create_engine("hf", model, dtype=...)``), once as a plain transformers model (the
peer). Every repeat then times, interleaved (engine, peer, engine, peer ... per dtype),
on the same prompts, greedy, with the same torch threads:

- engine: ``engine.generate(requests, settings, batch_size=B)`` with ``top_logprobs=K``,
  outputs built (texts, token lists, top lists);
- peer: what lm-eval and lighteval do with a Hugging Face model: the same prompt ids,
  sorted by length and cut into the same batches of B, left-padded, then
  ``model.generate(..., do_sample=False, output_logits=True,
  return_dict_in_generate=True)`` with sdpa attention and the KV cache, the top K log
  probabilities taken from the raw logits of every step (``log_softmax`` + ``topk``),
  texts decoded.

Tokens/s counts every generated token up to and including a row's end token (the
engine's ``completion_tokens`` plus the stop token; the peer's sequence up to its first
end token), over wall-clock seconds. The table shows the medians over repeats and two
ratios: of the medians, and the median of the per-repeat ratios (each repeat runs both
back to back, so its ratio cancels a shared machine's drift). It also counts how many
rows got the same text from both, a check that the peer computes the same thing.

--one-at-a-time also times the engine at batch_size=1 (the batched vs one-at-a-time
measurement), --sweep more batch sizes, --openai the openai engine against a local
server (bench/openai_engine.py's ``measure``), --constrained the engine with
``inference.response_format`` (the classification shorthand over the tickets' eight
labels, engines/constraints.py) against the same engine unconstrained, interleaved, same
prompts and settings: tokens/s of each, their ratio, and how many outputs are valid JSON
with a label; then free text forced to the constrained run's lengths, row by row, which
isolates the constraint's own cost (see ``constrained_overhead``).
--no-peer leaves the engine vs plain generate() comparison out.
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
from typing import Any

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


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        return []


class Peer:
    """Plain batched `model.generate()` over the engine's prompts, as lm-eval / lighteval
    run a Hugging Face model: a fair, competent use of it (same dtype and threads, sdpa,
    the KV cache, the same length-sorted batches), nothing of the engine's own."""

    def __init__(self, engine: Any, dtype: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from nova_eval_assets.engines.models import load_dir

        folder = load_dir(engine.resolved)
        self.tokenizer = engine.tokenizer  # left padding, the same vocabulary
        self.model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=getattr(torch, dtype), attn_implementation="sdpa"
        ).eval()
        self.stop_ids = sorted(engine.stop_ids)
        self.pad_id = engine.pad_id

    def generate(
        self, prompt_ids: list[list[int]], batch_size: int, max_new_tokens: int, top: int
    ) -> tuple[int, list[str]]:
        """(generated tokens, texts in request order)."""
        import torch

        order = sorted(range(len(prompt_ids)), key=lambda i: (len(prompt_ids[i]), i))
        texts: list[str] = [""] * len(prompt_ids)
        tokens = 0
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(prompt_ids[i]) for i in rows)
            ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                ids[r, width - len(prompt_ids[i]) :] = torch.tensor(prompt_ids[i])
                mask[r, width - len(prompt_ids[i]) :] = 1
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    output_logits=True,
                    return_dict_in_generate=True,
                    eos_token_id=self.stop_ids,
                    pad_token_id=self.pad_id,
                )
                # the top-k of every step from the raw logits, as lm-eval/lighteval read them
                for logits in out.logits:
                    values, indices = torch.log_softmax(logits.float(), dim=-1).topk(top, dim=-1)
                    values.tolist(), indices.tolist()
            generated = out.sequences[:, width:].tolist()
            for r, i in enumerate(rows):
                row = generated[r]
                end = next((j for j, t in enumerate(row) if t in self.stop_ids), None)
                kept = row if end is None else row[:end]
                tokens += len(row) if end is None else end + 1
                texts[i] = self.tokenizer.decode(kept, skip_special_tokens=False)
        return tokens, texts


def engine_tokens(outputs: list[Any]) -> int:
    """Every decode step's token: the completion tokens plus the end token of rows that
    stopped (it was computed, though not returned)."""
    return sum(o.completion_tokens + (o.finish_reason == "stop") for o in outputs)


def timed(call) -> tuple[Any, float, float]:
    started, cpu = time.perf_counter(), time.process_time()
    result = call()
    return result, time.perf_counter() - started, time.process_time() - cpu


def compare(args: argparse.Namespace, requests: list[GenerationRequest]) -> dict[str, Any]:
    """The engine and the peer per dtype, interleaved over repeats."""
    settings = SamplingSettings(max_new_tokens=args.max_new_tokens, top_logprobs=args.top_logprobs)
    setups = {}
    for dtype in args.dtypes:
        started = time.perf_counter()
        engine = create_engine("hf", args.model, dtype=dtype)
        peer = Peer(engine, dtype)
        prompt_ids = engine.encode(requests)
        # warm-up: first calls allocate and pick kernels
        engine.generate(requests[:2], SamplingSettings(max_new_tokens=4), batch_size=2)
        peer.generate(prompt_ids[:2], 2, 4, max(1, args.top_logprobs))
        setups[dtype] = (engine, peer, prompt_ids, time.perf_counter() - started)
        print(f"{dtype}: engine {engine.runtime()}, loaded in {setups[dtype][3]:.1f} s")
    batch = args.batch_size or setups[args.dtypes[0]][0].default_batch_size
    runs: dict[str, dict[str, list[float]]] = {
        d: {"engine": [], "peer": [], "ratio": []} for d in args.dtypes
    }
    texts: dict[str, dict[str, list[str]]] = {d: {} for d in args.dtypes}
    before = load_average()
    for repeat in range(args.repeats):
        for dtype in args.dtypes:
            engine, peer, prompt_ids, _ = setups[dtype]
            # alternate which goes first, so neither always runs on a warmer machine
            order = ("engine", "peer") if repeat % 2 == 0 else ("peer", "engine")
            rates = {}
            for path in order:
                if path == "engine":
                    outputs, seconds, cpu = timed(
                        lambda e=engine: e.generate(requests, settings, batch_size=batch)
                    )
                    tokens = engine_tokens(outputs)
                    texts[dtype]["engine"] = [o.text for o in outputs]
                else:
                    (tokens, peer_texts), seconds, cpu = timed(
                        lambda p=peer, ids=prompt_ids: p.generate(
                            ids, batch, args.max_new_tokens, max(1, args.top_logprobs)
                        )
                    )
                    texts[dtype]["peer"] = peer_texts
                rates[path] = tokens / seconds
                runs[dtype][path].append(rates[path])
                print(
                    f"  repeat {repeat + 1} {dtype:8s} {path:6s} {tokens} tokens in "
                    f"{seconds:6.1f} s = {rates[path]:7.1f} tokens/s (CPU {cpu:6.1f} s, "
                    f"load average {' '.join(map(str, load_average()))})",
                    flush=True,
                )
            runs[dtype]["ratio"].append(rates["engine"] / rates["peer"])
    after = load_average()
    summary: dict[str, Any] = {
        "batch_size": batch,
        "load_average_before": before,
        "load_average_after": after,
        "dtypes": {},
    }
    for dtype in args.dtypes:
        engine_m = statistics.median(runs[dtype]["engine"])
        peer_m = statistics.median(runs[dtype]["peer"])
        same = sum(
            a == b for a, b in zip(texts[dtype]["engine"], texts[dtype]["peer"], strict=True)
        )
        summary["dtypes"][dtype] = {
            "engine_tokens_per_s": round(engine_m, 1),
            "peer_tokens_per_s": round(peer_m, 1),
            "ratio_of_medians": round(engine_m / peer_m, 2),
            "median_paired_ratio": round(statistics.median(runs[dtype]["ratio"]), 2),
            "engine_runs": [round(r, 1) for r in runs[dtype]["engine"]],
            "peer_runs": [round(r, 1) for r in runs[dtype]["peer"]],
            "same_texts": f"{same}/{len(requests)}",
            "decoder": setups[dtype][0].runtime()["decoder"],
        }
    if len(args.dtypes) > 1 and "float32" in args.dtypes:
        reference = texts["float32"]["engine"]
        for dtype in args.dtypes:
            if dtype != "float32":
                for path in ("engine", "peer"):
                    same = sum(a == b for a, b in zip(texts[dtype][path], reference, strict=True))
                    summary["dtypes"][dtype][f"{path}_same_as_float32"] = f"{same}/{len(requests)}"
    return summary


def one_at_a_time(args: argparse.Namespace, requests: list[GenerationRequest]) -> dict[str, Any]:
    """The engine batched vs batch_size=1 (and --sweep's sizes) in the first dtype."""
    engine = create_engine("hf", args.model, dtype=args.dtypes[0])
    settings = SamplingSettings(max_new_tokens=args.max_new_tokens, top_logprobs=args.top_logprobs)
    engine.generate(requests[:2], SamplingSettings(max_new_tokens=4), batch_size=2)
    batch = args.batch_size or engine.default_batch_size
    sizes = [batch, 1]
    for extra in (int(s) for s in args.sweep.split(",") if s.strip()):
        if extra not in sizes:
            sizes.append(extra)
    rates: dict[int, list[float]] = {size: [] for size in sizes}
    for repeat in range(args.repeats):
        for size in sizes:
            outputs, seconds, cpu = timed(
                lambda s=size: engine.generate(requests, settings, batch_size=s)
            )
            tokens = engine_tokens(outputs)
            rates[size].append(tokens / seconds)
            print(
                f"  repeat {repeat + 1} {args.dtypes[0]} batch_size={size:<3d} {tokens} tokens "
                f"in {seconds:6.1f} s = {tokens / seconds:7.1f} tokens/s (CPU {cpu:6.1f} s, "
                f"load average {' '.join(map(str, load_average()))})",
                flush=True,
            )
    medians = {size: statistics.median(values) for size, values in rates.items()}
    return {
        "dtype": args.dtypes[0],
        "medians": {str(size): round(value, 1) for size, value in medians.items()},
        "batched_over_one_at_a_time": round(medians[batch] / medians[1], 2),
    }


TICKET_LABELS = [
    "hardware",
    "hardware_urgent",
    "software",
    "software_urgent",
    "network",
    "network_urgent",
    "access",
    "access_urgent",
]


def constrained_overhead(args: argparse.Namespace, requests: list[GenerationRequest]):
    """The engine with and without the classification constraint, interleaved, twice over:

    - natural: free text against constrained output, each row stopping where it stops (the
      constraint changes what and how much the model writes, so the batches shrink
      differently: tokens/s then also measures the outputs' length distribution);
    - same steps: free text again, but every row made to generate exactly as many tokens
      as its constrained run did (its budget set to that, end tokens ignored), so both
      runs decode the same batches for the same number of steps: the difference is the
      constraint's own cost (the grammar masks, the masked choice, the host round trip).
    """
    from nova_eval_assets.engines.constraints import ResponseFormat, classification_schema

    engine = create_engine("hf", args.model, dtype=args.dtypes[0])
    fmt = ResponseFormat.json_schema(classification_schema("class", TICKET_LABELS))
    free = SamplingSettings(max_new_tokens=args.max_new_tokens, top_logprobs=args.top_logprobs)
    constrained = SamplingSettings(
        max_new_tokens=args.max_new_tokens, top_logprobs=args.top_logprobs, response_format=fmt
    )
    engine.generate(requests[:2], constrained, batch_size=2)  # warm up
    batch = args.batch_size or engine.default_batch_size
    names = ("free", "constrained", "free_same_steps")
    rates: dict[str, list[float]] = {name: [] for name in names}
    valid: dict[str, int] = {}
    lengths: list[int] = []

    def same_steps_run():
        # every row's budget = its constrained length (generate asks in request order)
        budgets = iter(lengths)
        stop_ids = engine.stop_ids
        engine.row_budget = lambda prompt_tokens, max_new_tokens: next(budgets)
        engine.stop_ids = {-1}
        try:
            return engine.generate(requests, free, batch_size=batch)
        finally:
            del engine.row_budget
            engine.stop_ids = stop_ids

    for repeat in range(args.repeats):
        order = list(names[:2]) if repeat % 2 == 0 else list(names[:2])[::-1]
        for name in [*order, "free_same_steps"]:
            if name == "free_same_steps":
                call = same_steps_run
            else:
                settings = constrained if name == "constrained" else free
                call = lambda s=settings: engine.generate(requests, s, batch_size=batch)  # noqa: E731
            outputs, seconds, cpu = timed(call)
            if name == "constrained":
                lengths[:] = [o.completion_tokens + (o.finish_reason == "stop") for o in outputs]
            tokens = (
                sum(o.completion_tokens for o in outputs)
                if name == "free_same_steps"
                else engine_tokens(outputs)
            )
            rates[name].append(tokens / seconds)
            valid[name] = sum(_has_label(o.text) for o in outputs)
            print(
                f"  repeat {repeat + 1} {args.dtypes[0]} {name:<15} {tokens} tokens in "
                f"{seconds:6.1f} s = {tokens / seconds:7.1f} tokens/s (CPU {cpu:6.1f} s, "
                f"{valid[name]}/{len(outputs)} valid, load average "
                f"{' '.join(map(str, load_average()))})",
                flush=True,
            )
    medians = {name: statistics.median(values) for name, values in rates.items()}
    paired = [c / f for c, f in zip(rates["constrained"], rates["free_same_steps"], strict=True)]
    return {
        "dtype": args.dtypes[0],
        "batch_size": batch,
        "rows": len(requests),
        "tokens_per_s": {name: round(value, 1) for name, value in medians.items()},
        "natural_ratio": round(medians["constrained"] / medians["free"], 3),
        "same_steps_ratio": round(statistics.median(paired), 3),
        "valid_outputs": valid,
    }


def _has_label(text: str) -> bool:
    try:
        return json.loads(text).get("class") in TICKET_LABELS
    except (ValueError, AttributeError):
        return False


def print_table(summary: dict[str, Any], args: argparse.Namespace) -> None:
    print()
    print(
        f"batch size {summary['batch_size']}, {args.repeats} repeats, medians; load average "
        f"before {summary['load_average_before']}, after {summary['load_average_after']}"
    )
    print()
    print(
        "| dtype | hf engine tokens/s | plain generate() tokens/s | ratio (of medians) "
        "| median per-repeat ratio | same texts |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for dtype, row in summary["dtypes"].items():
        print(
            f"| {dtype} | {row['engine_tokens_per_s']:.1f} | {row['peer_tokens_per_s']:.1f} | "
            f"{row['ratio_of_medians']:.2f}x | {row['median_paired_ratio']:.2f}x | "
            f"{row['same_texts']} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="default: engine default")
    parser.add_argument("--top-logprobs", type=int, default=10)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for both (default: the engine's share of the cores)",
    )
    parser.add_argument(
        "--one-at-a-time",
        action="store_true",
        help="also time the engine batched vs batch_size=1 (first dtype)",
    )
    parser.add_argument("--sweep", default="", help="with --one-at-a-time: more batch sizes")
    parser.add_argument(
        "--openai", action="store_true", help="also bench/openai_engine.py's measurement"
    )
    parser.add_argument(
        "--constrained", action="store_true", help="also the response_format overhead"
    )
    parser.add_argument(
        "--no-peer", action="store_true", help="skip the engine vs generate() comparison"
    )
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args(argv)
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]

    import torch
    import transformers

    if args.threads:
        os.environ[THREADS_ENV] = str(args.threads)  # the engine sets torch's threads
    requests, source = load_prompts(args.rows)
    print(
        f"{len(requests)} prompts from {source}, max_new_tokens {args.max_new_tokens}, "
        f"top_logprobs {args.top_logprobs}, greedy, repeats {args.repeats}; "
        f"{os.cpu_count()} CPUs; python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}; load average {load_average()}"
    )
    result: dict[str, Any] = {"command": " ".join(["bench/inference.py", *(argv or sys.argv[1:])])}
    result["torch_threads"] = torch.get_num_threads()
    if not args.no_peer:
        summary = compare(args, requests)
        result["compare"] = summary
        print_table(summary, args)
    if args.constrained:
        result["constrained"] = constrained_overhead(args, requests)
        print()
        print(f"constrained vs free ({args.dtypes[0]}): {result['constrained']}")
    if args.one_at_a_time:
        result["one_at_a_time"] = one_at_a_time(args, requests)
        print()
        print(f"one at a time ({args.dtypes[0]}): {result['one_at_a_time']}")
    if args.openai:
        try:
            import openai_engine  # bench/openai_engine.py, beside this file
        except ImportError as error:
            print(f"--openai: bench/openai_engine.py is not importable ({error})")
        else:
            threads = args.threads or torch.get_num_threads()
            result["openai"] = openai_engine.measure(threads=threads)
            print()
            print(openai_engine.markdown(result["openai"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
