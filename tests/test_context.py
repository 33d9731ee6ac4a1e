"""max_new_tokens larger than the model's context (Nova's 1.0 recipes ask 8196 tokens of an
8k model): each row's budget is clipped to what its prompt leaves, the budget is recorded
per row, and the results JSON and summary carry one warning.

The clipping runs on a tiny random model with a 64-token context (tests/tiny_model.py), so
that generating up to the context is cheap; the bundled SmolLM2 is only asked its context.
"""

from __future__ import annotations

import json

import pytest

from nova_eval_assets import stages, storage
from nova_eval_assets.engines import GenerationRequest, SamplingSettings, create_engine
from tests.orchestration_support import edit_recipe
from tests.tiny_model import build_tiny_model

torch = pytest.importorskip("torch")

CONTEXT = 64
NOVA_1_0 = 8196  # max_new_tokens of Nova's published 1.0 gen_qa recipe
PROMPTS = ["Hi", "What is the capital of France?", "Two plus two is four. " * 3]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    folder = build_tiny_model(tmp_path_factory.mktemp("ctx") / "model", max_position_embeddings=64)
    return create_engine("hf", str(folder), device="cpu")


@pytest.fixture
def never_stops(engine, monkeypatch):
    """Random weights may pick the stop token at any step; without it each row runs to its
    budget, which is what these tests measure."""
    monkeypatch.setattr(engine, "stop_ids", {-1})
    return engine


def requests(prompts=PROMPTS):
    return [GenerationRequest(i, p) for i, p in enumerate(prompts)]


def test_budget_is_clipped_per_row_to_the_context(never_stops):
    engine = never_stops
    assert engine.max_context == CONTEXT
    prompt_tokens = [len(ids) for ids in engine.encode(requests())]
    assert len(set(prompt_tokens)) == 3 and max(prompt_tokens) < CONTEXT

    outputs = engine.generate(requests(), SamplingSettings(max_new_tokens=NOVA_1_0), batch_size=4)
    for output, n in zip(outputs, prompt_tokens, strict=True):
        assert output.error is None and output.finish_reason == "length"
        assert output.prompt_tokens == n
        assert output.max_new_tokens == output.completion_tokens == CONTEXT - n
        assert len(output.tokens) == CONTEXT - n  # prompt + answer fill the context exactly

    # rows of different budgets batched together decode as they do alone
    alone = engine.generate(requests(), SamplingSettings(max_new_tokens=NOVA_1_0), batch_size=1)
    assert [[t.token_id for t in g.tokens] for g in outputs] == [
        [t.token_id for t in g.tokens] for g in alone
    ]


def test_a_budget_that_fits_is_not_clipped(never_stops):
    outputs = never_stops.generate(requests(), SamplingSettings(max_new_tokens=5), batch_size=4)
    assert [(g.max_new_tokens, g.completion_tokens) for g in outputs] == [(5, 5)] * 3


def test_a_prompt_that_fills_the_context_alone_is_an_error_row(never_stops):
    engine = never_stops
    long_prompt = "The printer on floor three is out of toner again. " * 8
    assert len(engine.encode(requests([long_prompt]))[0]) >= CONTEXT
    outputs = engine.generate(
        requests([PROMPTS[0], long_prompt]), SamplingSettings(max_new_tokens=NOVA_1_0)
    )
    assert outputs[0].error is None and outputs[0].max_new_tokens > 0
    assert outputs[1].finish_reason == "error" and outputs[1].max_new_tokens == 0
    assert f"context of {CONTEXT} tokens" in outputs[1].error
    assert outputs[1].completion_tokens == 0


def test_results_and_summary_carry_one_clipping_warning(never_stops, make_recipe):
    engine = never_stops
    queries = ["What is 2+2?", "Name the capital of France."]
    lines = [json.dumps({"query": q, "response": "x"}) for q in queries]
    loaded = make_recipe(lines, name="nova-1-0", inference={"max_new_tokens": NOVA_1_0})
    loaded = edit_recipe(loaded, run={"model_name_or_path": engine.model_name})
    stages.run_validation(loaded)
    stages.build_prompts(loaded)
    stages.run_inference(loaded, 0, engine=engine)
    stages.score_replica(loaded, 0)
    report = stages.write_report(loaded)

    # what the engine feeds the model for these rows (the template's default system turn)
    prompt_tokens = [len(ids) for ids in engine.encode(requests(queries))]
    budgets = sorted(CONTEXT - n for n in prompt_tokens)
    examples = storage.read_parquet(report["paths"]["examples"]).to_pylist()
    assert [r["max_new_tokens"] for r in examples] == [CONTEXT - n for n in prompt_tokens]
    assert [r["completion_tokens"] for r in examples] == [CONTEXT - n for n in prompt_tokens]

    span = str(budgets[0]) if budgets[0] == budgets[1] else f"{budgets[0]}..{budgets[1]}"
    expected = (
        f"inference.max_new_tokens {NOVA_1_0} exceeds the model's context of {CONTEXT} "
        f"tokens; clipped to {span} tokens per row (2 of 2 rows; prompt + answer must fit)"
    )
    results = storage.read_json(report["paths"]["results"])
    assert results["config_general"]["warnings"] == [expected]
    assert report["warnings"] == [expected]
    assert f"Warning: {expected}" in report["summary_markdown"]
    assert results["config_general"]["num_inference_errors"] == 0


def test_inference_warnings_when_only_the_prompt_tips_it_over(make_recipe):
    import pyarrow as pa

    loaded = make_recipe([json.dumps({"query": "Q?", "response": "A"})], name="edge")
    loaded = edit_recipe(loaded, inference={"max_new_tokens": 60})
    table = pa.table(
        {
            "prompt_tokens": [10, 30, 70],
            "max_new_tokens": [60, 34, 0],  # fits; clipped to 64 - 30; fills the context
            "finish_reason": ["stop", "length", "error"],
        }
    )
    assert stages.inference_warnings(loaded, table) == [
        "inference.max_new_tokens 60 plus the prompt exceeds the model's context of 64 tokens "
        "for 1 of 3 rows; clipped to 34 tokens (prompt + answer must fit)"
    ]
    assert stages.inference_warnings(loaded, table.slice(0, 1)) == []


@pytest.mark.model
def test_bundled_smollm2_context_is_8192(tmp_path):
    from gguf import GGUFReader

    from nova_eval_assets.engines.models import resolve_model

    bundled = create_engine("hf", "smollm2-135m-instruct")
    # independently: the context length the GGUF file declares
    declared = GGUFReader(str(resolve_model("smollm2-135m-instruct").path)).fields
    assert bundled.max_context == declared["llama.context_length"].contents() == 8192
    (ids,) = bundled.encode(requests(["What is 2+2?"]))
    assert bundled.row_budget(len(ids), NOVA_1_0) == 8192 - len(ids)
    assert bundled.row_budget(len(ids), 256) == 256
    assert not bundled.reasoning.supported  # ChatML: no thinking switch
