"""The in-process vLLM engine (engines/vllm.py).

vLLM is not installed here (it pulls CUDA builds of torch; GPU nodes only), so the tests
that need it skip, and the engine is unverified until they run on a GPU. Everything
around vLLM is tested without it: the SamplingParams / LLM arguments built from the
settings, and the mapping of vLLM's outputs, on stand-ins shaped like vLLM's documented
``RequestOutput`` / ``CompletionOutput`` / ``Logprob`` dataclasses, driven through the
engine (prompts from a real tokenizer) and through the inference stage.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from nova_eval_assets import stages
from nova_eval_assets.engines import GenerationRequest, SamplingSettings, create_engine
from nova_eval_assets.engines.constraints import ResponseFormat, classification_schema
from nova_eval_assets.engines.vllm import (
    NOT_INSTALLED,
    PreparedRow,
    VLLMEngine,
    VLLMNotInstalledError,
    llm_kwargs,
    sampling_params_kwargs,
    stop_token_ids,
    structured_outputs_kwargs,
    to_generation,
    token_logprobs,
    top_entries,
)
from nova_eval_assets.recipe import load_recipe
from tests.tiny_model import PLAIN_TEMPLATE, build_tiny_model

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(
    not HAS_VLLM, reason="vllm is not installed (GPU nodes only); unverified here"
)


# ---------------------------------------------------------------- stand-ins for vLLM's outputs


@dataclass
class Logprob:  # vllm.logprobs.Logprob
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:  # vllm.outputs.CompletionOutput
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:  # vllm.outputs.RequestOutput
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: None
    outputs: list[CompletionOutput]
    finished: bool = True


@dataclass
class FakeSamplingParams:
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


@dataclass
class FakeStructuredOutputs:  # vllm.sampling_params.StructuredOutputsParams
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


def position(chosen: int, chosen_lp: float, others: list[tuple[int, float]], k: int) -> dict:
    """One position as vLLM returns it: the top-k by rank, plus the chosen token with its
    own rank when it is not among them."""
    ranked = sorted([(chosen, chosen_lp), *others], key=lambda item: -item[1])
    entries = {tid: Logprob(lp, rank, f"<{tid}>") for rank, (tid, lp) in enumerate(ranked, 1)}
    top = dict(list(entries.items())[:k])
    top[chosen] = entries[chosen]
    return top


class FakeLLM:
    """Answers every prompt with `script` (then the end-of-turn id, as vLLM includes it),
    cut at the row's max_tokens; records each call."""

    def __init__(self, script: list[int], eos: int, max_model_len: int = 64) -> None:
        self.script, self.eos = script, eos
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(max_model_len=max_model_len))
        self.calls: list[tuple[list[dict], list[FakeSamplingParams]]] = []

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append((prompts, params))
        outputs = []
        for n, (prompt, p) in enumerate(zip(prompts, params, strict=True)):
            budget = p.kwargs["max_tokens"]
            ids = [*self.script, self.eos][:budget]
            reason = "stop" if ids[-1] == self.eos else "length"
            k = p.kwargs["logprobs"]
            logprobs = [
                position(t, -0.5 - j, [(t + 1, -0.1 - j), (t + 2, -2.0 - j)], k)
                for j, t in enumerate(ids)
            ]
            completion = CompletionOutput(0, "", ids, None, logprobs, reason)
            outputs.append(
                RequestOutput(str(n), None, prompt["prompt_token_ids"], None, [completion])
            )
        return outputs


# ---------------------------------------------------------------- pure functions


def expected_seed(seed: int, row_index: int) -> int:
    digest = hashlib.sha256(f"nova-eval:{seed}:{row_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def test_sampling_params_greedy():
    settings = SamplingSettings(max_new_tokens=64, temperature=0.0, top_logprobs=5)
    assert sampling_params_kwargs(settings, 3, 40, [7, 2, 7]) == {
        "n": 1,
        "max_tokens": 40,
        "temperature": 0.0,
        "top_p": 1.0,
        "logprobs": 5,
        "stop_token_ids": [2, 7],
        "detokenize": False,
    }


def test_sampling_params_sampled_row_has_its_own_seed_and_top_k():
    settings = SamplingSettings(temperature=0.8, top_p=0.9, top_k=40, top_logprobs=0, seed=99)
    kwargs = sampling_params_kwargs(settings, 12, 256)
    assert (
        kwargs["seed"] == expected_seed(99, 12) != sampling_params_kwargs(settings, 13, 8)["seed"]
    )
    assert (kwargs["temperature"], kwargs["top_p"], kwargs["top_k"]) == (0.8, 0.9, 40)
    assert kwargs["logprobs"] == 0  # vLLM still returns the chosen token's log probability


SCHEMA = classification_schema("class", ["hardware", "software", "network"])


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        (
            ResponseFormat.json_schema(SCHEMA),
            {"json": SCHEMA, "disable_any_whitespace": True},  # ", " and ": " as hf writes
        ),
        (ResponseFormat.regex(r"[A-D]"), {"regex": "[A-D]"}),
        (ResponseFormat.choice(["yes", "no"]), {"choice": ["yes", "no"]}),
    ],
    ids=["json_schema", "regex", "choice"],
)
def test_sampling_params_carry_the_response_format(response_format, expected):
    settings = SamplingSettings(temperature=0.8, response_format=response_format)
    assert structured_outputs_kwargs(response_format) == expected
    kwargs = sampling_params_kwargs(settings, 3, 40, structured_outputs=FakeStructuredOutputs)
    constraint = kwargs.pop("structured_outputs")
    assert isinstance(constraint, FakeStructuredOutputs) and constraint.kwargs == expected
    if "json" in expected:  # the schema's key order is kept (properties in schema order)
        assert list(constraint.kwargs["json"]["properties"]) == ["class", "thought", "description"]
    free = sampling_params_kwargs(SamplingSettings(temperature=0.8), 3, 40)
    assert kwargs == free  # nothing else changes
    assert structured_outputs_kwargs(None) is None and "structured_outputs" not in free


def test_a_response_format_without_vllm_is_a_clear_error():
    if HAS_VLLM:
        pytest.skip("vllm is installed here")
    settings = SamplingSettings(response_format=ResponseFormat.regex("a+"))
    with pytest.raises(VLLMNotInstalledError, match="needs vLLM"):
        sampling_params_kwargs(settings, 0, 8)


def test_llm_kwargs():
    kwargs = llm_kwargs("/models/m", dtype="auto", tensor_parallel_size=4, max_context=8192)
    assert kwargs["model"] == kwargs["tokenizer"] == "/models/m"
    assert kwargs["dtype"] == "bfloat16"  # auto = bfloat16 on CUDA
    assert kwargs["tensor_parallel_size"] == 4
    assert kwargs["logprobs_mode"] == "raw_logprobs"  # before temperature / top-k / top-p
    assert kwargs["max_logprobs"] == 20 and kwargs["max_model_len"] == 8192
    assert llm_kwargs("m", dtype="float32")["dtype"] == "float32"
    assert "max_model_len" not in llm_kwargs("m")
    assert llm_kwargs("m", gpu_memory_utilization=0.8)["gpu_memory_utilization"] == 0.8
    with pytest.raises(ValueError, match="dtype must be one of"):
        llm_kwargs("m", dtype="int8")


def test_top_entries_by_rank_and_the_chosen_token_outside_the_top():
    # the chosen token (9) ranks 4th; vLLM returns the top 2 and it
    entry = {
        5: Logprob(-0.2, 1, " the"),
        6: Logprob(-1.9, 2, " a"),
        9: Logprob(-3.5, 4, " an"),
    }
    assert top_entries(entry, 2) == [(5, -0.2), (6, -1.9)]
    assert top_entries(entry, 0) == []
    (token,) = token_logprobs([9], [entry], 2)
    assert (token.token, token.logprob, token.token_id) == (" an", -3.5, 9)
    assert token.top == [(" the", -0.2), (" a", -1.9)]
    # without ranks (older vLLM), by log probability
    unranked = {1: Logprob(-2.0), 2: Logprob(-0.5), 3: Logprob(-1.0)}
    assert top_entries(unranked, 2) == [(2, -0.5), (3, -1.0)]
    # texts from the engine's own decoder when given
    (token,) = token_logprobs([9], [entry], 1, piece=lambda t: f"[{t}]")
    assert token.token == "[9]" and token.top == [("[5]", -0.2)]


def test_to_generation_drops_the_end_of_turn_token():
    row = PreparedRow(index=0, row_index=41, prompt_ids=[1, 2, 3], budget=16)
    settings = SamplingSettings(top_logprobs=1)
    logprobs = [position(t, -0.25, [(t + 1, -1.5)], 1) for t in (10, 11, 99)]
    completion = CompletionOutput(0, "", [10, 11, 99], None, logprobs, "stop")
    generation = to_generation(
        row, completion, settings, frozenset({99}), decode=lambda ids: ",".join(map(str, ids))
    )
    assert generation.text == "10,11"
    assert [t.token_id for t in generation.tokens] == [10, 11]
    assert [t.logprob for t in generation.tokens] == [-0.25, -0.25]
    assert [t.top for t in generation.tokens] == [[("<10>", -0.25)], [("<11>", -0.25)]]
    assert (generation.prompt_tokens, generation.completion_tokens) == (3, 2)
    assert generation.finish_reason == "stop" and generation.max_new_tokens == 16
    assert generation.row_index == 41


def test_to_generation_length_abort_and_reasoning():
    row = PreparedRow(0, 0, [1], budget=2)
    decode = {(5, 6): "<think>hmm</think>Paris", (5, 99): "x"}.get
    cut = CompletionOutput(0, "", [5, 99], None, None, "length")
    generation = to_generation(row, cut, SamplingSettings(), {99}, lambda ids: decode(tuple(ids)))
    # stopped by length, so 99 is a generated token, not the end of the turn
    assert generation.finish_reason == "length" and generation.text == "x"
    assert [t.token_id for t in generation.tokens] == [5, 99]
    assert all(math.isnan(t.logprob) for t in generation.tokens)  # no logprobs asked
    aborted = to_generation(
        row, CompletionOutput(0, "", [], None, None, "abort"), SamplingSettings(), {99}, str
    )
    assert aborted.finish_reason == "error" and "aborted" in aborted.error
    thinking = to_generation(
        row,
        CompletionOutput(0, "", [5, 6], None, None, "stop"),
        SamplingSettings(reasoning_effort="high"),
        {99},
        lambda ids: decode(tuple(ids)),
    )
    assert (thinking.reasoning, thinking.text) == ("hmm", "Paris")


def test_stop_token_ids_from_tokenizer_and_configs(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 3}))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [3, 9]}))
    tokenizer = SimpleNamespace(eos_token_id=None, get_vocab=lambda: {"<|eot_id|>": 7, "a": 1})
    assert stop_token_ids(tokenizer, tmp_path) == {3, 7, 9}
    assert stop_token_ids(SimpleNamespace(eos_token_id=2, get_vocab=dict)) == {2}


def test_the_token_vllm_says_it_stopped_on_is_dropped():
    row = PreparedRow(0, 0, [1], budget=8)
    completion = CompletionOutput(0, "", [5, 6, 77], None, None, "stop", stop_reason=77)
    generation = to_generation(row, completion, SamplingSettings(), {99}, str)
    assert [t.token_id for t in generation.tokens] == [5, 6]


# ---------------------------------------------------------------- the engine, vLLM stood in


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("vllm") / "model", PLAIN_TEMPLATE)


def fake_engine(folder: Path, script: list[int], max_model_len: int = 64, **options):
    from transformers import AutoTokenizer

    eos = AutoTokenizer.from_pretrained(folder).convert_tokens_to_ids("<|im_end|>")
    llm = FakeLLM(script, eos, max_model_len)
    engine = create_engine(
        "vllm", str(folder), llm=llm, sampling_params=FakeSamplingParams, **options
    )
    return engine, llm, eos


def test_engine_feeds_chat_template_ids_and_maps_outputs(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    script = tokenizer("Paris is")["input_ids"]
    engine, llm, eos = fake_engine(tiny_model, script, default_batch_size=1)
    assert isinstance(engine, VLLMEngine)
    requests = [
        GenerationRequest(i, f"What is {i}?", "Be brief." if i % 2 else None) for i in range(6)
    ]
    settings = SamplingSettings(max_new_tokens=len(script) + 4, top_logprobs=2)
    progress: list[tuple[int, int]] = []
    out = engine.generate(requests, settings, on_batch=lambda d, t: progress.append((d, t)))
    # batch size 1: blocks of 4 rows, one vLLM call each
    assert [len(prompts) for prompts, _ in llm.calls] == [4, 2]
    assert progress == [(4, 6), (6, 6)]
    sent = [p["prompt_token_ids"] for prompts, _ in llm.calls for p in prompts]
    for request, ids in zip(requests, sent, strict=True):
        messages = ([{"role": "system", "content": request.system}] if request.system else []) + [
            {"role": "user", "content": request.prompt}
        ]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    for request, generation, ids in zip(requests, out, sent, strict=True):
        assert generation.row_index == request.row_index
        assert generation.text == tokenizer.decode(script) == "Paris is"
        assert [t.token_id for t in generation.tokens] == script  # end of turn dropped
        assert [t.token for t in generation.tokens] == [tokenizer.decode([t]) for t in script]
        assert [t.logprob for t in generation.tokens] == [-0.5 - j for j in range(len(script))]
        first = generation.tokens[0]
        assert first.top == [
            (tokenizer.decode([script[0] + 1]), -0.1),
            (tokenizer.decode([script[0]]), -0.5),
        ]
        assert generation.prompt_tokens == len(ids) and generation.finish_reason == "stop"
    params = llm.calls[0][1][0].kwargs
    assert params["logprobs"] == 2 and params["temperature"] == 0.0
    assert set(params["stop_token_ids"]) == {eos, tokenizer.convert_tokens_to_ids("<|endoftext|>")}


def test_engine_gives_every_row_its_own_structured_outputs(tiny_model):
    engine, llm, _ = fake_engine(
        tiny_model, [40, 41], default_batch_size=1, structured_outputs=FakeStructuredOutputs
    )
    choice = ResponseFormat.choice(["hardware", "software"])
    requests = [GenerationRequest(i, f"Ticket {i}") for i in range(5)]
    engine.generate(requests, SamplingSettings(max_new_tokens=4, response_format=choice))
    params = [p.kwargs for _, call in llm.calls for p in call]
    assert len(params) == 5
    constraints = [p["structured_outputs"] for p in params]
    assert all(c.kwargs == {"choice": ["hardware", "software"]} for c in constraints)
    assert len({id(c) for c in constraints}) == 5  # vLLM writes its backend into each
    llm.calls.clear()
    engine.generate(requests[:1], SamplingSettings(max_new_tokens=4))
    assert "structured_outputs" not in llm.calls[0][1][0].kwargs


def test_engine_clips_budgets_to_the_context_and_refuses_full_prompts(tiny_model):
    engine, llm, _ = fake_engine(tiny_model, [40, 41, 42, 43, 44, 45], max_model_len=24)
    short = GenerationRequest(0, "Hi")
    long = GenerationRequest(1, "Reset the password and restart the laptop. " * 3)
    prompt_len = len(engine.prepare([short], SamplingSettings())[0][0].prompt_ids)
    first, second = engine.generate([short, long], SamplingSettings(max_new_tokens=100))
    assert first.max_new_tokens == 24 - prompt_len
    assert len(first.tokens) == min(6, 24 - prompt_len)
    assert second.finish_reason == "error" and "fills the model's context of 24" in second.error
    assert len(llm.calls[0][0]) == 1  # the full prompt never reached vLLM


def test_missing_vllm_is_a_clear_error(tiny_model, monkeypatch):
    if HAS_VLLM:
        pytest.skip("vllm is installed here")
    with pytest.raises(VLLMNotInstalledError) as caught:
        create_engine("vllm", str(tiny_model))
    assert NOT_INSTALLED in str(caught.value)


def test_gen_qa_stage_with_the_engine(tiny_model, tmp_path, monkeypatch):
    """An evaluation's inference stage writes vLLM's outputs with their log probabilities."""
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    data = tmp_path / "qa.jsonl"
    data.write_text(
        "".join(json.dumps({"query": f"Q{i}?", "response": "Paris is"}) + "\n" for i in range(3))
    )
    recipe = {
        "run": {
            "name": "vllm-eval",
            "model_type": "hf",
            "model_name_or_path": str(tiny_model),
            "replicas": 1,
            "data_s3_path": data.name,
            "output_s3_path": "",
        },
        "evaluation": {"task": "gen_qa", "strategy": "gen_qa", "metric": "all"},
        "inference": {"engine": "vllm", "max_new_tokens": 8, "top_logprobs": 1},
    }
    path = tmp_path / "vllm.yaml"
    path.write_text(yaml.safe_dump(recipe))
    loaded = load_recipe(path)
    assert stages.engine_options(loaded) == {"dtype": "auto", "tensor_parallel_size": 1}
    from transformers import AutoTokenizer

    script = AutoTokenizer.from_pretrained(tiny_model)("Paris is")["input_ids"]
    engine, _, _ = fake_engine(tiny_model, script, **stages.engine_options(loaded))
    stages.validate_or_raise(loaded)
    stages.build_prompts(loaded)
    summary = stages.run_inference(loaded, 0, engine=engine)
    assert summary["rows"] == 3 and summary["errors"] == 0
    assert summary["model_id"] == engine.model_id  # the weights' hash
    stages.score_replica(loaded, 0)
    report = stages.write_report(loaded)
    assert report["metrics"]["em"] == 1.0
    import pyarrow.parquet as pq

    table = pq.read_table(report["paths"]["examples"])
    tokens = table["token_logprobs"].to_pylist()[0]
    assert [t["logprob"] for t in tokens] == [-0.5 - j for j in range(len(script))]
    assert all(len(t["top"]) == 1 for t in tokens)


# ---------------------------------------------------------------- on a GPU, with vLLM


@needs_vllm
def test_real_vllm_short_evaluation():
    """The bundled model through real vLLM (GPU): greedy rows finish, and the chosen token
    of a greedy step is the top of the raw distribution."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    engine = create_engine("vllm", "smollm2-135m-instruct", dtype="bfloat16")
    requests = [GenerationRequest(i, q) for i, q in enumerate(["What is 2+2?", "Name a color."])]
    out = engine.generate(requests, SamplingSettings(max_new_tokens=16, top_logprobs=5))
    for generation in out:
        assert generation.error is None and generation.tokens
        for token in generation.tokens:
            assert token.logprob <= 0 and len(token.top) == 5
            assert [lp for _, lp in token.top] == sorted((lp for _, lp in token.top), reverse=True)
            assert token.top[0][1] == pytest.approx(token.logprob, abs=1e-3)


@needs_vllm
def test_real_vllm_follows_a_json_schema():
    """Real vLLM (GPU) enforces the classification schema, compact as the hf engine writes."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    import jsonschema

    engine = create_engine("vllm", "smollm2-135m-instruct", dtype="bfloat16")
    schema = {
        "type": "object",
        "properties": {"class": {"enum": ["hardware", "software"]}},
        "required": ["class"],
        "additionalProperties": False,
    }
    settings = SamplingSettings(
        max_new_tokens=32, temperature=0.8, response_format=ResponseFormat.json_schema(schema)
    )
    requests = [GenerationRequest(i, f"Classify ticket {i}: my laptop is slow.") for i in range(8)]
    for generation in engine.generate(requests, settings):
        assert generation.finish_reason == "stop", generation
        jsonschema.validate(json.loads(generation.text), schema)
        assert generation.text.startswith('{"class": "')
