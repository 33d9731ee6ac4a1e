"""The served engine (and the judge's ``openai`` back end, the same client) against hard
servers on 127.0.0.1 (tests/openai_servers.py): one that drips its answer a byte at a time,
one that leaves out one prompt's log probabilities, one whose error pages echo the request's
headers, API key included. Each test checks what the engine does with what the server sent,
not how the HTTP client works, so it holds for any client.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from nova_eval_assets import stages, storage
from nova_eval_assets.engines.base import GenerationRequest, SamplingSettings
from nova_eval_assets.engines.openai import (
    HTTPClient,
    HTTPStatusError,
    OpenAIEngine,
    ServerCapabilityError,
)
from nova_eval_assets.judge.backends import OpenAIChatEngine, create_judge_engine
from tests.openai_servers import DrippingServer, FakeChatServer

KEY = "sk-nova-robustness-5f3a9c1e7b"
KEY_ENV = "NOVA_ROBUSTNESS_KEY"
SETTINGS = SamplingSettings(max_new_tokens=8)
WORDS = ["apple", "river", "stone", "cloud"]


def bounded(call: Callable[[], Any], limit_s: float) -> tuple[Any, float]:
    """`call()` on a thread: its result and wall time; a test failure if it is still running
    after `limit_s` (a client without a whole-request deadline would hang for minutes)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit_s)
    elapsed = time.monotonic() - started
    assert not thread.is_alive(), f"still waiting for the server after {limit_s} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"], elapsed


# ---------------------------------------------------------------- 1. a dripping server


@pytest.mark.parametrize(
    ("drip", "content_length"), [("body", True), ("headers", True), ("body", False)]
)
def test_timeout_s_bounds_the_whole_request_not_each_read(drip, content_length):
    """The server sends a byte every 0.2 s, so no single read waits long: the answer (a
    few hundred bytes) would take about a minute. timeout_s 1 with one retry: each row
    fails after two attempts of 1 s. A body without a length must not pass for whole when
    the deadline cuts it."""
    server = DrippingServer(drip, interval_s=0.2, content_length=content_length)
    try:
        engine = OpenAIEngine(
            "m", server.url, timeout_s=1.0, max_retries=1, backoff_s=0.01, concurrency=2
        )
        rows = [GenerationRequest(0, "a"), GenerationRequest(1, "b")]
        generations, elapsed = bounded(lambda: engine.generate(rows, SETTINGS), limit_s=8.0)
    finally:
        server.close()
    assert 1.9 <= elapsed < 4.0  # 2 attempts x 1 s, the two rows side by side
    assert [g.finish_reason for g in generations] == ["error", "error"]
    for generation in generations:
        assert "RequestTimeout: timed out after 1 s" in generation.error
    assert server.posts == 4  # every row asked twice


def test_the_judge_back_end_has_the_same_deadline():
    server = DrippingServer("body", interval_s=0.2)
    try:
        judge = OpenAIChatEngine("judge", server.url, timeout_s=1.0, max_retries=0)
        rows = [GenerationRequest(0, "Which is better?")]
        generations, elapsed = bounded(lambda: judge.generate(rows, SETTINGS), limit_s=6.0)
    finally:
        server.close()
    assert 0.9 <= elapsed < 2.5
    assert generations[0].finish_reason == "error"
    assert "timed out after 1 s" in generations[0].error


# ---------------------------------------------------------------- 2. one row without logprobs


@pytest.fixture
def word_lines() -> list[str]:
    return [json.dumps({"query": f"Say {w}.", "response": w}) for w in WORDS]


def served_inference(url: str, **keys: Any) -> dict:
    return {"engine": "openai", "endpoint": url, "concurrency": 2, "batch_size": 2, **keys}


def run_inference(loaded) -> dict:
    stages.validate_or_raise(loaded)
    stages.build_prompts(loaded)
    return stages.run_inference(loaded, 0)


def test_one_row_without_logprobs_is_that_rows_error(make_recipe, word_lines):
    server = FakeChatServer(without_logprobs=("river",))
    try:
        loaded = make_recipe(word_lines, inference=served_inference(server.url, top_logprobs=2))
        summary = run_inference(loaded)  # one block of 8 rows: all four together
    finally:
        server.close()
    assert summary["errors"] == 1
    rows = {row["prompt"]: row for row in storage.read_parquet(summary["path"]).to_pylist()}
    river = rows["Say river."]
    assert river["finish_reason"] == "error" and river["prediction"] == ""
    assert "without the log probabilities the request asked for" in river["error"]
    assert "top_logprobs: 2" in river["error"]
    for word in ("apple", "stone", "cloud"):
        row = rows[f"Say {word}."]
        assert row["error"] is None and row["prediction"] == "Answer"
        assert [(t["token"], t["logprob"]) for t in row["token_logprobs"]] == [
            ("An", -0.25),
            ("swer", -0.5),
        ]
        assert [(t["token"], t["logprob"]) for t in row["token_logprobs"][1]["top"]] == [
            ("swer", -0.5),
            ("alt1", -1.5),
        ]


def test_a_block_where_no_row_has_logprobs_means_the_server_has_none(make_recipe, word_lines):
    server = FakeChatServer(without_logprobs=("Say",))
    try:
        loaded = make_recipe(word_lines, inference=served_inference(server.url, top_logprobs=2))
        with pytest.raises(ServerCapabilityError) as refused:
            run_inference(loaded)
    finally:
        server.close()
    message = str(refused.value)
    assert server.url in message and "returned no log probabilities" in message
    assert "inference.top_logprobs: 0" in message


def test_once_the_server_has_sent_logprobs_a_block_without_them_is_error_rows():
    """The server showed it supports them: a later block whose rows all lack them (here a
    block of one row) is those rows' errors, for inference.max_error_rate to judge."""
    server = FakeChatServer(without_logprobs=("odd",))
    settings = SamplingSettings(max_new_tokens=8, top_logprobs=1)
    try:
        engine = OpenAIEngine("fake-model", server.url, concurrency=2)
        first = engine.generate(
            [GenerationRequest(0, "even"), GenerationRequest(1, "odd")], settings
        )
        second = engine.generate([GenerationRequest(2, "odd one")], settings)
        fresh = OpenAIEngine("fake-model", server.url)
        with pytest.raises(ServerCapabilityError, match="returned no log probabilities"):
            fresh.generate([GenerationRequest(3, "odd again")], settings)
    finally:
        server.close()
    assert [g.finish_reason for g in first] == ["stop", "error"]
    assert [t.token for t in first[0].tokens] == ["An", "swer"]
    assert second[0].finish_reason == "error"
    assert "without the log probabilities" in second[0].error


# ---------------------------------------------------------------- 3. errors that echo the key


def written_text(root: Path) -> str:
    """Every file under `root` as text: raw bytes, and Parquet cells decoded (a compressed
    column need not hold the key's bytes as they are)."""
    texts = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        texts.append(path.read_bytes().decode("utf-8", "replace"))
        if path.suffix == ".parquet":
            texts.append(json.dumps(pq.read_table(path).to_pylist(), default=str))
    return "\n".join(texts)


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(KEY_ENV, KEY)
    yield KEY


def test_a_5xx_body_echoing_the_key_is_stored_redacted(
    make_recipe, word_lines, key, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)
    server = FakeChatServer(echo_status=500)
    keys = served_inference(server.url, top_logprobs=0, max_retries=0, api_key_env=KEY_ENV)
    try:
        summary = run_inference(make_recipe(word_lines, inference=keys))
    finally:
        server.close()
    assert summary["errors"] == len(WORDS)
    errors = storage.read_parquet(summary["path"])["error"].to_pylist()
    for error in errors:  # the echo is kept (it says what went wrong), the key is not
        assert error.startswith("HTTPStatusError: HTTP 500 from ")
        assert "upstream refused the request; it sent: Authorization: [REDACTED]\n" in error
    written = written_text(tmp_path / "outputs")
    assert "Authorization: [REDACTED]" in written  # the error rows were written
    assert key not in written and key not in caplog.text


def test_a_401_echoing_the_key_stops_the_run_with_the_key_redacted(
    make_recipe, word_lines, key, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)
    server = FakeChatServer(echo_status=401)
    keys = served_inference(server.url, top_logprobs=0, api_key_env=KEY_ENV)
    try:
        with pytest.raises(ServerCapabilityError) as refused:
            run_inference(make_recipe(word_lines, inference=keys))
    finally:
        server.close()
    message = str(refused.value)
    assert "HTTP 401" in message and "Authorization: [REDACTED]" in message
    assert "inference.api_key_env" in message
    assert key not in message
    assert key not in written_text(tmp_path / "outputs") and key not in caplog.text


def test_the_probe_of_a_server_echoing_the_key_fails_with_the_key_redacted(key):
    server = FakeChatServer(echo_status=403, echo_paths=("/v1/models",))
    try:
        with pytest.raises(ServerCapabilityError) as refused:
            OpenAIEngine("fake-model", server.url, api_key_env=KEY_ENV)
    finally:
        server.close()
    assert "HTTP 403" in str(refused.value) and "[REDACTED]" in str(refused.value)
    assert key not in str(refused.value)


def test_a_key_across_the_500_character_cut_is_redacted_whole():
    """The error text is cut to 500 characters: redacting after the cut would leave the
    key's first characters in it."""
    lead = "Authorization: Bearer "
    prefix = "x" * (495 - len(lead))  # the key starts at character 495
    server = FakeChatServer(echo_status=400, echo_prefix=prefix)
    try:
        with pytest.raises(HTTPStatusError) as refused:
            HTTPClient(api_key=KEY, max_retries=0).request(
                f"{server.url}/v1/chat/completions", {"model": "m"}
            )
    finally:
        server.close()
    detail = refused.value.detail
    assert detail.startswith(prefix + "Authorization: [REDACTED]\n")
    assert KEY[:4] not in detail


def test_the_judge_back_end_redacts_the_key_it_was_given():
    server = FakeChatServer(echo_status=400)
    try:
        judge = create_judge_engine("openai", "judge", endpoint=server.url, api_key=KEY)
        generations = judge.generate([GenerationRequest(0, "Which is better?")], SETTINGS)
    finally:
        server.close()
    assert generations[0].finish_reason == "error"
    assert "HTTP 400" in generations[0].error and "[REDACTED]" in generations[0].error
    assert KEY not in generations[0].error


def test_a_placeholder_key_is_redacted_only_in_its_header():
    """Local servers take any key ("x", "abc"): erasing every such run of letters from a
    message would garble it, so a key under 4 characters goes only with its header."""
    client = HTTPClient(api_key="abc")
    assert client.redact("Authorization: Bearer abc; abcdef") == (
        "Authorization: [REDACTED]; abcdef"
    )
    assert HTTPClient(api_key=KEY).redact(f"key={KEY}") == "key=[REDACTED]"
