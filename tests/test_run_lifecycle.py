"""A run's life: the lock on its run folder (local and s3://), a failure told in one line,
SIGTERM and Ctrl-C, and a run that kill -9 left STARTED in Dagster.

The CLI runs against a small OpenAI-compatible server on 127.0.0.1 (no model): it answers
after a delay, or with an HTTP error status.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from nova_eval_assets import cli, run_lock
from nova_eval_assets.assets.in_process import (
    HOST_TAG,
    PID_START_TAG,
    PID_TAG,
    fail_dead_runs,
)
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.report.coverage import coverage_markdown, coverage_section
from nova_eval_assets.run_lock import LockOwner, RunLock, RunLockHeld
from tests.conftest import PROJECT, ticket_lines
from tests.test_s3 import BUCKET, s3  # noqa: F401  (the moto server fixture)

ROWS = 12  # with batch_size 1 the openai engine's blocks are 4 rows: 3 blocks
HOST = socket.gethostname()


class FakeOpenAI:
    """GET /v1/models answers; POST /v1/chat/completions answers "ok" after ``delay_s``,
    or ``status`` with an error body when that is not 200. Records each prompt."""

    def __init__(self) -> None:
        self.delay_s = 0.0
        self.status = 200
        self.prompts: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": []})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.prompts.append(body["messages"][-1]["content"])
                if server.status != 200:
                    self._send(server.status, {"error": {"message": "upstream exploded"}})
                    return
                time.sleep(server.delay_s)
                answer = {"role": "assistant", "content": "ok"}
                usage = {"prompt_tokens": 5, "completion_tokens": 1}
                choice = {"index": 0, "message": answer, "finish_reason": "stop"}
                self._send(200, {"choices": [choice], "usage": usage})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


def served_recipe(make_recipe, server: FakeOpenAI, name: str = "served", **inference):
    settings = {
        "engine": "openai",
        "endpoint": server.url,
        "top_logprobs": 0,
        "concurrency": 1,
        "batch_size": 1,
        "max_retries": 0,
        **inference,
    }
    return make_recipe(ticket_lines(ROWS), name=name, inference=settings)


def cli_process(*args: str) -> subprocess.Popen:
    """`nova-eval ...` in its own process group, with this test's environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "nova_eval_assets.cli", *args],
        cwd=PROJECT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout: float = 240) -> tuple[str, str]:
    try:
        return process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def wait_for_first_block(loaded, process: subprocess.Popen) -> Path:
    """The first inference block's checkpoint, once the CLI process has written it."""
    output = EvalLayout.for_recipe(loaded).inference(0, 1)
    checkpoints = Path(output[: -len(".parquet")] + ".checkpoints")
    deadline = time.monotonic() + 180
    while not list(checkpoints.rglob("block-*.arrow")):
        assert process.poll() is None, finish(process)
        assert time.monotonic() < deadline, "no checkpoint within 180 s"
        time.sleep(0.05)
    return checkpoints


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# ---------------------------------------------------------------- the lock, local


HOLDER = """
import sys, time
from nova_eval_assets.run_lock import RunLock
with RunLock(sys.argv[1], command="holder --limit 8").acquire():
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def holder_process(root: str, hold_s: float) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, root, str(hold_s)],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_run_stops_at_once_naming_the_holder(
    make_recipe, server, dagster_home, capsys, monkeypatch
):
    # an ephemeral instance: a real one captures compute logs, which fights capsys
    instance = dg.DagsterInstance.ephemeral()
    monkeypatch.setattr(dg.DagsterInstance, "get", staticmethod(lambda: instance))
    loaded = served_recipe(make_recipe, server)
    root = EvalLayout.for_recipe(loaded).root
    holder = holder_process(root, hold_s=60)
    try:
        code = cli.main(["run", str(loaded.path), "--quiet"])
    finally:
        holder.kill()
        holder.wait()
    assert code == 2
    message = capsys.readouterr().err
    lock = f"{root}/run.lock"
    assert f"another run holds {lock}: pid {holder.pid} on host {HOST}, since " in message
    assert "(command: holder --limit 8)" in message
    assert "--wait" in message and "run.output_s3_path" in message
    assert len(message.strip().splitlines()) == 1
    assert server.prompts == [] and not Path(root, "stages").exists()  # nothing ran


def test_wait_runs_once_the_holder_is_gone(make_recipe, server, dagster_home, capsys, monkeypatch):
    # an ephemeral instance: a real one captures compute logs, which fights capsys
    instance = dg.DagsterInstance.ephemeral()
    monkeypatch.setattr(dg.DagsterInstance, "get", staticmethod(lambda: instance))
    loaded = served_recipe(make_recipe, server, name="waiter")
    root = EvalLayout.for_recipe(loaded).root
    holder = holder_process(root, hold_s=3)
    try:
        code = cli.main(["run", str(loaded.path), "--quiet", "--wait"])
    finally:
        holder.wait(timeout=60)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"waiting for the run that holds the run folder: pid {holder.pid}" in captured.err
    assert len(server.prompts) == ROWS
    assert not Path(root, "run.lock").exists()  # released on success


def test_the_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    root = str(tmp_path / "run")
    lock_file = Path(root, "run.lock")
    gone = LockOwner(HOST, dead_pid(), "2026-01-01T00:00:00+00:00", "nova-eval run x", "t0")
    Path(root).mkdir()
    lock_file.write_bytes(gone.to_json())

    lock = RunLock(root).acquire()
    assert json.loads(lock_file.read_text())["token"] == lock.owner.token
    with pytest.raises(RunLockHeld, match=f"pid {os.getpid()} on host {HOST}"):
        RunLock(root).acquire()  # this process holds it now, and lives
    lock.release()
    assert not lock_file.exists()

    # the pid of a live process that started after the lock was written: reused, stale
    reused = LockOwner(HOST, os.getpid(), "2026-01-01T00:00:00+00:00", "x", "t1", "1")
    lock_file.write_bytes(reused.to_json())
    with RunLock(root).acquire() as lock:
        assert json.loads(lock_file.read_text())["token"] == lock.owner.token


def test_a_live_holder_on_another_host_is_never_taken_over(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    elsewhere = LockOwner("build-7", dead_pid(), "2026-01-01T00:00:00+00:00", "x", "t0")
    (root / "run.lock").write_bytes(elsewhere.to_json())
    with pytest.raises(RunLockHeld) as held:
        RunLock(str(root)).acquire()
    assert "on host build-7" in str(held.value)
    assert f"delete {root / 'run.lock'}" in str(held.value)  # its pid cannot be checked here


def test_runs_racing_for_a_stale_lock_have_one_winner(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    gone = LockOwner(HOST, dead_pid(), "2026-01-01T00:00:00+00:00", "x", "t0")
    (root / "run.lock").write_bytes(gone.to_json())
    locks = [RunLock(str(root)) for _ in range(8)]
    start = threading.Barrier(len(locks))
    outcomes: list[str] = []

    def contend(lock: RunLock) -> None:
        start.wait()
        try:
            lock.acquire()
            outcomes.append(lock.owner.token)
        except RunLockHeld:
            outcomes.append("held")

    threads = [threading.Thread(target=contend, args=(lock,)) for lock in locks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if o != "held"]
    assert len(outcomes) == 8 and len(winners) == 1
    assert json.loads((root / "run.lock").read_text())["token"] == winners[0]


# ---------------------------------------------------------------- the lock, s3://


def test_s3_lock_is_conditional_refreshed_and_taken_over_once_expired(s3):  # noqa: F811
    root = f"s3://{BUCKET}/evals/tiny"
    key = "evals/tiny/run.lock"
    first = RunLock(root, ttl_s=0.9).acquire()
    try:
        written = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        assert (written["host"], written["pid"]) == (HOST, os.getpid())
        with pytest.raises(RunLockHeld, match=f"pid {os.getpid()} on host {HOST}"):
            RunLock(root).acquire()
        time.sleep(2.0)  # over twice the ttl: only the refreshes keep it
        refreshed = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        assert refreshed["token"] == written["token"]
        assert refreshed["expires_at"] > written["expires_at"] + 1.0
        with pytest.raises(RunLockHeld):
            RunLock(root).acquire()
    finally:
        first.release()
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="evals/")

    # a holder on another host whose lock expired: runs racing for it, one winner
    expired = LockOwner("build-7", 4242, "2026-01-01T00:00:00+00:00", "x", "t0", None, 1.0)
    s3.put_object(Bucket=BUCKET, Key=key, Body=expired.to_json())
    locks = [RunLock(root) for _ in range(6)]
    start = threading.Barrier(len(locks))
    winners: list[RunLock] = []

    def contend(lock: RunLock) -> None:
        start.wait()
        with contextlib.suppress(RunLockHeld):
            winners.append(lock.acquire())

    threads = [threading.Thread(target=contend, args=(lock,)) for lock in locks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    stored = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert stored["token"] == winners[0].owner.token
    winners[0].release()

    live = LockOwner("build-7", 4242, "2026-01-01T00:00:00+00:00", "x", "t1", None, 4e9)
    s3.put_object(Bucket=BUCKET, Key=key, Body=live.to_json())
    with pytest.raises(RunLockHeld, match=r"pid 4242 on host build-7.*its lock expires at 2096"):
        RunLock(root).acquire()


# ---------------------------------------------------------------- failures in one line


def test_a_failed_run_says_why_first_with_its_numbers_and_keeps_the_trace_in_dagster(
    make_recipe, server, dagster_home
):
    server.status = 500
    loaded = served_recipe(make_recipe, server, name="broken", max_error_rate=0.5)
    process = cli_process("run", str(loaded.path), "--quiet")
    _, err = finish(process)
    assert process.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) < 10, err
    assert lines[0].startswith("broken__inference_outputs failed: "), err
    assert f"HTTP 500 from http://127.0.0.1:{server.port}/v1/chat/completions" in lines[0]
    assert "Traceback" not in err and "Stack Trace" not in err

    run_id = lines[1].split("traceback: run ", 1)[1].split()[0]
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    failures = [
        record.dagster_event.step_failure_data.error
        for record in instance.all_logs(run_id)
        if record.dagster_event and record.dagster_event.is_step_failure
    ]
    assert failures and "run_inference" in "".join(failures[0].cause.stack)


def test_the_coverage_summary_keeps_the_first_errors_numbers():
    import pyarrow as pa

    errors = [
        "HTTPStatusError: HTTP 500 from http://127.0.0.1:18555/v1/chat/completions: boom",
        None,
        "HTTPStatusError: HTTP 500 from http://127.0.0.1:18556/v1/chat/completions: boom",
    ]
    table = pa.table(
        {
            "row_index": [0, 1, 2],
            "line": [1, 2, 3],
            "scored": [False, True, False],
            "error": errors,
        }
    )
    coverage = coverage_section(table)
    (reason,) = coverage["failure_reasons"]  # one group whatever the port
    assert reason["rows"] == 2
    text = coverage_markdown(coverage)
    assert "The metrics cover 1 of 3 rows: 2 rows are not scored." in text
    assert f"- 2 x inference, the first: {errors[0]}\n" in text


# ---------------------------------------------------------------- SIGTERM, Ctrl-C, kill -9


@pytest.mark.parametrize(
    ("signum", "code", "rerun"), [(signal.SIGTERM, 143, True), (signal.SIGINT, 130, False)]
)
def test_an_interrupted_run_says_so_in_one_line_and_a_rerun_resumes(
    make_recipe, server, dagster_home, signum, code, rerun
):
    server.delay_s = 0.3
    loaded = served_recipe(make_recipe, server, name="stopped")
    process = cli_process("run", str(loaded.path), "--quiet")
    checkpoints = wait_for_first_block(loaded, process)
    os.kill(process.pid, signum)
    _, err = finish(process, timeout=60)
    assert process.returncode == code, err
    assert err.strip().splitlines() == [
        f"stopped: interrupted ({signal.Signals(signum).name}); rerun to resume: nova-eval "
        f"run {loaded.path} (finished stages and inference blocks are kept)"
    ]
    root = Path(EvalLayout.for_recipe(loaded).root)
    assert not (root / "run.lock").exists()  # released on the way out
    kept = len(list(checkpoints.rglob("block-*.arrow")))
    assert 1 <= kept < 3
    if not rerun:  # the resume is the same after either signal: checked once
        return

    server.delay_s, server.prompts = 0.0, []
    again = cli_process("run", str(loaded.path), "--quiet")
    _, err = finish(again)
    assert again.returncode == 0, err
    assert len(server.prompts) == ROWS - 4 * kept  # the kept blocks are not asked again


def test_the_next_run_marks_a_killed_runs_dagster_run_failed(make_recipe, server, dagster_home):
    server.delay_s = 0.3
    loaded = served_recipe(make_recipe, server, name="killed")
    process = cli_process("run", str(loaded.path), "--quiet")
    wait_for_first_block(loaded, process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    (stuck,) = instance.get_runs(
        filters=dg.RunsFilter(tags={"recipe": "killed"}, statuses=[dg.DagsterRunStatus.STARTED])
    )
    lock_file = Path(EvalLayout.for_recipe(loaded).root, "run.lock")
    assert json.loads(lock_file.read_text())["pid"] == process.pid  # left behind

    server.delay_s = 0.0
    rerun = cli_process("run", str(loaded.path), "--quiet")
    _, err = finish(rerun)
    assert rerun.returncode == 0, err
    after = instance.get_run_by_id(stuck.run_id)
    assert after.status == dg.DagsterRunStatus.FAILURE
    (failure,) = [
        r
        for r in instance.all_logs(stuck.run_id)
        if r.dagster_event and r.dagster_event.is_run_failure
    ]
    assert failure.dagster_event.message == (
        f"process {process.pid} on host {HOST} died; marked failed by the next run of this "
        "recipe (killed)"
    )
    assert not lock_file.exists()


def test_only_this_recipes_runs_of_dead_processes_are_marked_failed():
    instance = dg.DagsterInstance.ephemeral()
    gone = str(dead_pid())

    def started(recipe: str, pid: str, host: str = HOST, start: str | None = None) -> str:
        tags = {"recipe": recipe, "launched_by": "nova-eval-cli", HOST_TAG: host, PID_TAG: pid}
        if start is not None:
            tags[PID_START_TAG] = start
        run = instance.create_run_for_job(
            dg.GraphDefinition(name="g").to_job(), tags=tags, status=dg.DagsterRunStatus.STARTED
        )
        return run.run_id

    dead = started("mine", gone)
    reused = started("mine", str(os.getpid()), start="1")  # this pid, started at another time
    alive = started("mine", str(os.getpid()), start=run_lock.process_start(os.getpid()))
    other_recipe = started("theirs", gone)
    other_host = started("mine", gone, host="build-7")

    assert sorted(fail_dead_runs(instance, "mine")) == sorted([dead, reused])
    status = {
        run_id: instance.get_run_by_id(run_id).status
        for run_id in (alive, other_recipe, other_host)
    }
    assert set(status.values()) == {dg.DagsterRunStatus.STARTED}
    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
