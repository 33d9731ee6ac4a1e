"""`nova-eval validate` refuses a dataset with images for an engine or model that cannot see
them, from the model's config alone (nothing loads), and passes a vision-language model."""

from __future__ import annotations

import json

from nova_eval_assets import cli
from tests.tiny_model import build_tiny_vlm, image_uri


def rows(with_images: int) -> list[str]:
    lines = []
    for i in range(3):
        row = {"query": f"What is in picture {i}?", "response": "a square"}
        if i < with_images:
            row["images"] = [{"data": image_uri(seed=i)}]
        lines.append(json.dumps(row))
    return lines


def validate(make_recipe, lines, capsys, **inference) -> tuple[int, str]:
    loaded = make_recipe(lines, name="pictures", inference=inference)
    code = cli.main(["validate", str(loaded.path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_text_model_is_refused_at_validate(make_recipe, capsys):
    code, out = validate(make_recipe, rows(2), capsys)
    assert code == 2
    assert "smollm2-135m-instruct has no vision" in out and "2 rows have images" in out


def test_text_rows_need_no_vision(make_recipe, capsys):
    code, out = validate(make_recipe, rows(0), capsys)
    assert code == 0, out


def test_vllm_refuses_images_at_validate(make_recipe, capsys):
    code, out = validate(make_recipe, rows(1), capsys, engine="vllm")
    assert code == 2 and "'vllm' does not take images yet; 1 rows have images" in out


def test_a_vision_model_passes(make_recipe, capsys, tmp_path):
    from tests.orchestration_support import edit_recipe

    folder = build_tiny_vlm(tmp_path / "vlm")
    loaded = make_recipe(rows(3), name="pictures")
    loaded = edit_recipe(loaded, run={"model_name_or_path": str(folder)})
    code = cli.main(["validate", str(loaded.path)])
    out = capsys.readouterr()
    assert code == 0, out
