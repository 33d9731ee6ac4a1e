"""Streaming before and during inference (issue 21): validation, the prompts and inference
read and write in record batches of $NOVA_EVAL_BATCH_ROWS rows. A run over many batches
gives the outputs of a run in one batch (1 and 3 replicas, BYOM preprocessing, images, a
fake engine and a real HTTP server); the prompts' content hash does not depend on the batch;
Arrow's memory peak follows the batch, not the rows."""

from __future__ import annotations

import json
import textwrap
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from nova_eval_assets import cli, lineage, stages, storage
from nova_eval_assets.dataset import shard_ranges
from nova_eval_assets.engines.base import GenerationRequest, block_size
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import LoadedRecipe, load_recipe
from tests.openai_servers import FakeChatServer
from tests.orchestration_support import FakeEngine
from tests.tiny_model import image_uri

MODEL = "smollm2-135m-instruct"
SMALL_BATCH = 64
ONE_BATCH = 100_000  # more rows than any dataset here

PREPROCESSOR = """
from nova_eval_assets.byom import build_lambda_handler, preprocess

@preprocess
def rewrite(event, context):
    data = event["data"]
    if data["gold"].startswith("explode"):
        raise ValueError("cannot rewrite " + data["gold"])
    return {"statusCode": 200, "body": {
        "system": "Answer briefly.",
        "prompt": data["gold"] + " is the answer to: " + data["prompt"],
        "gold": data["gold"],
    }}

handler = build_lambda_handler(preprocessor=rewrite)
"""


def is_invalid(i: int) -> bool:
    return i % 29 == 7


def is_blank(i: int) -> bool:
    return i % 31 == 11


def has_image(i: int) -> bool:
    return i % 10 == 3


def explodes(i: int) -> bool:
    return i % 23 == 5


def dataset_lines(count: int, filler: int = 0) -> list[str]:
    """`count` lines: invalid JSON, blank lines, rows with an image, rows whose
    preprocessing fails, the others plain; `filler` characters of text added per row."""
    lines = []
    for i in range(count):
        if is_invalid(i):
            lines.append('{"query": "unterminated')
        elif is_blank(i):
            lines.append("")
        else:
            gold = f"explode {i}" if explodes(i) else " ".join(["word"] * (i % 6) + [str(i)])
            row = {
                "query": f"Question {i}: what follows {i}? " + "x" * filler,
                "response": gold,
                "metadata": json.dumps({"bucket": i % 4}),
            }
            if i % 2:
                row["system"] = f"system {i % 3}"
            if has_image(i):
                row["images"] = [{"data": image_uri(seed=i % 3)}]
            lines.append(json.dumps(row))
    return lines


def valid_line_numbers(count: int) -> list[int]:
    return [i + 1 for i in range(count) if not is_invalid(i) and not is_blank(i)]


class ImageCheckingEngine(FakeEngine):
    """The orchestration tests' fake engine (echoes the prompt's first words), which also
    checks requests for images as the hf engine does, recording what it was shown."""

    def __init__(self, batch_size: int = 5) -> None:
        super().__init__()
        self.default_batch_size = batch_size
        self.checked: list[list[int]] = []  # per check: row indices shown
        self.checked_images: list[int] = []  # per check: rows with images shown

    def check_requests(self, requests: Sequence[GenerationRequest]) -> None:
        self.checked.append([r.row_index for r in requests])
        self.checked_images.append(sum(1 for r in requests if r.images))


@pytest.fixture
def streaming_recipe(make_recipe, tmp_path) -> Callable[..., LoadedRecipe]:
    """make_recipe with rejected rows skipped and, optionally, the preprocessor above."""

    def make(lines: list[str], preprocess: bool = True, **options) -> LoadedRecipe:
        loaded = make_recipe(lines, dataset={"on_invalid": "skip"}, **options)
        if preprocess:
            (tmp_path / "rewrite.py").write_text(textwrap.dedent(PREPROCESSOR))
            data = yaml.safe_load(loaded.path.read_text())
            data["processor"] = {
                "handler": "rewrite.py:handler",
                "preprocessing": {"enabled": True},
            }
            loaded.path.write_text(yaml.safe_dump(data, sort_keys=False))
        return load_recipe(loaded.path)

    return make


def run_everything(loaded: LoadedRecipe, engine) -> dict:
    """Every stage of one run, and what it wrote (timing columns left out)."""
    layout = EvalLayout.for_recipe(loaded)
    validation = stages.validate_or_raise(loaded)
    prompts = stages.build_prompts(loaded)
    replicas = loaded.recipe.run.replicas
    inference = [stages.run_inference(loaded, r, engine=engine) for r in range(replicas)]
    for replica in range(replicas):
        stages.score_replica(loaded, replica)
    report = stages.write_report(loaded)
    timings = ["latency_s", "preprocess_seconds"]  # differ on every run
    outputs = [
        storage.read_parquet(layout.inference(r, replicas)).drop_columns(timings).to_pylist()
        for r in range(replicas)
    ]
    results = storage.read_json(report["paths"]["results"])
    return {
        "validated": storage.read_parquet(layout.validated).to_pylist(),
        "rejected": Path(layout.rejected_rows).read_text(),
        "validation": {k: validation[k] for k in ("valid_rows", "rejected_rows", "problems")},
        "prompts": storage.read_parquet(layout.prompts)
        .drop_columns(["preprocess_seconds"])
        .to_pylist(),
        "prompts_sha256": lineage.read_lineage(layout.prompts)["sha256"],
        "prompts_summary": {k: prompts[k] for k in ("rows", "sha256", "preprocess_errors")},
        "first_errors": prompts["preprocess_first_errors"],
        "outputs": outputs,
        "inference": [
            {k: s[k] for k in ("rows", "row_range", "errors", "generated_tokens", "blocks")}
            for s in inference
        ],
        "metrics": report["metrics"],
        "results": results["results"],
    }


def run_with_batch(loaded: LoadedRecipe, engine, batch_rows: int, monkeypatch, root: Path) -> dict:
    monkeypatch.setenv(storage.BATCH_ROWS_ENV, str(batch_rows))
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(root))
    return run_everything(loaded, engine)


def row_groups(loaded: LoadedRecipe, root: Path, monkeypatch) -> list[int]:
    """Row groups of the validated, prompts and first inference files under `root`."""
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(root))
    layout = EvalLayout.for_recipe(loaded)
    paths = [layout.validated, layout.prompts, layout.inference(0, loaded.recipe.run.replicas)]
    return [pq.ParquetFile(path).metadata.num_row_groups for path in paths]


@pytest.mark.parametrize("replicas", [1, 3])
def test_many_batches_give_the_outputs_of_one_batch(
    streaming_recipe, monkeypatch, tmp_path, replicas
):
    count = 330
    loaded = streaming_recipe(dataset_lines(count), replicas=replicas, inference={"batch_size": 5})
    small_engine, big_engine = ImageCheckingEngine(), ImageCheckingEngine()
    small = run_with_batch(loaded, small_engine, SMALL_BATCH, monkeypatch, tmp_path / "small")
    big = run_with_batch(loaded, big_engine, ONE_BATCH, monkeypatch, tmp_path / "big")

    # the small run streamed: its files are written in row groups of about the batch
    assert min(row_groups(loaded, tmp_path / "small", monkeypatch)) > 1
    assert set(row_groups(loaded, tmp_path / "big", monkeypatch)) == {1}
    for key in small:
        assert small[key] == big[key], key

    # what is known independently of the code
    lines = valid_line_numbers(count)
    assert [r["line"] for r in small["validated"]] == lines
    assert [r["row_index"] for r in small["validated"]] == list(range(len(lines)))
    rejected = [json.loads(x)["line"] for x in small["rejected"].splitlines()]
    assert rejected == [i + 1 for i in range(count) if is_invalid(i)]
    assert small["validation"]["valid_rows"] == len(lines)
    exploding = [row for row, line in enumerate(lines) if explodes(line - 1)]
    assert small["prompts_summary"]["preprocess_errors"] == len(exploding)
    assert [e["row_index"] for e in small["first_errors"]] == exploding[:10]
    prompts = small["prompts"]
    assert prompts[0]["prompt"] == "0 is the answer to: Question 0: what follows 0? "
    assert [r["image_count"] for r in prompts] == [int(has_image(x - 1)) for x in lines]
    assert [row["row_index"] for out in small["outputs"] for row in out] == list(range(len(lines)))
    ranges = shard_ranges(len(lines), replicas, block_size(5))
    assert [s["row_range"] for s in small["inference"]] == [list(r) for r in ranges]
    # the engine's image check saw each shard whole, without the shard held in memory
    assert small_engine.checked == [list(range(*r)) for r in ranges if r[1] > r[0]]
    assert small_engine.checked_images == [
        sum(1 for row in range(*r) if has_image(lines[row] - 1)) for r in ranges if r[1] > r[0]
    ]


def test_the_served_engine_streams_the_same_rows(streaming_recipe, monkeypatch, tmp_path):
    server = FakeChatServer(model=MODEL)
    try:
        inference = {"engine": "openai", "endpoint": server.url, "concurrency": 4, "batch_size": 8}
        loaded = streaming_recipe(dataset_lines(150), replicas=2, inference=inference)
        small = run_with_batch(loaded, None, SMALL_BATCH, monkeypatch, tmp_path / "small")
        big = run_with_batch(loaded, None, ONE_BATCH, monkeypatch, tmp_path / "big")
    finally:
        server.close()
    for key in small:
        assert small[key] == big[key], key
    rows = [row for out in small["outputs"] for row in out]
    assert len(rows) == len(valid_line_numbers(150))
    assert {row["prediction"] for row in rows} == {"Answer"}  # the server's fixed answer
    assert [t["logprob"] for t in rows[0]["token_logprobs"]] == [-0.25, -0.5]


# ---------------------------------------------------------------- the prompts' content hash


def test_the_content_hash_does_not_depend_on_the_batches():
    table = pa.table(
        {
            "text": pa.array(["ab", None, "", "c", "déjà"]),
            "images": pa.array([["u"], None, [], ["v", "w"], None], pa.list_(pa.string())),
            "n": pa.array([1, None, 3, 4, 5], pa.int32()),
            "flag": pa.array([True, None, False, True, False]),
            "pair": pa.array([{"a": 1}, None, {"a": None}, {"a": 2}, {"a": 3}]),
            "latency_s": [0.1, 0.2, 0.3, 0.4, 0.5],
        }
    )
    whole = lineage.table_sha256(table)
    for size in (1, 2, 3):
        hasher = lineage.ContentHasher(table.schema)
        for batch in table.to_batches(max_chunksize=size):
            hasher.update(batch)
        assert hasher.hexdigest() == whole
    # a value moved from one row to the next is another table
    moved = table.set_column(0, "text", pa.array(["a", "b", "", "c", "déjà"]))
    assert lineage.table_sha256(moved) != whole
    # timings are left out: they differ on every run
    timed = table.set_column(5, "latency_s", pa.array([9.0] * 5))
    assert lineage.table_sha256(timed) == whole


def test_inference_reads_the_prompts_hash_from_the_file(streaming_recipe, monkeypatch):
    monkeypatch.setenv(storage.BATCH_ROWS_ENV, "32")
    loaded = streaming_recipe(dataset_lines(100), preprocess=False)
    stages.validate_or_raise(loaded)
    summary = stages.build_prompts(loaded)
    path = EvalLayout.for_recipe(loaded).prompts
    table = storage.read_parquet(path)
    assert lineage.read_lineage(path)["sha256"] == summary["sha256"] == lineage.table_sha256(table)

    def no_rehash(*args, **kwargs):
        raise AssertionError("the prompts were hashed again")

    monkeypatch.setattr(lineage, "table_sha256", no_rehash)
    monkeypatch.setattr(lineage, "parquet_sha256", no_rehash)
    inference = stages.run_inference(loaded, 0, engine=ImageCheckingEngine())
    assert inference["lineage"]["prompts_sha256"] == summary["sha256"]


def test_a_prompts_file_without_a_recorded_hash_is_hashed_batch_by_batch(tmp_path, monkeypatch):
    monkeypatch.setenv(storage.BATCH_ROWS_ENV, "3")
    table = pa.table({"row_index": list(range(10)), "prompt": [f"p{i}" for i in range(10)]})
    path = str(tmp_path / "prompts.parquet")
    storage.write_parquet(path, table)  # as an older prompts stage wrote it: no lineage
    assert lineage.prompts_hash(path) == lineage.table_sha256(table)


# ---------------------------------------------------------------- validation keeps counts


def test_validation_keeps_counts_and_the_first_problems_only(streaming_recipe, monkeypatch):
    monkeypatch.setenv(storage.BATCH_ROWS_ENV, "16")
    bad = ['{"query": "unterminated'] * 45
    loaded = streaming_recipe(bad + dataset_lines(6), preprocess=False)
    outcome, summary = stages.run_validation(loaded)
    assert outcome.problem_count == summary["problem_count"] == 45
    assert outcome.rejected_rows == summary["rejected_rows"] == 45
    assert len(outcome.problems) == 20 and outcome.rejected == []  # not held
    assert [p.line for p in outcome.problems] == list(range(1, 21))
    assert "45 problem(s) in 45 of 51 rows (showing the first 20)" in outcome.report()
    assert "... and 25 more" in outcome.report()
    rejected = Path(EvalLayout.for_recipe(loaded).rejected_rows).read_text().splitlines()
    assert [json.loads(x)["line"] for x in rejected] == list(range(1, 46))  # every one


# ---------------------------------------------------------------- memory


def arrow_peak(run: Callable[[], object]) -> int:
    """The peak of Arrow's memory (bytes) while `run` runs, in a pool of its own."""
    default = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(default)
    pa.set_memory_pool(pool)
    try:
        run()
    finally:
        pa.set_memory_pool(default)
    return pool.max_memory()


def test_arrow_memory_follows_the_batch_not_the_rows(streaming_recipe, monkeypatch, tmp_path):
    """Four times the rows, the same batch: the peak of Arrow's memory through validation,
    the prompts and inference stays about the same (holding the tables would make it ~4x)."""
    monkeypatch.setenv(storage.BATCH_ROWS_ENV, "250")
    peaks = {}
    for count in (2_000, 8_000):
        monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / f"rows-{count}"))
        loaded = streaming_recipe(
            dataset_lines(count, filler=2_000), preprocess=False, inference={"batch_size": 50}
        )
        engine = ImageCheckingEngine(batch_size=50)

        def stages_to_inference(loaded=loaded, engine=engine) -> None:
            stages.validate_or_raise(loaded)
            stages.build_prompts(loaded)
            stages.run_inference(loaded, 0, engine=engine)

        peaks[count] = arrow_peak(stages_to_inference)
    assert peaks[8_000] < 1.5 * peaks[2_000], peaks


def test_validate_command_holds_no_rows(streaming_recipe, monkeypatch, capsys):
    """`nova-eval validate`: Arrow's peak and Python's (rejected rows, problems) stay the
    same for four times the rows, half of them rejected."""
    monkeypatch.setenv(storage.BATCH_ROWS_ENV, "250")
    valid = json.dumps({"query": "q" * 2_000, "response": "r"})
    rejected = '{"query": "unterminated ' + "z" * 2_000
    peaks = {}
    for count in (10, 1_000, 4_000):  # the first imports what validate needs
        lines = [rejected if i % 2 else valid for i in range(count)]
        loaded = streaming_recipe(lines, preprocess=False, name=f"rows{count}")
        tracemalloc.start()
        try:
            arrow = arrow_peak(lambda loaded=loaded: cli.main(["validate", str(loaded.path)]))
            python = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        out = capsys.readouterr().out
        assert f"{count // 2} problem(s) in {count // 2} of {count} rows" in out
        peaks[count] = (arrow, python)
    assert peaks[4_000][0] < 1.5 * peaks[1_000][0], peaks
    assert peaks[4_000][1] < 1.5 * peaks[1_000][1], peaks


# ---------------------------------------------------------------- resume


class LostAfter(ImageCheckingEngine):
    """Fails (a lost node) when asked for block number `blocks` + 1."""

    def __init__(self, blocks: int) -> None:
        super().__init__()
        self.blocks = blocks

    def generate(self, requests, settings, batch_size=None, on_batch=None):
        if self.blocks == 0:
            raise RuntimeError("node lost")
        self.blocks -= 1
        return super().generate(requests, settings, batch_size, on_batch)


def test_resumed_blocks_are_written_through_from_their_checkpoints(
    streaming_recipe, monkeypatch, tmp_path
):
    monkeypatch.setenv(storage.BATCH_ROWS_ENV, "32")
    loaded = streaming_recipe(dataset_lines(120), preprocess=False, inference={"batch_size": 5})
    stages.validate_or_raise(loaded)
    stages.build_prompts(loaded)
    with pytest.raises(RuntimeError, match="node lost"):
        stages.run_inference(loaded, 0, engine=LostAfter(3))
    path = EvalLayout.for_recipe(loaded).inference(0, 1)
    assert not Path(path).exists()  # no half file
    rerun = ImageCheckingEngine()
    summary = stages.run_inference(loaded, 0, engine=rerun)
    rows = len(valid_line_numbers(120))
    assert summary["resumed_blocks"] == 3 and summary["rows"] == rows
    assert rerun.generated_rows == list(range(3 * 20, rows))  # blocks of 20 rows
    resumed = storage.read_parquet(path).drop_columns(["latency_s"])

    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "straight"))
    stages.validate_or_raise(loaded)
    stages.build_prompts(loaded)
    straight = stages.run_inference(loaded, 0, engine=ImageCheckingEngine())
    assert (
        resumed.to_pylist()
        == storage.read_parquet(straight["path"]).drop_columns(["latency_s"]).to_pylist()
    )
