"""inference.reasoning_effort: the chat template's thinking switch, the reasoning/answer
split, the `reasoning` column, and Nova's error for a model that cannot reason."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from nova_eval_assets import cli, stages, storage
from nova_eval_assets.engines import GenerationRequest, SamplingSettings, create_engine
from nova_eval_assets.engines.reasoning import (
    ReasoningNotSupportedError,
    TemplateReasoning,
    check_recipe_reasoning,
    inspect_template,
    split_reasoning,
)
from nova_eval_assets.tables.build import run_info, to_eval_examples
from tests.orchestration_support import edit_recipe
from tests.tiny_model import PLAIN_TEMPLATE, THINKING_TEMPLATE, build_tiny_model

torch = pytest.importorskip("torch")

REQUEST = GenerationRequest(0, "What is the capital of France?", "Be brief.")
TURNS = (
    "<|im_start|>system\nBe brief.<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    "<|im_start|>assistant\n"
)
NOVA_ERROR = "Reasoning mode is enabled but model '{}' does not support reasoning"

# gpt-oss reads the level itself (a shortened copy of its system-turn line)
EFFORT_TEMPLATE = (
    "{{- '<|start|>system<|message|>Reasoning: ' + (reasoning_effort | default('medium')) "
    "+ '<|end|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start|>' + message['role'] + '<|message|>' + message['content'] + '<|end|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start|>assistant' }}{%- endif %}"
)
# DeepSeek-R1 style: no switch, the generation prompt opens the block itself
OPENS_TEMPLATE = PLAIN_TEMPLATE.replace(
    "'<|im_start|>assistant\\n'", "'<|im_start|>assistant\\n<think>\\n'"
)


@pytest.fixture(scope="module")
def thinking_engine(tmp_path_factory):
    folder = build_tiny_model(tmp_path_factory.mktemp("thinking") / "model")
    return create_engine("hf", str(folder), device="cpu")


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("plain") / "model", PLAIN_TEMPLATE)


# ----------------------------------------------------------------------------- templates


def test_inspect_template_finds_the_switches():
    thinking = inspect_template(THINKING_TEMPLATE)
    assert thinking.switches == {"enable_thinking"} and thinking.supported
    assert not thinking.opens_thinking and not thinking.harmony
    effort = inspect_template(EFFORT_TEMPLATE)
    assert effort.switches == {"reasoning_effort"} and effort.supported and effort.harmony is False
    opens = inspect_template(OPENS_TEMPLATE)
    assert opens.switches == frozenset() and opens.opens_thinking and opens.supported
    for cannot in (PLAIN_TEMPLATE, None, ""):
        assert not inspect_template(cannot).supported
    assert inspect_template({"default": THINKING_TEMPLATE, "tool_use": PLAIN_TEMPLATE}).supported
    harmony = inspect_template(EFFORT_TEMPLATE + "{{ '<|channel|>final' }}")
    assert harmony.harmony


def test_template_kwargs_per_switch():
    both = TemplateReasoning(switches=frozenset({"enable_thinking", "reasoning_effort"}))
    assert both.template_kwargs("low") == {"enable_thinking": True, "reasoning_effort": "low"}
    # off: enable_thinking=False (Qwen3's documented off switch); gpt-oss has no "off" level
    assert both.template_kwargs(None) == {"enable_thinking": False}
    effort = TemplateReasoning(switches=frozenset({"reasoning_effort"}))
    assert effort.template_kwargs(None) == {}
    assert effort.template_kwargs("high") == {"reasoning_effort": "high"}
    assert TemplateReasoning(opens_thinking=True).template_kwargs("medium") == {}


def test_engine_passes_enable_thinking_to_the_template(thinking_engine):
    assert thinking_engine.reasoning.switches == {"enable_thinking"}
    on = thinking_engine.format_prompt(REQUEST, "high")
    off = thinking_engine.format_prompt(REQUEST)
    assert on == TURNS  # the model opens <think> itself
    assert off == TURNS + "<think>\n\n</think>\n\n"  # Qwen3's closed, empty block
    tokenizer = thinking_engine.tokenizer
    assert thinking_engine.encode([REQUEST], "low") == [tokenizer(on)["input_ids"]]
    assert thinking_engine.encode([REQUEST]) == [tokenizer(off)["input_ids"]]


def test_engine_passes_the_level_to_a_template_that_reads_it(tmp_path):
    engine = create_engine("hf", str(build_tiny_model(tmp_path / "m", EFFORT_TEMPLATE)))
    prompt = "<|start|>user<|message|>What is the capital of France?<|end|><|start|>assistant"
    assert engine.format_prompt(GenerationRequest(0, REQUEST.prompt), "low") == (
        "<|start|>system<|message|>Reasoning: low<|end|>" + prompt
    )
    assert engine.format_prompt(GenerationRequest(0, REQUEST.prompt)) == (
        "<|start|>system<|message|>Reasoning: medium<|end|>" + prompt  # the template's default
    )


# ----------------------------------------------------------------------------- the split


@pytest.mark.parametrize(
    ("text", "inside", "harmony", "expected"),
    [
        (
            "<think>\nParis is in France.\n</think>\n\nParis",
            False,
            False,
            ("Paris is in France.", "Paris"),
        ),
        ("  <think>a</think>b <think>c</think>", False, False, ("a", "b <think>c</think>")),
        ("<think>\n\n</think>\n\nParis", False, False, ("", "Paris")),
        ("Paris", False, False, (None, "Paris")),
        ("Paris. <think>late</think>", False, False, (None, "Paris. <think>late</think>")),
        (
            "<think>\nStill thinking when the budget",
            False,
            False,
            ("Still thinking when the budget", ""),
        ),
        # the prompt opened the block: only the closing tag is generated
        ("Paris is in France.\n</think>\n\nParis", True, False, ("Paris is in France.", "Paris")),
        ("no closing tag yet", True, False, ("no closing tag yet", "")),
        (
            "<|channel|>analysis<|message|>Think.<|end|><|start|>assistant"
            "<|channel|>final<|message|>Paris",
            False,
            True,
            ("Think.", "Paris"),
        ),
        ("<|channel|>analysis<|message|>Still thinking", False, True, ("Still thinking", "")),
        ("Paris", False, True, (None, "Paris")),
    ],
)
def test_split_reasoning(text, inside, harmony, expected):
    assert split_reasoning(text, inside=inside, harmony=harmony) == expected


# ----------------------------------------------------------------------------- end to end


class Scripted:
    """The tiny model with its last-position logits pushed toward a fixed answer, so that a
    random-weight model writes a known reasoning block: the engine's decode loop, budgets and
    split run unchanged. Prefill calls (more than one input position) restart the script."""

    def __init__(self, model, script: list[int]) -> None:
        self.model, self.config, self.script, self.step = model, model.config, script, 0

    def __call__(self, **kwargs):
        if kwargs["input_ids"].shape[1] > 1:
            self.step = 0
        out = self.model(**kwargs)
        out.logits[:, -1, self.script[min(self.step, len(self.script) - 1)]] += 1000.0
        self.step += 1
        return out


def test_reasoning_column_end_to_end(make_recipe, thinking_engine, monkeypatch, tmp_path):
    tokenizer = thinking_engine.tokenizer
    generated = "<think>\nFrance, capital.\n</think>\n\nParis"
    script = tokenizer(generated, add_special_tokens=False)["input_ids"]
    script.append(tokenizer.convert_tokens_to_ids("<|im_end|>"))
    monkeypatch.setattr(thinking_engine, "model", Scripted(thinking_engine.model, script))
    lines = [
        json.dumps({"query": "What is the capital of France?", "response": "Paris"}),
        json.dumps({"query": "Capital of France?", "response": "Paris", "system": "Be brief."}),
    ]
    # 16 tokens: the 13 of the script and its stop token fit, beside a prompt of <= 38
    inference = {"reasoning_effort": "high", "max_new_tokens": 16}
    loaded = make_recipe(lines, name="thinks", inference=inference)
    loaded = edit_recipe(loaded, run={"model_name_or_path": thinking_engine.model_name})
    assert stages.sampling_settings(loaded).reasoning_effort == "high"

    stages.run_validation(loaded)
    stages.build_prompts(loaded)
    stages.run_inference(loaded, 0, engine=thinking_engine)
    stages.score_replica(loaded, 0)
    report = stages.write_report(loaded)

    examples = storage.read_parquet(report["paths"]["examples"])
    rows = examples.to_pylist()
    assert [r["reasoning"] for r in rows] == ["France, capital."] * 2
    assert [r["prediction"] for r in rows] == ["Paris"] * 2
    # log probabilities cover every generated token, the reasoning's too (not the stop token)
    assert [len(r["token_logprobs"]) for r in rows] == [len(script) - 1] * 2
    assert [r["completion_tokens"] for r in rows] == [len(script) - 1] * 2
    assert "".join(t["token"] for t in rows[0]["token_logprobs"]) == generated
    # metrics score the answer alone: exact match with the gold
    results = storage.read_json(report["paths"]["results"])
    assert results["results"]["all"]["em"] == 1.0
    assert results["config_general"]["inference"]["reasoning_effort"] == "high"
    assert results["config_general"]["warnings"] == []  # 16 tokens fit: nothing clipped
    # the Nova export and the eval_examples table still build, with the answer as output
    details = pd.read_parquet(report["paths"]["details"])
    assert list(details["predictions"]) == [repr(["Paris"])] * 2
    outputs = storage.read_bytes(report["paths"]["inference_output"]).splitlines()
    assert [json.loads(line)["inference"] for line in outputs] == ["Paris"] * 2
    table = to_eval_examples(examples, run_info("thinks", results))
    assert table["prediction"].to_pylist() == ["Paris"] * 2


def test_no_reasoning_effort_changes_nothing_for_a_model_without_a_switch(plain_model):
    engine = create_engine("hf", str(plain_model), device="cpu")
    request = GenerationRequest(0, REQUEST.prompt)
    assert engine.format_prompt(request) == engine.tokenizer.apply_chat_template(
        [{"role": "user", "content": REQUEST.prompt}], add_generation_prompt=True, tokenize=False
    )
    (generation,) = engine.generate([request], SamplingSettings(max_new_tokens=4))
    assert generation.reasoning is None
    assert generation.text == engine.tokenizer.decode([t.token_id for t in generation.tokens])


# ----------------------------------------------------------------------------- refused


def test_engine_refuses_reasoning_without_a_switch_before_generating(
    plain_model, make_recipe, monkeypatch
):
    engine = create_engine("hf", str(plain_model), device="cpu")
    with pytest.raises(ReasoningNotSupportedError, match=NOVA_ERROR.format(plain_model)):
        engine.generate([REQUEST], SamplingSettings(max_new_tokens=4, reasoning_effort="low"))

    loaded = make_recipe([json.dumps({"query": "Q?", "response": "A"})], name="plain")
    loaded = edit_recipe(
        loaded,
        run={"model_name_or_path": str(plain_model)},
        inference={"reasoning_effort": "medium"},
    )
    stages.run_validation(loaded)
    stages.build_prompts(loaded)
    called = []
    monkeypatch.setattr(engine, "generate", lambda *a, **k: called.append(a))
    with pytest.raises(ReasoningNotSupportedError, match=r"inference\.reasoning_effort: null"):
        stages.run_inference(loaded, 0, engine=engine)
    assert called == []  # refused before the first block


def bundled_recipe(make_recipe, effort="high"):
    lines = [json.dumps({"query": "What is 2+2?", "response": "4"})]
    return make_recipe(lines, name="smol-thinks", inference={"reasoning_effort": effort})


def test_bundled_smollm2_cannot_reason(make_recipe, monkeypatch):
    loaded = bundled_recipe(make_recipe)
    with pytest.raises(ReasoningNotSupportedError) as error:
        check_recipe_reasoning(loaded.recipe)
    message = str(error.value)
    assert message.startswith(NOVA_ERROR.format("smollm2-135m-instruct"))
    assert "Set inference.reasoning_effort: null" in message
    check_recipe_reasoning(bundled_recipe(make_recipe, effort=None).recipe)  # off: accepted

    # the inference stage refuses it from the chat template, before loading the weights
    stages.run_validation(loaded)
    stages.build_prompts(loaded)
    monkeypatch.setattr(stages.inference, "load_engine", lambda loaded: pytest.fail("model loaded"))
    with pytest.raises(
        ReasoningNotSupportedError, match=NOVA_ERROR.format("smollm2-135m-instruct")
    ):
        stages.run_inference(loaded, 0)


@pytest.mark.parametrize("command", ["validate", "run"])
def test_cli_refuses_reasoning_on_smollm2_with_a_message(make_recipe, capsys, command):
    loaded = bundled_recipe(make_recipe)
    assert cli.main([command, str(loaded.path), *(["--quiet"] if command == "run" else [])]) == 2
    err = capsys.readouterr().err
    assert NOVA_ERROR.format("smollm2-135m-instruct") in err
    assert "Traceback" not in err


def test_validate_accepts_reasoning_on_a_model_with_a_switch(make_recipe, tmp_path, capsys):
    folder = build_tiny_model(tmp_path / "thinking")
    loaded = make_recipe([json.dumps({"query": "Q?", "response": "A"})], name="ok")
    loaded = edit_recipe(
        loaded, run={"model_name_or_path": str(folder)}, inference={"reasoning_effort": "low"}
    )
    assert cli.main(["validate", str(loaded.path)]) == 0
    assert "is valid" in capsys.readouterr().out
