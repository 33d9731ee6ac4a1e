"""The openai engine's requests sent from several worker processes
(stages/generation_workers.py, inference.client_processes), against bench/instant_server.py's
vLLM-faithful server on 127.0.0.1 (tests/openai_servers.py's ScriptedInstantServer, which
counts requests in flight): the output is what one process writes, the bound on requests in
flight holds across the processes, a server's refusal reaches the stage with its message, a
killed worker fails the stage and the finished blocks resume; and the message framing the
workers speak (worker_process.py)."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pyarrow as pa
import pytest

from nova_eval_assets import resume, stages, storage
from nova_eval_assets.engines.base import SamplingSettings
from nova_eval_assets.engines.constraints import ResponseFormat
from nova_eval_assets.engines.cpu_threads import available_cores
from nova_eval_assets.engines.openai import OpenAIEngine, ServerCapabilityError
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.stages.generation_workers import (
    CLIENT_PROCESS_MIN_ROWS,
    client_processes,
    concurrency_shares,
    settings_from_header,
    settings_header,
    slice_bounds,
)
from nova_eval_assets.worker_process import (
    arrow_batch,
    arrow_payload,
    read_message,
    write_message,
)
from tests.openai_servers import ScriptedInstantServer

MODEL = "smollm2-135m-instruct"  # make_recipe's model name, served under that name


def lines(count: int) -> list[str]:
    return [json.dumps({"query": f"Say word {i}.", "response": f"word {i}"}) for i in range(count)]


def openai_keys(url: str, **extra: object) -> dict:
    return {"engine": "openai", "endpoint": url, "concurrency": 6, "batch_size": 4,
            "max_new_tokens": 64, **extra}  # fmt: skip


def prepared(make_recipe, name: str, count: int, keys: dict):
    loaded = make_recipe(lines(count), name=name, inference=keys)
    stages.validate_or_raise(loaded)
    stages.build_prompts(loaded)
    return loaded


@pytest.fixture
def server():
    started = ScriptedInstantServer(model=MODEL)
    yield started
    started.close()


def generation_worker_pids() -> list[int]:
    me = psutil.Process()
    return [
        child.pid
        for child in me.children(recursive=True)
        if "nova_eval_assets.stages.generation_worker" in " ".join(child.cmdline())
    ]


# ---------------------------------------------------------------- through the stage


def test_three_processes_write_what_one_process_writes(make_recipe, server):
    """40 rows in blocks of 16 (the last of 8), concurrency 6 as shares of 2 per process:
    every column but the latency equals the one-process output, each prompt was asked once
    per run, and the answers are the server's (known from its table, not asked)."""
    three = prepared(make_recipe, "three", 40, openai_keys(server.url, client_processes=3))
    one = prepared(make_recipe, "one", 40, openai_keys(server.url, client_processes=1))
    progress: list[tuple[int, int]] = []
    summary = stages.run_inference(three, 0, on_batch=lambda d, t: progress.append((d, t)))
    reference = stages.run_inference(one, 0)
    assert summary["client_processes"] == 3 and reference["client_processes"] == 1
    assert summary["rows"] == 40 and summary["errors"] == 0 and summary["blocks"] == 3
    written = storage.read_parquet(summary["path"]).drop_columns(["latency_s"])
    expected = storage.read_parquet(reference["path"]).drop_columns(["latency_s"])
    assert written.to_pylist() == expected.to_pylist()
    assert written["prediction"].to_pylist() == [
        server.answer_text(f"Say word {i}.") for i in range(40)
    ]
    assert all(len(row[0]["top"]) == 3 for row in written["token_logprobs"].to_pylist())
    assert Counter(server.prompts) == Counter({f"Say word {i}.": 2 for i in range(40)})
    # progress rises to each block's end and then to the shard's
    assert progress[-1] == (40, 40)
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)
    assert {16, 32} <= {d for d, _ in progress}
    assert not generation_worker_pids()  # the workers ended with the stage


def test_requests_in_flight_stay_within_concurrency_across_processes(make_recipe):
    """Each answer is held 0.2 s so requests pile up: two processes with shares of 2 of
    concurrency 4 have 4 in flight at once at the server, never more."""
    held = ScriptedInstantServer(model=MODEL, hold_s=0.2)
    try:
        keys = openai_keys(held.url, concurrency=4, client_processes=2)
        loaded = prepared(make_recipe, "held", 48, keys)
        summary = stages.run_inference(loaded, 0)
    finally:
        held.close()
    assert summary["errors"] == 0 and summary["client_processes"] == 2
    assert held.max_in_flight == 4
    assert held.requests == 48


def test_a_server_refusal_in_a_worker_reaches_the_stage(make_recipe):
    """A server that serves another model answers 404 to every row (vLLM's "does not
    exist"): no retry fixes that, and the stage fails with the engine's own message, not a
    worker's traceback."""
    other = ScriptedInstantServer(model="another-model")
    try:
        loaded = prepared(make_recipe, "refused", 20, openai_keys(other.url, client_processes=2))
        with pytest.raises(ServerCapabilityError, match=r"HTTP 404.*run\.model_name_or_path"):
            stages.run_inference(loaded, 0)
    finally:
        other.close()
    deadline = time.monotonic() + 30
    while generation_worker_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not generation_worker_pids()


def test_a_killed_worker_fails_the_stage_and_finished_blocks_resume(make_recipe):
    """A worker killed with SIGKILL mid-shard: the stage fails naming the worker's exit, the
    blocks finished before stay checkpointed, and a rerun generates only the others."""
    held = ScriptedInstantServer(model=MODEL, hold_s=0.15)
    try:
        keys = openai_keys(held.url, concurrency=4, client_processes=2)
        loaded = prepared(make_recipe, "killed", 64, keys)  # 4 blocks of 16, >= 0.6 s each
        output = EvalLayout.for_recipe(loaded).inference(0, 1)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                stages.run_inference(loaded, 0)
            except BaseException as exc:  # the test reads it
                failure.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        checkpoints = resume.checkpoint_root(output)
        deadline = time.monotonic() + 60
        while not storage.list_files(checkpoints, ".arrow"):
            assert time.monotonic() < deadline, "no block checkpoint within 60 s"
            time.sleep(0.02)
        victim = generation_worker_pids()[0]
        psutil.Process(victim).kill()
        thread.join(60)
        assert not thread.is_alive()
        assert failure and "generation worker process ended (exit status -9)" in str(failure[0])
        finished = storage.list_files(checkpoints, ".arrow")
        assert 1 <= len(finished) < 4 and not storage.exists(output)
        asked_before = len(held.prompts)
        summary = stages.run_inference(loaded, 0)
        assert summary["resumed_blocks"] == len(finished) and summary["errors"] == 0
        assert len(held.prompts) - asked_before == 64 - 16 * len(finished)
        written = storage.read_parquet(output)
        assert written["prediction"].to_pylist() == [
            held.answer_text(f"Say word {i}.") for i in range(64)
        ]
    finally:
        held.close()


# ---------------------------------------------------------------- the parts


def test_concurrency_shares_and_slices_add_up():
    assert concurrency_shares(64, 2) == [32, 32]
    assert concurrency_shares(7, 3) == [3, 2, 2]
    assert slice_bounds(10, [3, 2, 2]) == [(0, 4), (4, 7), (7, 10)]
    assert slice_bounds(2, [1, 1, 1]) == [(0, 0), (0, 1), (1, 2)]
    assert slice_bounds(1024, [32, 32]) == [(0, 512), (512, 1024)]


class _Inference:
    def __init__(self, client_processes: int | None) -> None:
        self.client_processes = client_processes


def test_how_many_processes_a_shard_gets(server):
    engine = OpenAIEngine(MODEL, server.url, concurrency=3, probe=False)
    cores = available_cores()
    assert client_processes(_Inference(None), engine, CLIENT_PROCESS_MIN_ROWS - 1) == 1
    assert client_processes(_Inference(None), engine, CLIENT_PROCESS_MIN_ROWS) == min(cores, 3)
    assert client_processes(_Inference(8), engine, 10) == 3  # one request in flight each
    assert client_processes(_Inference(2), engine, 10) == 2
    assert client_processes(_Inference(8), object(), 10**6) == 1  # not the openai engine
    # left out, a large shard takes this process's share of the cores
    assert client_processes(_Inference(None), engine, 10**6, cores=lambda: 1) == 1
    assert client_processes(_Inference(None), engine, 10**6, cores=lambda: 2) == 2
    engine.close()


def test_a_replica_beside_another_takes_its_share_of_the_cores(make_recipe, server, monkeypatch):
    """Left to choose, a large shard's stage takes its process's share of the cores: with a
    second live process registered in the CPU-share folder (engines/cpu_threads.py), as a
    replica run side by side is, it takes half of them (at least 1)."""
    import subprocess
    import sys

    from nova_eval_assets.engines import models
    from nova_eval_assets.stages import generation_workers

    cache = Path(make_recipe(lines(1), name="unused").path).parent / "cache"
    monkeypatch.setenv(models.CACHE_ENV, str(cache))
    monkeypatch.setattr(generation_workers, "CLIENT_PROCESS_MIN_ROWS", 10)
    loaded = prepared(make_recipe, "shared", 12, openai_keys(server.url))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        folder = cache / ".cpu-engines"
        folder.mkdir(parents=True)
        (folder / f"{socket.gethostname()}-{other.pid}").touch()
        summary = stages.run_inference(loaded, 0)
    finally:
        other.kill()
        other.wait()
    assert summary["client_processes"] == max(1, available_cores() // 2)
    assert summary["errors"] == 0 and summary["rows"] == 12


@pytest.mark.parametrize(
    "response_format",
    [
        None,
        ResponseFormat.choice(["yes", "no"]),
        ResponseFormat.regex(r"\d+"),
        ResponseFormat.json_schema({"type": "object", "properties": {"a": {"type": "integer"}}}),
    ],
)
def test_sampling_settings_cross_to_a_worker_unchanged(response_format):
    settings = SamplingSettings(
        max_new_tokens=17,
        temperature=0.3,
        top_k=5,
        top_p=0.9,
        top_logprobs=4,
        seed=99,
        reasoning_effort="low",
        response_format=response_format,
    )
    header = json.loads(json.dumps(settings_header(settings)))  # as the pipe carries it
    assert settings_from_header(header) == settings


def test_messages_cross_a_pipe_whole_and_a_cut_frame_reads_as_the_end():
    batch = pa.record_batch({"row_index": [1, 2], "prompt": ["a", None]})
    stream = io.BytesIO()
    write_message(stream, "B", {"step": 3}, arrow_payload(batch))
    write_message(stream, "P", {"done": 2})
    data = stream.getvalue()
    source = io.BytesIO(data)
    first = read_message(source)
    assert first is not None and first.kind == "B" and first.header == {"step": 3}
    assert arrow_batch(first.payload).equals(batch)
    second = read_message(source)
    assert second is not None and second.kind == "P" and second.payload == b""
    assert read_message(source) is None  # the end
    assert read_message(io.BytesIO(data[:-20])) is not None  # the first message is whole
    cut = io.BytesIO(data[: len(data) // 2])
    assert read_message(cut) is None  # the first message cut inside its payload


def test_each_block_is_started_before_the_one_before_it_is_collected():
    from nova_eval_assets.stages.inference import one_ahead

    events: list[str] = []

    def started():
        for k in range(3):
            events.append(f"start {k}")
            yield k

    for k in one_ahead(started()):
        events.append(f"collect {k}")
    assert events == ["start 0", "start 1", "collect 0", "start 2", "collect 1", "collect 2"]
    assert list(one_ahead(iter([]))) == []


def test_a_worker_keeps_the_collector_off_until_the_block_is_arrow(server, monkeypatch):
    """A block's parsed answers are many small objects: the collector must not walk them
    (it cost some 13 % of a worker's CPU). A worker's block runs with it off, whatever the
    engine does, and it is back on once the block's columns are Arrow."""
    import gc

    from nova_eval_assets.stages import generation_worker

    engine = OpenAIEngine(MODEL, server.url, concurrency=2, probe=False)
    seen: list[bool] = []
    generate = engine.generate

    def observed(*args, **kwargs):
        seen.append(gc.isenabled())
        return generate(*args, **kwargs)

    monkeypatch.setattr(engine, "generate", observed)
    prompts = pa.table(
        {
            "row_index": pa.array([0, 1, 2], pa.int64()),
            "prompt": ["a", "b", "c"],
            "system": pa.nulls(3, pa.string()),
        }
    )
    settings = SamplingSettings(max_new_tokens=8, top_logprobs=2)
    header = {"job": 1, "settings": settings_header(settings), "step": 2}
    message = read_message(io.BytesIO(_framed("B", header, arrow_payload(prompts))))
    assert gc.isenabled()
    try:
        table = generation_worker._generated_table(engine, message, on_batch=lambda *_: None)
    finally:
        engine.close()
    assert seen == [False] and gc.isenabled()
    assert table.num_rows == 3 and table.column("prediction").null_count == 0


def _framed(kind: str, header: dict, payload: bytes) -> bytes:
    out = io.BytesIO()
    write_message(out, kind, header, payload)
    return out.getvalue()
