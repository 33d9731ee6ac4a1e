"""``inference.engine: openai`` against a real OpenAI-compatible server that returns log
probabilities: llama.cpp's server (``llama-cpp-python[server]``, a dev dependency) over the
bundled SmolLM2 GGUF on 127.0.0.1, behind a recording proxy (tests/openai_servers.py).

What the engine wrote is compared with what the server sent: the proxy keeps the server's
raw answers, and the same request is asked again with plain urllib.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator

import pyarrow.compute as pc
import pytest

from nova_eval_assets import stages, storage
from nova_eval_assets.engines import create_engine
from nova_eval_assets.engines.base import GenerationRequest, SamplingSettings
from nova_eval_assets.layout import EvalLayout
from tests.conftest import ticket_lines
from tests.openai_servers import (
    BUNDLED,
    RecordingProxy,
    llama_cpp_available,
    llama_cpp_command,
    post,
    running,
)

pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(
        not llama_cpp_available(),
        reason="llama-cpp-python is not installed (pip install -e '.[test]' builds it)",
    ),
]

WORDS = ["apple", "river", "stone", "cloud", "green", "seven", "paper", "light", "north", "glass",
         "tiger", "bread"]  # fmt: skip


def short_rows(count: int) -> list[str]:
    return [
        json.dumps({"query": f"Say {w}.", "response": w, "metadata": json.dumps({"i": i})})
        for i, w in enumerate(WORDS[:count])
    ]


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with running(llama_cpp_command(), BUNDLED, log) as url:
        yield url


@pytest.fixture
def proxy(llama: str) -> Iterator[RecordingProxy]:
    server = RecordingProxy(llama)
    yield server
    server.close()


def openai_inference(proxy: RecordingProxy, **keys) -> dict:
    return {"engine": "openai", "endpoint": proxy.url, "max_new_tokens": 8, **keys}


def prepare(loaded) -> None:
    stages.validate_or_raise(loaded)
    stages.build_prompts(loaded)


def evaluate(loaded) -> dict:
    prepare(loaded)
    for replica in range(loaded.recipe.run.replicas):
        stages.run_inference(loaded, replica)
        stages.score_replica(loaded, replica)
    return stages.write_report(loaded)


def comparable(loaded):
    table = storage.read_parquet(EvalLayout.for_recipe(loaded).examples)
    return table.drop_columns(["latency_s", "replica"]).replace_schema_metadata(None)


def test_logprobs_and_top_lists_are_exactly_what_the_server_sent(make_recipe, proxy, monkeypatch):
    monkeypatch.setenv("NOVA_TEST_KEY", "sk-local")
    lines = ticket_lines(3)
    keys = openai_inference(proxy, top_logprobs=3, concurrency=2, api_key_env="NOVA_TEST_KEY")
    loaded = make_recipe(lines, inference=keys)
    report = evaluate(loaded)
    assert report["counts"]["inference_errors"] == 0
    rows = storage.read_parquet(EvalLayout.for_recipe(loaded).examples).to_pylist()

    sent = sorted(proxy.requests, key=lambda body: body["messages"][-1]["content"])
    first = next(b for b in sent if b["messages"][-1]["content"] == rows[0]["prompt"])
    assert {k: v for k, v in first.items() if k != "messages"} == {
        "model": BUNDLED,
        "max_tokens": 8,
        "temperature": 0.0,
        "top_p": 1.0,
        "seed": 1234,
        "logprobs": True,
        "top_logprobs": 3,
    }  # no top_k: it is -1 (off)
    assert first["messages"][-1] == {"role": "user", "content": rows[0]["prompt"]}
    assert all(h["Authorization"] == "Bearer sk-local" for h in proxy.headers)

    details = storage.list_files(EvalLayout.for_recipe(loaded).results_dir, ".parquet")
    nova = [p for p in details if "details_" in p]
    pred_logprobs = storage.read_parquet(nova[0])["pred_logprobs"].to_pylist()
    for row, exported in zip(rows, pred_logprobs, strict=True):
        # the same request again, by plain urllib, straight to the server
        messages = ([{"role": "system", "content": row["system"]}] if row["system"] else []) + [
            {"role": "user", "content": row["prompt"]}
        ]
        body = {
            "model": BUNDLED,
            "messages": messages,
            "max_tokens": 8,
            "temperature": 0,
            "seed": 1234,
            "logprobs": True,
            "top_logprobs": 3,
        }
        raw = post(proxy.upstream, body)["choices"][0]
        assert row["prediction"] == raw["message"]["content"]
        content = raw["logprobs"]["content"]
        assert [
            {"token": t["token"], "logprob": t["logprob"], "top": t["top"]}
            for t in row["token_logprobs"]
        ] == [
            {
                "token": item["token"],
                "logprob": item["logprob"],
                "top": [
                    {"token": t["token"], "logprob": t["logprob"]} for t in item["top_logprobs"]
                ],
            }
            for item in content
        ]
        assert ast.literal_eval(exported) == [
            [{t["token"]: t["logprob"] for t in item["top_logprobs"]} for item in content]
        ]
        assert len(content) == row["completion_tokens"] and all(
            len(item["top_logprobs"]) == 3 for item in content
        )
    # and what the proxy saw the server answer during the run is what was recorded
    by_prompt = {b["messages"][-1]["content"]: a for b, a in proxy.exchanges}
    assert len(by_prompt) == len(proxy.exchanges) == len(rows)
    for row in rows:
        answer = by_prompt[row["prompt"]]["choices"][0]
        assert [t["logprob"] for t in row["token_logprobs"]] == [
            i["logprob"] for i in answer["logprobs"]["content"]
        ]
        assert row["prompt_tokens"] == by_prompt[row["prompt"]]["usage"]["prompt_tokens"]


def test_top_k_goes_in_the_body_when_set(make_recipe, proxy):
    loaded = make_recipe(short_rows(1), inference=openai_inference(proxy, top_k=5, top_logprobs=0))
    prepare(loaded)
    summary = stages.run_inference(loaded, 0)
    assert summary["errors"] == 0
    assert proxy.requests[0]["top_k"] == 5 and "logprobs" not in proxy.requests[0]
    table = storage.read_parquet(summary["path"])
    assert table["token_logprobs"].to_pylist() == [[]]  # none asked for, none recorded


def test_one_and_three_replicas_give_identical_rows_and_metrics(make_recipe, proxy):
    lines = short_rows(10)
    keys = openai_inference(proxy, top_logprobs=2, concurrency=2, batch_size=1)  # blocks of 4
    one = make_recipe(lines, name="one", inference=keys)
    three = make_recipe(lines, name="three", replicas=3, inference=keys)
    report_one, report_three = evaluate(one), evaluate(three)
    assert comparable(one).equals(comparable(three))
    assert report_one["metrics"] == report_three["metrics"]
    assert report_three["counts"]["replicas"] == 3
    assert sorted(proxy.prompts()) == sorted([f"Say {w}." for w in WORDS[:10]] * 2)


def test_throttled_requests_are_retried_after_retry_after(make_recipe, proxy):
    proxy.throttle, proxy.retry_after = 2, "1"
    keys = openai_inference(proxy, concurrency=1, max_retries=3, top_logprobs=1)
    loaded = make_recipe(short_rows(3), inference=keys)
    prepare(loaded)
    summary = stages.run_inference(loaded, 0)
    assert summary["errors"] == 0 and summary["rows"] == 3
    assert len(proxy.requests) == 3 + 2  # the first row was asked three times
    assert proxy.prompts()[:3] == ["Say apple."] * 3
    gaps = [b - a for a, b in zip(proxy.times[:3], proxy.times[1:3], strict=False)]
    assert all(gap >= 1.0 for gap in gaps), gaps  # Retry-After: 1 was honoured
    table = storage.read_parquet(summary["path"])
    assert pc.all(pc.is_null(table["error"])).as_py()


def test_a_server_that_always_throttles_records_errors_and_fails_above_max_error_rate(
    make_recipe, proxy
):
    proxy.always_throttle = True
    keys = openai_inference(proxy, concurrency=2, max_retries=2, max_error_rate=0.5)
    loaded = make_recipe(short_rows(4), inference=keys)
    prepare(loaded)
    with pytest.raises(stages.InferenceErrorRateError, match=r"4 of 4 rows failed") as failure:
        stages.run_inference(loaded, 0)
    assert "inference.max_error_rate 0.5" in str(failure.value)
    assert "HTTP 429" in str(failure.value)
    assert len(proxy.requests) == 4 * 3  # each row: one try and two retries
    table = storage.read_parquet(EvalLayout.for_recipe(loaded).inference(0, 1))
    assert table.num_rows == 4  # the rows are recorded, with their errors
    assert table["finish_reason"].to_pylist() == ["error"] * 4
    assert all("HTTP 429" in e and "rate limited" in e for e in table["error"].to_pylist())


def test_no_more_requests_in_flight_than_concurrency(make_recipe, llama):
    proxy = RecordingProxy(llama, hold_s=0.3)  # each request stays in flight a while
    try:
        keys = openai_inference(proxy, concurrency=3, max_new_tokens=2, batch_size=3)
        loaded = make_recipe(short_rows(12), inference=keys)
        prepare(loaded)
        summary = stages.run_inference(loaded, 0)
    finally:
        proxy.close()
    assert summary["errors"] == 0 and len(proxy.requests) == 12
    assert proxy.max_in_flight == 3


def test_engine_progress_and_order(proxy):
    engine = create_engine("openai", BUNDLED, endpoint=proxy.url, concurrency=3)
    assert engine.model_id == f"openai:{proxy.url}#{BUNDLED}"
    requests = [GenerationRequest(10 + i, f"Say {w}.") for i, w in enumerate(WORDS[:5])]
    seen: list[tuple[int, int]] = []
    settings = SamplingSettings(max_new_tokens=3)
    out = engine.generate(
        requests, settings, batch_size=2, on_batch=lambda d, t: seen.append((d, t))
    )
    assert [g.row_index for g in out] == [10, 11, 12, 13, 14]
    assert seen[-1] == (5, 5) and all(t == 5 for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
