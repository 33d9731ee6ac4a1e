"""Recipe loading: every kind of error names the file, the line, the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from nova_eval_assets.recipe import RecipeError, discover_recipes, load_recipe, parse_recipe

VALID = """\
run:
  name: demo
  model_type: hf
  model_name_or_path: smollm2-135m-instruct
  replicas: 2
  data_s3_path: data/rows.jsonl
  output_s3_path: ""
evaluation:
  task: gen_qa
  strategy: gen_qa
  metric: all
inference:
  max_new_tokens: 32
  top_k: -1
  top_p: 1.0
  temperature: 0
  top_logprobs: 5
"""


def with_line(old: str, new: str) -> str:
    assert old in VALID
    return VALID.replace(old, new)


def error_for(text: str) -> str:
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, source="r.yaml")
    return str(info.value)


def test_valid_recipe_reads_every_nova_key():
    recipe = parse_recipe(VALID)
    assert recipe.run.replicas == 2
    assert recipe.run.output_s3_path is None  # "" means the local default
    assert recipe.inference.top_logprobs == 5
    assert recipe.processor is None
    assert recipe.dataset.on_invalid == "fail"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "  top_logprobs: 5",
            "  top_logprobs: 21",
            ["r.yaml:17", "inference.top_logprobs", "0..20"],
        ),
        (
            "  top_logprobs: 5",
            "  top_logprobs: -1",
            ["r.yaml:17", "inference.top_logprobs", "0..20"],
        ),
        ("  temperature: 0", "  temperature: -0.5", ["r.yaml:16", "inference.temperature", ">= 0"]),
        ("  top_p: 1.0", "  top_p: 1.5", ["r.yaml:15", "inference.top_p", "top_p <= 1"]),
        ("  top_p: 1.0", "  top_p: 0", ["r.yaml:15", "inference.top_p", "greater than 0"]),
        ("  top_k: -1", "  top_k: 0", ["r.yaml:14", "inference.top_k", "-1 (off)"]),
        ("  replicas: 2", "  replicas: 0", ["r.yaml:5", "run.replicas", "1..1024"]),
        ("  replicas: 2", "  replicas: two", ["r.yaml:5", "run.replicas", "integer"]),
        ("  strategy: gen_qa", "  strategy: judge", ["r.yaml:10", "task 'gen_qa' goes with"]),
        ("  task: gen_qa", "  task: mmlux", ["r.yaml:9", "evaluation.task", "'gen_qa'"]),
        ("  task: gen_qa", "  task: mmlu", ["r.yaml:10", "evaluation.strategy", "'zs_cot'"]),
        ("  metric: all", "  metric: accuracy", ["r.yaml:11", "evaluation.metric", "'all'"]),
        ("  max_new_tokens: 32", "  max_new_tokens: 0", ["inference.max_new_tokens", "at least 1"]),
        ("  name: demo", "  name: my demo!", ["r.yaml:2", "run.name", "letters, digits, '-'"]),
    ],
)
def test_out_of_range_and_wrong_type(old, new, expected):
    message = error_for(with_line(old, new))
    for fragment in expected:
        assert fragment in message, message


def test_unknown_key_lists_allowed_keys():
    message = error_for(with_line("  top_logprobs: 5", "  top_logprobs: 5\n  beam_size: 4"))
    assert "r.yaml:18" in message
    assert "unknown key 'inference.beam_size'" in message
    assert "max_new_tokens" in message and "top_logprobs" in message


def test_unknown_section_and_missing_key():
    message = error_for(VALID + "training:\n  epochs: 1\n")
    assert "unknown key 'training'" in message and "evaluation" in message
    message = error_for(with_line("  data_s3_path: data/rows.jsonl\n", ""))
    assert "missing required key 'run.data_s3_path'" in message


def test_unknown_aggregation_names_allowed_values():
    message = error_for(VALID + "processor:\n  handler: x.py:f\n  aggregation: median\n")
    assert "r.yaml:20" in message
    assert "processor.aggregation" in message
    for allowed in ("'min'", "'max'", "'average'", "'sum'"):
        assert allowed in message


def test_every_problem_is_reported_at_once():
    text = with_line("  top_logprobs: 5", "  top_logprobs: 99").replace("top_p: 1.0", "top_p: 7")
    message = error_for(text)
    assert "top_logprobs" in message and "top_p" in message


def test_not_yaml_and_not_a_mapping():
    message = error_for("run:\n  name: demo\n    bad: indent\n")
    assert message.startswith("r.yaml:3: not valid YAML"), message
    assert "a recipe is a mapping" in error_for("- just\n- a list\n")


def test_load_recipe_resolves_data_relative_to_recipe(tmp_path: Path):
    (tmp_path / "demo.yaml").write_text(VALID)
    loaded = load_recipe(tmp_path / "demo.yaml")
    assert loaded.resolve_data_path() == str(tmp_path / "data" / "rows.jsonl")
    assert load_recipe(tmp_path / "demo.yaml").with_overrides(replicas=3).recipe.run.replicas == 3
    with pytest.raises(RecipeError, match=r"missing\.yaml"):
        load_recipe(tmp_path / "missing.yaml")


def test_override_is_validated(tmp_path: Path):
    (tmp_path / "demo.yaml").write_text(VALID)
    with pytest.raises(ValueError, match="replicas"):
        load_recipe(tmp_path / "demo.yaml").with_overrides(replicas=0)


def test_duplicate_recipe_names_are_rejected(tmp_path: Path):
    (tmp_path / "a.yaml").write_text(VALID)
    (tmp_path / "b.yaml").write_text(VALID)
    with pytest.raises(RecipeError, match=r"run\.name 'demo' is also used"):
        discover_recipes(tmp_path)


def test_shipped_recipes_load():
    recipes = discover_recipes(Path(__file__).resolve().parents[1] / "recipes")
    assert "support_tickets" in {r.name for r in recipes}
