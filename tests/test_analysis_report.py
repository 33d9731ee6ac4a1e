"""The analysis outputs end to end on synthetic tables (no model): the files next to the
results, the HTML reports rendered in headless Chromium, the Dagster assets with their
Markdown metadata, and the recipe's analysis section."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from nova_eval_assets import storage
from nova_eval_assets.analysis.pipeline import (
    analyze,
    compare_evaluations,
    write_analysis,
    write_comparison,
)
from nova_eval_assets.assets.analysis import build_analysis_assets
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import AnalysisConfig, RecipeError, parse_recipe
from nova_eval_assets.report.analysis_markdown import analysis_markdown
from tests import browser
from tests.analysis_synthetic import make_examples, support_ticket_examples

PROJECT = Path(__file__).resolve().parents[1]
PROBE = """<script>
const root = document.documentElement;
window.addEventListener('error', e => root.setAttribute('data-error', e.message));
window.addEventListener('load', () => {
  const images = [...document.images];
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).length;
  root.setAttribute('data-check', `images=${images.length};broken=${broken}`);
});
</script>"""


@pytest.fixture(scope="module")
def ticket_analysis(tmp_path_factory):
    folder = tmp_path_factory.mktemp("analysis")
    table = support_ticket_examples(PROJECT)
    storage.write_parquet(str(folder / "examples.parquet"), table)
    config = AnalysisConfig(label_field="class", min_stratum_size=30)
    result = analyze(str(folder / "examples.parquet"), config, name="support_tickets", model="m")
    return result, write_analysis(result, str(folder / "analysis")), table


def test_outputs_written_next_to_the_results(ticket_analysis):
    _, paths, table = ticket_analysis
    for key in ("report", "summary", "per_example", "strata", "reliability_png", "coverage_png"):
        assert Path(paths[key]).stat().st_size > 0, key
    summary = storage.read_json(paths["summary"])
    assert summary["counts"]["examples"] == table.num_rows == 254
    assert set(summary["strata_fields"]) == {"difficulty", "priority", "domain"}
    per_example = storage.read_parquet(paths["per_example"])
    assert per_example.num_rows == 254
    assert per_example.column("row_index").to_pylist() == list(range(254))
    # the analysis holds metadata dictionary-encoded; the table keeps the examples' strings
    assert per_example.schema.field("metadata").type == pa.string()
    assert per_example.column("metadata").to_pylist() == table.column("metadata").to_pylist()
    metrics = {r["metric"] for r in summary["strata"]}
    assert {"label_accuracy", "em", "f1", "class_match", "bleu", "confidence"} <= metrics


def test_reading_parquet_leaves_equals_reading_the_table(ticket_analysis):
    result, _, table = ticket_analysis
    from_table = analyze(table, AnalysisConfig(label_field="class"), plots=False)
    for column in ("confidence", "label_prob", "first_token_entropy", "min_token_prob", "correct"):
        np.testing.assert_array_equal(
            from_table.per_example.column(column).to_numpy(zero_copy_only=False),
            result.per_example.column(column).to_numpy(zero_copy_only=False),
        )


def test_markdown_embeds_the_plots(ticket_analysis):
    result, _, _ = ticket_analysis
    text = analysis_markdown(result.summary, result.strata)
    assert "ECE, equal width" in text and "| difficulty | hard" in text
    assert all(png.startswith(b"\x89PNG") for png in result.images.values())


def render(html_file: Path, tmp_path: Path) -> tuple[str, Image.Image]:
    """Load the page in headless Chromium: the DOM after load (with the probe's findings)
    and a full-width screenshot."""
    probe = tmp_path / f"probe_{html_file.parent.name}.html"
    probe.write_text(html_file.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"))
    dom = browser.dump_dom(probe.as_uri(), tmp_path)
    shot = browser.screenshot(
        html_file.as_uri(), tmp_path / f"{html_file.parent.name}.png", tmp_path
    )
    return dom, Image.open(shot).convert("RGB")


def assert_rendered(dom: str, screenshot: Image.Image, images: int) -> None:
    assert ' data-error="' not in dom  # the probe found no script error
    assert f'data-check="images={images};broken=0"' in dom
    pixels = np.asarray(screenshot)
    not_white = (pixels < 245).any(axis=2).mean()
    colors = screenshot.getcolors(maxcolors=1 << 24)
    assert not_white > 0.03 and colors is not None and len(colors) > 50  # not blank


@browser.needs_chromium
def test_html_reports_render_in_headless_chromium(ticket_analysis, tmp_path):
    result, paths, table = ticket_analysis
    dom, screenshot = render(Path(paths["report"]), tmp_path)
    assert_rendered(dom, screenshot, images=len(result.images))
    assert "Analysis: support_tickets" in dom and "Reliability bins" in dom

    better = support_ticket_examples(PROJECT, seed=1)
    comparison = compare_evaluations(
        table, better, AnalysisConfig(label_field="class", bootstrap_rounds=200)
    )
    folder = tmp_path / "comparison_vs_base"
    written = write_comparison(comparison, str(folder))
    dom, screenshot = render(Path(written["report"]), tmp_path)
    assert_rendered(dom, screenshot, images=len(comparison.images))
    assert "B − A" in dom and "by difficulty" in dom


def test_reports_escape_the_data(tmp_path):
    table = make_examples(60)
    hostile = table.set_column(
        table.schema.get_field_index("prompt"),
        "prompt",
        [["<script>alert(1)</script>"] * 60],
    )
    result = analyze(hostile, AnalysisConfig(label_field="class", max_examples=2), plots=False)
    html = Path(write_analysis(result, str(tmp_path))["report"]).read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


# ---------------------------------------------------------------- Dagster and the recipe


def test_assets_materialize_with_markdown_and_image_metadata(make_recipe):
    base = make_recipe(name="base")
    tuned = make_recipe(name="tuned")
    tuned = type(tuned)(
        tuned.recipe.model_copy(
            update={
                "analysis": tuned.recipe.analysis.model_copy(
                    update={"label_field": "class", "compare_with": ["base"]}
                )
            }
        ),
        tuned.path,
    )
    for loaded, seed in ((base, 1), (tuned, 2)):
        table = make_examples(200, outcome_seed=seed)
        storage.write_parquet(EvalLayout.for_recipe(loaded).examples, table)
    definitions = build_analysis_assets(tuned, [base, tuned])
    keys = {k.to_user_string() for d in definitions for k in d.keys}
    assert keys == {"tuned/analysis_report", "tuned/comparison_vs_base"}
    comparison = next(d for d in definitions if "comparison" in d.key.to_user_string())
    assert set(comparison.asset_deps[comparison.key]) == {
        dg.AssetKey(["tuned", "aggregated_report"]),
        dg.AssetKey(["base", "aggregated_report"]),
    }
    result = dg.materialize(definitions, instance=dg.DagsterInstance.ephemeral())
    assert result.success
    by_key = {
        m.asset_key.to_user_string(): m.metadata
        for m in result.get_asset_materialization_events()
        for m in [m.materialization]
    }
    analysis = by_key["tuned/analysis_report"]
    assert "ECE" in analysis["summary"].value
    assert analysis["plot_reliability"].value.startswith(
        "![reliability diagram](data:image/png;base64,"
    )
    assert Path(analysis["html_report"].value).exists()
    assert "B − A" in by_key["tuned/comparison_vs_base"]["summary"].value
    layout = EvalLayout.for_recipe(tuned)
    assert storage.exists(layout.analysis("report.html"))
    assert storage.exists(layout.comparison("base", "report.html"))


def test_compare_with_must_name_another_recipe(make_recipe):
    base = make_recipe(name="base")

    def with_analysis(**update):
        return type(base)(
            base.recipe.model_copy(
                update={"analysis": base.recipe.analysis.model_copy(update=update)}
            ),
            base.path,
        )

    with pytest.raises(RecipeError, match="names no recipe of this code location"):
        build_analysis_assets(with_analysis(compare_with=["nope"]), [base])
    with pytest.raises(RecipeError, match="names the recipe itself"):
        build_analysis_assets(with_analysis(compare_with=["base"]), [base])
    assert build_analysis_assets(with_analysis(enabled=False), [base]) == []


RECIPE = """run: {name: a, model_name_or_path: m, data_s3_path: d.jsonl}
evaluation: {task: gen_qa, strategy: gen_qa}
"""


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("analysis: {bins: 1}", "r.yaml:3: analysis.bins = 1 is out of range"),
        ("analysis: {low_confidence_threshold: 1.5}", "at most 1.0 (allowed: 0..1)"),
        ("analysis: {colour: red}", "unknown key 'analysis.colour'; allowed keys here: enabled"),
        ("analysis: {confidence: vibes}", "analysis.confidence = 'vibes' is not allowed"),
        ("analysis: {confidence: label}", "needs analysis.label_field"),
        ("analysis: {compare_with: 'not/a-name'}", "not a run name"),
        ("analysis: {length_ratio_min: 3}", "length_ratio_min must be below length_ratio_max"),
    ],
)
def test_recipe_analysis_section_is_validated(section, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_recipe(RECIPE + section, "r.yaml")


def test_recipe_analysis_section_defaults_and_compare_with():
    assert parse_recipe(RECIPE).analysis == AnalysisConfig()
    recipe = parse_recipe(RECIPE + "analysis: {label_field: class, compare_with: base}")
    assert recipe.analysis.compare_with == ["base"] and recipe.analysis.label_field == "class"


def test_screenshot_helper_rejects_a_blank_page():
    blank = Image.new("RGB", (200, 200), "white")
    with pytest.raises(AssertionError):
        assert_rendered('data-check="images=0;broken=0"', blank, images=0)


def test_the_cli_path_materializes_the_analysis_after_the_report(make_recipe):
    from nova_eval_assets.assets.analysis import materialize_analysis
    from nova_eval_assets.assets.in_process import InProcessRuns

    loaded = make_recipe(name="cli")
    storage.write_parquet(EvalLayout.for_recipe(loaded).examples, make_examples(120))
    runs = InProcessRuns(dg.DagsterInstance.ephemeral(), loaded.name)
    outcome = materialize_analysis(loaded, runs)
    assert outcome.message == "" and len(runs.run_ids) == 1
    assert outcome.report is not None and Path(outcome.report).exists()
    # without a label field the answer is the whole output and em decides what is correct
    summary = storage.read_json(EvalLayout.for_recipe(loaded).analysis("analysis.json"))
    assert summary["settings"]["label_field"] is None
    assert summary["confidence"]["measure"] == "first_token"
