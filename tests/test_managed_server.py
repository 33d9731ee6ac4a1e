"""``transformers serve`` as a real OpenAI-compatible server on 127.0.0.1, over the bundled
model converted to a Hugging Face folder: a gen_qa evaluation against it (an external
endpoint and a managed ``inference.server``), its refusals (it answers without the log
probabilities asked for and rejects ``top_k``), and the managed server's lifecycle: started,
waited for, stopped on success, on a failed start and when the replica gets SIGTERM."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nova_eval_assets import stages, storage
from nova_eval_assets.engines.openai import ServerCapabilityError
from nova_eval_assets.engines.server import ManagedServer, ManagedServerError, free_port
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import load_recipe
from tests.conftest import PROJECT, ticket_lines
from tests.openai_servers import post, running, transformers_folder, transformers_serve_command

pytestmark = pytest.mark.model

SERVER_ENV = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def folder() -> str:
    return str(transformers_folder())


@pytest.fixture(scope="module")
def served(folder: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("transformers") / "server.log"
    with running(transformers_serve_command(), folder, log) as url:
        yield url


def served_recipe(make_recipe, model: str, lines: list[str], **inference):
    """make_recipe's recipe with run.model_name_or_path = the served model."""
    loaded = make_recipe(lines, name=inference.pop("name", "served"), inference=inference)
    data = yaml.safe_load(loaded.path.read_text())
    data["run"]["model_name_or_path"] = model
    loaded.path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_recipe(loaded.path)


def evaluate(loaded) -> dict:
    stages.validate_or_raise(loaded)
    stages.build_prompts(loaded)
    stages.run_inference(loaded, 0)
    stages.score_replica(loaded, 0)
    return stages.write_report(loaded)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def processes_with(text: str) -> list[int]:
    """Live processes whose command line holds `text` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def expected_text(url: str, model: str, row: dict, max_tokens: int) -> str:
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    messages.append({"role": "user", "content": row["query"]})
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
    return post(url, body)["choices"][0]["message"]["content"]


def test_gen_qa_against_transformers_serve_end_to_end(make_recipe, served, folder):
    lines = ticket_lines(3)
    loaded = served_recipe(
        make_recipe, folder, lines, engine="openai", endpoint=served, top_logprobs=0
    )
    report = evaluate(loaded)
    assert report["counts"] == {
        "examples": 3,
        "scored": 3,
        "inference_errors": 0,
        "rejected_rows": 0,
        "replicas": 1,
    }
    rows = storage.read_parquet(EvalLayout.for_recipe(loaded).examples).to_pylist()
    for row, line in zip(rows, lines, strict=True):
        # the same question asked directly: the evaluation recorded the server's answer
        assert row["prediction"] == expected_text(served, folder, json.loads(line), 8)
        assert row["prediction"] and row["token_logprobs"] == []
        assert row["completion_tokens"] > 0 and row["prompt_tokens"] > 0
    inference = stages.read_latest_report(loaded)
    assert set(inference["metrics"]) >= {"em", "f1", "rougeL", "bleu"}


def test_transformers_serve_ignores_logprobs_which_is_a_clear_error(make_recipe, served, folder):
    loaded = served_recipe(
        make_recipe, folder, ticket_lines(2), engine="openai", endpoint=served, top_logprobs=2
    )
    stages.validate_or_raise(loaded)
    stages.build_prompts(loaded)
    with pytest.raises(ServerCapabilityError) as refused:
        stages.run_inference(loaded, 0)
    message = str(refused.value)
    assert served in message and "no log probabilities" in message
    assert "inference.top_logprobs: 0" in message
    assert not storage.exists(EvalLayout.for_recipe(loaded).inference(0, 1))


def test_transformers_serve_rejects_top_k_which_is_a_clear_error(make_recipe, served, folder):
    loaded = served_recipe(
        make_recipe, folder, ticket_lines(1), engine="openai", endpoint=served, top_logprobs=0,
        top_k=5,
    )  # fmt: skip
    stages.validate_or_raise(loaded)
    stages.build_prompts(loaded)
    with pytest.raises(ServerCapabilityError, match="top_k is not supported") as refused:
        stages.run_inference(loaded, 0)
    assert "inference.top_k: -1" in str(refused.value)
    assert "HTTP 422" in str(refused.value)  # what transformers serve answered


def test_managed_transformers_serve_starts_evaluates_and_stops(make_recipe, folder):
    port = free_port()
    command = transformers_serve_command()
    loaded = served_recipe(
        make_recipe,
        folder,
        ticket_lines(2),
        engine="openai",
        top_logprobs=0,
        server={"command": command, "port": port, "env": SERVER_ENV, "startup_timeout_s": 180},
    )
    report = evaluate(loaded)
    assert report["counts"]["inference_errors"] == 0 and report["counts"]["scored"] == 2
    log = Path(
        EvalLayout.for_recipe(loaded).stage("inference", "replicas-1", "replica-0.server.log")
    )
    text = log.read_text()
    assert f"--port {port}" in text.splitlines()[0]  # the command, {model} and {port} filled
    assert "GET /v1/models" in text and "POST /v1/chat/completions" in text
    assert not port_open(port) and not processes_with(f"--port {port}")  # stopped
    lineage = storage.read_json(EvalLayout.for_recipe(loaded).latest_report)["lineage"]
    assert lineage["model_id"].startswith(f"openai-server:{command}#sha256:")
    # the server's environment may hold credentials: the results show its names only
    results = json.loads(Path(report["paths"]["results"]).read_text())
    assert results["config_general"]["inference"]["server"]["env"] == dict.fromkeys(
        SERVER_ENV, "[REDACTED]"
    )


def test_a_server_command_that_exits_at_once_fails_with_its_log(make_recipe, tmp_path):
    script = "import sys; print('CUDA device not found'); sys.exit(3)"
    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(script)} {{model}} {{port}}"
    loaded = make_recipe(
        ticket_lines(1), inference={"engine": "openai", "server": {"command": command}}
    )
    stages.validate_or_raise(loaded)
    stages.build_prompts(loaded)
    with pytest.raises(ManagedServerError, match="exited with code 3") as failed:
        stages.run_inference(loaded, 0)
    assert "CUDA device not found" in str(failed.value)
    assert "smollm2-135m-instruct" in str(failed.value)  # the command as run


def test_a_server_that_never_answers_times_out_and_is_stopped(tmp_path):
    script = "import sys, time; print('loading weights', flush=True); time.sleep(120)"
    marker = f"never-answers-{os.getpid()}"
    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(script)} {marker} {{port}}"
    server = ManagedServer(command, "m", startup_timeout_s=1.5, log_location=str(tmp_path / "l"))
    started = time.monotonic()
    with pytest.raises(ManagedServerError, match=r"startup_timeout_s = 1\.5 s") as failed:
        server.start()
    assert time.monotonic() - started < 30
    assert "loading weights" in str(failed.value)
    assert not processes_with(marker)


def test_sigterm_to_the_replica_stops_its_server(make_recipe, folder):
    port = free_port()
    loaded = served_recipe(
        make_recipe,
        folder,
        ticket_lines(6),
        name="terminated",
        engine="openai",
        top_logprobs=0,
        batch_size=1,
        concurrency=1,
        server={"command": transformers_serve_command(), "port": port, "env": SERVER_ENV},
    )
    stages.validate_or_raise(loaded)
    stages.build_prompts(loaded)
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.resume_worker", str(loaded.path), "0", "2.0"],
        cwd=PROJECT,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:  # the server answers: the replica is evaluating against it
            assert worker.poll() is None, worker.communicate()[0]
            assert time.monotonic() < deadline, "the managed server did not come up"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        assert processes_with(f"--port {port}")
        worker.send_signal(signal.SIGTERM)  # the replica process only, not the server
        output = worker.communicate(timeout=60)[0]
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGTERM, output  # then it died of the signal
    assert "SUMMARY" not in output
    deadline = time.monotonic() + 10
    while processes_with(f"--port {port}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not processes_with(f"--port {port}") and not port_open(port)


def test_the_documented_vllm_recipe_loads_and_fills_its_command():
    from nova_eval_assets.engines.server import server_argv

    loaded = load_recipe(PROJECT / "docs" / "examples" / "vllm_server_gen_qa.yaml")
    inference = loaded.recipe.inference
    assert inference.engine == "openai" and inference.endpoint is None
    model = loaded.recipe.run.model_name_or_path
    argv = server_argv(inference.server.command, model, 8123)
    assert argv[1:3] == ["serve", model] and argv[argv.index("--port") + 1] == "8123"
    assert stages.engine_options(loaded)["concurrency"] == inference.concurrency
