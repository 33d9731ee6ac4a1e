"""Engines on CPU share the machine's cores among the live engine processes
(engines/cpu_threads.py), with real processes registering in a real folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nova_eval_assets.engines import cpu_threads
from nova_eval_assets.engines.cpu_threads import THREADS_ENV, CoreShare
from nova_eval_assets.engines.models import cache_root

PROJECT = Path(__file__).resolve().parents[1]

# A process that registers in a folder, says so, and holds its registration until stdin closes.
HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from nova_eval_assets.engines.cpu_threads import process_share
    share = process_share(Path(sys.argv[1]))
    share.acquire()
    print("registered", flush=True)
    sys.stdin.read()
    """
)


def start_holder(folder: Path) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
    )
    assert holder.stdout.readline().strip() == "registered"
    return holder


def test_cores_are_shared_among_live_processes_and_a_dead_ones_entry_is_dropped(tmp_path):
    share = CoreShare(tmp_path, cores=8)
    share.acquire()
    assert share.threads() == 8  # alone

    first, second = start_holder(tmp_path), start_holder(tmp_path)
    assert share.live_processes() == 3
    assert share.threads() == 2  # 8 cores // 3 processes

    second.kill()  # dies without cleaning up: its entry stays until someone looks
    second.wait()
    assert (tmp_path / f"{socket.gethostname()}-{second.pid}").exists()
    assert share.threads() == 4
    assert not (tmp_path / f"{socket.gethostname()}-{second.pid}").exists()

    first.stdin.close()  # exits normally: atexit removes its entry
    first.wait(timeout=30)
    assert not (tmp_path / f"{socket.gethostname()}-{first.pid}").exists()
    assert share.threads() == 8

    share.release()
    assert not share.entry.exists()


def test_at_least_one_thread_and_other_hosts_do_not_count(tmp_path):
    share = CoreShare(tmp_path, cores=2)
    share.acquire()
    for pid in (1, 2, 3):  # another machine's processes on a shared folder
        (tmp_path / f"some-other-host-{pid}").touch()
    (tmp_path / "notes.txt").touch()
    assert share.live_processes() == 1
    holders = [start_holder(tmp_path) for _ in range(2)]
    try:
        assert share.threads() == 1  # 2 cores // 3 processes, but never 0
    finally:
        for holder in holders:
            holder.stdin.close()
            holder.wait(timeout=30)
    share.release()


def test_engines_of_one_process_register_once(tmp_path):
    share = cpu_threads.process_share(tmp_path)
    assert cpu_threads.process_share(tmp_path) is share
    share.acquire()
    share.acquire()
    share.release()
    assert share.entry.exists()  # one engine still uses it
    share.release()
    assert not share.entry.exists()


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_thread_count_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(THREADS_ENV, value)
    with pytest.raises(ValueError, match=THREADS_ENV):
        cpu_threads.fixed_threads()


def test_thread_count_from_the_environment(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert cpu_threads.fixed_threads() is None
    monkeypatch.setenv(THREADS_ENV, " 3 ")
    assert cpu_threads.fixed_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert cpu_threads.user_chose_threads()
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert not cpu_threads.user_chose_threads()


def registered_elsewhere() -> int:
    """Live engine processes of this host in the real registry, other than the children."""
    folder = cache_root() / ".cpu-engines"
    prefix = f"{socket.gethostname()}-"
    pids = [int(entry.name[len(prefix) :]) for entry in folder.glob(f"{prefix}*")]
    return sum(1 for pid in pids if pid == os.getpid() or Path(f"/proc/{pid}").exists())


@pytest.mark.model
def test_two_engine_processes_take_half_the_cores_each(tmp_path):
    """Two real engine processes (the bundled model) on this machine: while both are
    loaded, each runs on cores // 2 threads (at least 1); alone, on every core."""
    script = textwrap.dedent(
        """
        import sys, torch
        from nova_eval_assets.engines import create_engine, GenerationRequest, SamplingSettings
        engine = create_engine("hf", "smollm2-135m-instruct", device="cpu")
        print("loaded", flush=True)
        sys.stdin.readline()  # wait until the other engine is loaded too
        engine.generate([GenerationRequest(0, "Hi")], SamplingSettings(max_new_tokens=2))
        print(torch.get_num_threads(), flush=True)
        sys.stdin.read()
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", THREADS_ENV)}
    env["PYTHONPATH"] = str(PROJECT)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        for process in processes:
            assert process.stdout.readline().strip() == "loaded"
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        threads = [int(process.stdout.readline()) for process in processes]
    finally:
        for process in processes:
            process.stdin.close()
            process.wait(timeout=60)
    cores = cpu_threads.available_cores()
    others = registered_elsewhere()  # this test process, when it holds an engine itself
    assert threads == [max(1, cores // (2 + others))] * 2

    # alone now (both exited), a new engine takes every core
    alone = subprocess.run(
        [sys.executable, "-c", script],
        input="go\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert alone.stdout.split() == ["loaded", str(max(1, cores // (1 + others)))]
