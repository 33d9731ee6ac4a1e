"""Images through the whole pipeline with a fake engine that records its requests: the
engine gets the images; the inference outputs, examples.parquet, the Nova export and the
eval_examples rows keep only each row's image count and image hashes, never the images;
the analysis stratifies by the count."""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from nova_eval_assets import stages, storage
from nova_eval_assets.analysis.pipeline import analyze, effective_settings
from nova_eval_assets.engines.base import Generation, GenerationRequest, TokenLogprob, block_size
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.tables.build import examples_batches, run_info


class RecordingEngine:
    """Answers with the prompt's first word; records every request it gets."""

    name = "fake"
    model_id = "fake:images"
    default_batch_size = 2

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    def block_size(self, batch_size: int) -> int:
        return block_size(batch_size)

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        settings,
        batch_size: int | None = None,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> list[Generation]:
        self.requests.extend(requests)
        if on_batch:
            on_batch(len(requests), len(requests))
        return [
            Generation(
                row_index=r.row_index,
                text=r.prompt.split()[0],
                tokens=[TokenLogprob("x", -0.5, [("x", -0.5)])],
                prompt_tokens=len(r.prompt.split()),
                completion_tokens=1,
                latency_s=0.001,
                finish_reason="stop",
            )
            for r in requests
        ]


def image_bytes(fmt: str, color: str, size: tuple[int, int] = (12, 9)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


def data_uri(raw: bytes, fmt: str) -> str:
    return f"data:image/{fmt};base64,{base64.b64encode(raw).decode('ascii')}"


# per row: the images' bytes (as built here) and the format named in the URI
ROW_IMAGES = [
    [(image_bytes("PNG", "red"), "png")],
    [
        (image_bytes("PNG", "green"), "png"),
        (image_bytes("JPEG", "blue"), "jpeg"),
        (image_bytes("JPEG", "white", (30, 20)), "jpeg"),
    ],
    [],
    [(image_bytes("JPEG", "black"), "jpeg")],
    None,
]
EXPECTED_HASHES = [[hashlib.sha256(raw).hexdigest() for raw, _ in row or []] for row in ROW_IMAGES]
EXPECTED_COUNTS = [len(row or []) for row in ROW_IMAGES]


def dataset_lines() -> list[str]:
    lines = []
    for i, images in enumerate(ROW_IMAGES):
        row = {"query": f"answer{i} please", "response": f"answer{i}"}
        row["metadata"] = json.dumps({"i": i})
        if images is not None:
            row["images"] = [{"data": data_uri(raw, fmt)} for raw, fmt in images]
        lines.append(json.dumps(row))
    return lines


def run_pipeline(make_recipe, replicas: int = 1):
    loaded = make_recipe(dataset_lines(), replicas=replicas, inference={"batch_size": 1})
    engine = RecordingEngine()
    stages.validate_or_raise(loaded)
    stages.build_prompts(loaded)
    for replica in range(replicas):
        stages.run_inference(loaded, replica, engine=engine)
        stages.score_replica(loaded, replica)
    return loaded, engine, stages.write_report(loaded)


def assert_no_image_data(path: str) -> None:
    assert b"base64," not in Path(path).read_bytes(), path
    if path.endswith(".parquet"):
        assert "base64," not in json.dumps(pq.read_table(path).to_pylist(), default=str), path


def test_the_engine_gets_the_images_and_the_outputs_keep_count_and_hashes(make_recipe):
    loaded, engine, report = run_pipeline(make_recipe, replicas=2)
    layout = EvalLayout.for_recipe(loaded)
    requests = sorted(engine.requests, key=lambda r: r.row_index)
    assert [r.images for r in requests] == [
        tuple(data_uri(raw, fmt) for raw, fmt in row or []) for row in ROW_IMAGES
    ]

    # the prompts table holds the images (and so their bytes show in its file) ...
    prompts = storage.read_parquet(layout.prompts)
    assert prompts["image_count"].to_pylist() == EXPECTED_COUNTS
    assert b"base64," in Path(layout.prompts).read_bytes()
    # ... no output after it does
    inference = [layout.inference(r, 2) for r in range(2)]
    examples = report["paths"]["examples"]
    details = report["paths"]["details"]
    for path in [*inference, examples, details, report["paths"]["inference_output"]]:
        assert_no_image_data(path)

    for path in inference:
        table = pq.read_table(path)
        assert "images" not in table.column_names
        assert table.schema.field("image_count").type == "int32"
        rows = table["row_index"].to_pylist()
        assert table["image_count"].to_pylist() == [EXPECTED_COUNTS[i] for i in rows]
        assert table["image_sha256"].to_pylist() == [EXPECTED_HASHES[i] for i in rows]

    table = pq.read_table(examples)
    assert "images" not in table.column_names
    assert table["row_index"].to_pylist() == list(range(len(ROW_IMAGES)))
    assert table["image_count"].to_pylist() == EXPECTED_COUNTS
    assert table["image_sha256"].to_pylist() == EXPECTED_HASHES

    specifics = [ast.literal_eval(cell) for cell in pq.read_table(details)["specifics"].to_pylist()]
    assert [s["image_count"] for s in specifics] == EXPECTED_COUNTS
    assert [s["image_sha256"] for s in specifics] == EXPECTED_HASHES
    assert [s["metadata"] for s in specifics] == [json.dumps({"i": i}) for i in range(5)]
    jsonl = Path(report["paths"]["inference_output"]).read_text().splitlines()
    assert [json.loads(line)["image_sha256"] for line in jsonl] == EXPECTED_HASHES


def test_eval_examples_rows_keep_count_and_hashes(make_recipe):
    _, _, report = run_pipeline(make_recipe)
    results = storage.read_json(report["paths"]["results"])
    (rows,) = list(examples_batches(report["paths"]["examples"], run_info("tiny", results)))
    assert "images" not in rows.column_names
    assert rows["image_count"].to_pylist() == EXPECTED_COUNTS
    assert rows["image_sha256"].to_pylist() == EXPECTED_HASHES
    assert "base64," not in json.dumps(rows.to_pylist(), default=str)
    # the same text over other images is another example
    ids = rows["example_id"].to_pylist()
    assert len(set(ids)) == len(ids)


def test_the_analysis_stratifies_by_image_count(make_recipe):
    loaded, _, report = run_pipeline(make_recipe)
    result = analyze(report["paths"]["examples"], effective_settings(loaded), plots=False)
    strata = [r for r in result.strata if r["field"] == "image_count" and r["metric"] == "em"]
    assert {r["value"]: r["n"] for r in strata} == {"0": 2, "1": 2, "3": 1}


def test_text_rows_export_as_before(make_recipe):
    loaded = make_recipe([json.dumps({"query": "a b", "response": "a"})])
    stages.validate_or_raise(loaded)
    stages.build_prompts(loaded)
    stages.run_inference(loaded, 0, engine=RecordingEngine())
    stages.score_replica(loaded, 0)
    report = stages.write_report(loaded)
    (cell,) = pq.read_table(report["paths"]["details"])["specifics"].to_pylist()
    assert ast.literal_eval(cell) == {"metadata": None}
    (line,) = Path(report["paths"]["inference_output"]).read_text().splitlines()
    assert set(json.loads(line)) == {"prompt", "inference", "gold", "metadata"}
    examples = pq.read_table(report["paths"]["examples"])
    assert examples["image_count"].to_pylist() == [0]
    assert examples["image_sha256"].to_pylist() == [[]]
