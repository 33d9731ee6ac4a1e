"""``inference.response_format`` through ``inference.engine: openai``: the structured-output
fields of the request body (engines/openai.py), and what a real server does with them:
llama.cpp's server (llama-cpp-python, a dev dependency) over the bundled SmolLM2 GGUF on
127.0.0.1, behind the recording proxy of tests/openai_servers.py.

llama-cpp-python's server refuses ``response_format`` type ``json_schema`` (HTTP 500) and
takes ``{"type": "json_object", "schema": ...}``; the engine sends OpenAI's form first and
switches on that refusal. Its schema-to-grammar converter has two gaps the property test
allows for, explicitly (`enforced`): it ignores ``minimum`` / ``maximum``, and its string
rule lets raw control characters (a newline) into strings, which strict JSON refuses.
Everything else it is asked for (enums, required properties, no others, ``maxLength``,
``maxItems``, the types) is checked on every output.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from nova_eval_assets import stages, storage
from nova_eval_assets.engines.base import GenerationRequest, SamplingSettings
from nova_eval_assets.engines.constraints import ResponseFormat, classification_schema
from nova_eval_assets.engines.openai import (
    HTTPStatusError,
    OpenAIEngine,
    ServerCapabilityError,
    refuses_json_schema_type,
    structured_output_fields,
)
from tests.conftest import ticket_lines
from tests.openai_servers import (
    BUNDLED,
    RecordingProxy,
    llama_cpp_available,
    llama_cpp_command,
    running,
)

needs_llama = pytest.mark.skipif(
    not llama_cpp_available(),
    reason="llama-cpp-python is not installed (pip install -e '.[test]' builds it)",
)

LABELS = ["hardware", "hardware_urgent", "software", "software_urgent", "network",
          "network_urgent", "access", "access_urgent"]  # fmt: skip
ENUM = {
    "type": "object",
    "properties": {"priority": {"enum": ["low", "medium", "high", "critical"]}},
    "required": ["priority"],
    "additionalProperties": False,
}
BOUNDED = {
    "type": "object",
    "properties": {
        "urgency": {"type": "integer", "minimum": 1, "maximum": 5},
        "summary": {"type": "string", "maxLength": 40},
    },
    "required": ["urgency", "summary"],
    "additionalProperties": False,
}
ARRAY = {
    "type": "array",
    "items": {"enum": ["laptop", "printer", "vpn", "email", "password", "other"]},
    "maxItems": 3,
}
SCHEMAS = {
    "enum": ENUM,
    "classification": classification_schema("class", LABELS),
    "bounded": BOUNDED,
    "array": ARRAY,
}
ISSUES = ["the printer on floor 2 is jammed", "the VPN drops every hour",
          "I forgot my password", "my laptop will not boot", "email is very slow",
          "Excel crashes when I open a file", "the Wi-Fi in room B is down",
          "I need access to the finance share"]  # fmt: skip
#: rows x seeds per schema (the classification schema's answers are long: fewer rows)
SAMPLES = {"enum": (6, 2), "classification": (4, 2), "bounded": (8, 2), "array": (6, 2)}
MAX_NEW_TOKENS = {"enum": 48, "classification": 192, "bounded": 64, "array": 48}


def requests(count: int) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            i,
            f"Ticket {i}: {ISSUES[i % len(ISSUES)]}. Answer in JSON.",
            "You triage IT support tickets.",
        )
        for i in range(count)
    ]


def has_free_string(schema: Any) -> bool:
    if isinstance(schema, dict):
        if schema.get("type") == "string" and "enum" not in schema:
            return True
        return any(has_free_string(value) for value in schema.values())
    if isinstance(schema, list):
        return any(has_free_string(value) for value in schema)
    return False


def enforced(schema: dict) -> dict:
    """`schema` less what llama-cpp-python's converter ignores (``minimum`` / ``maximum``)."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in ("minimum", "maximum")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(copy.deepcopy(schema))


# ---------------------------------------------------------------- the request body, no server


def test_request_body_fields_for_each_type():
    engine = OpenAIEngine(BUNDLED, "http://127.0.0.1:9", probe=False)
    request = GenerationRequest(0, "Classify.")
    formats = {
        "json_schema": ResponseFormat.json_schema(ENUM),
        "regex": ResponseFormat.regex(r"[A-D]"),
        "choice": ResponseFormat.choice(["yes", "no"]),
    }
    bodies = {
        name: engine.request_body(request, SamplingSettings(response_format=fmt))
        for name, fmt in formats.items()
    }
    assert bodies["json_schema"]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": ENUM, "strict": True},
    }
    assert "structured_outputs" not in bodies["json_schema"]
    assert bodies["regex"]["structured_outputs"] == {"regex": "[A-D]"}
    assert bodies["choice"]["structured_outputs"] == {"choice": ["yes", "no"]}
    assert all("response_format" not in bodies[n] for n in ("regex", "choice"))
    free = engine.request_body(request, SamplingSettings())
    assert "response_format" not in free and "structured_outputs" not in free
    for body in bodies.values():  # nothing else changes
        assert {k: v for k, v in body.items() if k in free} == free
    # llama-cpp-python's form, once a server refused OpenAI's
    assert structured_output_fields(formats["json_schema"], "json_object") == {
        "response_format": {"type": "json_object", "schema": ENUM}
    }
    assert structured_output_fields(formats["regex"], "json_object") == {
        "structured_outputs": {"regex": "[A-D]"}
    }


def test_a_server_that_refuses_the_field_stops_the_run(monkeypatch):
    """OpenAI refuses unknown fields (structured_outputs), a strict schema it cannot take:
    no row would succeed. An error about the schema that names no json_object (vLLM's
    unsupported features) must not switch to json_object, which vLLM reads as any JSON."""
    engine = OpenAIEngine(BUNDLED, "http://127.0.0.1:9", probe=False, max_retries=0)
    answers = {
        "structured_outputs": "Unrecognized request argument supplied: structured_outputs",
        "response_format": "Invalid schema for response_format 'response': "
        "'additionalProperties' is required to be supplied and to be false",
    }

    async def refuse(url, body, timeout_s=None, give_up=None):
        field = "structured_outputs" if "structured_outputs" in body else "response_format"
        raise HTTPStatusError(url, 400, answers[field])

    monkeypatch.setattr(engine.client, "request_async", refuse)
    for fmt, field in (
        (ResponseFormat.choice(["a", "b"]), "structured_outputs"),
        (ResponseFormat.json_schema(ENUM), "response_format"),
    ):
        with pytest.raises(ServerCapabilityError, match=field):
            engine.generate([GenerationRequest(0, "x")], SamplingSettings(response_format=fmt))
    assert engine.json_schema_form == "json_schema"  # no switch
    llama_detail = (
        "{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg': "
        "\"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}"
    )
    assert refuses_json_schema_type(500, llama_detail)
    assert not refuses_json_schema_type(400, answers["response_format"])
    assert not refuses_json_schema_type(503, "overloaded")


# ---------------------------------------------------------------- llama.cpp's server


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with running(llama_cpp_command(threads=2), BUNDLED, log) as url:
        yield url


@pytest.fixture
def proxy(llama: str) -> Iterator[RecordingProxy]:
    server = RecordingProxy(llama)
    yield server
    server.close()


@needs_llama
@pytest.mark.model
def test_bodies_reach_llama_cpp_and_json_schema_falls_back_once(proxy):
    engine = OpenAIEngine(BUNDLED, proxy.url, concurrency=1)
    rows = requests(3)
    schema_format = ResponseFormat.json_schema(ENUM)
    out = engine.generate(rows, SamplingSettings(max_new_tokens=40, response_format=schema_format))
    sent = [body["response_format"] for body in proxy.requests]
    openai_form = {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": ENUM, "strict": True},
    }
    llama_form = {"type": "json_object", "schema": ENUM}
    # OpenAI's form once (refused with HTTP 500, not retried), then llama-cpp-python's only
    assert sent == [openai_form, llama_form, llama_form, llama_form]
    assert len(proxy.answers) == 3 and engine.json_schema_form == "json_object"
    for generation in out:
        assert generation.finish_reason == "stop" and generation.error is None
        jsonschema.validate(json.loads(generation.text), ENUM)
        assert all(t.constrained_logprob is None and t.forced is None for t in generation.tokens)

    # regex and choice: vLLM's field; llama.cpp ignores it and answers unconstrained text
    for fmt, field in (
        (ResponseFormat.regex(r"(low|high)"), {"regex": "(low|high)"}),
        (ResponseFormat.choice(["low", "high"]), {"choice": ["low", "high"]}),
    ):
        proxy.requests.clear()
        out = engine.generate(rows[:2], SamplingSettings(max_new_tokens=4, response_format=fmt))
        assert [body["structured_outputs"] for body in proxy.requests] == [field, field]
        assert all("response_format" not in body for body in proxy.requests)
        assert all(g.error is None for g in out)


@needs_llama
@pytest.mark.model
@pytest.mark.parametrize("name", list(SCHEMAS))
def test_every_finished_output_is_valid_under_its_schema(proxy, name):
    """Sampled at temperature 0.8 over several seeds: every output that ends ("stop")
    parses and is valid under the schema (less llama-cpp-python's gaps: module docstring)."""
    schema = SCHEMAS[name]
    count, seeds = SAMPLES[name]
    engine = OpenAIEngine(BUNDLED, proxy.url, concurrency=4)
    fmt = ResponseFormat.json_schema(schema)
    outputs = []
    for seed in range(1, seeds + 1):
        settings = SamplingSettings(
            max_new_tokens=MAX_NEW_TOKENS[name], temperature=0.8, seed=seed, response_format=fmt
        )
        outputs += engine.generate(requests(count), settings)
    assert all(g.error is None for g in outputs)
    finished = [g for g in outputs if g.finish_reason == "stop"]
    assert len(finished) >= 0.75 * len(outputs), [g.text for g in outputs]
    # strict JSON where no free string can carry a raw control character
    strict = not has_free_string(schema)
    check = enforced(schema)
    for generation in finished:
        value = json.loads(generation.text, strict=strict)
        jsonschema.validate(value, check)
    assert all(body["response_format"].get("schema", schema) == schema for body in proxy.requests)
    assert len({g.text for g in finished}) > 1  # sampled, not one answer repeated


@needs_llama
@pytest.mark.model
def test_recipe_response_format_reaches_the_server(make_recipe, proxy):
    """inference.response_format in a recipe: the inference stage passes it on, each row
    answers under it, and the examples keep the answers."""
    keys = {
        "engine": "openai",
        "endpoint": proxy.url,
        "max_new_tokens": 40,
        "concurrency": 2,
        "top_logprobs": 0,
        "response_format": {"type": "json_schema", "schema": ENUM},
    }
    loaded = make_recipe(ticket_lines(3), inference=keys)
    stages.validate_or_raise(loaded)
    stages.build_prompts(loaded)
    summary = stages.run_inference(loaded, 0)
    assert summary["errors"] == 0
    assert all(body["response_format"].get("schema", ENUM) == ENUM for body in proxy.requests)
    rows = storage.read_parquet(summary["path"]).to_pylist()
    assert len(rows) == 3
    for row in rows:
        assert row["finish_reason"] == "stop"
        jsonschema.validate(json.loads(row["prediction"]), ENUM)
        assert all(t["constrained_logprob"] is None for t in row["token_logprobs"])
