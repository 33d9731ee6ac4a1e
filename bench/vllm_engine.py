"""The vLLM engine against raw vLLM, on a GPU: a whole evaluation vs ``LLM.generate``.

    python bench/vllm_engine.py [--model smollm2-135m-instruct] [--rows 2048]
                                [--max-new-tokens 128] [--top-logprobs 10] [--repeats 3]
                                [--dtype auto] [--tensor-parallel-size 1] [--batch-size B]

Needs vLLM and a CUDA device (exits with status 2 and a message otherwise). One ``vllm.LLM`` is
loaded once and used by both sides, so they share weights, KV cache and compilation:

- **evaluation**: a gen_qa recipe with ``inference.engine: vllm`` run through the stages
  (validation, prompts, inference block by block with its checkpoints, metrics, report),
  the engine handed to the inference stage;
- **raw**: the same prompt token ids and the same per-row ``SamplingParams`` (the engine
  builds them, outside the timing) in a single ``LLM.generate`` call, nothing else.

Greedy, so both generate the same tokens; tokens/s counts what vLLM generated (its
``token_ids``) over the wall time of each side. Prints the median over repeats, after one
warm-up of each, and the ratio evaluation / raw (goal: >= 0.9x). Prompts are the rows of
recipes/data/support_tickets.jsonl, repeated up to --rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = ROOT / "recipes" / "data" / "support_tickets.jsonl"


def cannot_run(reason: str) -> None:
    print(f"bench/vllm_engine.py: {reason}", file=sys.stderr)
    sys.exit(2)


def require_gpu() -> None:
    try:
        import vllm  # noqa: F401
    except ImportError:
        cannot_run("vLLM is not installed (GPU images: see docs/engines.md 'Engines: vllm')")
    import torch

    if not torch.cuda.is_available():
        cannot_run("no CUDA device; the vLLM bench runs on GPU nodes only")


def dataset_rows(rows: int) -> list[dict]:
    lines = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line]
    return [lines[i % len(lines)] for i in range(rows)]


def write_recipe(folder: Path, args: argparse.Namespace) -> Path:
    import yaml

    data = folder / "bench.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in dataset_rows(args.rows)))
    inference = {
        "engine": "vllm",
        "max_new_tokens": args.max_new_tokens,
        "temperature": 0,
        "top_logprobs": args.top_logprobs,
        "dtype": args.dtype,
        "tensor_parallel_size": args.tensor_parallel_size,
    }
    if args.batch_size:
        inference["batch_size"] = args.batch_size
    recipe = {
        "run": {
            "name": "bench-vllm",
            "model_type": "hf",
            "model_name_or_path": args.model,
            "replicas": 1,
            "data_s3_path": data.name,
            "output_s3_path": "",
        },
        "evaluation": {"task": "gen_qa", "strategy": "gen_qa", "metric": "all"},
        "inference": inference,
    }
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def evaluation_seconds(recipe: Path, engine, output_root: Path) -> float:
    """One whole evaluation, outputs in a fresh folder (nothing to reuse or resume)."""
    from nova_eval_assets import stages
    from nova_eval_assets.recipe import load_recipe

    os.environ["NOVA_EVAL_OUTPUT_ROOT"] = str(output_root)
    loaded = load_recipe(recipe)
    started = time.perf_counter()
    stages.validate_or_raise(loaded)
    stages.build_prompts(loaded)
    stages.run_inference(loaded, 0, engine=engine)
    stages.score_replica(loaded, 0)
    stages.write_report(loaded)
    return time.perf_counter() - started


def raw_inputs(recipe: Path, engine):
    """The prompt ids and SamplingParams the engine sends, built once for the raw side."""
    from nova_eval_assets import stages
    from nova_eval_assets.dataset import SCHEMAS, validate_dataset
    from nova_eval_assets.engines import GenerationRequest
    from nova_eval_assets.engines.vllm import sampling_params_kwargs
    from nova_eval_assets.recipe import load_recipe

    loaded = load_recipe(recipe)
    table = validate_dataset(str(loaded.resolve_data_path()), SCHEMAS["gen_qa"]).table
    requests = [
        GenerationRequest(r["row_index"], r["query"], r["system"])
        for r in table.select(["row_index", "query", "system"]).to_pylist()
    ]
    settings = stages.sampling_settings(loaded)
    rows, errors = engine.prepare(requests, settings)
    if errors:
        sys.exit(f"{len(errors)} prompts do not fit the model's context; use shorter ones")
    prompts = [{"prompt_token_ids": r.prompt_ids} for r in rows]
    params = [
        engine.sampling_params(
            **sampling_params_kwargs(settings, r.row_index, r.budget, engine.stop_ids)
        )
        for r in rows
    ]
    return prompts, params


def raw_run(engine, prompts, params) -> tuple[float, int]:
    started = time.perf_counter()
    outputs = engine.llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    return seconds, sum(len(o.outputs[0].token_ids) for o in outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--top-logprobs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    require_gpu()

    from nova_eval_assets.engines import create_engine

    engine = create_engine(
        "vllm", args.model, dtype=args.dtype, tensor_parallel_size=args.tensor_parallel_size
    )
    with tempfile.TemporaryDirectory(prefix="bench-vllm-") as scratch:
        folder = Path(scratch)
        recipe = write_recipe(folder, args)
        prompts, params = raw_inputs(recipe, engine)
        raw_run(engine, prompts, params)  # warm-up: CUDA graphs, allocator
        evaluation_seconds(recipe, engine, folder / "warmup")
        raw_times, eval_times, tokens = [], [], 0
        for repeat in range(args.repeats):
            seconds, tokens = raw_run(engine, prompts, params)
            raw_times.append(seconds)
            eval_times.append(evaluation_seconds(recipe, engine, folder / f"run-{repeat}"))
    raw_s, eval_s = statistics.median(raw_times), statistics.median(eval_times)
    result = {
        "model": args.model,
        "rows": args.rows,
        "max_new_tokens": args.max_new_tokens,
        "top_logprobs": args.top_logprobs,
        "dtype": args.dtype,
        "tensor_parallel_size": args.tensor_parallel_size,
        "generated_tokens": tokens,
        "raw_tokens_per_s": round(tokens / raw_s, 1),
        "evaluation_tokens_per_s": round(tokens / eval_s, 1),
        "ratio": round(raw_s / eval_s, 3),
        "raw_seconds": [round(t, 3) for t in raw_times],
        "evaluation_seconds": [round(t, 3) for t in eval_times],
    }
    print(f"raw vllm.LLM.generate : {result['raw_tokens_per_s']:>10.1f} tokens/s")
    print(f"evaluation, engine vllm: {result['evaluation_tokens_per_s']:>9.1f} tokens/s")
    print(f"ratio                  : {result['ratio']:.3f}x (goal >= 0.9x)")
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
