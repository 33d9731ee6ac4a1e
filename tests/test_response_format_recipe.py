"""inference.response_format in a recipe: each type's keys, the classification shorthand, and
a format the grammar library cannot compile refused at load time with its message."""

from __future__ import annotations

import json

import pytest

from nova_eval_assets.recipe import RecipeError, parse_recipe
from tests.test_recipe import VALID

CLASSIFICATION = """\
classification:
  label_field: class
  labels: [hardware, software, network]
"""


def recipe_with(block: str, extra: str = "", engine: str = "") -> str:
    text = VALID + engine + block + extra
    return text


def error_for(text: str) -> str:
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, source="r.yaml")
    return str(info.value)


def test_the_classification_shorthand_builds_label_first_schema():
    recipe = parse_recipe(
        recipe_with("  response_format: {type: classification}\n", CLASSIFICATION)
    )
    fmt = recipe.response_format
    assert fmt.type == "json_schema"
    schema = fmt.schema
    assert list(schema["properties"]) == ["class", "thought", "description"]
    assert schema["properties"]["class"] == {"enum": ["hardware", "software", "network"]}
    assert schema["required"] == ["class", "thought", "description"]
    assert schema["additionalProperties"] is False


def test_json_schema_regex_and_choice_are_read():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    recipe = parse_recipe(
        recipe_with(f"  response_format: {{type: json_schema, schema: {json.dumps(schema)}}}\n")
    )
    assert recipe.response_format.schema == schema
    recipe = parse_recipe(recipe_with("  response_format: {type: regex, pattern: '[0-9]+'}\n"))
    assert recipe.response_format.pattern == "[0-9]+"
    recipe = parse_recipe(recipe_with("  response_format: {type: choice, choices: [a, b]}\n"))
    assert recipe.response_format.choices == ("a", "b")
    assert parse_recipe(VALID).response_format is None


def test_a_regex_that_does_not_compile_names_the_line_and_the_library_message():
    message = error_for(recipe_with("  response_format: {type: regex, pattern: 'a(b'}\n"))
    assert "r.yaml:" in message and "response_format" in message
    assert "unclosed group" in message  # llguidance's own words


def test_a_schema_that_does_not_compile_is_refused():
    message = error_for(
        recipe_with("  response_format: {type: json_schema, schema: {type: objectx}}\n")
    )
    assert "Invalid type: objectx" in message


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("  response_format: {type: regex}\n", "needs response_format.pattern"),
        ("  response_format: {type: choice, choices: []}\n", "distinct strings"),
        ("  response_format: {type: choice, choices: [a], pattern: x}\n", "does not go with"),
        ("  response_format: {type: classification}\n", "needs a classification section"),
        ("  response_format: {type: grammar}\n", "response_format.type"),
    ],
)
def test_wrong_keys_are_explained(block, expected):
    assert expected in error_for(recipe_with(block))


def test_bedrock_refuses_a_response_format():
    text = VALID.replace("top_logprobs: 5", "top_logprobs: 0") + (
        "  engine: bedrock\n  response_format: {type: choice, choices: [a, b]}\n"
    )
    assert "not supported by engine 'bedrock'" in error_for(text)
