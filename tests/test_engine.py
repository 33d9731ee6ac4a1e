"""The inference engine, with the real bundled SmolLM2-135M-Instruct.

The first run converts the bundled GGUF into the model cache (about 25 s on 2
cores); later runs load the converted folder (about 3 s).
"""

from __future__ import annotations

import json
import math
import time

import pytest

from nova_eval_assets.engines import (
    BUNDLED_MODELS,
    Engine,
    GenerationRequest,
    ModelResolutionError,
    SamplingSettings,
    block_size,
    create_engine,
    resolve_model,
)
from nova_eval_assets.engines import hf as hf_module
from nova_eval_assets.engines import models as models_module
from nova_eval_assets.engines.base import row_seed
from nova_eval_assets.engines.hf import HFEngine, is_out_of_memory

torch = pytest.importorskip("torch")

MODEL = "smollm2-135m-instruct"
SYSTEM = "You are a concise assistant. Answer in one sentence."

PROMPTS = [
    ("What is the capital of France?", None),
    ("Write a haiku about rain.", None),
    ("Explain photosynthesis to a ten year old.", SYSTEM),
    ("2+2=?", None),
    (
        "My laptop will not turn on after a coffee spill. The screen stays black and the "
        "power light does not come on. What should I do first?",
        SYSTEM,
    ),
    ("Name three primary colors.", None),
    ("Translate 'good morning' into Spanish.", SYSTEM),
    ("Why do cats purr?", None),
    ("Give one tip for writing clear emails.", None),
    ("What does CPU stand for?", SYSTEM),
]

GREEDY = SamplingSettings(max_new_tokens=16, top_logprobs=5)
SAMPLED = SamplingSettings(
    max_new_tokens=16, temperature=0.9, top_k=50, top_p=0.95, top_logprobs=3, seed=7
)


def requests_for(prompts=PROMPTS, start=0):
    return [GenerationRequest(start + i, p, s) for i, (p, s) in enumerate(prompts)]


def ids_of(generation):
    return [t.token_id for t in generation.tokens]


@pytest.fixture(scope="session")
def engine():
    return create_engine("hf", MODEL)


@pytest.fixture(scope="session")
def greedy_batched(engine):
    """All prompts, batch_size=4: block of 16, sorted by length, batches of 4, 4, 2."""
    return engine.generate(requests_for(), GREEDY, batch_size=4)


@pytest.fixture(scope="session")
def greedy_single(engine):
    return engine.generate(requests_for(), GREEDY, batch_size=1)


pytestmark = pytest.mark.model


# ----------------------------------------------------------------------------- log probabilities


def test_outputs_in_request_order_with_counts(engine, greedy_batched):
    assert isinstance(engine, Engine) and engine.name == "hf"
    assert [g.row_index for g in greedy_batched] == list(range(len(PROMPTS)))
    for g in greedy_batched:
        assert g.finish_reason in ("stop", "length")
        assert g.error is None
        assert g.text.strip()
        assert g.prompt_tokens > 5
        assert g.completion_tokens == len(g.tokens) <= GREEDY.max_new_tokens
        assert (g.finish_reason == "length") == (g.completion_tokens == GREEDY.max_new_tokens)
        assert g.latency_s > 0
        assert "<|im_end|>" not in g.text and "<|endoftext|>" not in g.text
        assert all(t.token not in ("<|im_end|>", "<|endoftext|>") for t in g.tokens)
    assert any(g.finish_reason == "stop" for g in greedy_batched)
    assert any(g.finish_reason == "length" for g in greedy_batched)


def test_top_lists_sorted_exact_length_and_normalized(greedy_batched):
    for g in greedy_batched:
        for t in g.tokens:
            assert len(t.top) == GREEDY.top_logprobs
            values = [v for _, v in t.top]
            assert values == sorted(values, reverse=True)
            assert sum(math.exp(v) for v in values) <= 1 + 1e-6
            assert all(v <= 0 for v in values)


def test_greedy_chosen_token_is_first_of_top(greedy_batched):
    for g in greedy_batched:
        for t in g.tokens:
            assert t.top[0][0] == t.token
            assert t.top[0][1] == t.logprob


def test_text_is_the_decoded_tokens(engine, greedy_batched):
    for g in greedy_batched:
        assert g.text == engine.tokenizer.decode(ids_of(g))
        assert all(engine.piece(t.token_id) == t.token for t in g.tokens)


def recompute_logprobs(engine, request, generation):
    """Chosen-token log probabilities from one plain forward pass over prompt + output."""
    prompt_ids = engine.encode([request])[0]
    full = torch.tensor([prompt_ids + ids_of(generation)], device=engine.device)
    with torch.inference_mode():
        logits = engine.model(input_ids=full).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    start = len(prompt_ids) - 1
    return [logprobs[start + j, token_id].item() for j, token_id in enumerate(ids_of(generation))]


@pytest.mark.parametrize("which", ["greedy", "sampled"])
def test_logprobs_match_an_independent_forward_pass(engine, greedy_batched, which):
    requests = requests_for()[:4]
    if which == "greedy":
        outputs = greedy_batched[:4]
    else:  # sampled tokens: logprobs must still come from the raw distribution
        outputs = engine.generate(requests, SAMPLED, batch_size=4)
    worst = 0.0
    for request, generation in zip(requests, outputs, strict=True):
        expected = recompute_logprobs(engine, request, generation)
        got = [t.logprob for t in generation.tokens]
        worst = max([worst] + [abs(a - b) for a, b in zip(got, expected, strict=True)])
    # float32 on CPU: batched KV-cache decoding and a single full forward pass agree to ~1e-5
    assert worst < 1e-3, worst


def test_no_top_list_when_top_logprobs_is_zero(engine):
    settings = SamplingSettings(max_new_tokens=4, top_logprobs=0)
    (g,) = engine.generate(requests_for()[:1], settings)
    assert g.tokens and all(t.top == [] and t.logprob <= 0 for t in g.tokens)


# ----------------------------------------------------------------------------- batching


def test_batched_equals_one_at_a_time(greedy_batched, greedy_single):
    worst = 0.0
    for a, b in zip(greedy_batched, greedy_single, strict=True):
        assert ids_of(a) == ids_of(b), (a.row_index, a.text, b.text)
        assert a.text == b.text
        assert a.finish_reason == b.finish_reason
        assert a.prompt_tokens == b.prompt_tokens
        worst = max(
            [worst] + [abs(x.logprob - y.logprob) for x, y in zip(a.tokens, b.tokens, strict=True)]
        )
    # left padding changes matmul shapes, so log probabilities differ in the last float bits
    assert worst < 1e-3, worst


def test_shard_on_block_boundary_reproduces_the_full_run(engine):
    """Replica invariance: rows 8.. run alone (a shard starting on a block boundary for
    batch_size=2) get exactly the outputs they get inside the full run."""
    settings = SamplingSettings(max_new_tokens=8, top_logprobs=2)
    assert block_size(2) == engine.block_size(2) == 8
    full = engine.generate(requests_for(), settings, batch_size=2)
    shard = engine.generate(requests_for()[8:], settings, batch_size=2)
    assert [(g.row_index, g.text, [t.logprob for t in g.tokens]) for g in full[8:]] == [
        (g.row_index, g.text, [t.logprob for t in g.tokens]) for g in shard
    ]


def test_shared_prompt_head_is_computed_once_without_changing_outputs(engine, monkeypatch):
    requests = [r for r in requests_for() if r.system == SYSTEM]
    settings = SamplingSettings(max_new_tokens=12, top_logprobs=2)
    prepared = [
        hf_module._Prepared(i, r.row_index, ids)
        for i, (r, ids) in enumerate(zip(requests, engine.encode(requests), strict=True))
    ]
    # the system turn plus "<|im_start|>user\n"
    assert engine._shared_prefix(prepared) >= hf_module.MIN_SHARED_PREFIX
    shared = engine.generate(requests, settings, batch_size=4)
    monkeypatch.setattr(engine, "share_prefix", False)
    plain = engine.generate(requests, settings, batch_size=4)
    assert [ids_of(g) for g in shared] == [ids_of(g) for g in plain]
    worst = max(
        abs(x.logprob - y.logprob)
        for a, b in zip(shared, plain, strict=True)
        for x, y in zip(a.tokens, b.tokens, strict=True)
    )
    assert worst < 1e-3, worst


def test_on_batch_progress(engine):
    calls = []
    settings = SamplingSettings(max_new_tokens=2)
    engine.generate(
        requests_for()[:5], settings, batch_size=2, on_batch=lambda d, n: calls.append((d, n))
    )
    assert calls == [(2, 5), (4, 5), (5, 5)]


# ----------------------------------------------------------------------------- sampling


def test_seeded_sampling_is_reproducible_and_seed_dependent(engine):
    requests = requests_for()[:4]
    first = engine.generate(requests, SAMPLED, batch_size=4)
    again = engine.generate(requests, SAMPLED, batch_size=4)
    assert [ids_of(g) for g in first] == [ids_of(g) for g in again]
    other_seed = SamplingSettings(**{**SAMPLED.__dict__, "seed": 8})
    other = engine.generate(requests, other_seed, batch_size=4)
    assert [ids_of(g) for g in first] != [ids_of(g) for g in other]
    # every sampled token lies inside the top-k set of the raw distribution's ranking
    for g in first:
        assert all(t.logprob <= 0 for t in g.tokens)


@pytest.mark.parametrize(
    "settings",
    [
        # hot enough that a row's top-p candidate set often outgrows 256 tokens, so the
        # batched run takes wider candidate sets than a row alone would
        SamplingSettings(max_new_tokens=12, temperature=1.2, top_p=0.95, seed=3),
        SamplingSettings(max_new_tokens=12, temperature=1.0, top_k=20, seed=3),
    ],
    ids=["top_p", "top_k"],
)
def test_sampled_batched_equals_one_at_a_time(engine, settings):
    """Each row samples with its own generator, so its draws do not depend on its batch."""
    requests = requests_for()[:4]
    batched = engine.generate(requests, settings, batch_size=4)
    single = engine.generate(requests, settings, batch_size=1)
    assert [ids_of(g) for g in batched] == [ids_of(g) for g in single]


def test_sampler_distribution():
    from nova_eval_assets.engines.hf import _sample

    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    rows = 4000
    logits = probs.log().repeat(rows, 1)
    generators = [torch.Generator().manual_seed(i) for i in range(rows)]

    def frequencies(**options):
        settings = SamplingSettings(temperature=1.0, **options)
        picks = _sample(logits, settings, generators)
        return (torch.bincount(picks, minlength=4).float() / rows).tolist()

    expected = {
        (): [0.5, 0.3, 0.15, 0.05],
        (("top_p", 0.8),): [0.625, 0.375, 0.0, 0.0],  # 0.5 + 0.3 reach 0.8: the rest go
        (("top_k", 3),): [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0],
        (("top_k", 3), ("top_p", 0.6)): [0.5 / 0.8, 0.3 / 0.8, 0.0, 0.0],
    }
    for options, want in expected.items():
        got = frequencies(**dict(options))
        assert got == pytest.approx(want, abs=0.03), (options, got)


def test_row_seed_depends_on_seed_and_row():
    assert row_seed(1, 0) == row_seed(1, 0)
    assert len({row_seed(1, 0), row_seed(1, 1), row_seed(2, 0)}) == 3


# ----------------------------------------------------------------------------- failures


def test_out_of_memory_halves_the_batch(engine, greedy_single, monkeypatch):
    sizes = []
    original = engine._generate_batch

    def flaky(batch, settings):
        sizes.append(len(batch))
        if len(batch) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(batch, settings)

    monkeypatch.setattr(engine, "_generate_batch", flaky)
    outputs = engine.generate(requests_for()[:6], GREEDY, batch_size=6)
    assert sizes == [6, 3, 2, 1, 3, 2, 1]
    assert all(g.finish_reason != "error" for g in outputs)
    assert [g.text for g in outputs] == [g.text for g in greedy_single[:6]]


def test_out_of_memory_at_batch_size_one_marks_rows_as_errors(engine, monkeypatch):
    def always(batch, settings):
        raise MemoryError("no memory")

    monkeypatch.setattr(engine, "_generate_batch", always)
    outputs = engine.generate(requests_for()[:3], GREEDY, batch_size=2)
    assert [g.finish_reason for g in outputs] == ["error"] * 3
    assert all("out of memory" in g.error and g.tokens == [] and g.text == "" for g in outputs)


def test_other_errors_propagate(engine, monkeypatch):
    def broken(batch, settings):
        raise ValueError("a bug")

    monkeypatch.setattr(engine, "_generate_batch", broken)
    with pytest.raises(ValueError, match="a bug"):
        engine.generate(requests_for()[:2], GREEDY)


def test_is_out_of_memory():
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("CUDA out of memory."))
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_over_long_prompt_is_an_error_row_and_the_rest_continue(engine, greedy_single):
    long_prompt = "word " * (engine.max_context + 10)
    requests = [
        GenerationRequest(0, PROMPTS[0][0]),
        GenerationRequest(1, long_prompt),
        GenerationRequest(2, PROMPTS[1][0]),
    ]
    outputs = engine.generate(requests, GREEDY, batch_size=4)
    assert outputs[1].finish_reason == "error"
    assert "context" in outputs[1].error and str(engine.max_context) in outputs[1].error
    assert outputs[1].prompt_tokens > engine.max_context
    assert [outputs[0].text, outputs[2].text] == [greedy_single[0].text, greedy_single[1].text]


def test_empty_request_list(engine):
    assert engine.generate([], GREEDY) == []


def test_unknown_engine_names_the_allowed_ones():
    with pytest.raises(ValueError, match="allowed engines: ") as caught:
        create_engine("carrier-pigeon", MODEL)
    assert all(f"'{name}'" in str(caught.value) for name in ("bedrock", "hf", "vllm"))


def test_settings_validation():
    with pytest.raises(ValueError, match="top_logprobs"):
        SamplingSettings(top_logprobs=21)
    with pytest.raises(ValueError, match="top_p"):
        SamplingSettings(top_p=0)
    with pytest.raises(ValueError, match="top_k"):
        SamplingSettings(top_k=0)


# ----------------------------------------------------------------------------- models and cache


def test_resolve_bundled_gguf_and_folder(engine):
    bundled = resolve_model("SmolLM2-135M-Instruct")
    assert bundled.kind == "bundled" and bundled.path.name == BUNDLED_MODELS[MODEL][1]
    assert engine.model_id == bundled.model_id == f"sha256:{bundled.sha256}"
    as_file = resolve_model(str(bundled.path))
    assert as_file.kind == "gguf" and as_file.model_id == bundled.model_id
    folder = resolve_model(models_module.converted_dir(bundled))
    assert folder.kind == "hf" and len(folder.sha256) == 64


def test_resolve_errors(tmp_path):
    with pytest.raises(ModelResolutionError, match="downloads nothing at run time"):
        resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(ModelResolutionError, match="downloads nothing"):
        resolve_model("s3://bucket/model")
    with pytest.raises(ModelResolutionError, match=r"without config\.json"):
        resolve_model(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelResolutionError, match=r"not a \.gguf file"):
        resolve_model(tmp_path / "weights.bin")
    with pytest.raises(ModelResolutionError, match="empty"):
        resolve_model("  ")
    with pytest.raises(ValueError, match="bundled model name"):  # it is a ValueError
        resolve_model(tmp_path / "missing")


def test_cached_second_load_is_fast(engine, capsys):
    started = time.perf_counter()
    again = HFEngine(MODEL)
    seconds = time.perf_counter() - started
    with capsys.disabled():
        print(f"\n[engine] second load from the conversion cache: {seconds:.2f} s")
    assert again.model_id == engine.model_id
    assert again.chat_template == "own"  # the GGUF carries SmolLM2's template
    assert seconds < 15  # about 3 s on 2 cores; loose for noisy CI machines
    marker = json.loads(
        (models_module.converted_dir(engine.resolved) / "nova_eval_conversion.json").read_text()
    )
    assert marker["sha256"] == engine.resolved.sha256


def fake_resolved(tmp_path):
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF")
    return models_module.ResolvedModel("fake", "gguf", gguf, "ab" * 32)


def test_conversion_is_atomic(tmp_path, monkeypatch):
    monkeypatch.setenv(models_module.CACHE_ENV, str(tmp_path / "cache"))
    resolved = fake_resolved(tmp_path)
    final = models_module.converted_dir(resolved)
    calls = []

    def killed(resolved, out):
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(models_module, "_convert_into", killed)
    with pytest.raises(KeyboardInterrupt):
        models_module.convert_gguf(resolved)
    assert not final.exists()
    assert not list(final.parent.glob("*.tmp-*"))

    # a remnant of a SIGKILLed conversion and a half folder are both cleaned up
    (final.parent / f".{final.name}.tmp-stale").mkdir()
    final.mkdir()
    (final / "config.json").write_text("{}")

    def works(resolved, out):
        calls.append(out)
        (out / "config.json").write_text("{}")
        return "own"

    monkeypatch.setattr(models_module, "_convert_into", works)
    assert models_module.convert_gguf(resolved) == final
    assert models_module.convert_gguf(resolved) == final  # cached: not converted again
    assert len(calls) == 1
    assert (final / "config.json").read_text() == "{}"
    assert json.loads((final / "nova_eval_conversion.json").read_text())["chat_template"] == "own"
    assert sorted(p.name for p in final.parent.iterdir() if ".tmp-" in p.name) == []


class FakeTokenizer:
    def __init__(self, vocab):
        self.chat_template = None
        self.vocab = vocab

    def get_vocab(self):
        return self.vocab


def test_chat_template_fallback():
    chatml = FakeTokenizer({"<|im_start|>": 1, "<|im_end|>": 2})
    assert models_module.ensure_chat_template(chatml) == "chatml"
    assert chatml.chat_template == models_module.CHATML_TEMPLATE
    assert models_module.ensure_chat_template(FakeTokenizer({"a": 0})) == "none"


def test_chatml_fallback_matches_the_gguf_template(engine):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    own = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    saved = engine.tokenizer.chat_template
    try:
        engine.tokenizer.chat_template = models_module.CHATML_TEMPLATE
        fallback = engine.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        no_system = engine.tokenizer.apply_chat_template(
            messages[1:], add_generation_prompt=True, tokenize=False
        )
    finally:
        engine.tokenizer.chat_template = saved
    expected = (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    )
    assert fallback == own == expected
    assert no_system.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


# ----------------------------------------------------------------------------- fast decoder


def test_bundled_model_runs_through_the_fast_decoder(engine):
    info = engine.runtime()
    assert info["decoder"] == "fast" and info["dtype"] == "float32" and info["device"] == "cpu"


def outputs_without_the_fast_decoder(engine, monkeypatch, settings, batch_size=4):
    monkeypatch.setattr(engine, "decoder", None)  # the transformers forward, DynamicCache
    try:
        return engine.generate(requests_for(), settings, batch_size=batch_size)
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("which", ["greedy", "sampled"])
def test_fast_decoder_matches_the_transformers_forward(engine, greedy_batched, monkeypatch, which):
    settings = GREEDY if which == "greedy" else SAMPLED
    fast = greedy_batched if which == "greedy" else engine.generate(requests_for(), SAMPLED, 4)
    plain = outputs_without_the_fast_decoder(engine, monkeypatch, settings)
    assert [ids_of(g) for g in fast] == [ids_of(g) for g in plain]
    assert [g.finish_reason for g in fast] == [g.finish_reason for g in plain]
    worst = max(
        abs(x.logprob - y.logprob)
        for a, b in zip(fast, plain, strict=True)
        for x, y in zip(a.tokens, b.tokens, strict=True)
    )
    assert worst < 1e-4, worst
    tops = [[token for token, _ in x.top] for g in fast for x in g.tokens]
    assert tops == [[token for token, _ in x.top] for g in plain for x in g.tokens]


def test_cache_growth_compaction_and_prefill_chunks_do_not_change_outputs(
    engine, greedy_batched, monkeypatch
):
    """A tiny cache step (the cache grows several times), dropping each finished row at once
    and 3-column prefill chunks (rows skip the chunks that are all their padding)."""
    monkeypatch.setattr(hf_module, "CACHE_STEP", 3)
    monkeypatch.setattr(hf_module, "COMPACT_DIVISOR", 1000)
    monkeypatch.setattr(hf_module, "PREFILL_CHUNK", 3)
    small = engine.generate(requests_for(), GREEDY, batch_size=4)
    assert [ids_of(g) for g in small] == [ids_of(g) for g in greedy_batched]
    worst = max(
        abs(x.logprob - y.logprob)
        for a, b in zip(small, greedy_batched, strict=True)
        for x, y in zip(a.tokens, b.tokens, strict=True)
    )
    assert worst < 1e-4, worst


def test_dtype_option():
    assert hf_module.resolve_dtype("auto", "cpu") == torch.float32
    assert hf_module.resolve_dtype(None, "cuda") == torch.bfloat16
    assert hf_module.resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="float32, bfloat16"):
        hf_module.resolve_dtype("float8", "cpu")


def test_bfloat16_engine(engine):
    bf16 = create_engine("hf", MODEL, dtype="bfloat16")
    assert bf16.model.dtype == torch.bfloat16
    assert bf16.runtime()["dtype"] == "bfloat16" and bf16.runtime()["decoder"] == "fast"
    outputs = bf16.generate(requests_for(), GREEDY, batch_size=4)
    for g in outputs:
        assert g.finish_reason in ("stop", "length") and g.tokens
        for t in g.tokens:
            assert t.top[0] == (t.token, t.logprob)  # ties ordered by id: argmax's choice
            values = [v for _, v in t.top]
            assert values == sorted(values, reverse=True) and all(v <= 0 for v in values)
    # bfloat16 rounds, so texts may drift from float32 late in an answer, not at once
    full = engine.generate(requests_for(), GREEDY, batch_size=4)
    first = [ids_of(g)[:1] for g in outputs]
    assert sum(a == ids_of(b)[:1] for a, b in zip(first, full, strict=True)) >= 8
