"""``evaluation.task: mm_llm_judge``: a judge recipe wherever ``llm_judge`` is one, whose
judge sees each row's images with the prompt in both passes, and writes what an
``llm_judge`` run writes (files, columns, Nova keys)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from nova_eval_assets import stages, storage
from nova_eval_assets.assets.judge import LEADERBOARD_KEY, build_judge_assets
from nova_eval_assets.assets.tables import final_asset_key
from nova_eval_assets.definitions import build_definitions
from nova_eval_assets.engines import create_engine
from nova_eval_assets.engines.vision import VisionError
from nova_eval_assets.judge import pipeline
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import RecipeError
from nova_eval_assets.tables.build import metric_kind
from tests.test_judge_pipeline import (
    JUDGE_ROWS,
    ScriptedJudge,
    judge_keys,
    judge_recipe_dict,
    materialize,
    write_examples,
    write_recipe,
)
from tests.tiny_model import build_tiny_model, build_tiny_vlm, image_uri

#: The rows' images: one, two and one.
IMAGES = [
    (image_uri(seed=1),),
    (image_uri(20, 12, seed=2), image_uri(30, 30, seed=3)),
    (image_uri(seed=4),),
]


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    (tmp_path / "recipes").mkdir()
    return tmp_path / "recipes"


class RecordingJudge(ScriptedJudge):
    """The scripted content judge, keeping every request it is sent."""

    def __init__(self) -> None:
        super().__init__("content")
        self.requests = []

    def generate(self, requests, settings, batch_size=None, on_batch=None):
        self.requests += list(requests)
        return super().generate(requests, settings, batch_size, on_batch)


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> RecordingJudge:
    engine = RecordingJudge()
    monkeypatch.setattr(pipeline, "load_judge_engine", lambda loaded: engine)
    return engine


def image_rows() -> list[dict]:
    return [
        {**row, "images": [{"data": uri} for uri in images]}
        for row, images in zip(JUDGE_ROWS, IMAGES, strict=True)
    ]


def judge_recipe(folder: Path, name: str, task: str, rows: list[dict], **recipe):
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    body = judge_recipe_dict(name, data=data.name)
    body["evaluation"]["task"] = task
    for section, values in recipe.items():
        body[section] = {**body.get(section, {}), **values}
    return write_recipe(folder, body)


# ---------------------------------------------------------------- the recipe


def test_an_mm_llm_judge_recipe_loads(workspace):
    loaded = judge_recipe(
        workspace, "mm", "mm_llm_judge", image_rows(), judge={"order": "verdict_first"}
    )
    evaluation = loaded.recipe.evaluation
    assert (evaluation.task, evaluation.strategy) == ("mm_llm_judge", "judge")
    assert evaluation.is_judge and pipeline.is_judge(loaded)
    assert loaded.recipe.judge.order == "verdict_first"
    body = judge_recipe_dict("wrong")
    body["evaluation"] = {"task": "mm_llm_judge", "strategy": "gen_qa"}
    body["run"]["data_s3_path"] = "x.jsonl"
    with pytest.raises(RecipeError, match="task 'mm_llm_judge' goes with strategy 'judge'"):
        write_recipe(workspace, body)


def test_a_joining_mm_judge_needs_no_data_path(workspace):
    body = judge_recipe_dict("mm_join", {"baseline_recipe": "a", "challenger_recipe": "b"})
    body["evaluation"]["task"] = "mm_llm_judge"
    loaded = write_recipe(workspace, body)
    assert loaded.recipe.run.data_s3_path is None and loaded.recipe.judge.joins_recipes


def test_the_graph_treats_mm_llm_judge_as_a_judge(workspace):
    loaded = judge_recipe(workspace, "mm", "mm_llm_judge", image_rows())
    graph = build_definitions([loaded]).resolve_asset_graph()
    keys = {tuple(k.path) for k in graph.get_all_asset_keys()}
    assert ("mm", "judge_results") in keys and ("mm", "aggregated_report") not in keys
    assert tuple(LEADERBOARD_KEY.path) in keys
    assert final_asset_key(loaded) == dg.AssetKey(["mm", "judge_results"])
    assert metric_kind("winrate", "mm_llm_judge", "mean") == metric_kind(
        "winrate", "llm_judge", "mean"
    )
    node = graph.get(dg.AssetKey(["mm", "judge_results"]))
    assert node.tags["task"] == "mm_llm_judge"


# ---------------------------------------------------------------- the judge run


def run_assets(loaded) -> dict:
    result = materialize(build_judge_assets(loaded, [loaded]), *judge_keys(loaded.name))
    assert result.success
    return pipeline.read_latest_report(loaded)


def test_the_judge_sees_the_images_in_both_passes(workspace, recording):
    mm = judge_recipe(workspace, "mm", "mm_llm_judge", image_rows())
    report = run_assets(mm)
    assert len(recording.requests) == 2 * len(JUDGE_ROWS)
    for position, images in enumerate(IMAGES):
        forward, backward = recording.requests[2 * position : 2 * position + 2]
        assert forward.images == images and backward.images == images
        assert forward.prompt != backward.prompt  # the two orders
    results = storage.read_json(report["paths"]["results"])
    assert results["config_general"]["task"] == "mm_llm_judge"

    # the same rows without images, as llm_judge: the same files, columns and keys
    recording.requests.clear()
    text = judge_recipe(workspace, "text", "llm_judge", JUDGE_ROWS)
    text_report = run_assets(text)
    assert all(r.images == () for r in recording.requests)
    text_results = storage.read_json(text_report["paths"]["results"])
    assert set(report) == set(text_report)
    assert set(results) == set(text_results)
    assert set(results["results"]) == set(text_results["results"])
    assert set(results["results"]) == {pipeline.NOVA_JUDGE_TASK_KEY, "all"}
    assert set(results["config_general"]) == set(text_results["config_general"])
    assert report["summary"] == text_report["summary"]  # the scripted judge ignores images
    assert set(results["diagnostics"]) == set(text_results["diagnostics"])
    for name in ("judgments", "details"):
        mm_table = storage.read_parquet(report["paths"][name])
        text_table = storage.read_parquet(text_report["paths"][name])
        assert mm_table.schema == text_table.schema
    assert Path(report["paths"]["details"]).name.startswith(
        f"details_{pipeline.NOVA_JUDGE_TASK_KEY}_"
    )


def test_a_text_judge_refuses_images_before_judging(workspace, tmp_path, monkeypatch):
    folder = build_tiny_model(tmp_path / "text_model")
    mm = judge_recipe(workspace, "mm", "mm_llm_judge", image_rows())
    pipeline.prepare_dataset(mm)
    engine = create_engine("hf", str(folder))

    def no_generation(*args, **kwargs):
        raise AssertionError("generated a batch")

    monkeypatch.setattr(engine, "_generate_batch", no_generation)
    with pytest.raises(VisionError) as raised:
        pipeline.run_judge(mm, engine=engine)
    assert str(raised.value) == (
        f"model {folder} has no vision (a text-only Qwen3ForCausalLM); 6 rows have images: "
        "use a vision-language model (e.g. Qwen2-VL, Idefics3, SmolVLM)"
    )
    assert not storage.exists(EvalLayout.for_recipe(mm).stage("judgments.parquet"))


def test_a_tiny_vlm_judges_with_the_images(workspace, tmp_path, monkeypatch):
    folder = build_tiny_vlm(tmp_path / "vlm", max_position_embeddings=2048)  # judge prompts
    mm = judge_recipe(
        workspace,
        "mm",
        "mm_llm_judge",
        image_rows(),
        run={"model_name_or_path": str(folder)},
        inference={"max_new_tokens": 4},
    )
    engine = pipeline.load_judge_engine(mm)
    assert engine.vision and engine.runtime()["decoder"] == "vision"
    seen = []
    original = engine.generate

    def recording_generate(requests, settings, batch_size=None, on_batch=None):
        generations = original(requests, settings, batch_size, on_batch=on_batch)
        seen.extend(zip(requests, generations, strict=True))
        return generations

    monkeypatch.setattr(engine, "generate", recording_generate)
    report = run_assets(mm)
    assert len(seen) == 2 * len(JUDGE_ROWS)
    for (request, generation), images in zip(seen, [i for i in IMAGES for _ in "fb"], strict=True):
        assert request.images == images
        assert generation.finish_reason in ("stop", "length") and generation.error is None
        without = engine.encode([replace(request, images=())])[0]
        # the prompt holds each image's 4 patches
        assert generation.prompt_tokens == len(without) + 4 * len(images)
    judgments = storage.read_parquet(report["paths"]["judgments"]).to_pylist()
    assert len(judgments) == len(JUDGE_ROWS)
    assert {j["judge_backend"] for j in judgments} == {"hf"}
    assert {j["judge_model"] for j in judgments} == {engine.model_id}


# ---------------------------------------------------------------- joining two gen_qa recipes


def gen_qa_with_images(folder: Path, name: str):
    data = folder / f"{name}.jsonl"
    rows = [
        {"query": f"ticket {i}", "response": "r", "images": [{"data": uri} for uri in images]}
        for i, images in enumerate(IMAGES)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = {
        "run": {"name": name, "model_name_or_path": "smollm2-135m-instruct"}
        | {"data_s3_path": data.name},
        "evaluation": {"task": "gen_qa", "strategy": "gen_qa"},
    }
    loaded = write_recipe(folder, recipe)
    stages.run_validation(loaded)  # the validated dataset, images included
    return loaded


def test_a_joined_mm_judge_takes_the_images_from_the_baseline(workspace, recording):
    baseline = gen_qa_with_images(workspace, "base")
    challenger = gen_qa_with_images(workspace, "chal")
    write_examples(baseline, ["GOOD: a", "b", "GOOD: c"])
    write_examples(challenger, ["a", "GOOD: b", "c"])
    body = judge_recipe_dict("mm_pair", {"baseline_recipe": "base", "challenger_recipe": "chal"})
    body["evaluation"]["task"] = "mm_llm_judge"
    judge = write_recipe(workspace, body)
    recipes = [baseline, challenger, judge]
    result = materialize(build_judge_assets(judge, recipes), *judge_keys("mm_pair"))
    assert result.success
    join = storage.read_json(EvalLayout.for_recipe(judge).stage("join_report.json"))
    assert join["rows_with_images"] == 3
    assert [r.images for r in recording.requests] == [i for i in IMAGES for _ in "fb"]

    # an llm_judge join stays text-only
    recording.requests.clear()
    body = judge_recipe_dict("text_pair", {"baseline_recipe": "base", "challenger_recipe": "chal"})
    text = write_recipe(workspace, body)
    assert materialize(build_judge_assets(text, recipes), *judge_keys("text_pair")).success
    assert all(r.images == () for r in recording.requests)
