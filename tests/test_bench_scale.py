"""bench/scale.py's own measuring: the figures in BENCHMARKS.md rest on these."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import scale

MIB = 1 << 20


def test_dataset_repeats_the_tickets_with_every_line_distinct(tmp_path: Path) -> None:
    tickets = scale.TICKETS.read_text(encoding="utf-8").splitlines()
    rows = 2 * len(tickets) + 3
    path = tmp_path / "tickets.jsonl"
    scale.write_dataset(path, rows)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == rows
    assert len(set(lines)) == rows
    assert lines[: len(tickets)] == tickets  # the first copy is the file itself
    copy = json.loads(lines[len(tickets) + 1])
    original = json.loads(tickets[1])
    assert copy["query"] == "[copy 1] " + original["query"]
    assert {k: v for k, v in copy.items() if k != "query"} == {
        k: v for k, v in original.items() if k != "query"
    }


def test_time_in_steps_counts_overlapping_replica_steps_once() -> None:
    steps = [
        {"start": 0.0, "end": 2.0},
        {"start": 5.0, "end": 9.0},  # two replicas side by side, 5..10
        {"start": 6.0, "end": 10.0},
        {"start": 7.0, "end": 8.0},  # inside both
        {"start": 12.0, "end": 13.5},
    ]
    assert scale.covered_s(steps) == 2.0 + 5.0 + 1.5


def test_generation_stage_spans_every_replica() -> None:
    steps = [
        {"step": "r__preprocessed_prompts", "start": 0.0, "end": 1.0},
        {"step": "r__inference_outputs", "start": 1.5, "end": 4.0},
        {"step": "r__inference_outputs", "start": 2.0, "end": 6.5},
        {"step": "r__postprocessed_metrics", "start": 6.5, "end": 9.0},
    ]
    assert scale.generation_span(steps) == 5.0


def _spawning(code: str) -> str:
    """Python code that runs `code` in a child interpreter and waits for it."""
    return f"import subprocess, sys; subprocess.run([sys.executable, '-c', {code!r}], check=True)"


def test_tree_memory_sums_a_grandchild_it_did_not_start() -> None:
    # the measured process starts a child, which starts a grandchild holding 300 MiB of
    # written pages for 2 s
    hold = "import time; b = b'x' * (300 << 20); time.sleep(2)"
    process = subprocess.Popen([sys.executable, "-c", _spawning(_spawning(hold))])
    with scale.TreeMemory(process.pid) as memory:
        assert process.wait(30) == 0
    assert memory.peak_single >= 300 * MIB
    # three interpreters: the grandchild's pages and two more interpreters' own
    assert memory.peak_sum >= memory.peak_single + 10 * MIB
    assert memory.peak_sum < 2 * 300 * MIB  # the big pages counted once


def test_a_run_with_failed_rows_is_not_measured(tmp_path: Path) -> None:
    report = tmp_path / "latest_report.json"
    whole = {"examples": 500, "scored": 500, "inference_errors": 0, "replicas": 1}
    report.write_text(json.dumps({"counts": whole}))
    scale.check_run(str(report), 500)
    for counts in (
        {**whole, "examples": 499},
        {**whole, "scored": 498, "inference_errors": 2},
    ):
        report.write_text(json.dumps({"counts": counts}))
        with pytest.raises(RuntimeError, match="not whole"):
            scale.check_run(str(report), 500)
