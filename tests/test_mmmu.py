"""mmmu (tasks/mmmu.py): rows in the hub's layout (image structs, options written as Python
source), the open-answer rule on hand-written outputs, and Nova's published
general_multi_modal_benchmark recipe run on a tiny random vision-language model over a
Parquet fixture in MMMU's layout; a text-only model is refused before any row runs."""

from __future__ import annotations

import base64
import json

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nova_eval_assets import storage
from nova_eval_assets.assets.materialize import run_evaluation
from nova_eval_assets.recipe import load_recipe
from nova_eval_assets.tasks.base import FieldProblem, TaskOptions
from nova_eval_assets.tasks.mmmu import SUBTASKS, TASK, open_correct
from nova_eval_assets.tasks.multiple_choice import mmlu_pro_prompt
from tests.conftest import PROJECT
from tests.tiny_model import build_tiny_vlm, image_uri

NOVA_MMMU = (
    PROJECT / "tests/recipes/nova/nova_lite_2_0_p5_48xl_gpu_general_multi_modal_benchmark_eval.yaml"
)


def image_bytes(seed: int = 0, fmt: str = "png") -> bytes:
    return base64.b64decode(image_uri(seed=seed, fmt=fmt).split(",", 1)[1])


def hub_row(**changes):
    row = {
        "id": "validation_Art_Theory_3",
        "question": "Which style is shown in <image 1>?",
        "options": "['Baroque', 'Cubism', 'Gothic']",
        "answer": "B",
        "image_1": {"bytes": image_bytes(), "path": "3.png"},
        **{f"image_{n}": None for n in range(2, 8)},
        "question_type": "multiple-choice",
    }
    return {**row, **changes}


def test_a_hub_row_becomes_a_lettered_question_with_its_images():
    sample = TASK.sample(hub_row(), None, TaskOptions())
    assert sample.prompt == mmlu_pro_prompt(
        "Which style is shown in <image 1>?", ["Baroque", "Cubism", "Gothic"]
    )
    assert (sample.target, sample.subtask) == ("B", "art_theory")
    assert sample.images == (image_uri(),)
    two = TASK.sample(
        hub_row(image_2={"bytes": image_bytes(1, "jpeg"), "path": "b.jpg"}), None, TaskOptions()
    )
    assert two.images == (image_uri(), image_uri(seed=1, fmt="jpeg"))
    assert len(SUBTASKS) == 29 and "diagnostics_and_laboratory_medicine" not in SUBTASKS


def test_an_open_question_keeps_its_answer_for_the_open_rule():
    sample = TASK.sample(
        hub_row(options="[]", answer="3.5", question_type="open"), None, TaskOptions()
    )
    assert json.loads(sample.target) == {"open": "3.5"}
    assert "The correct answer is <your answer>" in sample.prompt


@pytest.mark.parametrize(
    ("output", "gold", "correct"),
    [
        ("So x = 3.5. The correct answer is 3.50.", "3.5", True),
        ("The correct answer is 3.6", "3.5", False),  # 2.9 % off: over the 1 % tolerance
        ("The correct answer is 1,000", "1000", True),
        ("The correct answer is 50%", "50", True),
        ("The correct answer is Paris.", "paris", True),
        ("The correct answer is: **Paris**", "Paris", True),
        ("The correct answer is London", "Paris", False),
        ("I think it is\n42", "42", True),  # no answer line: the last line
        ("The correct answer is 4. Wait, the correct answer is 5", "5", True),  # the last one
        ("", "5", False),
    ],
)
def test_the_open_rule_on_hand_written_outputs(output, gold, correct):
    assert open_correct(output, gold) is correct


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"id": "validation_Diagnostics_and_Laboratory_Medicine_1"}, "id"),  # not Nova's 29
        ({"id": "row-1"}, "id"),
        ({"image_1": None}, "image_1"),
        ({"image_1": {"bytes": b"not an image", "path": "x"}}, "image_1"),
        ({"options": "['A', 'B'"}, "options"),
        ({"answer": "E"}, "answer"),
    ],
)
def test_bad_rows_name_their_field(changes, field):
    with pytest.raises(FieldProblem) as problem:
        TASK.sample(hub_row(**changes), None, TaskOptions())
    assert problem.value.field_name == field


def fixture_parquet(path):
    rows = [
        hub_row(),
        hub_row(id="validation_Math_7", question="What is the area of <image 1>?",
                options="[]", answer="12", question_type="open",
                image_1={"bytes": image_bytes(2), "path": "7.png"}),
    ]  # fmt: skip
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    columns = {
        name: pa.array([r[name] for r in rows], image if name.startswith("image_") else None)
        for name in rows[0]
    }
    pq.write_table(pa.table(columns), path)
    return path


@pytest.mark.model
def test_novas_recipe_runs_on_a_tiny_vlm_and_a_text_model_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    folder = build_tiny_vlm(tmp_path / "vlm", max_position_embeddings=2048)
    data = fixture_parquet(tmp_path / "mmmu.parquet")
    text = NOVA_MMMU.read_text().replace("VLM_FOLDER", str(folder))
    text += f"dataset:\n  path: {data}\n"
    (tmp_path / "mmmu.yaml").write_text(text)
    loaded = load_recipe(tmp_path / "mmmu.yaml").with_overrides(max_new_tokens=6)
    outcome = run_evaluation(loaded, instance=dg.DagsterInstance.ephemeral(), show_progress=False)
    assert outcome.report is not None, outcome.message
    examples = pq.read_table(outcome.report["paths"]["examples"]).to_pylist()
    assert [e["image_count"] for e in examples] == [1, 1]
    values = [dict(e["metrics"])["accuracy"] for e in examples]
    assert values[1] == float(open_correct(examples[1]["prediction"], "12"))
    results = storage.read_json(outcome.report["paths"]["results"])["results"]
    assert results["custom|mmmu_zs_cot:art_theory|0"]["accuracy"] == values[0]
    assert results["custom|mmmu_zs_cot:math|0"]["accuracy"] == values[1]

    # the bundled text-only model: refused before it loads a row
    (tmp_path / "text.yaml").write_text(
        text.replace(str(folder), "smollm2-135m-instruct").replace(
            "nova-lite-v2-mmlu-eval-job", "text-only"
        )
    )
    refused = run_evaluation(
        load_recipe(tmp_path / "text.yaml"),
        instance=dg.DagsterInstance.ephemeral(),
        show_progress=False,
    )
    assert refused.report is None
    assert "has no vision" in refused.message and "rows have images" in refused.message
