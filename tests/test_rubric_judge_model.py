"""Nova 2.0's published rubric judge recipe (only the model changed) validates and runs end to
end on the bundled SmolLM2; the example recipe's constrained rubric makes every judgment
parse. Two rows each, so the model tests stay short."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from nova_eval_assets import storage, tables
from nova_eval_assets.assets.judge import run_judge_evaluation
from nova_eval_assets.cli import main as cli_main
from nova_eval_assets.judge.rubric import parse_rubric
from nova_eval_assets.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
NOVA_RUBRIC = (
    ROOT / "tests" / "recipes" / "nova" / ("nova_lite_2_0_p5_48xl_gpu_rubric_llm_judge_eval.yaml")
)
EXAMPLE = ROOT / "recipes" / "rubric_judge_example.yaml"
ROWS = [
    {"prompt": "What is 2 + 2?", "response_A": "4", "response_B": "Five."},
    {"prompt": "Name a colour.", "response_A": "Blue", "response_B": "The sky."},
]


@pytest.fixture
def train_channel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    channel = tmp_path / "channel-train"
    channel.mkdir()
    (channel / "rubric.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(channel))
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    return channel


def test_published_rubric_recipe_validates(train_channel, capsys):
    assert cli_main(["validate", str(NOVA_RUBRIC)]) == 0, capsys.readouterr().err
    assert "2 valid rows" in capsys.readouterr().out
    recipe = load_recipe(NOVA_RUBRIC).recipe
    assert (recipe.evaluation.task, recipe.evaluation.is_judge) == ("rubric_llm_judge", True)
    assert recipe.run.model_type == "amazon.nova-2-lite-v1:0:256k"
    assert recipe.inference.max_new_tokens == 32768


@pytest.mark.model
def test_published_rubric_recipe_runs_end_to_end(train_channel):
    # shortened for the test: 2 rows, 48 new tokens (free text: most judgments do not parse,
    # and each is counted as an inference_error with its reason)
    loaded = load_recipe(NOVA_RUBRIC).with_overrides(limit=2, max_new_tokens=48)
    outcome = run_judge_evaluation(
        loaded, [loaded], instance=dg.DagsterInstance.ephemeral(), show_progress=False
    )
    assert outcome.report is not None, outcome.message
    results = storage.read_json(outcome.report["paths"]["results"])
    summary = results["results"]["custom|rubric_llm_judge_judge|0"]
    counted = summary["a_scores"] + summary["b_scores"] + summary["ties"]
    assert counted + summary["inference_error"] == 4  # every judgment accounted for
    assert {"weighted_score_A", "score_margin_stderr"} <= set(summary)
    judgments = storage.read_parquet(outcome.report["paths"]["judgments"]).to_pylist()
    for row in judgments:
        for side in ("forward", "backward"):
            assert row[f"{side}_completion_tokens"] <= 48
            assert (row[f"{side}_preference"] == "error") == (row[f"{side}_error"] is not None)


@pytest.mark.model
def test_constrained_rubric_example_parses_every_judgment(tmp_path, monkeypatch):
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    loaded = load_recipe(EXAMPLE).with_overrides(limit=2)
    outcome = run_judge_evaluation(
        loaded, [loaded], instance=dg.DagsterInstance.ephemeral(), show_progress=False
    )
    assert outcome.report is not None, outcome.message
    summary = outcome.report["summary"]
    assert summary["inference_error"] == 0
    assert 0.0 <= summary["weighted_score_A"] <= 1.0
    assert -1.0 <= summary["score_margin"] <= 1.0
    judgments = storage.read_parquet(outcome.report["paths"]["judgments"]).to_pylist()
    for row in judgments:
        for side in ("forward", "backward"):
            assert row[f"{side}_finish_reason"] == "stop"  # never cut
            assert parse_rubric(row[f"{side}_raw"]).ok
            assert row[f"{side}_criteria"] and row[f"{side}_weighted_score_a"] is not None
    written = tables.write_evaluation_tables(loaded, str(tmp_path / "tables"))
    expected = sum(len(row[f"{s}_criteria"]) for row in judgments for s in ("forward", "backward"))
    assert written["judge_criteria"].rows == expected
