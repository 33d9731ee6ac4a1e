"""The main job (`make eval`) on a slice of the support tickets with the bundled model: the
free-text and the constrained recipe, their paired comparison, and what the constrained run
gives the analysis (valid labels, a label confidence per row, calibration, strata and
failure sections with content). The CLI summary leads with the comparison."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from nova_eval_assets import cli, storage
from nova_eval_assets.assets.materialize import run_evaluation
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
ROWS = 12
LABELS = load_recipe(RECIPES / "support_tickets.yaml").recipe.classification.labels


def has_label(text: str) -> bool:
    try:
        return json.loads(text).get("class") in LABELS
    except (ValueError, AttributeError):
        return False


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("main_job")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(root / "outputs"))
        instance = dg.DagsterInstance.ephemeral()
        free = load_recipe(RECIPES / "support_tickets.yaml").with_overrides(limit=ROWS, replicas=1)
        constrained = load_recipe(RECIPES / "support_tickets_constrained.yaml").with_overrides(
            limit=ROWS, replicas=1
        )
        first = run_evaluation(free, instance=instance, show_progress=False)
        assert first.report is not None, first.message
        second = run_evaluation(constrained, instance=instance, show_progress=False)
        assert second.report is not None, second.message
        yield free, constrained, second, root


def test_constrained_outputs_are_valid_labels_each_with_a_confidence(evaluated):
    _, constrained, _, _ = evaluated
    layout = EvalLayout.for_recipe(constrained)
    examples = pq.read_table(layout.examples).to_pylist()
    assert len(examples) == ROWS
    for row in examples:
        answer = json.loads(row["prediction"])  # strict JSON, every row
        assert list(answer) == ["class", "thought", "description"]
        assert answer["class"] in LABELS
        assert len(answer["thought"]) <= 200 and len(answer["description"]) <= 100
        assert row["finish_reason"] == "stop"
    per_example = pq.read_table(layout.analysis("per_example.parquet")).to_pylist()
    confidences = [r["label_confidence"] for r in per_example]
    assert all(c is not None and 0.0 < c <= 1.0 for c in confidences)
    # the label's probability among the labels is at least its raw probability
    for r in per_example:
        assert r["label_confidence"] >= r["label_prob"] - 1e-9


def test_the_analysis_has_content(evaluated):
    _, constrained, _, _ = evaluated
    summary = storage.read_json(EvalLayout.for_recipe(constrained).analysis("analysis.json"))
    assert summary["confidence"]["measure"] == "label_confidence"
    assert summary["confidence"]["automatic"] is True
    assert summary["counts"]["json_invalid"] == 0
    assert summary["counts"]["with_label_confidence"] == ROWS
    calibration = summary["calibration"]
    assert calibration["n"] == ROWS and calibration["ece_equal_width"] is not None
    assert sum(b["n"] for b in calibration["bins_equal_width"]) == ROWS
    assert {m["measure"] for m in summary["measures"]} >= {"label_confidence", "first_token"}
    assert summary["strata"], "no metadata strata"
    primary = summary["failures"]["primary"]
    assert primary["invalid_json"] == 0 and primary["missing_label"] == 0
    assert sum(primary.values()) == ROWS


def test_the_comparison_is_materialized_and_leads_the_summary(evaluated, capsys):
    free, _, outcome, _ = evaluated
    (comparison,) = outcome.comparisons
    assert comparison.baseline == "support_tickets" and storage.exists(comparison.report)
    rows = {r["metric"]: r for r in comparison.summary["overall"]}
    assert comparison.summary["counts"]["paired"] == ROWS
    assert rows["schema_valid"]["b"] == 1.0
    free_rows = pq.read_table(EvalLayout.for_recipe(free).examples, columns=["prediction"])
    assert (
        rows["schema_valid"]["a"]
        <= sum(has_label(row["prediction"]) for row in free_rows.to_pylist()) / ROWS
    )

    cli._print_comparisons(outcome.comparisons)
    out = capsys.readouterr().out
    assert "Paired comparison: support_tickets_constrained (B) against support_tickets (A)" in out
    assert "schema_valid" in out and "Comparison report:" in out


def test_the_judge_with_a_constrained_verdict_parses_every_judgment(evaluated):
    from nova_eval_assets.assets.judge import run_judge_evaluation
    from nova_eval_assets.judge.verdicts import parse_judgment
    from nova_eval_assets.recipe import discover_recipes

    _, _, _, root = evaluated
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(root / "outputs"))
        judge = load_recipe(RECIPES / "judge_constrained_vs_free.yaml").with_overrides(limit=4)
        outcome = run_judge_evaluation(
            judge,
            discover_recipes(RECIPES),
            instance=dg.DagsterInstance.ephemeral(),
            show_progress=False,
            run_upstream=False,  # judge the outputs the fixture wrote
        )
        assert outcome.report is not None, outcome.message
        judgments = pq.read_table(EvalLayout.for_recipe(judge).result("judgments.parquet"))
        judgments = judgments.to_pylist()
    assert len(judgments) == 4
    for row in judgments:
        for side in ("forward", "backward"):
            text = row[f"{side}_raw"]
            assert text.startswith(("[[1]] ", "[[2]] ", "[[tie]] ")), text
            assert parse_judgment(text).ok
