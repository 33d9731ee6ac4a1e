"""inference.response_format in the hf engine: every output valid under its format, and the
per-token log probabilities checked against a plain transformers forward.

The property tests run a tiny random-weight model (tests/tiny_model.py): random weights
wander anywhere the constraint allows, which is what a validity test wants. Both decode
paths run: the lean decoder (Qwen3 is of the Llama family) and the transformers forward.
"""

from __future__ import annotations

import json
import math
import re

import jsonschema
import pytest

from nova_eval_assets.engines import create_engine
from nova_eval_assets.engines.base import GenerationRequest, SamplingSettings
from nova_eval_assets.engines.constraints import (
    ResponseFormat,
    ResponseFormatError,
    classification_schema,
    compile_error,
)
from tests.tiny_model import PLAIN_TEMPLATE, build_tiny_model

torch = pytest.importorskip("torch")

LABELS = ["hardware", "hardware_urgent", "software", "software_urgent", "network"]


def short_classification_schema() -> dict:
    """The classification shorthand's schema with its text fields cut to 16 characters: a
    random model writes them to the bound in bytes of a 400-token vocabulary."""
    schema = classification_schema("class", LABELS)
    for name in ("thought", "description"):
        schema["properties"][name]["maxLength"] = 16
    return schema


SCHEMAS = {
    "classification": short_classification_schema(),
    "bounded": {
        "type": "object",
        "properties": {
            "priority": {"type": "integer", "minimum": 1, "maximum": 5},
            "team": {"enum": ["desk", "network", "security"]},
            "summary": {"type": "string", "maxLength": 12},
            "urgent": {"type": "boolean"},
        },
        "required": ["priority", "team", "summary", "urgent"],
        "additionalProperties": False,
    },
    "list": {
        "type": "array",
        "items": {"enum": ["a", "bb", "printer"]},
        "minItems": 1,
        "maxItems": 3,
    },
}
PATTERN = r"[A-Z]{2}-[0-9]{3}( \((low|high)\))?"
CHOICES = ["yes", "no", "not sure"]


def formats() -> dict[str, ResponseFormat]:
    built = {name: ResponseFormat.json_schema(s) for name, s in SCHEMAS.items()}
    built["regex"] = ResponseFormat.regex(PATTERN)
    built["choice"] = ResponseFormat.choice(CHOICES)
    return built


def is_valid(name: str, text: str) -> bool:
    if name == "regex":
        return re.fullmatch(PATTERN, text) is not None
    if name == "choice":
        return text in CHOICES
    try:
        jsonschema.validate(json.loads(text), SCHEMAS[name])
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return False
    return True


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return build_tiny_model(
        tmp_path_factory.mktemp("constrained") / "model",
        chat_template=PLAIN_TEMPLATE,
        max_position_embeddings=512,
    )


@pytest.fixture(scope="module", params=["fast", "transformers"])
def engine(request, tiny_folder):
    return create_engine(
        "hf", str(tiny_folder), default_batch_size=4, fast_decoder=request.param == "fast"
    )


REQUESTS = [
    GenerationRequest(row_index=i, prompt=p, system="Answer in the format asked.")
    for i, p in enumerate(
        [
            "The printer is out of toner.",
            "Reset my password",
            "What is two plus two?",
            "x",
            "The laptop does not start after the update, and the meeting is at noon.",
            "Paris",
            "Think step by step.",
            "network down on floor three",
            "?",
            "The answer is 4.",
        ]
    )
]


@pytest.mark.parametrize("name", list(formats()))
def test_every_output_is_valid_under_its_format(engine, name):
    response_format = formats()[name]
    for seed, temperature in [(1, 0.0), (2, 1.0), (3, 1.0), (4, 1.5)]:
        settings = SamplingSettings(
            max_new_tokens=200,
            temperature=temperature,
            seed=seed,
            top_logprobs=2,
            response_format=response_format,
        )
        for generation in engine.generate(REQUESTS, settings):
            assert generation.finish_reason == "stop", (name, seed, generation.text)
            assert is_valid(name, generation.text), (name, seed, generation.text)
            for token in generation.tokens:
                # renormalizing over a subset of the vocabulary can only raise a probability
                assert token.logprob <= token.constrained_logprob + 1e-5 <= 1e-5
                assert isinstance(token.forced, bool)
                if temperature == 0.0 and not token.forced:
                    # greedy and the model's top token allowed: it is the one chosen
                    assert token.top[0][0] == token.token


def test_unconstrained_tokens_carry_no_constraint_fields(engine):
    settings = SamplingSettings(max_new_tokens=6)
    for generation in engine.generate(REQUESTS[:3], settings):
        assert all(t.constrained_logprob is None and t.forced is None for t in generation.tokens)


def test_constrained_logprobs_match_a_plain_forward(tiny_folder):
    """For a `choice` format, the tokens allowed at a step where the choices still open
    diverge at once are those whose text continues one of them (and the end token where
    the text so far is a choice): worked out here from the vocabulary alone, the log
    probabilities from the model's own forward over prompt + generated tokens, without
    cache or engine. (Where the choices left force the next bytes, llguidance allows only
    their canonical tokenization, so those steps are checked for the raw value only.)"""
    from transformers import AutoModelForCausalLM

    engine = create_engine("hf", str(tiny_folder), default_batch_size=1)
    choices = ["print", "printer", "reset", "four"]
    model = AutoModelForCausalLM.from_pretrained(tiny_folder, dtype=torch.float32).eval()
    vocab = engine.tokenizer.convert_ids_to_tokens(list(range(model.config.vocab_size)))
    pieces = [engine.tokenizer.convert_tokens_to_string([t]) if t else "" for t in vocab]
    end = engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    special = set(engine.tokenizer.all_special_ids)
    checked = 0
    for seed in range(6):
        settings = SamplingSettings(
            max_new_tokens=20,
            temperature=1.0,
            seed=seed,
            response_format=ResponseFormat.choice(choices),
        )
        request = REQUESTS[seed]
        (generation,) = engine.generate([request], settings)
        assert generation.text in choices
        prompt = engine.encode([request])[0]
        ids = [t.token_id for t in generation.tokens]
        with torch.no_grad():
            logits = model(torch.tensor([prompt + ids + [end]])).logits[0].float()
        written = ""
        for j, token in enumerate(generation.tokens):
            row = logits[len(prompt) + j - 1]
            raw = row[token.token_id] - torch.logsumexp(row, dim=0)
            assert token.logprob == pytest.approx(float(raw), abs=1e-4)
            open_choices = [c for c in choices if c.startswith(written)]
            next_chars = {c[len(written) : len(written) + 1] for c in open_choices}
            if len(next_chars) >= 2:
                allowed = [
                    i
                    for i, piece in enumerate(pieces)
                    if piece
                    and i not in special
                    and any(c.startswith(written + piece) for c in open_choices)
                ]
                if written in choices:
                    allowed.extend(engine.stop_ids)  # every end-of-turn token
                expected = row[token.token_id] - torch.logsumexp(row[allowed], dim=0)
                assert token.constrained_logprob == pytest.approx(float(expected), abs=1e-4)
                assert token.forced == (int(row.argmax()) not in allowed)
                checked += 1
            written += token.token
    assert checked >= 6


def test_finished_choice_allows_only_the_end_token(tiny_folder):
    engine = create_engine("hf", str(tiny_folder), default_batch_size=2)
    settings = SamplingSettings(
        max_new_tokens=30, temperature=1.0, seed=3, response_format=ResponseFormat.choice(["x"])
    )
    for generation in engine.generate(REQUESTS[:4], settings):
        assert generation.text == "x" and generation.finish_reason == "stop"
        assert math.isclose(
            sum(t.constrained_logprob for t in generation.tokens), 0.0, abs_tol=1e-5
        )


def test_a_format_the_library_cannot_compile_is_refused_with_its_message(tiny_folder):
    assert "unclosed group" in compile_error(ResponseFormat.regex("a(b"))
    assert "objectx" in compile_error(ResponseFormat.json_schema({"type": "objectx"}))
    assert compile_error(ResponseFormat.json_schema(SCHEMAS["bounded"])) is None
    engine = create_engine("hf", str(tiny_folder), default_batch_size=2)
    settings = SamplingSettings(response_format=ResponseFormat.regex("a(b"))
    with pytest.raises(ResponseFormatError, match="unclosed group"):
        engine.generate(REQUESTS[:1], settings)
