"""Images in dataset rows: each bad entry rejects its row with the line and the image's
index; valid images reach the validated and prompts tables and the engine's requests.
The images are real PNG/JPEG/GIF/WebP/BMP bytes made with Pillow here."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nova_eval_assets import stages, storage
from nova_eval_assets.dataset import JUDGE, SCHEMAS, validate_dataset
from nova_eval_assets.layout import EvalLayout


def image_bytes(fmt: str, size: tuple[int, int] = (8, 6), color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


def data_uri(raw: bytes, named: str) -> str:
    return f"data:image/{named};base64,{base64.b64encode(raw).decode('ascii')}"


def image(fmt: str = "PNG", named: str | None = None, **options) -> dict:
    return {"data": data_uri(image_bytes(fmt, **options), named or fmt.lower())}


def row(images, **fields) -> str:
    base = {"query": "what is shown?", "response": "a square"}
    return json.dumps({**base, **fields, "images": images})


def write_lines(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


PNG = image("PNG")
JPEG = image("JPEG", color="blue")
# random pixels do not compress: over 3.75 MiB (3,932,160 bytes) as a PNG
NOISE = np.random.default_rng(0).integers(0, 256, size=(1200, 1200, 3), dtype=np.uint8)


def damaged_png() -> bytes:
    """A PNG whose header reads but whose pixel data fails its checksum."""
    raw = bytearray(image_bytes("PNG"))
    raw[raw.index(b"IDAT") + 6] ^= 0xFF
    return bytes(raw)


def big_png() -> dict:
    buffer = io.BytesIO()
    Image.fromarray(NOISE).save(buffer, "PNG", compress_level=0)
    raw = buffer.getvalue()
    assert len(raw) > 3_932_160
    return {"data": data_uri(raw, "png")}


def test_rows_with_one_and_three_images_are_valid_and_kept_in_order(tmp_path: Path):
    three = [image("PNG", color="green"), JPEG, image("JPEG", named="jpg", color="white")]
    path = write_lines(tmp_path / "d.jsonl", [row([PNG]), row(three), row([]), row(None)])
    outcome = validate_dataset(path)
    assert outcome.ok, outcome.report()
    rows = outcome.table.to_pylist()
    assert rows[0]["images"] == [PNG["data"]]
    assert rows[1]["images"] == [entry["data"] for entry in three]
    assert rows[2]["images"] == [] and rows[3]["images"] is None


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_gif_and_webp_are_allowed(tmp_path: Path, fmt: str):
    assert validate_dataset(write_lines(tmp_path / "d.jsonl", [row([image(fmt)])])).ok


def test_the_base64_marker_is_case_insensitive(tmp_path: Path):
    # Nova's own mm_llm_judge example writes "data:image/jpeg;Base64,"
    raw = image_bytes("JPEG")
    entry = {"data": f"data:image/jpeg;Base64,{base64.b64encode(raw).decode()}"}
    assert validate_dataset(write_lines(tmp_path / "d.jsonl", [row([entry])])).ok


S3 = "S3 image URIs are not supported: Nova takes inline base64 data URIs only"
PNG_B64 = base64.b64encode(image_bytes("PNG")).decode()


@pytest.mark.parametrize(
    ("images", "field", "reason"),
    [
        ("data:image/png;base64,xx", "images", "must be an array of image objects"),
        ({"data": PNG["data"]}, "images", "must be an array of image objects"),
        ([PNG, PNG["data"]], "images[1]", 'must be an object {"data": '),
        ([PNG, JPEG, 7], "images[2]", 'must be an object {"data": '),
        ([{**PNG, "format": "png"}], "images[0]", "unknown key 'format'; an image has only"),
        ([PNG, {}], "images[1]", "missing 'data'"),
        ([{"data": 5}], "images[0]", "'data' must be a string, got number"),
        ([{"data": f"image/png;base64,{PNG_B64}"}], "images[0]", "must start with 'data:image/'"),
        ([{"data": f"data:text/plain;base64,{PNG_B64}"}], "images[0]", "must start with 'data:"),
        ([{"data": f"data:image/png,{PNG_B64}"}], "images[0]", "no ';base64,' in the data URI"),
        ([PNG, JPEG, {"data": "data:image/png;base64,iVBOR*w0K"}], "images[2]", "not base64 ("),
        ([{"data": "data:image/png;base64,iVBORw0"}], "images[0]", "not base64 ("),
        (
            [{"data": data_uri(b"plain text, not pixels", "png")}],
            "images[0]",
            "not an image: the 22 decoded bytes are no image format Pillow knows",
        ),
        ([{"data": data_uri(damaged_png(), "png")}], "images[0]", "not a readable image ("),
        (
            [PNG, image("JPEG", named="png")],
            "images[1]",
            "format mismatch: the URI says image/png, the data is a jpeg image",
        ),
        ([image("BMP")], "images[0]", "format 'bmp' is not allowed; allowed: png, jpeg, gif, webp"),
        (
            [image("BMP", named="png")],
            "images[0]",
            "the data is a BMP image; allowed: png, jpeg, gif, webp",
        ),
        ([PNG] * 21, "images", "21 images; at most 20 per row"),
        ([image("PNG", size=(8001, 2))], "images[0]", "image is 8001x2 pixels; at most 8000"),
        ([PNG, big_png()], "images[1]", "image too large: "),
        ([{"data": "s3://bucket/cat.png"}], "images[0]", S3),
        ([PNG, {"s3_uri": "s3://bucket/cat.png"}], "images[1]", S3),
        (["s3://bucket/cat.png"], "images[0]", S3),
    ],
)
def test_each_bad_image_names_its_line_and_index(
    tmp_path: Path, images: object, field: str, reason: str
):
    lines = [row([PNG]), row([JPEG]), row(images), row([PNG, JPEG])]
    outcome = validate_dataset(write_lines(tmp_path / "d.jsonl", lines))
    assert outcome.table.num_rows == 3
    assert [r.line for r in outcome.rejected] == [3]
    assert [(p.line, p.field) for p in outcome.problems] == [(3, field)]
    assert f"line 3, field '{field}': {reason}" in str(outcome.problems[0])
    assert outcome.rejected[0].raw == lines[2]


def test_an_oversized_image_is_refused_before_it_is_opened(tmp_path: Path):
    outcome = validate_dataset(write_lines(tmp_path / "d.jsonl", [row([big_png()])]))
    (problem,) = outcome.problems
    assert "over 3932160 (3.75 MiB)" in problem.reason


def test_every_bad_image_of_a_row_is_reported(tmp_path: Path):
    bad = [PNG, {"data": "data:image/png;base64,@@"}, JPEG, {"s3_uri": "s3://b/k"}]
    outcome = validate_dataset(write_lines(tmp_path / "d.jsonl", [row(bad)]))
    assert [p.field for p in outcome.problems] == ["images[1]", "images[3]"]


def test_judge_schemas_take_images(tmp_path: Path):
    judged = {"prompt": "p", "response_A": "a", "response_B": "b"}
    lines = [json.dumps({**judged, "images": [PNG]}), json.dumps(judged)]
    lines.append(json.dumps({**judged, "images": [PNG, image("BMP")]}))
    path = write_lines(tmp_path / "j.jsonl", lines)
    assert SCHEMAS["llm_judge"] is JUDGE and SCHEMAS["mm_llm_judge"] is JUDGE
    outcome = validate_dataset(path, SCHEMAS["mm_llm_judge"])
    assert outcome.table["images"].to_pylist() == [[PNG["data"]], None]
    assert [(p.line, p.field) for p in outcome.problems] == [(3, "images[1]")]


def test_skip_keeps_the_other_rows_and_records_the_reason(make_recipe):
    lines = [row([PNG]), row([PNG, {"data": "data:image/png;base64,@@"}]), row([JPEG])]
    loaded = make_recipe(lines, dataset={"on_invalid": "skip"})
    _, summary = stages.run_validation(loaded)
    assert summary["valid_rows"] == 2 and summary["rejected_rows"] == 1
    layout = EvalLayout.for_recipe(loaded)
    rejected = [json.loads(line) for line in Path(layout.rejected_rows).read_text().splitlines()]
    assert [r["line"] for r in rejected] == [2]
    assert rejected[0]["reasons"] == [
        "line 2, field 'images[1]': not base64 (Only base64 data is allowed)"
    ]
    assert storage.read_parquet(layout.validated)["images"].to_pylist() == [
        [PNG["data"]],
        [JPEG["data"]],
    ]


def test_images_reach_the_prompts_table_and_the_requests(make_recipe):
    three = [image("PNG", color="green"), JPEG, PNG]
    loaded = make_recipe([row([PNG]), row(three, query="and here?"), row(None)])
    stages.validate_or_raise(loaded)
    stages.build_prompts(loaded)
    prompts = storage.read_parquet(EvalLayout.for_recipe(loaded).prompts)
    expected = [[PNG["data"]], [e["data"] for e in three], None]
    assert prompts["images"].to_pylist() == expected
    assert prompts["image_count"].to_pylist() == [1, 3, 0]
    requests = stages.build_requests(prompts)
    assert [r.images for r in requests] == [(PNG["data"],), tuple(expected[1]), ()]
    assert [r.prompt for r in requests] == ["what is shown?", "and here?", "what is shown?"]
