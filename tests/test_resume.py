"""With the real bundled model: an inference process killed with SIGKILL resumes after its
last checkpointed block and ends with the same output as an uninterrupted run; rows whose
prompt does not fit the model's context are recorded as errors and the evaluation completes,
its aggregate saying how many rows it covers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pyarrow.compute as pc
import pytest

from nova_eval_assets import resume, stages, storage
from nova_eval_assets.assets.materialize import run_evaluation
from nova_eval_assets.layout import EvalLayout
from tests.conftest import PROJECT

pytestmark = pytest.mark.model

TINY = {"batch_size": 1, "max_new_tokens": 6, "top_logprobs": 2}  # blocks of 4 rows
WORDS = ["apple", "river", "stone", "cloud", "green", "seven", "paper", "light", "north", "glass",
         "tiger", "bread", "chair", "ocean", "music", "honey"]  # fmt: skip


def short_rows(count: int) -> list[str]:
    """Short prompts: a CPU prefill of a few dozen tokens keeps the model runs quick."""
    return [
        json.dumps({"query": f"Say {w}.", "response": w, "metadata": json.dumps({"i": i})})
        for i, w in enumerate(WORDS[:count])
    ]


def worker(recipe: Path, pause: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.resume_worker", str(recipe), "0", str(pause)],
        cwd=PROJECT,
        # one thread: on a shared 2-core machine that is several times faster than two
        env={**os.environ, "PYTHONPATH": str(PROJECT), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def comparable(path: str):
    return storage.read_parquet(path).drop_columns(["latency_s"]).replace_schema_metadata(None)


def test_sigkill_mid_inference_then_rerun_resumes_and_matches_an_uninterrupted_run(make_recipe):
    lines = short_rows(12)  # 3 blocks of 4 rows
    killed = make_recipe(lines, name="killed", inference=TINY)
    straight = make_recipe(lines, name="straight", inference=TINY)
    for loaded in (killed, straight):
        stages.validate_or_raise(loaded)
        stages.build_prompts(loaded)
    output = EvalLayout.for_recipe(killed).inference(0, 1)
    checkpoints = Path(resume.checkpoint_root(output))

    process = worker(killed.path, pause=0.8)  # a block takes >= 3.2 s: time to kill it
    try:
        deadline = time.monotonic() + 240
        while not list(checkpoints.rglob("block-*.arrow")):
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)  # mid-run: the first block is checkpointed
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    finished = sorted(p.name for p in checkpoints.rglob("block-*.arrow"))
    assert 1 <= len(finished) < 3, finished
    assert not Path(output).exists()

    # the rerun, and beside it an uninterrupted run of the same rows
    rerun, straight_run = worker(killed.path, pause=0.0), worker(straight.path, pause=0.0)
    try:
        log, _ = rerun.communicate(timeout=300)
        straight_log, _ = straight_run.communicate(timeout=300)
    finally:
        for process in (rerun, straight_run):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
    assert rerun.returncode == 0, log
    assert straight_run.returncode == 0, straight_log
    summary = json.loads(log.split("SUMMARY ", 1)[1])
    assert summary["resumed_blocks"] == len(finished) and summary["blocks"] == 3
    assert summary["rows"] == 12 and not checkpoints.exists()  # checkpoints removed
    assert json.loads(straight_log.split("SUMMARY ", 1)[1])["resumed_blocks"] == 0

    expected = comparable(EvalLayout.for_recipe(straight).inference(0, 1))
    assert comparable(output).equals(expected)
    assert pc.sum(expected["completion_tokens"]).as_py() > 12  # it did generate


def test_rows_longer_than_the_context_are_errors_and_the_aggregate_says_what_it_covers(
    make_recipe,
):
    too_long = json.dumps(
        {"query": "Please read this ticket: " + "printer " * 9000, "response": "x"}
    )
    lines = [*short_rows(3), too_long]
    loaded = make_recipe(lines, name="reliable", replicas=2, inference={"max_new_tokens": 4})
    outcome = run_evaluation(loaded, instance=dg.DagsterInstance.ephemeral(), show_progress=False)
    assert outcome.report is not None, outcome.message  # the evaluation completes
    report = outcome.report
    assert report["counts"]["inference_errors"] == 1
    coverage = report["coverage"]
    assert (coverage["rows"], coverage["scored_rows"], coverage["unscored_rows"]) == (4, 3, 1)
    assert coverage["failed_rows_by_stage"] == {"inference": 1}
    (reason,) = coverage["failure_reasons"]
    assert reason["stage"] == "inference" and reason["rows"] == 1
    assert "fills the model's context of N tokens" in reason["reason"]
    (failure,) = coverage["first_failures"]
    assert (failure["row_index"], failure["line"]) == (3, 4)
    assert "The metrics cover 3 of 4 rows" in report["summary_markdown"]

    results = storage.read_json(report["paths"]["results"])
    assert results["config_general"]["coverage"]["scored_rows"] == 3
    rows = storage.read_parquet(report["paths"]["examples"]).to_pylist()
    failed = rows[3]
    assert failed["finish_reason"] == "error" and not failed["scored"]
    assert failed["error"].startswith("prompt is ") and "tokens" in failed["error"]
    assert all(r["scored"] and r["finish_reason"] != "error" for r in rows[:3])
