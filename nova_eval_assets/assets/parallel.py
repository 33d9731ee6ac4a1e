"""The replica partitions of one ``nova-eval run`` side by side: a process each.

Each replica is a process of its own with its own engine that materializes its partition
(``inference_outputs``, ``postprocessed_metrics``) as its own Dagster run in the parent's
instance, with the CLI's tags, so ``make ui`` shows it; at most ``parallel`` at once, in
replica order. The processes come from multiprocessing's fork server, which imports
Dagster, the stages and the engine's libraries once (started while the dataset and prompts
run), instead of each replica importing them again (4 s or more on 2 cores); each takes the
parent's working folder and environment as they are when it starts. The parent holds the
run folder's lock for the whole run
(:func:`~nova_eval_assets.assets.in_process.exclusive_run`); the children take none. Each
child sends its progress reports and its outcome over a pipe of its own.

- A replica that fails stops the run with its message; the others get SIGTERM, which
  stops their Dagster runs through their cleanup and keeps their checkpointed blocks, so
  a rerun resumes. Replicas not started yet are not started.
- SIGINT or SIGTERM of the parent (Ctrl-C, ``kill``): every child gets SIGTERM, once the
  parent's wait is interrupted, and :class:`RunInterrupted` is raised. Children are in
  their own process group: a terminal's Ctrl-C reaches the parent only, which stops them.
- The parent killed outright: each child sees within a second that the parent's process is
  gone and stops itself the same way.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

import dagster as dg

from nova_eval_assets import progress, run_lock
from nova_eval_assets.assets.evaluation import build_evaluation_assets
from nova_eval_assets.assets.in_process import InProcessRuns, RunInterrupted, failure_message
from nova_eval_assets.recipe import LoadedRecipe

#: a child given SIGTERM that has not ended this long after is killed
STOP_GRACE_S = 60.0
#: what a replica run materializes
REPLICA_STAGES = ("inference_outputs", "postprocessed_metrics")
#: how often a child checks that its parent lives
PARENT_CHECK_S = 1.0
#: what the fork server imports once for every replica: this module (Dagster, the stages),
#: what opening a sqlite instance loads (its migrations: 1.5 s a process otherwise) and the
#: served engines' client (the preflight checks import it)
PRELOAD = [
    __name__,
    "dagster._core.storage.sqlite_storage",
    "alembic.script",
    "nova_eval_assets.preflight",
]
#: and by inference.engine, what its engine imports (vllm sets up the GPU: not in the server)
ENGINE_PRELOAD = {"hf": ["torch", "transformers"]}

ReportCallback = Callable[[int, int, int, int], None]  # (replica, done, total, kept)


@dataclass(frozen=True)
class ReplicaJob:
    """What a child process needs (pickled to the fork server)."""

    loaded: LoadedRecipe
    replica: int
    instance_ref: Any  # dagster's InstanceRef of the parent's instance
    quiet_logs: bool
    parent_pid: int
    parent_start: str | None  # run_lock.process_start of parent_pid (a reused pid is not it)
    cwd: str
    environ: dict[str, str]


@dataclass
class _Child:
    replica: int
    process: Any  # multiprocessing.Process of the fork-server context
    conn: Connection
    run_ids: list[str] = field(default_factory=list)
    result: tuple[bool, str] | None = None  # (success, failure message)


def run_replicas(
    loaded: LoadedRecipe,
    instance: dg.DagsterInstance,
    parallel: int,
    quiet_logs: bool,
    on_report: ReportCallback,
    run_ids: list[str],
) -> str | None:
    """Every replica partition of ``loaded``, up to ``parallel`` processes at once: None
    when all succeeded, else the first failed replica's message. The children's Dagster run
    ids are appended to ``run_ids``; ``on_report`` gets their progress. Raises
    :class:`RunInterrupted` on SIGINT / SIGTERM, once the children have stopped."""
    if instance.is_ephemeral:
        raise ValueError(
            "replicas in parallel processes need a Dagster instance on disk ($DAGSTER_HOME) "
            "that every process opens; an ephemeral instance runs them in process"
        )
    context = _fork_server(loaded)
    parent = os.getpid()
    pending = list(range(loaded.recipe.run.replicas))
    live: dict[int, _Child] = {}
    failure: str | None = None
    try:
        while pending or live:
            while pending and len(live) < parallel:
                replica = pending.pop(0)
                job = ReplicaJob(
                    loaded,
                    replica,
                    instance.get_ref(),
                    quiet_logs,
                    parent,
                    run_lock.process_start(parent),
                    os.getcwd(),
                    dict(os.environ),
                )
                live[replica] = _start(context, job)
            ended = _receive(live, on_report)
            for child in ended:
                del live[child.replica]
                run_ids.extend(child.run_ids)
            failed = [(c.replica, m) for c in ended if (m := _failure(c)) is not None]
            if failed:
                failure = f"replica {failed[0][0]}: {failed[0][1]}"
                pending.clear()
                _stop(live.values(), signal.SIGTERM)
                run_ids.extend(_wait_for(live, on_report))
                live.clear()
    except KeyboardInterrupt:
        _stop(live.values(), signal.SIGTERM)
        try:
            run_ids.extend(_wait_for(live, on_report))
        except KeyboardInterrupt:  # asked twice: no more waiting
            _stop(live.values(), signal.SIGKILL)
        raise RunInterrupted from None
    return failure


def _fork_server(loaded: LoadedRecipe) -> Any:
    """multiprocessing's fork-server context: children forked from a clean, threadless
    process that imported what ``loaded``'s replicas need (set before the server starts:
    the first recipe of a process decides, the others import the rest themselves)."""
    context = multiprocessing.get_context("forkserver")
    engine = loaded.recipe.inference.engine
    context.set_forkserver_preload([*PRELOAD, *ENGINE_PRELOAD.get(engine, [])])
    return context


def start_fork_server(loaded: LoadedRecipe) -> None:
    """Start the fork server now, so that its imports overlap the run's first stages."""
    _fork_server(loaded)
    multiprocessing.forkserver.ensure_running()


def _start(context: Any, job: ReplicaJob) -> _Child:
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_replica_main, args=(job, sender), name=f"nova-eval replica {job.replica}"
    )
    process.start()
    sender.close()  # the child's end: its closing is how the parent learns the child ended
    return _Child(job.replica, process, receiver)


def _receive(
    live: dict[int, _Child], on_report: ReportCallback, timeout: float = 1.0
) -> list[_Child]:
    """Messages the live children sent within ``timeout``; the children that ended."""
    by_conn = {child.conn: child for child in live.values()}
    ended = []
    for conn in wait(list(by_conn), timeout=timeout):
        child = by_conn[conn]
        try:
            while conn.poll():
                _handle(child, conn.recv(), on_report)
        except (EOFError, OSError):  # the child closed its end: it ended
            child.process.join()
            conn.close()
            ended.append(child)
    return ended


def _handle(child: _Child, message: tuple, on_report: ReportCallback) -> None:
    kind = message[0]
    if kind == "report":
        on_report(child.replica, *message[1:])
    elif kind == "runs":
        child.run_ids = list(message[1])
    elif kind == "result":
        child.result = (message[1], message[2])


def _failure(child: _Child) -> str | None:
    """Why a replica that ended failed (None: it succeeded)."""
    if child.result is not None:
        success, message = child.result
        return None if success else message
    code = child.process.exitcode
    if code == 0:
        return None
    how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    return f"its process ended ({how}) before its run finished; rerun to resume"


def _stop(children: Any, signum: int) -> None:
    for child in children:
        if child.process.is_alive():
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.kill(child.process.pid, signum)


def _wait_for(live: dict[int, _Child], on_report: ReportCallback) -> list[str]:
    """Wait for the stopped children to end (reading their pipes meanwhile, so that none
    blocks on a full one), killing those still there after STOP_GRACE_S; their run ids."""
    deadline = time.monotonic() + STOP_GRACE_S
    left = dict(live)
    run_ids: list[str] = []
    while left:
        if time.monotonic() > deadline:
            _stop(left.values(), signal.SIGKILL)
            deadline = float("inf")
        for ended in _receive(left, on_report):
            del left[ended.replica]
            run_ids.extend(ended.run_ids)
    return run_ids


# ---------------------------------------------------------------- in the child


def _replica_main(job: ReplicaJob, conn: Connection) -> None:
    """A replica's process: its partition as one Dagster run; progress and outcome to the
    parent over ``conn``. Exit code 0, 1 (the run failed) or 130 (interrupted)."""
    os.setpgrp()  # the terminal's Ctrl-C reaches the parent, which stops this process once
    signal.signal(signal.SIGTERM, _raise_interrupt)  # Dagster's own handler while it runs
    _stop_with_parent(job.parent_pid, job.parent_start)
    os.chdir(job.cwd)  # the fork server's are those of the parent when it started
    os.environ.clear()
    os.environ.update(job.environ)
    loaded, replica = job.loaded, job.replica
    runs: InProcessRuns | None = None

    def send(*message: Any) -> None:
        with contextlib.suppress(OSError):  # the parent is gone: the watch stops this process
            conn.send(message)

    def forward(report: progress.Report) -> None:
        if progress.stage_replica(report.stage) == replica:
            send("report", report.done, report.total, report.kept)

    try:
        instance = dg.DagsterInstance.from_ref(job.instance_ref)
        runs = InProcessRuns(instance, loaded.name, job.quiet_logs)
        keys = [dg.AssetKey([loaded.key, stage]) for stage in REPLICA_STAGES]
        with progress.listening_to_reports(forward):
            result = runs.materialize(build_evaluation_assets(loaded), keys, str(replica))
    except KeyboardInterrupt:  # SIGTERM from the parent (RunInterrupted included)
        send("runs", runs.run_ids if runs else [])
        sys.exit(130)
    except Exception as exc:  # the run could not start: said in one line, as a failed step
        send("runs", runs.run_ids if runs else [])
        send("result", False, f"{type(exc).__name__}: {exc}")
        sys.exit(1)
    send("runs", runs.run_ids)
    send("result", result.success, "" if result.success else failure_message(result))
    sys.exit(0 if result.success else 1)


def _raise_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def _stop_with_parent(parent_pid: int, parent_start: str | None) -> None:
    """SIGTERM this process once the parent's is gone (killed outright: no one else would)."""

    def watch() -> None:
        while run_lock.process_alive(parent_pid, parent_start):
            time.sleep(PARENT_CHECK_S)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
