"""The hf engine with a vision-language model (engines/vision.py): a tiny random LLaVA
(tests/tiny_model.py) loaded by the real loading code, its log probabilities checked
against a plain forward of the model, and text-only models refusing rows with images
before they generate anything."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
import torch

from nova_eval_assets.engines import GenerationRequest, SamplingSettings, create_engine
from nova_eval_assets.engines.constraints import ResponseFormat
from nova_eval_assets.engines.vision import (
    VisionError,
    check_engine_requests,
    model_vision_problem,
    no_vision_message,
)
from tests.tiny_model import build_tiny_model, build_tiny_vlm, image_uri

ATOL = 1e-4


@pytest.fixture(scope="module")
def vlm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("vlm") / "model")


@pytest.fixture(scope="module")
def vlm(vlm_folder: Path):
    return create_engine("hf", str(vlm_folder))


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("text") / "model")


@pytest.fixture(scope="module")
def reference(vlm_folder: Path):
    """The model and processor loaded on their own, for forwards independent of the engine."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(vlm_folder, dtype=torch.float32)
    return model.eval(), AutoProcessor.from_pretrained(vlm_folder)


def pil(uri: str):
    from PIL import Image

    data = uri.partition(";base64,")[2]
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def reference_logprobs(reference, request: GenerationRequest, generated: list[int]):
    """Prompt length and per-step log-softmax rows of one forward over prompt + generated."""
    model, processor = reference
    content = [{"type": "image"} for _ in request.images]
    content.append({"type": "text", "text": request.prompt})
    messages = []
    if request.system is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": request.system}]})
    messages.append({"role": "user", "content": content})
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    kwargs = {"text": [text], "return_tensors": "pt", "add_special_tokens": False}
    if request.images:
        kwargs["images"] = [[pil(uri) for uri in request.images]]
    inputs = processor(**kwargs)
    prompt = inputs["input_ids"]
    full = torch.cat([prompt, torch.tensor([generated], dtype=torch.long)], dim=1)
    forward = {"input_ids": full, "attention_mask": torch.ones_like(full)}
    if request.images:
        forward["pixel_values"] = inputs["pixel_values"]
    with torch.no_grad():
        logits = model(**forward).logits[0].float()
    length = prompt.shape[1]
    steps = logits[length - 1 : length - 1 + len(generated) + 1]
    return length, torch.log_softmax(steps, dim=-1)


ROWS = [
    GenerationRequest(0, "What is in the picture?", "Answer briefly.", (image_uri(),)),
    GenerationRequest(1, "Two plus two is?"),
    GenerationRequest(2, "Compare them.", None, (image_uri(20, 12, 1), image_uri(30, 30, 2))),
]


# ---------------------------------------------------------------- a vision-language model


def test_vlm_loads_through_the_engine(vlm):
    from transformers import LlavaForConditionalGeneration

    assert vlm.vision
    assert isinstance(vlm.model, LlavaForConditionalGeneration)
    assert vlm.runtime()["decoder"] == "vision"
    assert vlm.chat_template == "own"
    assert vlm.decoder is None


def test_logprobs_match_a_plain_forward(vlm, reference):
    settings = SamplingSettings(max_new_tokens=6, top_logprobs=5)
    generations = vlm.generate(ROWS, settings)
    for request, generation in zip(ROWS, generations, strict=True):
        ids = [t.token_id for t in generation.tokens]
        assert generation.row_index == request.row_index
        assert generation.finish_reason == "length" and len(ids) == 6
        assert generation.completion_tokens == 6 and generation.max_new_tokens == 6
        assert generation.text == vlm.tokenizer.decode(ids, skip_special_tokens=False)
        length, logprobs = reference_logprobs(reference, request, ids)
        assert generation.prompt_tokens == length
        assert len(vlm.encode([request])[0]) == length
        for step, token in enumerate(generation.tokens):
            row = logprobs[step]
            assert token.token_id == int(row.argmax())  # greedy
            assert token.logprob == pytest.approx(float(row[token.token_id]), abs=ATOL)
            values, indices = row.topk(5)
            assert [p for p, _ in token.top] == [vlm.piece(int(i)) for i in indices]
            assert [v for _, v in token.top] == pytest.approx(values.tolist(), abs=ATOL)
    # the images count: the image rows' prompts hold their patches (4 per 16x16 image)
    text_only = vlm.encode([GenerationRequest(0, "Compare them.")])[0]
    assert generations[2].prompt_tokens == len(text_only) + 2 * 4


def test_images_change_the_distribution(vlm):
    settings = SamplingSettings(max_new_tokens=1, top_logprobs=3)
    one, other = vlm.generate(
        [
            GenerationRequest(0, "What is it?", None, (image_uri(seed=5),)),
            GenerationRequest(1, "What is it?", None, (image_uri(seed=6),)),
        ],
        settings,
    )
    assert one.tokens[0].top != other.tokens[0].top


def test_batches_match_single_rows(vlm):
    settings = SamplingSettings(max_new_tokens=5, top_logprobs=2)
    batched = vlm.generate(ROWS, settings, batch_size=4)
    single = vlm.generate(ROWS, settings, batch_size=1)
    for a, b in zip(batched, single, strict=True):
        assert [t.token_id for t in a.tokens] == [t.token_id for t in b.tokens]
        assert [t.logprob for t in a.tokens] == pytest.approx(
            [t.logprob for t in b.tokens], abs=ATOL
        )
        assert a.prompt_tokens == b.prompt_tokens


def test_sampling_is_reproducible_and_stop_tokens_end_a_row(vlm):
    settings = SamplingSettings(max_new_tokens=8, temperature=1.0, seed=7)
    request = [GenerationRequest(3, "Describe it.", None, (image_uri(seed=3),))]
    first = vlm.generate(request, settings)[0]
    again = vlm.generate(request, settings)[0]
    ids = [t.token_id for t in first.tokens]
    assert ids == [t.token_id for t in again.tokens]
    assert len(set(ids)) > 1  # sampled, not the greedy repeat
    stop = ids[3]
    cut = ids.index(stop)
    saved = set(vlm.stop_ids)
    vlm.stop_ids.add(stop)
    try:
        stopped = vlm.generate(request, settings)[0]
    finally:
        vlm.stop_ids.clear()
        vlm.stop_ids.update(saved)
    assert stopped.finish_reason == "stop"
    assert [t.token_id for t in stopped.tokens] == ids[:cut]  # the stop token is not kept
    assert stopped.completion_tokens == cut


def test_response_format_constrains_the_vision_path(vlm):
    settings = SamplingSettings(
        max_new_tokens=6, top_logprobs=2, response_format=ResponseFormat.choice(["yes", "no"])
    )
    generations = vlm.generate(ROWS[:2], settings)
    for generation in generations:
        assert generation.text in ("yes", "no")
        assert generation.finish_reason == "stop"
        assert all(t.constrained_logprob is not None for t in generation.tokens)


def test_a_text_row_through_the_vlm_matches_a_plain_forward(vlm, reference):
    request = GenerationRequest(9, "The printer on floor three is")
    generation = vlm.generate([request], SamplingSettings(max_new_tokens=4))[0]
    ids = [t.token_id for t in generation.tokens]
    length, logprobs = reference_logprobs(reference, request, ids)
    assert generation.prompt_tokens == length
    for step, token in enumerate(generation.tokens):
        assert token.logprob == pytest.approx(float(logprobs[step][token.token_id]), abs=ATOL)


def test_a_vlm_without_chat_template_refuses_image_rows(tmp_path: Path):
    engine = create_engine("hf", str(build_tiny_vlm(tmp_path / "vlm", chat_template=None)))
    assert engine.vision and engine.chat_template != "own"
    text = engine.generate([GenerationRequest(0, "Hello")], SamplingSettings(max_new_tokens=2))
    assert text[0].completion_tokens == 2
    with pytest.raises(VisionError, match="has no chat template to place images"):
        engine.generate(ROWS, SamplingSettings(max_new_tokens=2))


def test_validate_sees_a_vlm(vlm_folder: Path):
    assert model_vision_problem(str(vlm_folder), 5) is None


# ---------------------------------------------------------------- text-only models


def test_a_text_only_model_refuses_image_rows_before_generating(text_folder, monkeypatch):
    engine = create_engine("hf", str(text_folder))
    assert not engine.vision and engine.runtime()["decoder"] != "vision"

    def no_generation(*args, **kwargs):
        raise AssertionError("generated a batch")

    monkeypatch.setattr(engine, "_generate_batch", no_generation)
    rows = [GenerationRequest(0, "text only"), *ROWS]  # 2 of ROWS have images
    rows.append(GenerationRequest(5, "one more", None, (image_uri(),)))
    expected = (
        f"model {text_folder} has no vision (a text-only Qwen3ForCausalLM); 3 rows have "
        "images: use a vision-language model (e.g. Qwen2-VL, Idefics3, SmolVLM)"
    )
    batches = []
    with pytest.raises(VisionError) as raised:
        engine.generate(rows, SamplingSettings(max_new_tokens=2), on_batch=batches.append)
    assert str(raised.value) == expected
    assert batches == []
    with pytest.raises(VisionError, match="3 rows have images"):
        check_engine_requests(engine, rows)
    # validate says the same from the model's config alone
    assert model_vision_problem(str(text_folder), 3) == expected
    assert model_vision_problem(str(text_folder), 0) is None


def test_one_row_is_singular():
    message = no_vision_message("m", "LlamaForCausalLM", 1)
    assert "; 1 row has images:" in message


def test_engines_without_a_check_are_left_to_answer():
    class Remote:
        name = "remote"

    check_engine_requests(Remote(), ROWS)  # no check_requests: the server decides


def test_the_bundled_text_model_has_no_vision():
    pytest.importorskip("gguf")
    from nova_eval_assets.engines.models import ModelResolutionError

    try:
        problem = model_vision_problem("smollm2-135m-instruct", 2)
    except ModelResolutionError:
        pytest.skip("the bundled model is not installed")
    assert problem is not None
    assert problem.startswith("model smollm2-135m-instruct has no vision (a text-only ")
    assert "2 rows have images: use a vision-language model" in problem
