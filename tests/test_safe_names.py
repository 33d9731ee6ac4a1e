"""Names from recipes never lead a written file out of its folder: safe_name's rules, the
layout's refusal of anything but single names, and the details files that the gen_qa
export and the judge write, with hostile model names, staying under ``details/``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from nova_eval_assets import stages, storage
from nova_eval_assets.judge import pipeline
from nova_eval_assets.layout import MAX_NAME_LENGTH, EvalLayout, safe_name
from nova_eval_assets.report.nova_export import write_nova_export
from tests.conftest import ticket_lines
from tests.orchestration_support import FakeEngine, edit_recipe
from tests.test_judge_pipeline import ScriptedJudge, dataset_judge, workspace  # noqa: F401

LONG = "x" * 300
# name -> the details folder it gets
HOSTILE = {
    "..": "model",
    ".": "model",
    "": "model",
    "~": "model",
    "../../etc": "etc",
    "../../../../escape": "escape",
    "a/b": "a_b",
    "/abs": "abs",
    "C:\\models\\x": "C_models_x",
    ".hidden": "hidden",
    "./models/tiny": "models_tiny",
    "nul\0byte": "nul_byte",
    LONG: "x" * 119 + "-" + hashlib.sha256(LONG.encode()).hexdigest()[:8],
}
# today's names keep their folders
ORDINARY = {
    "smollm2-135m-instruct": "smollm2-135m-instruct",
    "Qwen/Qwen2.5-0.5B-Instruct": "Qwen_Qwen2.5-0.5B-Instruct",
    "us.amazon.nova-pro-v1:0": "us.amazon.nova-pro-v1_0",
    "models/qwen2.5-0.5b-instruct-q4_k_m.gguf": "models_qwen2.5-0.5b-instruct-q4_k_m.gguf",
}


@pytest.mark.parametrize(("text", "expected"), [*HOSTILE.items(), *ORDINARY.items()])
def test_safe_name_gives_one_plain_name(text, expected):
    name = safe_name(text)
    assert name == expected
    assert name not in ("", ".", "..") and not name.startswith(".")
    assert not any(c in name for c in "/\\\0") and len(name) <= MAX_NAME_LENGTH
    assert safe_name(name) == name


def test_long_names_that_share_a_start_stay_apart():
    assert safe_name(LONG + "a") != safe_name(LONG + "b")
    assert len(safe_name(LONG + "a")) == MAX_NAME_LENGTH == 128


@pytest.mark.parametrize("part", ["..", ".", "", "a/b", "/abs", "a\\b", "nul\0byte"])
def test_the_layout_refuses_parts_that_are_not_one_name(tmp_path, part):
    layout = EvalLayout(str(tmp_path / "run"))
    with pytest.raises(ValueError, match="cannot name an output path"):
        layout.result("details", part, "file.parquet")
    with pytest.raises(ValueError, match="cannot name an output path"):
        layout.stage(part)


def files_under(folder: Path) -> set[Path]:
    return {p.resolve() for p in folder.rglob("*") if p.is_file()}


def test_the_gen_qa_details_stay_in_details_for_any_model_name(make_recipe, tmp_path):
    """The whole pipeline with run.model_name_or_path '..', then the export (the function
    write_report calls) with every hostile name."""
    loaded = make_recipe(ticket_lines(3), inference={"batch_size": 1})
    loaded = edit_recipe(loaded, run={"model_name_or_path": ".."})
    stages.validate_or_raise(loaded)
    stages.build_prompts(loaded)
    stages.run_inference(loaded, 0, engine=FakeEngine())
    stages.score_replica(loaded, 0)
    report = stages.write_report(loaded)

    run_folder = (tmp_path / "outputs" / "tiny").resolve()
    details = Path(report["paths"]["details"]).resolve()
    assert details.is_relative_to(run_folder / "eval_results" / "details" / "model")
    assert files_under(tmp_path / "outputs") <= files_under(run_folder)

    table = storage.read_parquet(report["paths"]["examples"])
    stamp = "2025-01-01T00-00-00.000Z"
    absolute = str(tmp_path / "elsewhere")  # an absolute model path outside the run folder
    for number, name in enumerate([*HOSTILE, absolute]):
        results = tmp_path / "export" / str(number) / "eval_results"
        paths = write_nova_export(table, str(results), name, stamp)
        written = Path(paths["details"]).resolve()
        assert written.is_file()
        assert written.is_relative_to(results.resolve() / "details"), name
        assert written.parent.parent.name == HOSTILE.get(name, safe_name(absolute))
        assert files_under(tmp_path / "export" / str(number)) == {
            written,
            (results / "inference_output.jsonl").resolve(),
        }
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("model", ["..", "../../../../escape"])
def test_the_judge_details_stay_in_details_for_any_judge_model(workspace, tmp_path, model):  # noqa: F811
    loaded = dataset_judge(workspace)
    loaded = edit_recipe(loaded, run={"model_name_or_path": model})
    stages.validate_or_raise(loaded)
    report = pipeline.run_judge(loaded, engine=ScriptedJudge())

    run_folder = (tmp_path / "outputs" / "pairs").resolve()
    details = Path(report["paths"]["details"]).resolve()
    assert details.is_file()
    assert details.is_relative_to(run_folder / "eval_results" / "details" / HOSTILE[model])
    assert files_under(tmp_path / "outputs") <= files_under(run_folder)
