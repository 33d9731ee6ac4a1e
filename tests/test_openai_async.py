"""The served engines' async HTTP client (engines/http_client.py) through the openai engine
and the judge's openai back end, against bench/instant_server.py's vLLM-faithful server on
127.0.0.1 (tests/openai_servers.py: ScriptedInstantServer counts connections and requests in
flight, holds, throttles or drops requests): the bound on requests in flight, keep-alive,
Retry-After without stalling the other rows, connections closed mid-run, kill -9 and resume,
proxies from the environment, the loop thread's lifetime (close, garbage collection, a
forked child), and the garbage collector paused while a block's generations live.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.instant_server import answer_tokens
from nova_eval_assets import resume, stages, storage
from nova_eval_assets.engines.base import (
    Generation,
    GenerationRequest,
    SamplingSettings,
    TokenLogprob,
)
from nova_eval_assets.engines.collector import collector_paused
from nova_eval_assets.engines.openai import HTTPClient, HTTPStatusError, OpenAIEngine
from nova_eval_assets.engines.server import free_port
from nova_eval_assets.judge.backends import create_judge_engine
from nova_eval_assets.layout import EvalLayout
from tests.conftest import PROJECT
from tests.openai_servers import FakeChatServer, ScriptedInstantServer

MODEL = "smollm2-135m-instruct"  # make_recipe's model name, served under that name
SETTINGS = SamplingSettings(max_new_tokens=64, top_logprobs=2)
WORDS = ["apple", "river", "stone", "cloud", "green", "seven", "paper", "light", "north", "glass",
         "tiger", "bread"]  # fmt: skip


def rows(count: int) -> list[GenerationRequest]:
    return [GenerationRequest(i, f"Say {WORDS[i % len(WORDS)]} {i}.") for i in range(count)]


def short_lines(count: int) -> list[str]:
    return [
        json.dumps({"query": f"Say {w}.", "response": w, "metadata": json.dumps({"i": i})})
        for i, w in enumerate(WORDS[:count])
    ]


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "nova-eval-http"]


@pytest.fixture
def server():
    started = ScriptedInstantServer(model=MODEL)
    yield started
    started.close()


# ---------------------------------------------------------------- the bound and the pool


@pytest.mark.parametrize("backend", ["engine", "judge"])
def test_requests_in_flight_never_exceed_concurrency(backend):
    """Each answer is held 0.2 s, so requests pile up: the server sees exactly
    `concurrency` at once, never more, and every row in order."""
    held = ScriptedInstantServer(model=MODEL, hold_s=0.2)
    try:
        if backend == "engine":
            engine = OpenAIEngine(MODEL, held.url, concurrency=3)
        else:
            engine = create_judge_engine("openai", MODEL, endpoint=held.url, concurrency=3)
        generations = engine.generate(rows(15), SETTINGS)
        engine.close()
    finally:
        held.close()
    assert held.max_in_flight == 3
    assert held.requests == 15 and held.connections <= 3
    assert [g.row_index for g in generations] == list(range(15))
    assert all(g.error is None for g in generations)


def test_connections_are_kept_alive_and_reused(server):
    """200 rows at concurrency 4: the pool opens at most 4 connections (the /v1/models
    probe shares them); a connection per request would be 201."""
    engine = OpenAIEngine(MODEL, server.url, concurrency=4)
    generations = engine.generate(rows(200), SETTINGS)
    engine.close()
    assert server.requests == 200
    assert server.connections <= 4
    assert all(g.error is None for g in generations)


def test_answers_are_read_exactly_as_the_server_sent_them(server):
    """Text, tokens and top lists are the server's, whose answers are known from its table
    (the chosen token first in its top list, then alternatives 1.5 lower each)."""
    engine = OpenAIEngine(MODEL, server.url, concurrency=2)
    (generation,) = engine.generate([GenerationRequest(7, "Say stone.")], SETTINGS)
    engine.close()
    expected = server.answer_text("Say stone.")
    assert generation.text == expected and generation.row_index == 7
    assert [t.token for t in generation.tokens] == answer_tokens(expected)
    first = generation.tokens[0]
    assert first.logprob == pytest.approx(-0.001)
    assert first.top == [(first.token, pytest.approx(-0.001)), ('"', pytest.approx(-1.501))]
    assert generation.completion_tokens == len(answer_tokens(expected))
    assert generation.finish_reason == "stop"


# ---------------------------------------------------------------- throttling


def test_retry_after_is_honoured_without_stalling_the_other_rows():
    """The first request is answered 429 with Retry-After: 1. That row is asked again no
    sooner than 1 s later, while the other worker goes on answering rows meanwhile: a
    back-off that blocked the event loop would hold every row."""
    throttled = ScriptedInstantServer(model=MODEL, throttle=1, retry_after="1")
    try:
        engine = OpenAIEngine(MODEL, throttled.url, concurrency=2, max_retries=3)
        requests = rows(6)
        generations = engine.generate(requests, SETTINGS)
        engine.close()
    finally:
        throttled.close()
    assert all(g.error is None for g in generations)
    asked = [i for i, p in enumerate(throttled.prompts) if p == requests[0].prompt]
    assert len(asked) == 2  # the 429, then the retry
    first, retry = (throttled.arrivals[i] for i in asked)
    assert retry - first >= 1.0
    meanwhile = [t for t in throttled.arrivals if first < t < retry]
    assert len(meanwhile) == 5  # the five other rows, each asked once


def test_a_server_that_keeps_throttling_gives_error_rows_after_the_retries():
    throttled = ScriptedInstantServer(model=MODEL, throttle=10**6, retry_after="0")
    try:
        engine = OpenAIEngine(MODEL, throttled.url, concurrency=2, max_retries=2, backoff_s=0.01)
        generations = engine.generate(rows(3), SETTINGS)
        engine.close()
    finally:
        throttled.close()
    assert throttled.requests == 3 * 3  # one try and two retries each
    assert [g.finish_reason for g in generations] == ["error"] * 3
    assert all("HTTP 429" in g.error and "rate limited" in g.error for g in generations)


# ---------------------------------------------------------------- connections closed mid-run


def test_connections_closed_mid_run_are_retried_or_that_rows_error():
    """The server hangs up, without an answer, on a row once ("flaky") and on another
    every time ("gone"): the first is retried and answered, the second is that row's error
    once its retries are spent, and the other rows on the same pooled connections are
    answered as usual."""
    requests = [GenerationRequest(i, f"Say word {i}.") for i in range(8)]
    requests[2] = GenerationRequest(2, "Say flaky.")
    requests[5] = GenerationRequest(5, "Say gone.")
    server = ScriptedInstantServer(model=MODEL, drops={"flaky": 1, "gone": None})
    try:
        engine = OpenAIEngine(MODEL, server.url, concurrency=3, max_retries=2, backoff_s=0.01)
        generations = engine.generate(requests, SETTINGS)
        engine.close()
    finally:
        server.close()
    by_row = {g.row_index: g for g in generations}
    gone = by_row.pop(5)
    assert gone.finish_reason == "error"
    assert gone.error.startswith(f"ConnectionFailure: cannot reach {server.url}")
    assert server.prompts.count("Say gone.") == 3 and server.prompts.count("Say flaky.") == 2
    assert server.dropped == 4
    for row, generation in by_row.items():
        assert generation.error is None
        assert generation.text == server.answer_text(requests[row].prompt)


# ---------------------------------------------------------------- kill -9 and resume


def worker(recipe: Path, pause: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.resume_worker", str(recipe), "0", str(pause)],
        cwd=PROJECT,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def test_kill_9_mid_run_then_resume_asks_only_unfinished_blocks(make_recipe, server):
    keys = {"engine": "openai", "endpoint": server.url, "concurrency": 2, "batch_size": 1,
            "max_new_tokens": 64}  # fmt: skip
    killed = make_recipe(short_lines(12), name="killed", inference=keys)  # 3 blocks of 4
    straight = make_recipe(short_lines(12), name="straight", inference=keys)
    for loaded in (killed, straight):
        stages.validate_or_raise(loaded)
        stages.build_prompts(loaded)
    output = EvalLayout.for_recipe(killed).inference(0, 1)
    checkpoints = Path(resume.checkpoint_root(output))

    process = worker(killed.path, pause=0.5)  # a block reports 4 times: >= 2 s a block
    try:
        deadline = time.monotonic() + 120
        while not list(checkpoints.rglob("block-*.arrow")):
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    finished = [storage.read_arrow(str(p)) for p in sorted(checkpoints.rglob("block-*.arrow"))]
    done = {prompt for part in finished for prompt in part["prompt"].to_pylist()}
    assert 4 <= len(done) < 12 and not storage.exists(output)

    first_run = len(server.prompts)
    summary = stages.run_inference(killed, 0)
    asked_again = server.prompts[first_run:]
    assert summary["resumed_blocks"] == len(finished) and summary["errors"] == 0
    assert not done & set(asked_again)  # no finished row was asked again
    assert sorted(asked_again) == sorted({f"Say {w}." for w in WORDS[:12]} - done)

    stages.run_inference(straight, 0)
    resumed = storage.read_parquet(output).drop_columns(["latency_s"])
    reference = storage.read_parquet(EvalLayout.for_recipe(straight).inference(0, 1))
    assert resumed.to_pylist() == reference.drop_columns(["latency_s"]).to_pylist()
    rows_written = resumed.to_pylist()
    assert [r["prediction"] for r in rows_written] == [
        server.answer_text(f"Say {w}.") for w in WORDS[:12]
    ]
    assert [len(r["token_logprobs"][0]["top"]) for r in rows_written] == [3] * 12  # top 3


# ---------------------------------------------------------------- proxies, the loop thread


def test_a_proxy_from_the_environment_carries_the_requests(server, monkeypatch):
    """HTTP_PROXY names the instant server: requests to a host that does not resolve reach
    it as a proxy's requests do, with the whole URL as the target."""
    upstream = "http://nova-eval-upstream.invalid:8000"
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.setenv("http_proxy", server.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    engine = OpenAIEngine(MODEL, upstream, concurrency=2, max_retries=0)
    (generation,) = engine.generate([GenerationRequest(0, "Say apple.")], SETTINGS)
    engine.close()
    assert generation.error is None and generation.text == server.answer_text("Say apple.")
    assert server.targets == [f"{upstream}/v1/models", f"{upstream}/v1/chat/completions"]


def test_the_loop_thread_ends_on_close_and_when_the_engine_is_collected(server):
    before = len(loop_threads())
    engine = OpenAIEngine(MODEL, server.url, concurrency=2)
    assert len(loop_threads()) == before + 1  # the probe started it
    engine.close()
    assert len(loop_threads()) == before
    (again,) = engine.generate([GenerationRequest(0, "Say river.")], SETTINGS)  # restarts
    assert again.error is None and len(loop_threads()) == before + 1
    del engine, again
    gc.collect()
    deadline = time.monotonic() + 10
    while len(loop_threads()) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(loop_threads()) == before


def test_the_garbage_collector_runs_again_after_a_block(server):
    engine = OpenAIEngine(MODEL, server.url, concurrency=2)
    assert gc.isenabled()
    seen: list[bool] = []
    engine.generate(
        rows(4), SETTINGS, batch_size=1, on_batch=lambda *_: seen.append(gc.isenabled())
    )
    engine.close()
    assert seen == [False] * 4 and gc.isenabled()  # paused during the block only


def _generate_in_child(engine: OpenAIEngine, answers) -> None:
    (generation,) = engine.generate([GenerationRequest(1, "Say child.")], SETTINGS)
    gc.collect()  # what the child dropped of the parent's client is collected here
    answers.put(generation.text)


def test_a_forked_child_has_its_own_loop_and_the_parent_keeps_its_connections(server):
    """A replica process forked from one whose engine had already run: the child starts
    its own loop and pool, and what it inherited must not close the parent's pooled
    connections (an epoll instance is shared across fork), so the parent goes on."""
    import multiprocessing

    # a parent whose sockets the child took out of its loop would wait for the deadline
    engine = OpenAIEngine(MODEL, server.url, concurrency=2, timeout_s=10, max_retries=0)
    (before,) = engine.generate([GenerationRequest(0, "Say parent.")], SETTINGS)
    context = multiprocessing.get_context("fork")
    answers = context.SimpleQueue()
    child = context.Process(target=_generate_in_child, args=(engine, answers))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert answers.get() == server.answer_text("Say child.")
    (after,) = engine.generate([GenerationRequest(2, "Say parent again.")], SETTINGS)
    engine.close()
    assert before.error is None and after.error is None
    assert after.text == server.answer_text("Say parent again.")


def test_tokens_the_server_sent_without_some_fields_read_as_empty():
    """Servers that leave out ``top_logprobs`` or a token's text: the tolerant reading, as
    before (empty text, no top list, NaN for a missing log probability)."""
    engine = OpenAIEngine(MODEL, "http://127.0.0.1:9", probe=False)
    content = [{"token": "Hi", "logprob": -0.5}, {"logprob": -1.0, "top_logprobs": []}, {}]
    payload = {
        "choices": [{"message": {"content": "Hi!"}, "logprobs": {"content": content}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3},
    }
    generation = engine.generation(GenerationRequest(0, "x"), SETTINGS, payload)
    assert [(t.token, t.top) for t in generation.tokens] == [("Hi", []), ("", []), ("", [])]
    assert [t.logprob for t in generation.tokens][:2] == [-0.5, -1.0]
    assert generation.tokens[2].logprob != generation.tokens[2].logprob  # NaN


class RecordingEngine:
    """An engine without a server: one token per row, and whether the collector ran while
    it generated."""

    name, model_id, default_batch_size = "recording", "recording", 2

    def __init__(self) -> None:
        self.collector_on: list[bool] = []

    def block_size(self, batch_size: int) -> int:
        return batch_size * 4

    def generate(self, requests, settings, batch_size=None, on_batch=None):
        self.collector_on.append(gc.isenabled())
        token = TokenLogprob("ok", -0.5, [("ok", -0.5), ("no", -2.0)])
        return [Generation(r.row_index, "ok", [token], 3, 1, 0.0, "stop") for r in requests]


def test_the_stage_pauses_the_collector_for_each_block_of_any_engine(make_recipe):
    loaded = make_recipe(short_lines(10), inference={"batch_size": 1})  # blocks of 4
    stages.validate_or_raise(loaded)
    stages.build_prompts(loaded)
    engine = RecordingEngine()
    summary = stages.run_inference(loaded, 0, engine=engine)
    assert engine.collector_on == [False, False, False] and gc.isenabled()
    table = storage.read_parquet(summary["path"])
    assert (
        table["token_logprobs"].to_pylist()
        == [
            [
                {
                    "token": "ok",
                    "logprob": -0.5,
                    "top": [{"token": "ok", "logprob": -0.5}, {"token": "no", "logprob": -2.0}],
                    "constrained_logprob": None,
                    "forced": None,
                }
            ]
        ]
        * 10
    )


def test_a_collector_the_caller_had_turned_off_stays_off():
    gc.disable()
    try:
        with collector_paused(), collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_refused_connection_says_so_as_urllib_did():
    """The reason is the system's (preflight reads "refused" in it), not aiohttp's wording."""
    port = free_port()
    engine = OpenAIEngine(MODEL, f"http://127.0.0.1:{port}", probe=False, max_retries=0)
    (generation,) = engine.generate([GenerationRequest(0, "Say apple.")], SETTINGS)
    engine.close()
    refused = f"[Errno {errno.ECONNREFUSED}] {os.strerror(errno.ECONNREFUSED)}"
    assert generation.error == (
        f"ConnectionFailure: cannot reach http://127.0.0.1:{port}/v1/chat/completions: {refused}"
    )


def test_headers_a_subclass_adds_are_sent_and_redacted():
    """preflight's MLflow check sends basic auth by overriding ``headers()``: the header
    goes out with every request, and its value is redacted from errors like the key."""

    class BasicAuthClient(HTTPClient):
        def headers(self) -> dict[str, str]:
            return {**super().headers(), "Authorization": "Basic dXNlcjpzZWNyZXQ=", "X-Extra": "1"}

    echo = FakeChatServer(echo_status=400)
    try:
        with pytest.raises(HTTPStatusError) as refused:
            BasicAuthClient(max_retries=0).request(f"{echo.url}/v1/chat/completions", {"a": 1})
    finally:
        echo.close()
    assert "Authorization: [REDACTED]" in refused.value.detail
    assert "X-Extra: 1" in refused.value.detail and "dXNlcjpzZWNyZXQ" not in refused.value.detail
