"""rubric_llm_judge without a model: the rubric parser and its scores on hand-written judge
outputs, a scripted judge through the pipeline (results keys, details, the judgments and
criteria tables, DuckDB over the criteria, the leaderboard), and the constrained form.
Every expected number is worked by hand in the comments beside it."""

from __future__ import annotations

import ast
import json
import math
import re
import statistics
from pathlib import Path

import duckdb
import pytest
import yaml

from nova_eval_assets import storage, tables
from nova_eval_assets.engines.base import Generation, TokenLogprob
from nova_eval_assets.engines.constraints import ResponseFormat, compile_error
from nova_eval_assets.judge import pipeline
from nova_eval_assets.judge.rubric import (
    MAX_TEXT,
    parse_rubric,
    pass_columns,
    render_rubric,
    rubric_pattern,
)
from nova_eval_assets.judge.verdicts import Verdict
from nova_eval_assets.recipe import RecipeError, load_recipe, parse_recipe

# ---------------------------------------------------------------- hand-written outputs

VALID = """criteria:
  correctness:
    description: Gives the right number.
    type: scale
    weight: 0.6
    score_1: 5
    justification_1: It says 4.
    score_2: 2
    justification_2: It says 5.
  concise:
    description: One sentence at most.
    type: binary
    weight: 0.4
    score_1: true
    justification_1: One line.
    score_2: false
    justification_2: Three paragraphs.
preference: 1
justification: Response 1 is right and short."""

MISSING_WEIGHT = """criteria:
  a:
    type: scale
    weight: 0.6
    score_1: 4
    score_2: 2
  b:
    type: binary
    score_1: true
    score_2: false
  c:
    type: scale
    weight: 0.2
    score_1: 1
    score_2: 5
preference: tie
justification: Close."""

UNNORMALIZED = """criteria:
  x:
    type: scale
    weight: 2
    score_1: 5
    score_2: 3
  y:
    type: scale
    weight: 3
    score_1: 1
    score_2: 4
preference: 2
justification: Response 2 covers y."""

ONE_SIDE = """criteria:
  p:
    type: scale
    weight: 0.5
    score_1: 4
  q:
    type: scale
    weight: 0.5
    score_1: 2
    score_2: 3
preference: 1
justification: Response 1 reads better."""

BOTH_TRUE = """criteria:
  r:
    type: binary
    weight: 1
    score_1: true
    score_2: true
preference: 1
justification: Both answer; the first is warmer."""

ONE_SCALE = """criteria:
  s:
    type: scale
    weight: 1
    score_1: 5
    score_2: 3
preference: 1
justification: The first is complete."""

UNPARSABLE = "criteria:\n\tcorrect: [1, 2\npreference: 1\n"

SECOND_ORDER = """criteria:
  correctness:
    description: Gives the right number.
    type: scale
    weight: 0.5
    score_1: 2
    score_2: 4
  clarity:
    description: Easy to follow.
    type: scale
    weight: 0.5
    score_1: 3
    score_2: 5
preference: 2
justification: Response 2 is right."""


def weighted(text: str, pass_name: str = "forward") -> tuple[float, float, float]:
    columns = pass_columns(parse_rubric(text), pass_name)
    return tuple(
        columns[f"{pass_name}_{k}"]
        for k in ("weighted_score_a", "weighted_score_b", "score_margin")
    )


def test_valid_rubric_scores_by_hand():
    parsed = parse_rubric(VALID)
    assert parsed.ok and parsed.verdict is Verdict.FIRST
    assert parsed.rationale == "Response 1 is right and short."
    assert [c.name for c in parsed.criteria] == ["correctness", "concise"]
    # forward (Response 1 = A): correctness A (5-1)/4 = 1, B (2-1)/4 = 0.25; concise A 1, B 0
    # A = 0.6 * 1 + 0.4 * 1 = 1.0; B = 0.6 * 0.25 + 0.4 * 0 = 0.15; margin 0.85
    assert weighted(VALID) == pytest.approx((1.0, 0.15, 0.85))
    # backward (Response 1 = B): the same numbers, sides swapped
    assert weighted(VALID, "backward") == pytest.approx((0.15, 1.0, -0.85))
    row = pass_columns(parsed, "backward")["backward_criteria"][0]
    assert (row["score_a"], row["score_b"], row["justification_a"]) == (2.0, 5.0, "It says 5.")


def test_missing_weight_is_the_mean_of_the_given_ones():
    # b's weight = mean(0.6, 0.2) = 0.4; sum 1.2 -> shares 0.5, 1/3, 1/6
    # A = 0.5 * 0.75 + 1/3 * 1 + 1/6 * 0 = 17/24; B = 0.5 * 0.25 + 1/3 * 0 + 1/6 * 1 = 7/24
    parsed = parse_rubric(MISSING_WEIGHT)
    assert parsed.verdict is Verdict.TIE
    assert [c.weight for c in parsed.criteria] == pytest.approx([0.5, 1 / 3, 1 / 6])
    assert parsed.criteria[1].raw_weight is None and "no weight" in parsed.criteria[1].problem
    assert weighted(MISSING_WEIGHT) == pytest.approx((17 / 24, 7 / 24, 10 / 24))


def test_weights_not_summing_to_one_are_normalized():
    # weights 2 and 3 -> 0.4 and 0.6; A = 0.4 * 1 + 0.6 * 0 = 0.4; B = 0.4 * 0.5 + 0.6 * 0.75
    assert weighted(UNNORMALIZED) == pytest.approx((0.4, 0.65, -0.25))
    assert [c.raw_weight for c in parse_rubric(UNNORMALIZED).criteria] == [2.0, 3.0]


def test_a_criterion_only_one_side_scored_does_not_count():
    parsed = parse_rubric(ONE_SIDE)
    p, q = parsed.criteria
    assert (p.counted, p.weight, p.score_2, p.problem) == (False, 0.0, None, "no score_2")
    # only q counts, with the whole weight: A (2-1)/4 = 0.25, B (3-1)/4 = 0.5
    assert q.weight == 1.0
    assert weighted(ONE_SIDE) == pytest.approx((0.25, 0.5, -0.25))
    assert parsed.verdict is Verdict.FIRST  # the verdict decides, not the scores


def test_unparsable_yaml_is_an_inference_error_with_its_reason():
    parsed = parse_rubric(UNPARSABLE)
    assert not parsed.ok and parsed.error.startswith("unparsable YAML: ")
    assert "line" in parsed.error
    assert weighted(UNPARSABLE) == (None, None, None)
    prose = parse_rubric("Response 1 is better. [[1]]")
    assert prose.error == "no YAML block with criteria in the output"
    assert parse_rubric("criteria: none\npreference: 1").error == "no criteria in the output"
    assert parse_rubric(VALID.replace("preference: 1", "preference: maybe")).error == (
        "preference 'maybe' is not 1, 2 or tie in the output"
    )
    assert parse_rubric("", None).error == "empty output"
    assert parse_rubric("x", "HTTP 500").error == "generation failed: HTTP 500"


def test_tolerant_parse_repairs_what_small_judges_write():
    text = (
        "Here is my evaluation:\n```yaml\n"
        + VALID.replace("It says 5.", "It says: 5 # wrong")
        .replace("preference: 1", "Preference: [[1]]")
        .replace("  concise:", "  correctness:")  # a repeated name keeps both
        + "\n```\nThanks."
    )
    parsed = parse_rubric(text)
    assert parsed.ok and parsed.verdict is Verdict.FIRST
    assert [c.name for c in parsed.criteria] == ["correctness", "correctness_2"]
    assert parsed.criteria[0].justification_2 == "It says: 5 # wrong"
    assert weighted(text) == pytest.approx((1.0, 0.15, 0.85))  # as VALID
    # the verdict's text is where the soft preference is read
    assert text[parsed.verdict_span[0] : parsed.verdict_span[1]] == "1"


# ---------------------------------------------------------------- the constrained form


def python_pattern() -> str:
    escapes = {r"\x{2028}": "\u2028", r"\x{2029}": "\u2029", r"\x{feff}": "\ufeff"}
    pattern = rubric_pattern()
    for rust, char in escapes.items():
        pattern = pattern.replace(rust, char)
    return pattern


def test_the_rubric_format_compiles_and_what_it_allows_parses():
    assert compile_error(ResponseFormat.regex(rubric_pattern())) is None
    texts = [
        VALID.replace("It says 4.", 'It\'s "4" [ok] & {fine} 100% - yes, *right*!'),
        VALID.split("  concise:")[0] + "preference: tie\njustification: Equal",
    ]
    longest = "A" * MAX_TEXT
    one = (
        "  {name}:\n    description: {t}\n    type: binary\n    weight: 0.25\n"
        "    score_1: false\n    justification_1: {t}\n    score_2: false\n"
        "    justification_2: {t}\n"
    )
    texts.append(
        "criteria:\n"
        + "".join(one.format(name="c" * 31 + str(i), t=longest) for i in range(4))
        + f"preference: tie\njustification: {longest}"
    )
    for text in texts:
        assert re.fullmatch(python_pattern(), text), text
        assert parse_rubric(text).ok and parse_rubric(text).error is None
    # the longest answer: 2,021 characters, within the example recipe's 2,048 tokens
    assert len(texts[-1]) == 2021
    # four binary criteria of weight 0.25, false on both sides: A 0, B 0
    assert weighted(texts[-1]) == pytest.approx((0.0, 0.0, 0.0))
    assert not re.fullmatch(python_pattern(), VALID.replace("score_2: 2", "score_2: 7"))
    assert not re.fullmatch(python_pattern(), VALID.replace("It says 4.", "Note: 4"))


def test_response_format_rubric_goes_with_the_rubric_task():
    base = (
        "run: {name: r, model_name_or_path: smollm2-135m-instruct, data_s3_path: d.jsonl}\n"
        "evaluation: {task: TASK, strategy: judge, metric: all}\n"
        "inference: {response_format: {type: FORMAT}}\n"
    )
    recipe = parse_recipe(base.replace("TASK", "rubric_llm_judge").replace("FORMAT", "rubric"))
    assert recipe.response_format == ResponseFormat.regex(rubric_pattern())
    assert recipe.evaluation.is_judge
    with pytest.raises(RecipeError, match=r"type 'rubric' goes with evaluation\.task"):
        parse_recipe(base.replace("TASK", "llm_judge").replace("FORMAT", "rubric"))


# ---------------------------------------------------------------- a scripted judge


ROWS = [
    {"prompt": "ROW0", "response_A": "alpha", "response_B": "beta beta"},
    {"prompt": "ROW1", "response_A": "gamma", "response_B": "delta"},
    {"prompt": "ROW2", "response_A": "epsilon", "response_B": "zeta", "metadata": '{"k": "v"}'},
    {"prompt": "ROW3", "response_A": "eta", "response_B": "theta"},
]
# (row, pass) -> what the judge writes
SCRIPT = {
    ("ROW0", "forward"): VALID,  # A 1.0, B 0.15; preference 1 = A
    ("ROW0", "backward"): SECOND_ORDER,  # B shown first: A 0.875, B 0.375; 2 = A
    ("ROW1", "forward"): MISSING_WEIGHT,  # A 17/24, B 7/24; tie
    ("ROW1", "backward"): UNNORMALIZED,  # B first: B 0.4, A 0.65; 2 = A
    ("ROW2", "forward"): ONE_SIDE,  # A 0.25, B 0.5; 1 = A
    ("ROW2", "backward"): BOTH_TRUE,  # B first: both 1.0; 1 = B (disagrees: inconsistent)
    ("ROW3", "forward"): UNPARSABLE,  # inference_error
    ("ROW3", "backward"): ONE_SCALE,  # B first: B 1.0, A 0.5; 1 = B
}


class ScriptedRubricJudge:
    name = "scripted"
    model_id = "scripted:rubric"
    default_batch_size = 8

    def generate(self, requests, settings, batch_size=None, on_batch=None):
        out = []
        for request in requests:
            row = re.search(r"\[User request\]\n(ROW\d)", request.prompt).group(1)
            pass_name = ("forward", "backward")[request.row_index % 2]
            text = SCRIPT[(row, pass_name)]
            pieces = re.findall(r"\s*\S+|\s+", text)
            tokens = [TokenLogprob(p, -0.1, [(p, -0.1)]) for p in pieces]
            out.append(Generation(request.row_index, text, tokens, 10, len(pieces), 0.0, "stop"))
        return out


@pytest.fixture
def judged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    recipe = {
        "run": {"name": "rubric", "model_name_or_path": "smollm2-135m-instruct"},
        "evaluation": {"task": "rubric_llm_judge", "strategy": "judge", "metric": "all"},
        "judge": {"baseline_label": "base", "challenger_label": "chal"},
    }
    recipe["run"]["data_s3_path"] = data.name
    (tmp_path / "rubric.yaml").write_text(yaml.safe_dump(recipe))
    loaded = load_recipe(tmp_path / "rubric.yaml")
    pipeline.prepare_dataset(loaded)
    report = pipeline.run_judge(loaded, engine=ScriptedRubricJudge())
    return loaded, report, tmp_path


# per prompt, the mean over its passes with a verdict (worked from SCRIPT's comments):
# ROW0 A (1 + 0.875) / 2 = 15/16, B (0.15 + 0.375) / 2 = 21/80
# ROW1 A (17/24 + 0.65) / 2 = 163/240, B (7/24 + 0.4) / 2 = 83/240
# ROW2 A (0.25 + 1) / 2 = 5/8, B (0.5 + 1) / 2 = 3/4
# ROW3 A 0.5, B 1.0 (the forward pass has no verdict)
ROW_A = [15 / 16, 163 / 240, 5 / 8, 1 / 2]
ROW_B = [21 / 80, 83 / 240, 3 / 4, 1.0]


def test_results_keys_by_hand(judged):
    _, report, _ = judged
    results = storage.read_json(report["paths"]["results"])
    assert set(results["results"]) == {"custom|rubric_llm_judge_judge|0", "all"}
    summary = results["results"]["custom|rubric_llm_judge_judge|0"]
    # forward: A, tie, A, error; backward: A, A, B, B
    assert (summary["a_scores"], summary["b_scores"]) == (4, 2)
    assert (summary["ties"], summary["inference_error"]) == (1, 1)
    assert summary["score"] == 2.5  # b + ties / 2
    assert summary["winrate"] == pytest.approx(2.5 / 7)  # (b + t/2) / (a + b + t)
    # stderr of a count: sqrt(n) * std(per prompt); a per prompt 2, 1, 1, 0: var 2/3
    assert summary["a_scores_stderr"] == pytest.approx(2 * math.sqrt(2 / 3))
    # means over the 4 prompts: A 2.7416.../4, B 2.3583.../4
    assert summary["weighted_score_A"] == pytest.approx(329 / 480)
    assert summary["weighted_score_B"] == pytest.approx(283 / 480)
    assert summary["score_margin"] == pytest.approx(46 / 480)
    assert summary["weighted_score_A_stderr"] == pytest.approx(statistics.stdev(ROW_A) / 2)
    margins = [a - b for a, b in zip(ROW_A, ROW_B, strict=True)]  # 27/40, 1/3, -1/8, -1/2
    assert summary["score_margin_stderr"] == pytest.approx(statistics.stdev(margins) / 2)
    diagnostics = results["diagnostics"]
    assert diagnostics["outcomes"] == {"A": 2, "B": 1, "inconsistent": 1}
    assert diagnostics["flip_rate"] == pytest.approx(2 / 3)  # ROW1 tie/A, ROW2 A/B
    # first shown wins: forward A (ROW0, ROW2), backward B (ROW2, ROW3), one tie: 4.5 / 7
    assert diagnostics["first_position_win_rate"] == pytest.approx(4.5 / 7)
    assert "rubric_rule" in results["config_general"]
    assert "| weighted_score_A | 0.6854 |" in report["summary_markdown"]


def test_details_carry_nova_criteria_breakdown(judged):
    _, report, _ = judged
    details = storage.read_parquet(report["paths"]["details"]).to_pylist()
    assert "details_custom|rubric_llm_judge_judge|0_" in report["paths"]["details"]
    first = ast.literal_eval(details[0]["specifics"])
    assert first["criteria_breakdown"]["correctness"] == {
        "score_A": 5.0,
        "score_B": 2.0,
        "weight": 0.6,
        "type": "scale",
        "description": "Gives the right number.",
        "justification_A": "It says 4.",
        "justification_B": "It says 5.",
    }
    assert first["overall_justification"] == "Response 1 is right and short."
    # backward pass of ROW0: B shown first, so score_A is its score_2
    assert first["backward_criteria_breakdown"]["clarity"]["score_A"] == 5.0
    metrics = ast.literal_eval(details[0]["metrics"])
    assert metrics["weighted_score_A"] == pytest.approx(15 / 16)
    assert metrics["score_margin"] == pytest.approx(15 / 16 - 21 / 80)
    last = ast.literal_eval(details[3]["specifics"])
    assert last["criteria_breakdown"] == {} and last["forward_preference"] == "error"
    judgments = storage.read_parquet(report["paths"]["judgments"]).to_pylist()
    assert judgments[3]["forward_error"].startswith("unparsable YAML")
    assert judgments[3]["forward_raw"] == UNPARSABLE  # kept as written
    assert judgments[2]["outcome"] == "inconsistent"


def test_tables_and_a_duckdb_query_by_criterion(judged):
    loaded, _, tmp_path = judged
    root = str(tmp_path / "tables")
    written = tables.write_evaluation_tables(loaded, root)
    # criteria: ROW0 2 + 2, ROW1 3 + 2, ROW2 2 + 1, ROW3 0 + 1 = 13
    assert written["judge_criteria"].rows == 13
    assert written["judge_judgments"].rows == 8
    glob = f"{root}/judge_criteria/*/*/*/*.parquet"
    source = f"read_parquet('{glob}', hive_partitioning = true, union_by_name = true)"
    with duckdb.connect() as con:
        rows = con.execute(
            f"SELECT criterion, count(*), avg(normalized_a), avg(normalized_b) FROM {source} "
            "WHERE eval_name = 'rubric' AND criterion = 'correctness' GROUP BY criterion"
        ).fetchall()
        # ROW0 forward: A 5 -> 1, B 2 -> 0.25; backward (B first): A 4 -> 0.75, B 2 -> 0.25
        assert rows == [("correctness", 2, pytest.approx(0.875), pytest.approx(0.25))]
        not_counted = con.execute(
            f"SELECT criterion, problem FROM {source} WHERE eval_name = 'rubric' AND NOT counted"
        ).fetchall()
        assert not_counted == [("p", "no score_2")]
        sums = con.execute(
            f"SELECT row_index, pass, sum(weight) FROM {source} WHERE eval_name = 'rubric' "
            "GROUP BY row_index, pass ORDER BY row_index, pass"
        ).fetchall()
        assert [round(s, 12) for *_, s in sums] == [1.0] * 7  # every judgment's shares
        outcome, meta = con.execute(
            f"SELECT judgment_outcome, metadata_map['k'] FROM {source} WHERE criterion = 'r'"
        ).fetchone()
        assert (outcome, meta) == ("B", "v")
        judgment = con.execute(
            f"SELECT weighted_score_a, weighted_score_b, score_margin, outcome FROM "
            f"read_parquet('{root}/judge_judgments/*/*/*/*.parquet', hive_partitioning = true,"
            " union_by_name = true) WHERE eval_name = 'rubric' AND row_index = 1 "
            "AND pass = 'backward'"
        ).fetchone()
        assert judgment == (pytest.approx(0.65), pytest.approx(0.4), pytest.approx(0.25), "A")
        summary = con.execute(
            f"SELECT weighted_score_a, score_margin FROM read_parquet('{root}/judge_summary/"
            "*/*/*/*.parquet', hive_partitioning = true, union_by_name = true) "
            "WHERE eval_name = 'rubric'"
        ).fetchone()
        assert summary == (pytest.approx(329 / 480), pytest.approx(46 / 480))


def test_bradley_terry_leaderboard_reads_the_rubric_judge(judged):
    loaded, _, _ = judged
    board = pipeline.build_leaderboard([loaded], rounds=50)
    by_model = {row["model"]: row for row in board["models"]}
    # A has 4 + 1/2 points, B 2 + 1/2, of 7 judgments: B's rating 400 / ln 10 * ln(2.5 / 4.5)
    assert by_model["chal"]["win_share"] == pytest.approx(2.5 / 7)
    expected = 1000 + 400 / math.log(10) * math.log(2.5 / 4.5)
    assert by_model["chal"]["rating"] == pytest.approx(expected, abs=0.01)
    assert by_model["base"]["rating"] == pytest.approx(1000)


def test_the_rubric_prompt_shows_positions_and_the_block():
    prompt = render_rubric("Q?", "first answer", "second answer", "Be brief.")
    assert "[Response 1]\nfirst answer\n\n[Response 2]\nsecond answer" in prompt.user
    assert "[Instructions the assistant was given]\nBe brief." in prompt.user
    assert "preference: <1, 2 or tie>" in prompt.user and "criteria:\n" in prompt.user
