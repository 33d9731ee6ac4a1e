"""`nova-eval validate` reports every problem at once: the dataset's line problems, then each
check of the recipe against its model, one line each; and it warns when a constrained answer
(inference.response_format) cannot fit in inference.max_new_tokens."""

from __future__ import annotations

import io
import json
import sys

import pytest

from nova_eval_assets import cli
from nova_eval_assets.engines.constraints import ResponseFormat
from nova_eval_assets.engines.constraints_budget import answer_bounds, character_counter
from nova_eval_assets.engines.reasoning import not_supported
from tests.conftest import PROJECT
from tests.orchestration_support import edit_recipe
from tests.tiny_model import image_uri

BROKEN_IMAGE = "data:image/png;base64,!!!"
LABELS = ["hardware", "hardware_urgent", "software", "software_urgent"]


def picture_rows() -> list[str]:
    """Line 1 has a good image, line 2 a broken one (rejected), line 3 no image."""
    return [
        json.dumps({"query": "What is in it?", "response": "a square", "images": [{"data": d}]})
        for d in (image_uri(seed=1), BROKEN_IMAGE)
    ] + [json.dumps({"query": "Two and two?", "response": "four"})]


def validate(recipe) -> tuple[int, str]:
    """Exit code and stdout + stderr as one stream, in the order written (`recipe`: a
    LoadedRecipe or a path)."""
    stream = io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = stream
    try:
        code = cli.main(["validate", str(getattr(recipe, "path", recipe))])
    finally:
        sys.stdout, sys.stderr = saved
    return code, stream.getvalue()


def key_line(loaded, key: str) -> str:
    """``file:line`` of the first line of the recipe file that writes ``key:``."""
    lines = loaded.path.read_text().splitlines()
    number = next(i for i, text in enumerate(lines, 1) if text.strip().startswith(f"{key}:"))
    return f"{loaded.path}:{number}"


def the_line(output: str, fragment: str) -> tuple[int, str]:
    """(index, text) of the one output line holding `fragment`."""
    found = [(i, line) for i, line in enumerate(output.splitlines()) if fragment in line]
    assert len(found) == 1, output
    return found[0]


def test_every_problem_is_reported_at_once_dataset_first(make_recipe):
    loaded = make_recipe(picture_rows(), name="pictures", inference={"reasoning_effort": "low"})
    loaded = edit_recipe(
        loaded,
        processor={"handler": "missing.py:handler", "postprocessing": {"enabled": True}},
    )
    code, out = validate(loaded)
    assert code == 2
    assert out.endswith("\n")
    dataset, _ = the_line(out, "line 2, field 'images[0]': not base64")
    vision, vision_text = the_line(out, "has no vision")
    reasoning, reasoning_text = the_line(out, "Reasoning mode is enabled")
    handler, handler_text = the_line(out, "processor.handler: file not found")
    assert dataset < min(vision, reasoning, handler)
    # each names the recipe file and the line of the key concerned, the message kept whole
    assert vision_text.startswith(f"{key_line(loaded, 'model_name_or_path')}: model ")
    assert "1 row has images" in vision_text  # line 1; line 2 was rejected
    expected = f"{key_line(loaded, 'reasoning_effort')}: {not_supported('smollm2-135m-instruct')}"
    assert reasoning_text == expected
    assert handler_text.startswith(f"{key_line(loaded, 'handler')}: processor.handler")
    assert "is valid" not in out


def test_an_unreadable_dataset_does_not_hide_the_model_checks(make_recipe, tmp_path):
    loaded = make_recipe(name="gone", inference={"reasoning_effort": "high"})
    (tmp_path / "gone.jsonl").unlink()
    code, out = validate(loaded)
    assert code == 2
    missing, _ = the_line(out, "gone.jsonl: dataset file not found")
    reasoning, _ = the_line(out, "Reasoning mode is enabled")
    assert missing < reasoning


def test_a_model_that_does_not_resolve_is_one_problem(make_recipe, tmp_path):
    loaded = make_recipe(picture_rows(), name="nomodel", inference={"reasoning_effort": "low"})
    missing_model = tmp_path / "no-such-model"
    loaded = edit_recipe(loaded, run={"model_name_or_path": str(missing_model)})
    code, out = validate(loaded)
    assert code == 2
    _, text = the_line(out, str(missing_model))  # reasoning and vision both needed it
    assert text.startswith(f"{key_line(loaded, 'model_name_or_path')}: ")


def test_invalid_rows_alone_exit_1_and_the_recipe_is_valid(make_recipe):
    loaded = make_recipe(picture_rows()[1:], name="rows")  # the broken image, a text row
    loaded = edit_recipe(loaded, run={"model_name_or_path": "smollm2-135m-instruct"})
    code, out = validate(loaded)
    assert code == 1
    assert "recipe 'rows' is valid" in out and "line 1, field 'images[0]'" in out


# ---------------------------------------------------------------- response_format vs max_new_tokens

ANSWERS = ["no", "yes", "it depends on the weather"]
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"enum": ANSWERS}},
    "required": ["answer"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    """The bundled model's tokenizer, read from its GGUF file with transformers."""
    from transformers import AutoTokenizer

    from nova_eval_assets.engines.models import resolve_model

    gguf = resolve_model("smollm2-135m-instruct").path
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def answer_tokens(tokenizer) -> dict[str, int]:
    """Tokens of each valid answer, written as the engines write JSON."""
    return {
        a: len(tokenizer.encode(f'{{"answer": "{a}"}}', add_special_tokens=False)) for a in ANSWERS
    }


def schema_recipe(make_recipe, max_new_tokens: int, **inference):
    fmt = {"type": "json_schema", "schema": ANSWER_SCHEMA}
    inference = {"max_new_tokens": max_new_tokens, "response_format": fmt, **inference}
    return make_recipe(name="answers", inference=inference)


def test_a_schema_whose_longest_answer_does_not_fit_is_a_warning(make_recipe, smollm2_tokenizer):
    tokens = answer_tokens(smollm2_tokenizer)
    longest = max(tokens.values())
    assert longest == tokens["it depends on the weather"] > tokens["yes"]
    loaded = schema_recipe(make_recipe, longest - 1)
    code, out = validate(loaded)
    assert code == 0, out  # a warning: the run can go on
    _, warning = the_line(out, "warning:")
    assert warning.startswith(f"{key_line(loaded, 'response_format')}: warning: ")
    assert f"the longest valid answer needs {longest} tokens" in warning
    assert f"inference.max_new_tokens is {longest - 1}" in warning
    assert "counted with the tokenizer of smollm2-135m-instruct" in warning
    assert "free text" not in warning  # every value is fixed: nothing estimated

    code, out = validate(schema_recipe(make_recipe, longest))
    assert code == 0 and "warning" not in out, out


def test_a_schema_whose_shortest_answer_does_not_fit_is_a_warning(make_recipe, smollm2_tokenizer):
    tokens = answer_tokens(smollm2_tokenizer)
    shortest = min(tokens.values())
    code, out = validate(schema_recipe(make_recipe, shortest - 1))
    assert code == 0, out
    _, warning = the_line(out, "warning:")
    assert f"even the shortest valid answer needs {shortest} tokens" in warning
    assert f"inference.max_new_tokens is {shortest - 1}: every answer is cut" in warning
    assert f"the longest needs {max(tokens.values())} tokens" in warning


def test_the_classification_shorthand_at_48_tokens_is_a_warning(make_recipe):
    loaded = make_recipe(name="tickets", inference={"max_new_tokens": 48})
    loaded = edit_recipe(
        loaded,
        inference={"response_format": {"type": "classification"}},
        classification={"label_field": "class", "labels": LABELS},
    )
    code, out = validate(loaded)
    assert code == 0, out
    _, warning = the_line(out, "warning:")
    need = int(warning.split("the longest valid answer needs ")[1].split(" tokens")[0])
    # thought (200) and description (100) characters, each a token, plus the JSON and the
    # label: within the 340 the shipped recipe gives it
    assert 300 < need <= 340
    assert "inference.max_new_tokens is 48" in warning
    assert "each of its 300 characters of free text as one token" in warning


def test_the_shipped_constrained_recipe_fits():
    code, out = validate(PROJECT / "recipes" / "support_tickets_constrained.yaml")
    assert code == 0, out
    assert "warning" not in out


def test_a_served_model_is_estimated_from_characters(make_recipe):
    choice = {"type": "choice", "choices": ["yes", "no, never"]}
    inference = {
        "engine": "openai",
        "endpoint": "http://127.0.0.1:9",
        "max_new_tokens": 3,
        "response_format": choice,
    }
    code, out = validate(make_recipe(name="served", inference=inference))
    assert code == 0, out
    _, warning = the_line(out, "warning:")
    assert "the longest valid answer needs up to 9 tokens" in warning  # len("no, never")
    assert "inference.max_new_tokens is 3" in warning
    assert "estimated from its characters" in warning and "tokenizer is not read" in warning


# ---------------------------------------------------------------- the instances themselves

MIXED = {
    "type": "object",
    "properties": {
        "n": {"type": "integer", "minimum": -5, "maximum": 100},
        "ok": {"type": "boolean"},
        "tags": {"type": "array", "items": {"enum": ["a", "bcd"]}, "maxItems": 2},
        "note": {"type": "string", "maxLength": 7},
    },
    "required": ["n", "ok"],
    "additionalProperties": False,
}
MIXED_LONGEST = '{"n": 100, "ok": false, "tags": ["bcd", "bcd"], "note": "xxxxxxx"}'
MIXED_SHORTEST = '{"n": 0, "ok": true}'


def accepts(response_format: ResponseFormat, text: str) -> bool:
    """Whether the engines' constraint (llguidance) takes `text` as a whole answer."""
    from llguidance import LLMatcher, LLTokenizer

    tokenizer = LLTokenizer("byte")
    matcher = LLMatcher(tokenizer, response_format.grammar())
    return matcher.consume_tokens(tokenizer.tokenize_str(text)) and matcher.is_accepting()


def test_longest_and_shortest_instances_of_a_schema():
    fmt = ResponseFormat.json_schema(MIXED)
    counter = character_counter()
    longest, shortest = answer_bounds(fmt, counter)
    assert longest.text(full=True) == MIXED_LONGEST
    assert shortest.text(full=True) == MIXED_SHORTEST
    assert counter.most(longest) == len(MIXED_LONGEST) == 66
    assert accepts(fmt, MIXED_LONGEST) and accepts(fmt, MIXED_SHORTEST)
    # nothing longer is valid: one more character, one more item
    assert not accepts(fmt, MIXED_LONGEST.replace('"xxxxxxx"', '"xxxxxxxx"'))
    assert not accepts(fmt, MIXED_LONGEST.replace('"bcd"]', '"bcd", "a"]'))


@pytest.mark.parametrize(
    "change",
    [
        {"note": {"type": "string"}},  # no maxLength
        {"tags": {"type": "array", "items": {"enum": ["a"]}}},  # no maxItems
        {"n": {"type": "integer", "minimum": 0}},  # no maximum
        {"ratio": {"type": "number", "minimum": 0, "maximum": 1}},  # decimals
    ],
)
def test_an_unbounded_part_leaves_only_the_shortest(change):
    schema = {**MIXED, "properties": {**MIXED["properties"], **change}}
    longest, shortest = answer_bounds(ResponseFormat.json_schema(schema), character_counter())
    assert longest is None
    assert shortest.text(full=True) == MIXED_SHORTEST


def test_an_object_open_to_other_properties_has_no_longest():
    schema = {k: v for k, v in MIXED.items() if k != "additionalProperties"}
    fmt = ResponseFormat.json_schema(schema)
    assert accepts(fmt, '{"n": 1, "ok": true, "other": "' + "y" * 500 + '"}')
    longest, shortest = answer_bounds(fmt, character_counter())
    assert longest is None and shortest.text(full=True) == MIXED_SHORTEST


def test_refs_and_alternatives():
    schema = {
        "$defs": {"word": {"enum": ["hi", "hello"]}},
        "type": "object",
        "properties": {
            "w": {"$ref": "#/$defs/word"},
            "v": {"anyOf": [{"const": 7}, {"type": "null"}]},
        },
        "required": ["w", "v"],
        "additionalProperties": False,
    }
    fmt = ResponseFormat.json_schema(schema)
    longest, shortest = answer_bounds(fmt, character_counter())
    assert longest.text(full=True) == '{"w": "hello", "v": null}'
    assert shortest.text(full=True) == '{"w": "hi", "v": 7}'
    assert accepts(fmt, longest.text(full=True)) and accepts(fmt, shortest.text(full=True))
