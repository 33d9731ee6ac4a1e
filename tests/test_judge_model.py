"""The real local judge (the bundled SmolLM2-135M-Instruct) on a few pairs, through the
judge recipe's assets: both passes run, every output is kept and either parsed or counted
as an inference_error, and parsed verdicts carry the verdict tokens' probabilities."""

from __future__ import annotations

import json
import math

import dagster as dg
import pytest
import yaml

from nova_eval_assets import storage
from nova_eval_assets.assets.judge import build_judge_assets
from nova_eval_assets.engines.base import TokenLogprob
from nova_eval_assets.judge import pipeline
from nova_eval_assets.judge.pairwise import verdict_distribution
from nova_eval_assets.recipe import load_recipe
from tests.conftest import ticket_lines

pytestmark = pytest.mark.model


def test_real_local_judge_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    tickets = [json.loads(line) for line in ticket_lines(2)]
    rows = [
        {
            "prompt": t["query"],
            "response_A": "I don't know.",
            "response_B": t["response"],
            "system": t["system"],
            "metadata": t["metadata"],
        }
        for t in tickets
    ]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = {
        "run": {
            "name": "real_judge",
            "model_name_or_path": "smollm2-135m-instruct",
            "data_s3_path": "pairs.jsonl",
        },
        "evaluation": {"task": "llm_judge", "strategy": "judge"},
        "inference": {"max_new_tokens": 8, "temperature": 0},
        "judge": {"order": "verdict_first", "show_system": False, "bootstrap_rounds": 100},
    }
    (tmp_path / "judge.yaml").write_text(yaml.safe_dump(recipe))
    loaded = load_recipe(tmp_path / "judge.yaml")

    result = dg.materialize(
        build_judge_assets(loaded, [loaded]),
        instance=dg.DagsterInstance.ephemeral(),
        selection=dg.AssetSelection.assets(
            dg.AssetKey(["real_judge", "validated_dataset"]),
            dg.AssetKey(["real_judge", "judge_results"]),
        ),
    )
    assert result.success

    report = pipeline.read_latest_report(loaded)
    table = storage.read_parquet(report["paths"]["judgments"]).to_pylist()
    assert len(table) == 2
    summary = report["summary"]
    counted = summary["a_scores"] + summary["b_scores"] + summary["ties"]
    assert counted + summary["inference_error"] == 4  # every judgment is accounted for
    for row in table:
        assert row["judge_backend"] == "hf" and row["judge_model"].startswith("sha256:")
        for name in ("forward", "backward"):
            raw = row[f"{name}_raw"]
            assert raw.strip(), "the judge produced no text"
            assert row[f"{name}_completion_tokens"] <= 8
            if row[f"{name}_preference"] == "error":
                assert row[f"{name}_verdict"] is None and row[f"{name}_error"]
                assert row[f"{name}_rationale"] == raw.strip()  # kept, never guessed
            else:
                # the verdict token's top-20 list holds at least the chosen alternative
                logprobs = row[f"{name}_verdict_logprobs"]
                chosen = {"first": "first", "second": "second", "tie": "tie"}[
                    row[f"{name}_verdict"]
                ]
                assert logprobs[chosen] is not None and logprobs[chosen] <= 0
                assert 0.0 <= row[f"{name}_soft_b"] <= 1.0
    if summary["winrate"] is not None:
        assert summary["lower_rate"] <= summary["winrate"] <= summary["upper_rate"]


def test_verdict_token_is_found_in_real_token_pieces(tmp_path):
    """The soft preference reads the top list at the token that holds the verdict text;
    check the lookup on SmolLM2's own tokenization of a verdict line."""
    (tmp_path / "d.jsonl").write_text("")
    recipe = {
        "run": {
            "name": "r",
            "model_name_or_path": "smollm2-135m-instruct",
            "data_s3_path": "d.jsonl",
        },
        "evaluation": {"task": "llm_judge", "strategy": "judge"},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    engine = pipeline.load_judge_engine(load_recipe(tmp_path / "r.yaml"))  # cached: no reload
    ids = engine.tokenizer("Verdict: [[2]] because", add_special_tokens=False)["input_ids"]
    top = [("2", math.log(0.6)), ("1", math.log(0.3)), ("tie", math.log(0.1))]
    tokens = [
        TokenLogprob(p, -0.1, top if p.strip("[] ") == "2" else [(p, -0.1)])
        for p in (engine.piece(i) for i in ids)
    ]
    assert verdict_distribution(tokens) == {
        "first": pytest.approx(math.log(0.3)),
        "second": pytest.approx(math.log(0.6)),
        "tie": pytest.approx(math.log(0.1)),
    }
