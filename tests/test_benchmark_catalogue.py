"""Nova's benchmark tasks end to end on small fixtures of our own writing (never the
benchmarks' data): each in its normalized format from dataset.path, or in the Hugging Face
hub's file layout read through huggingface_hub's cache with HF_HUB_OFFLINE=1 (the code
path of a real download, no network), answered by a local OpenAI-compatible server as a
model would answer, with scores worked out by hand."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from nova_eval_assets import storage
from nova_eval_assets.assets.materialize import run_evaluation
from nova_eval_assets.dataset import DatasetFileError
from nova_eval_assets.preflight import run_preflight
from nova_eval_assets.recipe import load_recipe
from nova_eval_assets.stages.validation import run_validation
from tests.conftest import PROJECT
from tests.openai_servers import AnsweringServer

MODEL = "instant"


def evaluate(tmp_path: Path, monkeypatch, answers, evaluation: dict, dataset: dict) -> dict:
    """Run a benchmark recipe against a server answering with ``answers(prompt)``; its
    results JSON's ``results``."""
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    server = AnsweringServer(answers, model=MODEL)
    recipe = {
        "run": {"name": f"{evaluation['task']}-tiny", "model_name_or_path": MODEL,
                "data_s3_path": ""},
        "evaluation": evaluation,
        "inference": {"engine": "openai", "endpoint": server.url, "max_new_tokens": 256},
        "dataset": dataset,
    }  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    try:
        outcome = run_evaluation(
            load_recipe(path), instance=dg.DagsterInstance.ephemeral(), show_progress=False
        )
    finally:
        server.close()
    assert outcome.report is not None, outcome.message
    return storage.read_json(outcome.report["paths"]["results"])["results"]


def jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path.name


def by_question(table: dict[str, str]):
    def answer(prompt: str) -> str:
        return next(text for marker, text in table.items() if marker in prompt)

    return answer


# ---------------------------------------------------------------- mmlu_pro

PRO_OPTIONS = [f"option {i}" for i in range(10)]
PRO_ROWS = [
    {"question": "Q-one?", "options": PRO_OPTIONS, "answer": "J", "category": "math"},
    {"question": "Q-two?", "options": PRO_OPTIONS, "answer": "I", "category": "law"},
    {"question": "Q-three?", "options": PRO_OPTIONS[:4], "answer_index": 0, "category": "law"},
]
PRO_ANSWERS = {
    "Q-one?": "The correct answer is (J).",  # right
    # Nova's rule reads the "i" of "indeed": right (I) by accident under compat only
    "Q-two?": "The correct answer is indeed (C)",
    "Q-three?": "the correct answer is: a",  # right (A) under both
}


@pytest.mark.parametrize(("compat", "expected"), [(None, 2 / 3), ("nova", 1.0)])
def test_mmlu_pro(tmp_path, monkeypatch, compat, expected):
    evaluation = {"task": "mmlu_pro", "strategy": "zs_cot", "metric": "accuracy"}
    if compat:
        evaluation["compat"] = compat
    data = jsonl(tmp_path / "pro.jsonl", PRO_ROWS)
    results = evaluate(tmp_path, monkeypatch, by_question(PRO_ANSWERS), evaluation, {"path": data})
    assert set(results) == {"custom|mmlu_pro_zs_cot|0", "all"}
    assert results["all"]["accuracy"] == pytest.approx(expected)


# ---------------------------------------------------------------- gpqa

GPQA_ROWS = [
    {"question": "G-one: which gas is inert?", "correct_answer": "Argon",
     "incorrect_answers": ["Oxygen", "Chlorine", "Fluorine"]},
    {"question": "G-two: which is a noble metal?", "correct_answer": "Gold",
     "incorrect_answers": ["Sodium", "Iron", "Zinc"]},
]  # fmt: skip
CHOICE_LINE = re.compile(r"\(([A-D])\) (\w+)")


@pytest.mark.parametrize("compat", [None, "nova"])
def test_gpqa(tmp_path, monkeypatch, compat):
    """The model reads the first question's correct choice off the prompt (always right) and
    answers (A) to the second: right exactly when the prompt shows Gold as (A), which the
    server sees. Under compat: nova the published order puts every correct answer at (A)."""
    shown_first: dict[str, str] = {}

    def answer(prompt: str) -> str:
        letters = {text: letter for letter, text in CHOICE_LINE.findall(prompt)}
        if "G-one" in prompt:
            return f"The correct answer is ({letters['Argon']})."
        shown_first["G-two"] = next(t for t, letter in letters.items() if letter == "A")
        return "The correct answer is (A)."

    evaluation = {"task": "gpqa", "strategy": "zs_cot", "metric": "accuracy"}
    if compat:
        evaluation["compat"] = compat
    data = jsonl(tmp_path / "gpqa.jsonl", GPQA_ROWS)
    results = evaluate(tmp_path, monkeypatch, answer, evaluation, {"path": data})
    second = 1.0 if shown_first["G-two"] == "Gold" else 0.0
    if compat:
        assert second == 1.0
    assert results["custom|gpqa_zs_cot|0"]["accuracy"] == pytest.approx((1.0 + second) / 2)


# ---------------------------------------------------------------- bbh, from the hub's layout


def hub_cache(root: Path, repo: str, files: dict[str, pa.Table], commit: str = "c0ffee") -> None:
    """``files`` as the hub's cache holds a dataset repository at ``main``."""
    folder = root / f"datasets--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    for name, table in files.items():
        target = folder / "snapshots" / commit / name
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, target)


@pytest.mark.parametrize(("compat", "expected_dates"), [(None, 1.0), ("nova", 0.0)])
def test_bbh_from_the_hub_cache(tmp_path, monkeypatch, offline_hub, compat, expected_dates):
    hub_cache(offline_hub, "lukaemon/bbh", {
        "navigate/test-00000-of-00001.parquet": pa.table(
            {"input": ["B-nav-1: turn left twice?", "B-nav-2: walk on?"],
             "target": ["Yes", "No"]}),
        "date_understanding/test-00000-of-00001.parquet": pa.table(
            {"input": ["B-date-1: which date?"], "target": ["(A)"]}),
    })  # fmt: skip
    answers = {
        "B-nav-1": "Left twice faces back. The correct answer is Yes.",  # right
        "B-nav-2": "The correct answer is Yes.",  # wrong
        # the option with its text: right by default, 0 under Nova's published rule
        "B-date-1": "The correct answer is (A) 12/11/1937.",
    }
    evaluation = {"task": "bbh", "strategy": "fs_cot", "metric": "accuracy",
                  "subtask": ["navigate", "date_understanding"]}  # fmt: skip
    if compat:
        evaluation["compat"] = compat
    results = evaluate(tmp_path, monkeypatch, by_question(answers), evaluation, {})
    assert results["custom|bbh_fs_cot:navigate|0"]["accuracy"] == pytest.approx(0.5)
    dates = results["custom|bbh_fs_cot:date_understanding|0"]["accuracy"]
    assert dates == pytest.approx(expected_dates)
    assert results["all"]["accuracy"] == pytest.approx((0.5 + expected_dates) / 2)


def test_a_hub_dataset_out_of_reach_fails_preflight_naming_the_dataset_and_the_fix(
    tmp_path, offline_hub
):
    recipe = {
        "run": {"name": "mmlu-unreachable", "model_name_or_path": "m", "data_s3_path": ""},
        "evaluation": {"task": "mmlu", "strategy": "zs_cot", "metric": "accuracy"},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    loaded = load_recipe(path)
    [result] = run_preflight(loaded)
    assert not result.ok
    assert result.message.startswith("evaluation.task: the mmlu dataset cais/mmlu")
    assert "set dataset.path to a copy of the rows" in result.message
    # the validation stage says the same if it runs anyway
    with pytest.raises(DatasetFileError, match=r"cais/mmlu.*set dataset\.path"):
        run_validation(loaded)


# ---------------------------------------------------------------- ifeval

IFEVAL_ROWS = [
    {"prompt": "I-one: greet without commas, three words or more.",
     "instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"],
     "kwargs": [{}, {"relation": "at least", "num_words": 3}]},
    {"prompt": "I-two: end with the phrase.",
     "instruction_id_list": ["startend:end_checker"],
     "kwargs": [{"end_phrase": "Is there anything else I can help with?"}]},
]  # fmt: skip
IFEVAL_ANSWERS = {
    "I-one": "Hello there my friend",  # both followed, strictly
    # ends in "**": only the loose check (asterisks removed) finds the end phrase
    "I-two": "Done. Is there anything else I can help with?\n**",
}


def test_ifeval_reports_lightevals_four_scores(tmp_path, monkeypatch):
    evaluation = {"task": "ifeval", "strategy": "zs", "metric": "accuracy"}
    data = jsonl(tmp_path / "ifeval.jsonl", IFEVAL_ROWS)
    results = evaluate(tmp_path, monkeypatch, by_question(IFEVAL_ANSWERS), evaluation,
                       {"path": data})["all"]  # fmt: skip
    assert results["prompt_level_strict_acc"] == pytest.approx(1 / 2)
    assert results["prompt_level_loose_acc"] == pytest.approx(1.0)
    assert results["inst_level_strict_acc"] == pytest.approx(2 / 3)  # pooled: 2 of 3
    assert results["inst_level_loose_acc"] == pytest.approx(1.0)
    assert results["accuracy"] == results["prompt_level_strict_acc"]
    # the stderr of 3 pooled instructions (1, 1, 0)
    assert results["inst_level_strict_acc_stderr"] == pytest.approx((1 / 3 / 3) ** 0.5)


# ---------------------------------------------------------------- math and aime_2024

MATH_ROWS = [
    {"problem": "M-one: what is 1/2 + 1/4?", "solution": "Add: $\\boxed{\\frac{3}{4}}$.",
     "type": "Prealgebra", "level": "Level 1"},
    {"problem": "M-two: simplify 2/4.", "solution": "It is $\\boxed{\\frac12}$.",
     "type": "Prealgebra", "level": "Level 2"},
    {"problem": "M-three: how many ways to pick 2 of 4?",
     "solution": "$\\binom42 = \\boxed{6}$", "type": "Counting & Probability",
     "level": "Level 1"},
    {"problem": "M-four: no answer here.", "solution": "There is no boxed answer.",
     "type": "Algebra", "level": "Level 1"},
]  # fmt: skip
MATH_ANSWERS = {
    "M-one": "So the sum is $\\boxed{0.75}$.",  # equal by value (sympy): right
    "M-two": "The answer is $\\boxed{\\frac{2}{4}}$.",  # unreduced: the grader refuses it
    "M-three": "First $\\boxed{4}$, no wait: $\\boxed{6}$.",  # the last box: right
}


def test_math_scores_by_subject_with_novas_grader(tmp_path, monkeypatch):
    data = jsonl(tmp_path / "math.jsonl", MATH_ROWS)
    evaluation = {"task": "math", "strategy": "zs_cot", "metric": "exact_match",
                  "subtask": ["prealgebra", "counting_and_probability", "algebra"]}  # fmt: skip
    results = evaluate(
        tmp_path, monkeypatch, by_question(MATH_ANSWERS), evaluation,
        {"path": data, "on_invalid": "skip"},
    )  # fmt: skip
    # the fourth row has no gold answer: rejected, so algebra has no rows
    assert results["custom|math_zs_cot:prealgebra|0"]["exact_match"] == pytest.approx(0.5)
    assert results["custom|math_zs_cot:counting_and_probability|0"]["exact_match"] == 1.0
    assert "custom|math_zs_cot:algebra|0" not in results
    assert results["all"]["exact_match"] == pytest.approx((0.5 + 1.0) / 2)


AIME_ROWS = [
    {"problem": "A-one: find n.", "answer": "33"},
    {"problem": "A-two: find m.", "answer": 204},
    {"problem": "A-three: find k.", "answer": "7"},
]
AIME_ANSWERS = {
    "A-one": "Therefore, the final answer is: $\\boxed{033}$. I hope it is correct",  # 33
    "A-two": "The answer is $\\boxed{\\frac{408}{2}}$",  # not an integer as written: 0
    "A-three": "Therefore, the final answer is: 7. I hope it is correct",  # no box: 7
}


def test_aime_2024_compares_final_integers(tmp_path, monkeypatch):
    data = jsonl(tmp_path / "aime.jsonl", AIME_ROWS)
    evaluation = {"task": "aime_2024", "strategy": "zs_cot", "metric": "exact_match"}
    results = evaluate(tmp_path, monkeypatch, by_question(AIME_ANSWERS), evaluation, {"path": data})
    assert results["custom|aime_2024_zs_cot|0"]["exact_match"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------- mmlu_pt

PT_ROWS = [
    {"question": "P-one?", "choices": ["w", "x", "y", "z"], "answer": 1, "subject": "anatomy"},
    {"question": "P-two?", "choices": ["w", "x", "y", "z"], "answer": 2, "subject": "anatomy"},
]
PT_ANSWERS = {"P-one?": " B", "P-two?": " D"}  # one token each: right, then wrong


def test_mmlu_pt_reads_the_letter_from_the_first_tokens_log_probabilities(tmp_path, monkeypatch):
    seen: list[str] = []

    def answer(prompt: str) -> str:
        seen.append(prompt)
        return by_question(PT_ANSWERS)(prompt)

    data = jsonl(tmp_path / "pt.jsonl", PT_ROWS)
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    server = AnsweringServer(answer, model=MODEL)
    recipe = {
        "run": {"name": "pt-tiny", "model_name_or_path": MODEL, "data_s3_path": ""},
        "evaluation": {"task": "mmlu_pt", "strategy": "zs_cot", "metric": "accuracy"},
        "inference": {"engine": "openai", "endpoint": server.url, "max_new_tokens": 1,
                      "top_logprobs": 5},
        "dataset": {"path": data},
    }  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    try:
        outcome = run_evaluation(
            load_recipe(path), instance=dg.DagsterInstance.ephemeral(), show_progress=False
        )
    finally:
        server.close()
    results = storage.read_json(outcome.report["paths"]["results"])["results"]
    assert results["custom|mmlu_pt_zs_cot:anatomy|0"]["accuracy"] == pytest.approx(0.5)
    assert seen[0].startswith(
        "The following are multiple choice questions (with answers) about anatomy.\n\nP-one?\n"
        "A. w\nB. x\nC. y\nD. z\nAnswer:"
    )


# ---------------------------------------------------------------- every task, bundled model

BBH_ROWS = [{"input": "B-nav: take one step forward, then one back. Home?", "target": "Yes",
             "subtask": "navigate"}]  # fmt: skip
MODEL_RUNS = {
    "mmlu_pro": ({"strategy": "zs_cot", "metric": "accuracy"}, PRO_ROWS[:2]),
    "gpqa": ({"strategy": "zs_cot", "metric": "accuracy"}, GPQA_ROWS[:2]),
    "bbh": ({"strategy": "fs_cot", "metric": "accuracy", "subtask": "navigate"}, BBH_ROWS),
    "math": ({"strategy": "zs_cot", "metric": "exact_match"}, MATH_ROWS[:2]),
    "aime_2024": ({"strategy": "zs_cot", "metric": "exact_match"}, AIME_ROWS[:2]),
    "ifeval": ({"strategy": "zs", "metric": "accuracy"}, IFEVAL_ROWS),
    "humaneval": ({"strategy": "zs", "metric": "pass@1"}, None),  # the package's problems
}


@pytest.mark.model
@pytest.mark.parametrize("task", list(MODEL_RUNS))
def test_every_task_runs_end_to_end_on_the_bundled_model(tmp_path, monkeypatch, task):
    """Each task through the hf engine and the bundled SmolLM2 on a row or two (8 new
    tokens): every row generated and scored, and the task's result the mean of its rows'
    scores as the examples hold them."""
    evaluation, rows = MODEL_RUNS[task]
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    recipe = {
        "run": {"name": f"{task}-model", "model_name_or_path": "smollm2-135m-instruct",
                "data_s3_path": "", "limit": 2},
        "evaluation": {"task": task, **evaluation},
        "inference": {"max_new_tokens": 8, "batch_size": 2},
    }  # fmt: skip
    if rows is not None:
        recipe["dataset"] = {"path": jsonl(tmp_path / f"{task}.jsonl", rows)}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    outcome = run_evaluation(
        load_recipe(path), instance=dg.DagsterInstance.ephemeral(), show_progress=False
    )
    assert outcome.report is not None, outcome.message
    results = storage.read_json(outcome.report["paths"]["results"])["results"]
    examples = pq.read_table(outcome.report["paths"]["examples"]).to_pylist()
    metric = evaluation["metric"]
    assert examples and all(row["scored"] and row["prediction"] for row in examples)
    values = [dict(row["metrics"])[metric] for row in examples]
    assert all(value in (0.0, 1.0) for value in values)
    key = f"custom|{task}_{evaluation['strategy']}|0"
    assert results[key][metric] == pytest.approx(sum(values) / len(values))


def test_loading_a_recipe_lists_the_tasks_without_importing_their_heavy_libraries(tmp_path):
    # every recipe load (each CLI run, each replica process) lists the tasks: a task module
    # that imports nltk or torch at its top costs every one of them seconds
    recipe = tmp_path / "ifeval.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "run": {"name": "i", "model_name_or_path": "m", "data_s3_path": ""},
                "evaluation": {"task": "ifeval", "strategy": "zs", "metric": "accuracy"},
            }
        )
    )
    probe = (
        "import sys\n"
        "from nova_eval_assets.recipe import load_recipe\n"
        "from nova_eval_assets.tasks.registry import all_tasks\n"
        f"load_recipe({str(recipe)!r}); assert 'ifeval' in all_tasks()\n"
        "print(sorted({'nltk', 'torch', 'transformers', 'sklearn', 'scipy'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
