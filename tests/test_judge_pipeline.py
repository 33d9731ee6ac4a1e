"""Judge recipes end to end without a model: the recipe section, the asset graph (Nova
dataset judges and judges that join two gen_qa recipes), the outputs, the leaderboard."""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pytest
import yaml

from nova_eval_assets import storage
from nova_eval_assets.assets.judge import (
    LEADERBOARD_KEY,
    build_judge_assets,
    build_leaderboard_assets,
)
from nova_eval_assets.cli import main as cli_main
from nova_eval_assets.definitions import build_definitions, defs
from nova_eval_assets.engines.base import Generation, SamplingSettings, TokenLogprob
from nova_eval_assets.judge import pipeline
from nova_eval_assets.judge.pairwise import JudgeItem, judge_items
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import LoadedRecipe, RecipeError, load_recipe, parse_recipe

# ---------------------------------------------------------------- a scripted judge


class ScriptedJudge:
    """An engine that answers judge prompts by rule: ``"content"`` prefers the response
    holding GOOD (in either position), ``"first"`` always answers [[1]], ``"garbage"``
    never gives a marker, ``"broken"`` fails every request. It returns token pieces with
    a top list at the verdict token, like the hf engine."""

    name = "scripted"
    model_id = "scripted:1"
    default_batch_size = 4

    def __init__(self, mode: str = "content") -> None:
        self.mode = mode
        self.settings: list[SamplingSettings] = []
        self.prompts: list[str] = []

    def block_size(self, batch_size: int) -> int:
        return batch_size * 4

    def generate(self, requests, settings, batch_size=None, on_batch=None) -> list[Generation]:
        self.settings.append(settings)
        out = []
        for request in requests:
            self.prompts.append(request.prompt)
            first = request.prompt.split("[Response 1]")[1].split("[Response 2]")[0]
            verdict = "1" if self.mode == "first" or "GOOD" in first else "2"
            if self.mode == "broken":
                out.append(Generation(request.row_index, "", [], 10, 0, 0.0, "error", "HTTP 401"))
                continue
            pieces = (
                ["I", " cannot", " decide"]
                if self.mode == "garbage"
                else ["Verdict", ":", " [[", verdict, "]]", " Better", "."]
            )
            tokens = [
                TokenLogprob(
                    piece,
                    -0.1,
                    [(verdict, math.log(0.7)), ("2" if verdict == "1" else "1", math.log(0.3))]
                    if piece == verdict
                    else [(piece, -0.1)],
                )
                for piece in pieces
            ]
            out.append(
                Generation(request.row_index, "".join(pieces), tokens, 50, len(tokens), 0.0, "stop")
            )
        if on_batch:
            on_batch(len(requests), len(requests))
        return out


@pytest.fixture
def judge_engine(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ScriptedJudge]:
    def install(mode: str = "content") -> ScriptedJudge:
        engine = ScriptedJudge(mode)
        monkeypatch.setattr(pipeline, "load_judge_engine", lambda loaded: engine)
        return engine

    return install


# ---------------------------------------------------------------- recipes


JUDGE_ROWS = [
    {
        "prompt": "Printer jams on every page",
        "response_A": "Restart it.",
        "response_B": "GOOD: open tray 2 and remove the stuck sheet.",
        "metadata": json.dumps({"difficulty": "easy"}),
    },
    {
        "prompt": "Outlook crashes at start",
        "response_A": "GOOD: start it in safe mode and disable add-ins.",
        "response_B": "Buy a new laptop.",
        "metadata": json.dumps({"difficulty": "hard"}),
    },
    {
        "prompt": "Wi-Fi drops in room 4",
        "response_A": "Move closer.",
        "response_B": "GOOD: the access point in room 4 needs a firmware update.",
        "metadata": json.dumps({"difficulty": "hard"}),
    },
]


def judge_recipe_dict(name: str, judge: dict | None = None, data: str | None = None) -> dict:
    recipe: dict = {
        "run": {
            "name": name,
            "model_type": "hf",
            "model_name_or_path": "smollm2-135m-instruct",
            "replicas": 1,
            "output_s3_path": "",
        },
        "evaluation": {"task": "llm_judge", "strategy": "judge", "metric": "all"},
        "inference": {"max_new_tokens": 16, "temperature": 0},
    }
    if data:
        recipe["run"]["data_s3_path"] = data
    if judge:
        recipe["judge"] = judge
    return recipe


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    (tmp_path / "recipes").mkdir()
    return tmp_path / "recipes"


def write_recipe(folder: Path, recipe: dict) -> LoadedRecipe:
    path = folder / f"{recipe['run']['name']}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return load_recipe(path)


def dataset_judge(folder: Path, name: str = "pairs", rows: Sequence[dict] = JUDGE_ROWS, **judge):
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return write_recipe(folder, judge_recipe_dict(name, judge or None, data=data.name))


def gen_qa_recipe(folder: Path, name: str) -> LoadedRecipe:
    data = folder / "tickets.jsonl"
    data.write_text(json.dumps({"query": "q", "response": "r"}) + "\n")
    recipe = {
        "run": {
            "name": name,
            "model_name_or_path": "smollm2-135m-instruct",
            "data_s3_path": data.name,
        },
        "evaluation": {"task": "gen_qa", "strategy": "gen_qa"},
    }
    return write_recipe(folder, recipe)


def write_examples(loaded: LoadedRecipe, predictions: list[str | None], prompts=None) -> None:
    """What a gen_qa recipe's aggregated_report leaves in eval_results/examples.parquet."""
    n = len(predictions)
    prompts = prompts or [f"ticket {i}" for i in range(n)]
    table = pa.table(
        {
            "row_index": list(range(n)),
            "line": [i + 1 for i in range(n)],
            "system": ["Classify the ticket."] * n,
            "prompt": prompts,
            "gold": ["{}"] * n,
            "metadata": [json.dumps({"priority": "high" if i % 2 else "low"}) for i in range(n)],
            "prediction": [p or "" for p in predictions],
            "error": [None if p is not None else "out of memory" for p in predictions],
        }
    )
    storage.write_parquet(EvalLayout.for_recipe(loaded).result("examples.parquet"), table)


def materialize(definitions: list, *keys: dg.AssetKey, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        definitions,
        selection=dg.AssetSelection.assets(*keys),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
        **kwargs,
    )


def judge_keys(name: str) -> list[dg.AssetKey]:
    return [dg.AssetKey([name, "validated_dataset"]), dg.AssetKey([name, "judge_results"])]


# ---------------------------------------------------------------- the recipe section


def test_judge_section_is_validated_with_located_errors():
    text = yaml.safe_dump(judge_recipe_dict("j", {"backend": "openai", "baseline_recipe": "a"}))
    with pytest.raises(RecipeError) as error:
        parse_recipe(text, "x.yaml")
    message = str(error.value)
    assert "x.yaml:" in message and "judge:" in message
    assert "backend 'openai' needs endpoint" in message

    text = yaml.safe_dump(judge_recipe_dict("j", {"baseline_recipe": "a"}))
    with pytest.raises(RecipeError, match="go together"):
        parse_recipe(text, "x.yaml")

    text = yaml.safe_dump(judge_recipe_dict("j", {"backend": "vertex"}, data="d.jsonl"))
    with pytest.raises(RecipeError, match=r"judge.backend = 'vertex' is not allowed"):
        parse_recipe(text, "x.yaml")

    with pytest.raises(RecipeError, match=r"missing required key 'run\.data_s3_path'"):
        parse_recipe(yaml.safe_dump(judge_recipe_dict("j")), "x.yaml")

    gen_qa = judge_recipe_dict("g", {"order": "verdict_first"}, data="d.jsonl")
    gen_qa["evaluation"] = {"task": "gen_qa", "strategy": "gen_qa"}
    with pytest.raises(RecipeError, match="judge section belongs to llm_judge"):
        parse_recipe(yaml.safe_dump(gen_qa), "x.yaml")

    own = judge_recipe_dict("j", {"baseline_recipe": "j", "challenger_recipe": "b"})
    with pytest.raises(RecipeError, match="cannot judge its own"):
        parse_recipe(yaml.safe_dump(own), "x.yaml")

    ok = parse_recipe(yaml.safe_dump(judge_recipe_dict("j", data="d.jsonl")), "x.yaml")
    assert ok.judge is None and ok.run.data_s3_path == "d.jsonl"


def test_sampling_settings_ask_for_verdict_logprobs(workspace):
    loaded = dataset_judge(workspace)
    assert pipeline.sampling_settings(loaded).top_logprobs == 20
    bedrock = dataset_judge(
        workspace, "viabedrock", backend="bedrock", model="us.amazon.nova-pro-v1:0"
    )
    assert pipeline.sampling_settings(bedrock).top_logprobs == 0
    assert pipeline.judge_model(bedrock) == "us.amazon.nova-pro-v1:0"
    assert pipeline.labels(loaded) == ("pairs:response_A", "pairs:response_B")


# ---------------------------------------------------------------- a Nova judge recipe


def test_dataset_judge_end_to_end(workspace, judge_engine):
    engine = judge_engine("content")
    loaded = dataset_judge(workspace, baseline_label="old", challenger_label="new")
    result = materialize(build_judge_assets(loaded, [loaded]), *judge_keys("pairs"))
    assert result.success

    report = pipeline.read_latest_report(loaded)
    summary = report["summary"]
    # the content judge prefers B on rows 0 and 2 and A on row 1, in both passes
    assert (summary["a_scores"], summary["b_scores"], summary["ties"]) == (2, 4, 0)
    assert summary["inference_error"] == 0 and summary["score"] == 4
    assert summary["winrate"] == pytest.approx(4 / 6)
    assert summary["lower_rate"] <= summary["winrate"] <= summary["upper_rate"]
    diagnostics = report["diagnostics"]
    assert diagnostics["flip_rate"] == 0.0 and diagnostics["first_position_win_rate"] == 0.5
    assert diagnostics["length_bias"] == 1.0  # the GOOD answers are the longer ones
    # soft preference from the verdict token's top list: 0.7 for the chosen position
    assert diagnostics["soft_winrate"] == pytest.approx((0.7 + 0.3 + 0.7) / 3)
    assert diagnostics["by_metadata"]["difficulty"]["hard"]["prompts"] == 2
    assert diagnostics["by_metadata"]["difficulty"]["easy"]["b_scores"] == 2
    assert engine.settings[0].top_logprobs == 20 and engine.settings[0].max_new_tokens == 16

    # per-judgment Parquet
    judgments = storage.read_parquet(report["paths"]["judgments"]).to_pylist()
    first = judgments[0]
    assert first["prompt"] == JUDGE_ROWS[0]["prompt"]
    assert first["response_B"] == JUDGE_ROWS[0]["response_B"]
    assert first["forward_raw"] == "Verdict: [[2]] Better."
    assert first["backward_raw"] == "Verdict: [[1]] Better."
    assert (first["forward_verdict"], first["backward_verdict"]) == ("second", "first")
    assert (first["forward_preference"], first["backward_preference"]) == ("B", "B")
    assert first["forward_rationale"] == "Better."
    assert first["outcome"] == "B" and first["metadata"] == JUDGE_ROWS[0]["metadata"]
    assert (first["baseline"], first["challenger"]) == ("old", "new")
    assert first["judge_model"] == "scripted:1"
    assert [r["outcome"] for r in judgments] == ["B", "A", "B"]

    # Nova-style results JSON and details
    results = storage.read_json(report["paths"]["results"])
    assert set(results["results"]) == {"custom|llm_judge_judge|0", "all"}
    nova = results["results"]["all"]
    for key in ("a_scores", "b_scores", "ties", "inference_error", "score"):
        assert f"{key}_stderr" in nova
    assert {"winrate", "lower_rate", "upper_rate"} <= set(nova)
    assert results["config_general"]["baseline"] == "old"
    assert "a tie counts half" in results["config_general"]["counting_rule"]
    assert Path(report["paths"]["details"]).name.startswith("details_custom|llm_judge_judge|0_")
    details = storage.read_parquet(report["paths"]["details"]).to_pylist()
    assert ast.literal_eval(details[1]["predictions"]) == [
        "Verdict: [[1]] Better.",
        "Verdict: [[2]] Better.",
    ]
    assert ast.literal_eval(details[1]["metrics"])["a_scores"] == 2
    assert ast.literal_eval(details[0]["specifics"])["outcome"] == "B"

    # summary and diagnostics as asset metadata
    (materialization,) = [
        m
        for m in result.get_asset_materialization_events()
        if m.asset_key.path[-1] == "judge_results"
    ]
    metadata = materialization.materialization.metadata
    assert metadata["winrate"].value == pytest.approx(4 / 6)
    assert metadata["diag_flip_rate"].value == 0.0
    assert "winrate" in metadata["summary"].value
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["dataset_is_valid"].passed and checks["judge_verdicts_parse"].passed


def test_show_system_false_hides_the_system_prompt_from_the_judge():
    item = JudgeItem(0, "q", "GOOD a", "b", system="SECRET INSTRUCTIONS")
    engine = ScriptedJudge()
    shown = judge_items(engine, [item], SamplingSettings())
    hidden = judge_items(engine, [item], SamplingSettings(), show_system=False)
    assert all("SECRET INSTRUCTIONS" in p for p in engine.prompts[:2])
    assert not any("SECRET INSTRUCTIONS" in p for p in engine.prompts[2:])
    assert shown["system"].to_pylist() == hidden["system"].to_pylist() == ["SECRET INSTRUCTIONS"]


def test_position_biased_judge_flips_and_unparsable_judge_errors(workspace, judge_engine):
    judge_engine("first")
    loaded = dataset_judge(workspace)
    assert materialize(build_judge_assets(loaded, [loaded]), *judge_keys("pairs")).success
    report = pipeline.read_latest_report(loaded)
    assert report["diagnostics"]["flip_rate"] == 1.0
    assert report["summary"]["a_scores"] == report["summary"]["b_scores"] == 3
    assert report["summary"]["winrate"] == 0.5
    assert report["diagnostics"]["outcomes"] == {"inconsistent": 3}

    judge_engine("garbage")
    result = materialize(build_judge_assets(loaded, [loaded]), *judge_keys("pairs"))
    assert result.success  # unparsable is a result (inference_error), not a failure
    report = pipeline.read_latest_report(loaded)
    assert report["summary"]["inference_error"] == 6 and report["summary"]["winrate"] is None
    rows = storage.read_parquet(report["paths"]["judgments"]).to_pylist()
    assert rows[0]["forward_raw"] == "I cannot decide"  # kept
    assert "no verdict marker" in rows[0]["forward_error"]
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["judge_verdicts_parse"].passed


def test_a_judge_whose_every_request_fails_fails_the_asset(workspace, judge_engine):
    judge_engine("broken")
    loaded = dataset_judge(workspace)
    result = materialize(build_judge_assets(loaded, [loaded]), *judge_keys("pairs"))
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "every judge request failed" in failure.step_failure_data.error.to_string()
    assert "HTTP 401" in failure.step_failure_data.error.to_string()


def test_invalid_judge_dataset_stops_at_the_blocking_check(workspace, judge_engine):
    judge_engine()
    loaded = dataset_judge(workspace, rows=[*JUDGE_ROWS, {"prompt": "x", "response_A": "a"}])
    result = materialize(build_judge_assets(loaded, [loaded]), *judge_keys("pairs"))
    assert not result.success
    (check,) = [
        c for c in result.get_asset_check_evaluations() if c.check_name == "dataset_is_valid"
    ]
    assert not check.passed and "field 'response_B': missing required field" in check.description


# ---------------------------------------------------------------- joining two gen_qa recipes


def joined_setup(workspace: Path):
    baseline = gen_qa_recipe(workspace, "with_system")
    challenger = gen_qa_recipe(workspace, "no_system")
    judge = write_recipe(
        workspace,
        judge_recipe_dict(
            "judge_pair",
            {"baseline_recipe": "with_system", "challenger_recipe": "no_system"},
        )
        | {"dataset": {"on_invalid": "skip"}},
    )
    return baseline, challenger, judge


def test_joined_judge_depends_on_both_recipes_and_joins_by_row(workspace, judge_engine):
    judge_engine("content")
    baseline, challenger, judge = joined_setup(workspace)
    recipes = [baseline, challenger, judge]
    graph = build_definitions(recipes).resolve_asset_graph()
    node = graph.get(dg.AssetKey(["judge_pair", "validated_dataset"]))
    assert node.parent_keys == {
        dg.AssetKey(["with_system", "aggregated_report"]),
        dg.AssetKey(["no_system", "aggregated_report"]),
    }
    board = graph.get(LEADERBOARD_KEY)
    assert board.parent_keys == {dg.AssetKey(["judge_pair", "judge_results"])}

    # upstream not run yet: a clear message
    result = materialize(build_judge_assets(judge, recipes), *judge_keys("judge_pair"))
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert (
        "materialize with_system/aggregated_report first"
        in failure.step_failure_data.error.to_string()
    )

    write_examples(baseline, ["GOOD: reseat the cable", "short", None, "GOOD: reboot", "x"])
    write_examples(challenger, ["no", "GOOD: longer answer", "GOOD: ok", "nah", "y", "extra"])
    result = materialize(build_judge_assets(judge, recipes), *judge_keys("judge_pair"))
    assert result.success

    join = storage.read_json(EvalLayout.for_recipe(judge).stage("join_report.json"))
    assert join["joined_rows"] == 5 and join["only_in_challenger"] == 1
    assert join["baseline_inference_errors"] == 1 and join["prompt_mismatches"] == 0
    report = pipeline.read_latest_report(judge)
    assert (report["baseline"], report["challenger"]) == ("with_system", "no_system")
    rows = storage.read_parquet(report["paths"]["judgments"]).to_pylist()
    # row 2 failed in the baseline: empty response_A, rejected by validation (skip policy)
    assert [r["prompt"] for r in rows] == ["ticket 0", "ticket 1", "ticket 3", "ticket 4"]
    assert rows[0]["response_A"] == "GOOD: reseat the cable" and rows[0]["response_B"] == "no"
    assert rows[0]["system"] == "Classify the ticket."
    assert json.loads(rows[1]["metadata"]) == {"priority": "high"}
    assert [r["outcome"] for r in rows] == ["A", "B", "A", "inconsistent"]  # row 4: no GOOD
    rejected = storage.read_bytes(EvalLayout.for_recipe(judge).rejected_rows).decode()
    assert "response_A" in rejected and "must not be empty" in rejected


def test_joined_judge_names_are_checked(workspace):
    gen_qa_recipe(workspace, "with_system")
    bad = write_recipe(
        workspace,
        judge_recipe_dict(
            "judge_pair", {"baseline_recipe": "with_system", "challenger_recipe": "nope"}
        ),
    )
    with pytest.raises(RecipeError, match=r"judge.challenger_recipe = 'nope' names no recipe"):
        build_judge_assets(bad, [bad, load_recipe(workspace / "with_system.yaml")])
    other_judge = dataset_judge(workspace, "other")
    bad2 = write_recipe(
        workspace,
        judge_recipe_dict(
            "judge_two", {"baseline_recipe": "with_system", "challenger_recipe": "other"}
        ),
    )
    with pytest.raises(RecipeError, match="must be a gen_qa recipe"):
        pipeline.upstream_recipes(
            bad2, [bad2, other_judge, load_recipe(workspace / "with_system.yaml")]
        )


# ---------------------------------------------------------------- leaderboard


def test_leaderboard_over_every_judge_result(workspace, judge_engine):
    judge_engine("content")
    one = dataset_judge(workspace, "round_one", baseline_label="base", challenger_label="tuned")
    swapped = [
        {**row, "response_A": row["response_B"], "response_B": row["response_A"]}
        for row in JUDGE_ROWS
    ]
    two = dataset_judge(
        workspace, "round_two", rows=swapped, baseline_label="tuned", challenger_label="big"
    )
    never = dataset_judge(workspace, "not_run", baseline_label="base", challenger_label="other")
    recipes = [one, two, never]
    definitions = [
        *build_judge_assets(one, recipes),
        *build_judge_assets(two, recipes),
        *build_judge_assets(never, recipes),
        *build_leaderboard_assets(recipes),
    ]
    assert materialize(definitions, *judge_keys("round_one"), *judge_keys("round_two")).success
    result = materialize(
        definitions,
        LEADERBOARD_KEY,
        run_config={
            "ops": {"judge_leaderboard": {"config": {"anchor": "base", "bootstrap_rounds": 200}}}
        },
    )
    assert result.success
    board = pipeline.read_leaderboard(recipes)
    assert board["anchor"] == "base" and board["results_not_run"] == ["not_run"]
    models = {m["model"]: m for m in board["models"]}
    assert set(models) == {"base", "tuned", "big"}
    assert models["base"]["rating"] == 1000.0
    # tuned beat base 4-2 in points; big lost to tuned 2-4: tuned > base > big... by BT
    assert models["tuned"]["rank"] == 1
    assert models["tuned"]["rating"] > 1000 > models["big"]["rating"]
    table = storage.read_parquet(board["paths"]["leaderboard"])
    assert table.column_names[:3] == ["rank", "model", "rating"]
    (materialization,) = result.get_asset_materialization_events()
    assert "tuned" in materialization.materialization.metadata["leaderboard"].value


def test_no_leaderboard_without_judge_recipes(workspace):
    assert build_leaderboard_assets([gen_qa_recipe(workspace, "plain")]) == []


# ---------------------------------------------------------------- shipped recipes and the CLI


def test_code_location_has_the_shipped_judge_example():
    keys = {k.to_user_string() for k in defs().resolve_asset_graph().get_all_asset_keys()}
    assert {
        "judge_support_tickets/validated_dataset",
        "judge_support_tickets/judge_results",
        "judge_leaderboard",
        "support_tickets_with_system/aggregated_report",
        "support_tickets_no_system/aggregated_report",
    } <= keys


def test_cli_validates_the_joined_judge_recipe(capsys):
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "judge_support_tickets.yaml"
    assert cli_main(["validate", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "baseline (response_A)" in out and "support_tickets_no_system.yaml" in out


def test_cli_runs_a_joined_judge_on_existing_outputs(workspace, judge_engine, monkeypatch, capsys):
    judge_engine("content")
    monkeypatch.setenv("DAGSTER_HOME", str(workspace.parent / "dagster_home"))
    # an ephemeral instance: a real one captures compute logs, which fights capsys
    instance = dg.DagsterInstance.ephemeral()
    monkeypatch.setattr(dg.DagsterInstance, "get", staticmethod(lambda: instance))
    baseline, challenger, judge = joined_setup(workspace)
    write_examples(baseline, ["GOOD: reseat the cable", "short"])
    write_examples(challenger, ["no", "GOOD: longer answer"])
    assert cli_main(["run", str(judge.path), "--no-upstream", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Judge 'judge_pair': with_system (A) vs no_system (B)" in out
    assert "| winrate | 0.5000 |" in out
    assert "Leaderboard (Bradley-Terry, Elo scale):" in out and "with_system (anchor)" in out
    assert "judgments.parquet" in out

    # the run is in the tables too: two passes per prompt, and the summary row
    tables = workspace.parent / "outputs" / "tables"
    assert str(tables) in out
    with duckdb.connect() as con:
        judgments = con.execute(
            f"select eval_name, row_index, pass, outcome from read_parquet("
            f"'{tables}/judge_judgments/**/*.parquet', hive_partitioning = true) order by 2, 3"
        ).fetchall()
        summary = con.execute(
            f"select eval_name, a_scores, b_scores, num_judgments, winrate from read_parquet("
            f"'{tables}/judge_summary/**/*.parquet', hive_partitioning = true)"
        ).fetchall()
    # the content judge prefers the GOOD answer: A on row 0, B on row 1, in both passes
    assert judgments == [
        ("judge_pair", 0, "backward", "A"),
        ("judge_pair", 0, "forward", "A"),
        ("judge_pair", 1, "backward", "B"),
        ("judge_pair", 1, "forward", "B"),
    ]
    assert summary == [("judge_pair", 2.0, 2.0, 4, pytest.approx(0.5))]


def test_run_judge_evaluation_reports_an_invalid_dataset_or_a_missing_upstream(
    workspace, judge_engine
):
    from nova_eval_assets.assets.judge import run_judge_evaluation

    judge_engine()
    bad = dataset_judge(workspace, rows=[{"prompt": "x", "response_A": "a", "response_B": ""}])
    outcome = run_judge_evaluation(
        bad, [bad], instance=dg.DagsterInstance.ephemeral(), show_progress=False
    )
    assert outcome.report is None
    assert "judge dataset is invalid" in outcome.message and "must not be empty" in outcome.message

    _, _, judge = joined_setup(workspace)
    recipes = [load_recipe(workspace / f"{n}.yaml") for n in ("with_system", "no_system")]
    outcome = run_judge_evaluation(
        judge,
        [*recipes, judge],
        instance=dg.DagsterInstance.ephemeral(),
        show_progress=False,
        run_upstream=False,
    )
    assert outcome.report is None
    assert "materialize with_system/aggregated_report first" in outcome.message
