"""Runs the CLI launches in process (``dg.materialize``): their console log level, their
tags, their ids, the message of a failed run, an interrupted run, and the lock one CLI run
holds on its run folder (:mod:`nova_eval_assets.run_lock`)."""

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from nova_eval_assets import run_lock
from nova_eval_assets.assets.automation import CLI_TAGS

#: the process that runs a CLI run in process, to tell later whether it died
HOST_TAG, PID_TAG, PID_START_TAG = "nova_eval/host", "nova_eval/pid", "nova_eval/pid_start"
#: run statuses of a run that has not ended
UNFINISHED = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
_JOB_NAME = "__ephemeral_asset_job__"  # dg.materialize's


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a run; the caller says so in one line and exits."""


class _NoErrors(logging.Filter):
    """Drops errors: in a CLI run they all tell of a failed step (its stack trace, the steps
    it kept from running, the failed run), which the CLI reports in one line
    (:func:`failure_message`); the whole record stays in the run's event log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


@dg.logger(
    config_schema={
        "log_level": dg.Field(str, is_required=False, default_value="INFO"),
        "name": dg.Field(str, is_required=False, default_value="dagster"),
    },
    description="Dagster's colored console logger without errors (the CLI reports them).",
)
def cli_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    console = dg.colored_console_logger.logger_fn(init_context)
    console.addFilter(_NoErrors())
    return console


def quiet_console(level: str) -> dict[str, Any]:
    """The progress bar tells the story on the terminal; the full event log is in the
    instance: the console logger shows ``level`` and up."""
    return {"loggers": {"console": {"config": {"log_level": level}}}}


def cli_tags(recipe_name: str) -> dict[str, str]:
    pid = os.getpid()
    process = {HOST_TAG: socket.gethostname(), PID_TAG: str(pid)}
    started = run_lock.process_start(pid)
    if started is not None:
        process[PID_START_TAG] = started
    return {"recipe": recipe_name, **CLI_TAGS, **process}


def interrupted(result: dg.ExecuteInProcessResult) -> bool:
    """Whether a signal (SIGINT, or SIGTERM, which Dagster maps to it) stopped the run."""
    for event in result.all_events:
        error = event.step_failure_data.error if event.is_step_failure else None
        while error is not None:
            if error.cls_name == "DagsterExecutionInterruptedError":
                return True
            error = error.cause
    return False


def fail_dead_runs(instance: dg.DagsterInstance, recipe_name: str) -> list[str]:
    """Mark failed the unfinished CLI runs of ``recipe_name`` whose process on this host is
    gone (a kill -9 leaves them STARTED forever); their ids. Runs of other hosts, and runs
    the daemon launched (no process tags), are left alone."""
    host = socket.gethostname()
    runs = instance.get_runs(
        filters=dg.RunsFilter(tags={"recipe": recipe_name, **CLI_TAGS}, statuses=UNFINISHED)
    )
    marked = []
    for run in runs:
        pid = run.tags.get(PID_TAG)
        if run.tags.get(HOST_TAG) != host or not (pid or "").isdigit():
            continue
        if run_lock.process_alive(int(pid), run.tags.get(PID_START_TAG)):
            continue
        instance.report_run_failed(
            run,
            f"process {pid} on host {host} died; marked failed by the next run of this "
            f"recipe ({recipe_name})",
        )
        marked.append(run.run_id)
    return marked


@contextlib.contextmanager
def exclusive_run(
    instance: dg.DagsterInstance,
    root: str,
    recipe_name: str,
    wait: bool = False,
    on_wait: Callable[[run_lock.LockOwner | None], None] | None = None,
) -> Iterator[None]:
    """Hold the lock of the run folder ``root`` for the block (raises
    :class:`run_lock.RunLockHeld`), after marking failed the runs of ``recipe_name`` that
    a dead process left unfinished."""
    with run_lock.run_lock(root, wait=wait, on_wait=on_wait):
        fail_dead_runs(instance, recipe_name)
        yield


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The first failed step and what went wrong, without the stack (the Python traceback
    stays in the run's logs, which the message points to), else the run id."""
    for event in result.all_events:
        failure = event.step_failure_data if event.is_step_failure else None
        if failure and failure.error:
            error = failure.error
            # Dagster wraps the step's error; the user's is the first that is not Dagster's
            while error.cause is not None and (error.cls_name or "").startswith("Dagster"):
                error = error.cause
            message = error.message.strip()
            # our own errors speak for themselves: their class path is noise to a user
            path, _, rest = message.partition(": ")
            if path.startswith("nova_eval_assets.") and path.endswith(f".{error.cls_name}"):
                message = rest
            return (
                f"{event.step_key} failed: {message}\n"
                f"(traceback: run {result.run_id} in the Dagster UI, `make ui`)"
            )
    return f"run {result.run_id} failed"


@contextlib.contextmanager
def _sigterm_kept() -> Iterator[None]:
    """Dagster points SIGTERM at its SIGINT handler while a run executes and, after it, at
    whatever handles SIGINT (ignored, in a background job): SIGTERM gets its own back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if handler is not None:  # None: installed outside Python, cannot be put back
            signal.signal(signal.SIGTERM, handler)


@dataclass
class InProcessRuns:
    """The runs one CLI command launches in ``instance``, one after the other: console logs
    quiet or not, the CLI tags of ``recipe_name``, and every run id in launch order."""

    instance: dg.DagsterInstance
    recipe_name: str
    quiet_logs: bool = True
    run_ids: list[str] = field(default_factory=list)

    def materialize(
        self,
        assets: Sequence[Any],
        keys: Sequence[dg.AssetKey] | None = None,
        partition: str | None = None,
        quiet_level: str = "WARNING",
    ) -> dg.ExecuteInProcessResult:
        """Materialize ``keys`` of ``assets`` (all of them when None); failures are
        returned, not raised, but SIGINT / SIGTERM raises :class:`RunInterrupted`. With
        quiet logs, the console shows ``quiet_level`` and up, errors excepted (CRITICAL: a
        step whose failure the caller reports itself, in one line)."""
        # dg.materialize, with a console that leaves the failures' stack traces to the
        # event log when the logs are quiet
        definitions = dg.Definitions(
            assets=assets,
            jobs=[
                dg.define_asset_job(
                    _JOB_NAME, selection=None if keys is None else dg.AssetSelection.assets(*keys)
                )
            ],
            loggers={"console": cli_console_logger} if self.quiet_logs else None,
        )
        with _sigterm_kept():
            try:
                result = definitions.resolve_job_def(_JOB_NAME).execute_in_process(
                    run_config=quiet_console(quiet_level) if self.quiet_logs else None,
                    instance=self.instance,
                    partition_key=partition,
                    raise_on_error=False,
                    tags=cli_tags(self.recipe_name),
                )
            except dg.DagsterExecutionInterruptedError:
                raise RunInterrupted from None
        self.run_ids.append(result.run_id)
        if interrupted(result):
            raise RunInterrupted
        return result
