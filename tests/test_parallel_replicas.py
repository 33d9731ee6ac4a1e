"""Replicas side by side: `nova-eval run` runs each replica partition in a process of its
own, and the per-replica progress (CLI bars, Dagster log lines) counts what this run
generates.

The CLI runs as a user starts it (its own process, a Dagster home on disk) against
bench/instant_server.py's OpenAI-compatible server on 127.0.0.1, which here also knows each
request's shard (every prompt names its row) and can hold requests, wait for several shards
to be in flight together, or refuse one shard.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from bench.instant_server import InstantServer, error_body
from nova_eval_assets import cli, progress, run_lock
from nova_eval_assets.assets import materialize
from nova_eval_assets.assets.in_process import PID_TAG
from nova_eval_assets.layout import EvalLayout
from tests.conftest import PROJECT, ticket_lines

MODEL = "smollm2-135m-instruct"  # the recipe's model name, as the server serves it
ROWS, REPLICAS = 36, 3
SHARD = ROWS // REPLICAS  # batch_size 1: blocks of 4 rows, 3 blocks per replica
BLOCK = 4
ROW = re.compile(r"row (\d+): ")
#: measured durations, which differ from run to run whatever runs them
TIMINGS = ["latency_s", "preprocess_seconds", "postprocess_seconds"]


class ShardServer(InstantServer):
    """The instant server, which reads each chat completion's row from its prompt and so
    its shard (rows 0-11: replica 0, ...), and

    - ``together``: holds the first requests until that many shards have one in flight at
      the same time (at most 120 s);
    - ``hold_from``: never answers a row at this position of its shard or later;
    - ``failing_shard``: answers that shard's rows with 403 once every other shard has a
      request held (so each has checkpointed its first block).
    """

    def __init__(self) -> None:
        super().__init__(model=MODEL)
        self.start()
        self.plain()

    def plain(self) -> None:
        """Answer every request at once; forget what was asked."""
        self.together = 0
        self.hold_from: int | None = None
        self.failing_shard: int | None = None
        self.rows: list[int] = []  # rows asked, in arrival order
        self.received: Counter[int] = Counter()
        self.held: Counter[int] = Counter()
        self.waiting: list[tuple[int, dict, object]] = []
        self.most_shards_in_flight = 0
        self._in_flight: Counter[int] = Counter()

    def respond(self, request, reply, drop) -> None:
        row = int(ROW.search(request["messages"][-1]["content"]).group(1))
        shard = row // SHARD
        self.rows.append(row)
        self.received[shard] += 1
        if self.hold_from is not None and row % SHARD >= self.hold_from:
            self.held[shard] += 1  # never answered
        else:
            self.waiting.append((shard, request, reply))
            self._in_flight[shard] += 1
            together = sum(1 for count in self._in_flight.values() if count)
            self.most_shards_in_flight = max(self.most_shards_in_flight, together)
            if self.together and len(self.waiting) == 1:
                self.loop.call_later(120, self._release_all)
        self._answer_what_may_be()

    def _release_all(self) -> None:
        self.together = 0
        self._answer_what_may_be()

    def _answer_what_may_be(self) -> None:
        if self.together and self.most_shards_in_flight < self.together:
            return
        self.together = 0  # met once: answer everything from now on
        others_held = all(self.held[s] for s in range(REPLICAS) if s != self.failing_shard)
        still = []
        for shard, request, reply in self.waiting:
            if shard == self.failing_shard and not others_held:
                still.append((shard, request, reply))
                continue
            self._in_flight[shard] -= 1
            if shard == self.failing_shard:
                body = error_body(403, "PermissionDeniedError", "shard refused")
                reply("403 Forbidden", body, "")
            else:
                reply(*self.completion(request), "")
        self.waiting = still

    def asked(self) -> list[int]:
        return sorted(self.rows)


@pytest.fixture
def server():
    fake = ShardServer()
    yield fake
    fake.stop()


def numbered_lines() -> list[str]:
    """ROWS support tickets whose prompts name their row."""
    tickets = [json.loads(line) for line in ticket_lines(ROWS)]
    return [
        json.dumps({**ticket, "query": f"row {i}: {ticket['query']}"})
        for i, ticket in enumerate(tickets)
    ]


def shard_recipe(make_recipe, server: ShardServer, name: str = "shards"):
    settings = {
        "engine": "openai",
        "endpoint": server.url,
        "concurrency": 1,
        "batch_size": 1,
        "max_retries": 0,
    }
    return make_recipe(numbered_lines(), name=name, replicas=REPLICAS, inference=settings)


def cli_process(loaded, folder: Path, *flags: str) -> subprocess.Popen:
    """`nova-eval run` of ``loaded`` in its own process group, with its outputs, tables and
    Dagster home under ``folder``."""
    env = {
        **{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
        "NOVA_EVAL_OUTPUT_ROOT": str(folder / "outputs"),
        "NOVA_EVAL_TABLES_ROOT": str(folder / "tables"),
        "DAGSTER_HOME": str(folder / "dagster_home"),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "nova_eval_assets.cli", "run", str(loaded.path), *flags],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[str, str]:
    try:
        return process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def instance_of(folder: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(folder / "dagster_home"))


def replica_runs(folder: Path) -> dict[int, dg.DagsterRun]:
    """The latest Dagster run of each replica partition in ``folder``'s home."""
    instance = instance_of(folder)
    runs = {}
    for replica in range(REPLICAS):
        found = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": str(replica)}))
        if found:
            runs[replica] = found[0]  # newest first
    return runs


def wait_until(condition, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, finish(process)
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def checkpointed_blocks(folder: Path, loaded, replica: int) -> int:
    location = EvalLayout(str(folder / "outputs" / loaded.name)).inference(replica, REPLICAS)
    return len(list(Path(location[: -len(".parquet")] + ".checkpoints").rglob("block-*.arrow")))


def block_lines(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [
        record.user_message
        for record in instance.all_logs(run_id)
        if record.user_message and "rows/s" in record.user_message
    ]


# ---------------------------------------------------------------- side by side


def test_replicas_in_parallel_give_the_sequential_results_and_overlap(
    make_recipe, server, tmp_path
):
    loaded = shard_recipe(make_recipe, server)
    # every replica's first request waits until all three are in flight at once
    server.together = REPLICAS
    parallel = cli_process(loaded, tmp_path / "parallel", "--quiet", "--max-parallel", "3")
    out, err = finish(parallel)
    assert parallel.returncode == 0, err
    assert server.most_shards_in_flight == REPLICAS
    assert server.asked() == list(range(ROWS))

    server.plain()
    sequential = cli_process(loaded, tmp_path / "sequential", "--quiet", "--max-parallel", "1")
    _, err = finish(sequential)
    assert sequential.returncode == 0, err
    assert server.most_shards_in_flight == 1
    assert server.asked() == list(range(ROWS))

    results = {}
    for mode in ("parallel", "sequential"):
        layout = EvalLayout(str(tmp_path / mode / "outputs" / loaded.name))
        examples = pq.read_table(layout.examples)
        assert examples["row_index"].to_pylist() == list(range(ROWS))
        (report,) = Path(layout.results_dir).glob("results_*.json")
        results[mode] = (examples.drop_columns(TIMINGS), json.loads(report.read_text()))
    (examples_p, report_p), (examples_s, report_s) = results["parallel"], results["sequential"]
    assert examples_p.column_names == examples_s.column_names
    for column in examples_p.column_names:
        assert examples_p[column].equals(examples_s[column]), column
    assert report_p["results"] == report_s["results"]
    assert report_p["results"]["all"]["f1"] > 0  # the answers were scored

    # each replica its own process and Dagster run; the parallel runs overlap in time
    intervals = {}
    for mode in ("parallel", "sequential"):
        instance = instance_of(tmp_path / mode)
        runs = replica_runs(tmp_path / mode)
        assert sorted(runs) == list(range(REPLICAS))
        stats = [instance.get_run_stats(run.run_id) for run in runs.values()]
        assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs.values())
        intervals[mode] = [(s.start_time, s.end_time) for s in stats]
        pids = {run.tags[PID_TAG] for run in runs.values()}
        assert len(pids) == (REPLICAS if mode == "parallel" else 1)
    latest_start = max(start for start, _ in intervals["parallel"])
    earliest_end = min(end for _, end in intervals["parallel"])
    assert latest_start < earliest_end
    ordered = sorted(intervals["sequential"])
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(ordered))
    for run_id in re.search(r"Dagster runs: (.*) \(see", out).group(1).split(", "):
        instance_of(tmp_path / "parallel").get_run_by_id(run_id)  # each is recorded

    # the Dagster log of each inference run: one line per block, with rows/s and ETA
    instance = instance_of(tmp_path / "parallel")
    for replica, run in replica_runs(tmp_path / "parallel").items():
        lines = block_lines(instance, run.run_id)
        assert [line.split(",")[0] for line in lines] == [
            f"replica {replica}: {done}/{SHARD} rows" for done in (4, 8, 12)
        ]
        for line in lines:
            assert re.fullmatch(
                rf"replica {replica}: \d+/{SHARD} rows, [\d,]+\.\d rows/s, ETA \d:\d\d:\d\d", line
            ), line
        assert lines[-1].endswith("ETA 0:00:00")


# ---------------------------------------------------------------- failures and signals


def test_a_failing_replica_stops_the_run_and_the_others_keep_their_blocks(
    make_recipe, server, tmp_path
):
    loaded = shard_recipe(make_recipe, server)
    server.hold_from = BLOCK  # replicas 0 and 2 finish their first block, then wait
    server.failing_shard = 1
    process = cli_process(loaded, tmp_path, "--quiet")  # all replicas at once
    _, err = finish(process)
    assert process.returncode == 1, err
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"replica 1: {loaded.key}__inference_outputs failed: "), err
    assert f"HTTP 403 from http://127.0.0.1:{server.port}/v1/chat/completions" in lines[0]
    assert len(lines) == 2 and "traceback: run " in lines[1], err
    assert "Traceback" not in err

    # the others were stopped (SIGTERM) through their cleanup, their first blocks kept
    runs = replica_runs(tmp_path)
    for replica in (0, 2):
        assert runs[replica].status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
        assert not run_lock.process_alive(int(runs[replica].tags[PID_TAG]))
        assert checkpointed_blocks(tmp_path, loaded, replica) == 1
    assert runs[1].status == dg.DagsterRunStatus.FAILURE
    assert checkpointed_blocks(tmp_path, loaded, 1) == 0
    assert not Path(EvalLayout(str(tmp_path / "outputs" / loaded.name)).root, "run.lock").exists()

    # a rerun asks only for the rows not kept, and says how many rows each replica kept;
    # two at a time: replica 2 starts once replica 0 or 1 has ended
    server.plain()
    again = cli_process(loaded, tmp_path, "--quiet", "--max-parallel", "2")
    _, err = finish(again)
    assert again.returncode == 0, err
    kept = {*range(0, BLOCK), *range(2 * SHARD, 2 * SHARD + BLOCK)}
    assert server.asked() == sorted(set(range(ROWS)) - kept)
    instance = instance_of(tmp_path)
    rerun = replica_runs(tmp_path)
    stats = {r: instance.get_run_stats(run.run_id) for r, run in rerun.items()}
    assert stats[2].start_time >= min(stats[0].end_time, stats[1].end_time)
    first = block_lines(instance, rerun[0].run_id)[0]
    assert first.startswith(f"replica 0: 8/{SHARD} rows (4 kept from an earlier run), ")
    assert block_lines(instance, rerun[1].run_id)[0].startswith(f"replica 1: 4/{SHARD} rows, ")


def test_sigterm_or_kill_of_the_cli_stops_every_replica_process(make_recipe, server, tmp_path):
    loaded = shard_recipe(make_recipe, server)
    server.hold_from = BLOCK  # every replica checkpoints its first block, then waits
    process = cli_process(loaded, tmp_path)
    wait_until(lambda: all(server.held[s] for s in range(REPLICAS)), process)
    os.kill(process.pid, signal.SIGTERM)
    _, err = finish(process, timeout=120)
    assert process.returncode == 143, err
    assert err.strip().splitlines()[-1] == (
        f"{loaded.name}: interrupted (SIGTERM); rerun to resume: nova-eval run {loaded.path} "
        "(finished stages and inference blocks are kept)"
    )
    runs = replica_runs(tmp_path)
    for replica, run in runs.items():
        assert not run_lock.process_alive(int(run.tags[PID_TAG]))
        assert run.status != dg.DagsterRunStatus.STARTED  # ended through its cleanup
        assert checkpointed_blocks(tmp_path, loaded, replica) == 1
    root = Path(EvalLayout(str(tmp_path / "outputs" / loaded.name)).root)
    assert not (root / "run.lock").exists()

    # the CLI killed outright: each replica sees its parent gone and stops by itself
    server.plain()
    server.hold_from = 2 * BLOCK  # the rerun resumes the first block, does the second
    again = cli_process(loaded, tmp_path, "--quiet")
    wait_until(lambda: all(server.held[s] for s in range(REPLICAS)), again)
    assert server.asked() == sorted(
        row for s in range(REPLICAS) for row in range(s * SHARD + BLOCK, s * SHARD + 2 * BLOCK + 1)
    )
    children = [int(run.tags[PID_TAG]) for run in replica_runs(tmp_path).values()]
    assert os.getpid() not in children and again.pid not in children
    os.kill(again.pid, signal.SIGKILL)
    again.wait(timeout=30)
    deadline = time.monotonic() + 60
    while any(run_lock.process_alive(pid) for pid in children):
        assert time.monotonic() < deadline, "replica processes outlived their parent"
        time.sleep(0.1)
    for replica, run in replica_runs(tmp_path).items():
        assert run.status != dg.DagsterRunStatus.STARTED
        assert checkpointed_blocks(tmp_path, loaded, replica) == 2


# ---------------------------------------------------------------- the flag


def test_max_parallel_must_be_a_positive_integer(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["run", "recipe.yaml", "--max-parallel", "0"])
    assert stopped.value.code == 2
    assert "argument --max-parallel: '0' is not a positive integer" in capsys.readouterr().err


def test_a_judge_recipe_runs_its_gen_qa_recipes_with_the_same_cap(tmp_path, monkeypatch):
    from tests.test_judge_pipeline import joined_setup

    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    instance = dg.DagsterInstance.ephemeral()
    monkeypatch.setattr(dg.DagsterInstance, "get", staticmethod(lambda: instance))
    folder = tmp_path / "recipes"
    folder.mkdir()
    _, _, judge = joined_setup(folder)
    asked = []

    def upstream_run(loaded, **options):  # the judge's call of its baseline recipe
        asked.append((loaded.name, options["max_parallel"]))
        return materialize.EvaluationRun(report=None, message="stopped here")

    monkeypatch.setattr(materialize, "run_evaluation", upstream_run)
    assert cli.main(["run", str(judge.path), "--quiet", "--max-parallel", "2"]) == 1
    assert asked == [("with_system", 2)]


# ---------------------------------------------------------------- rate and ETA


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_counts_only_rows_generated_in_this_run():
    clock = Clock()
    rate = progress.RowRate(clock)
    rate.update(8, 20, kept=8)  # two kept blocks, at once
    assert rate.rate is None and rate.speed() == "? rows/s, ETA ?"
    clock.now = 130.0  # a model load: not counted
    rate.update(10, 20, kept=8)  # the first generated report starts the clock
    assert rate.rate is None
    clock.now = 132.0
    rate.update(14, 20, kept=8)
    assert rate.rate == 2.0  # 4 rows in 2 s
    assert rate.describe() == "14/20 rows (8 kept from an earlier run), 2.0 rows/s, ETA 0:00:03"
    clock.now = 135.0
    rate.update(20, 20, kept=8)
    assert rate.speed() == "2.0 rows/s, ETA 0:00:00"  # 10 rows in 5 s
    assert progress.format_duration(3725.4) == "1:02:05"


def test_block_marks_one_per_block_and_the_last():
    marks = progress.BlockMarks(4)
    reported = [1, 2, 3, 4, 5, 6, 8, 9, 10]  # the last block has 2 rows
    assert [d for d in reported if marks.finished_block(d, 10)] == [4, 8, 10]
    clock = Clock()
    unknown = progress.BlockMarks(None, fallback_s=5.0, clock=clock)
    clock.now += 1
    assert not unknown.finished_block(1, 10)
    clock.now += 5
    assert unknown.finished_block(2, 10)
    assert unknown.finished_block(10, 10)


def test_one_bar_per_replica_with_its_own_rate():
    clock = Clock()
    out = io.StringIO()
    with progress.ReplicaBars(2, file=out, clock=clock) as bars:
        bars.report(progress.Report(progress.replica_stage(1), 4, 12, kept=4))
        bars.update(0, 2, 10)
        clock.now += 1
        bars.update(0, 6, 10)
        assert (bars.bars[0].n, bars.bars[0].total) == (6, 10)
        assert (bars.bars[1].n, bars.bars[1].total) == (4, 12)
        assert bars.rates[1].rate is None  # kept rows are no rate
    text = out.getvalue()
    assert "replica 0:  60%" in text and "6/10 rows, 4.0 rows/s, ETA 0:00:01" in text
    assert "replica 1:  33%" in text and "4/12 rows, ? rows/s, ETA ?" in text
    quiet = io.StringIO()
    with progress.ReplicaBars(2, enabled=False, file=quiet) as bars:
        bars.update(0, 6, 10)
    assert quiet.getvalue() == ""
