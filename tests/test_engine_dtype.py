"""`inference.dtype` from the recipe to the hf engine, and the dtype that ran recorded in
the results JSON (config_general["inference_engine"]), on the tiny random Qwen3 model."""

from __future__ import annotations

import json

import pytest

from nova_eval_assets import stages, storage
from tests.orchestration_support import edit_recipe
from tests.tiny_model import build_tiny_model

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("dtype") / "model")


def evaluate(make_recipe, folder, inference: dict) -> dict:
    lines = [json.dumps({"query": q, "response": "x"}) for q in ("Hi", "What is 2+2?")]
    loaded = make_recipe(lines, name="dtype", inference={"max_new_tokens": 4, **inference})
    loaded = edit_recipe(loaded, run={"model_name_or_path": str(folder)})
    stages.run_validation(loaded)
    stages.build_prompts(loaded)
    stages.run_inference(loaded, 0)
    stages.score_replica(loaded, 0)
    report = stages.write_report(loaded)
    return storage.read_json(report["paths"]["results"])["config_general"]


def test_auto_is_float32_on_cpu_and_recorded(make_recipe, tiny_folder):
    config = evaluate(make_recipe, tiny_folder, {})
    assert config["inference"]["dtype"] == "auto"
    engine = config["inference_engine"]
    assert engine["engine"] == "hf" and engine["dtype"] == "float32"
    assert engine["device"] == "cpu" and engine["decoder"] == "fast"


def test_recipe_dtype_reaches_the_engine(make_recipe, tiny_folder):
    config = evaluate(make_recipe, tiny_folder, {"dtype": "bfloat16"})
    assert config["inference_engine"]["dtype"] == "bfloat16"
    loaded = make_recipe(name="opts", inference={"dtype": "bfloat16"})
    assert stages.engine_options(loaded) == {"dtype": "bfloat16"}
    assert stages.engine_options(make_recipe(name="auto")) == {}  # the engine's default
