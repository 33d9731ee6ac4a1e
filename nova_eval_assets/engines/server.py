"""A managed OpenAI-compatible server (``inference.server``): the replica process starts it,
waits until ``GET /v1/models`` answers 200, evaluates against it and stops it.

    with ManagedServer("vllm serve {model} --port {port}", model, log_location=...) as server:
        engine = OpenAIEngine(model, server.url, ...)

`command` is split like a shell would (``shlex``) but run without one; ``{model}`` and
``{port}`` are replaced in every word (plain replacement, so JSON arguments with braces pass
through). The server runs in its own process group, its stdout and stderr go to a log file,
and it is stopped (SIGTERM to the group, SIGKILL after a grace period) when the block ends,
whether it ends normally, by an exception, or because this process got SIGTERM (a Dagster
run being terminated, a Kubernetes pod being deleted).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from nova_eval_assets import storage

#: lines of the server's log quoted in a startup error
LOG_TAIL_LINES = 50


class ManagedServerError(RuntimeError):
    """The managed server did not come up (it exited, or did not answer in time)."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def server_argv(command: str, model: str, port: int) -> list[str]:
    return [
        word.replace("{model}", model).replace("{port}", str(port)) for word in shlex.split(command)
    ]


def managed_model_id(command: str, model_id: str) -> str:
    """Lineage identity of a managed server's model: the command template (not the port,
    which changes per run) and the weights' own identity (``lineage.model_id``)."""
    return f"openai-server:{command}#{model_id}"


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, start: int = 0) -> str:
    """The last `lines` lines of the log written from byte `start` on (this start's)."""
    try:
        with path.open("rb") as handle:
            handle.seek(start)
            text = handle.read().decode("utf-8", errors="replace")
            return "".join(deque(text.splitlines(keepends=True), maxlen=lines)).rstrip()
    except OSError:
        return ""


class ManagedServer:
    def __init__(
        self,
        command: str,
        model: str,
        *,
        port: int | None = None,
        startup_timeout_s: float = 900.0,
        env: dict[str, str] | None = None,
        log_location: str | None = None,
        host: str = "127.0.0.1",
        stop_grace_s: float = 20.0,
        poll_s: float = 0.25,
    ) -> None:
        self.command = command
        self.model = model
        self.host = host
        self.port = port or free_port(host)
        self.argv = server_argv(command, model, self.port)
        self.startup_timeout_s = startup_timeout_s
        self.env = dict(env or {})
        self.stop_grace_s = stop_grace_s
        self.poll_s = poll_s
        self.log_location = log_location
        # a remote (s3://) log location is written locally and uploaded when the server stops
        if log_location is None or storage.is_remote(log_location):
            self._tmp = tempfile.TemporaryDirectory(prefix="nova-eval-server-")
            self.log_path = Path(self._tmp.name) / "server.log"
        else:
            self._tmp = None
            self.log_path = Path(log_location)
        self.process: subprocess.Popen | None = None
        self._log_start = 0
        self._previous_handler: Any = None
        self._handler_installed = False
        self._lock = threading.RLock()  # a SIGTERM may arrive while stop() runs

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Start the server and wait until it answers; its base URL."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._install_sigterm_handler()
        try:
            with self.log_path.open("ab") as log:  # a rerun's log follows the last one's
                self._log_start = log.tell()
                log.write(f"$ {shlex.join(self.argv)}\n".encode())
                log.flush()
                try:
                    self.process = subprocess.Popen(
                        self.argv,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env={**os.environ, **self.env},
                        start_new_session=True,  # its own process group: stop() ends all of it
                    )
                except OSError as exc:  # no such program, not executable
                    raise ManagedServerError(
                        f"cannot start the managed server ({exc}); command: "
                        f"{shlex.join(self.argv)} (inference.server.command)"
                    ) from None
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self.url

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        models = f"{self.url}/v1/models"
        while True:
            code = self.process.poll()
            if code is not None:
                raise ManagedServerError(
                    f"the managed server exited with code {code} before answering "
                    f"GET /v1/models; command: {shlex.join(self.argv)}\n"
                    f"last lines of its log ({self.log_location or self.log_path}):\n"
                    f"{log_tail(self.log_path, start=self._log_start)}"
                )
            try:
                with urllib.request.urlopen(models, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass  # not listening yet, or still loading
            if time.monotonic() >= deadline:
                raise ManagedServerError(
                    f"the managed server did not answer GET {models} within "
                    f"inference.server.startup_timeout_s = {self.startup_timeout_s:g} s; "
                    f"command: {shlex.join(self.argv)}\n"
                    f"last lines of its log ({self.log_location or self.log_path}):\n"
                    f"{log_tail(self.log_path, start=self._log_start)}"
                )
            time.sleep(self.poll_s)

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after the grace period. Idempotent."""
        with self._lock:
            process, self.process = self.process, None
            if process is not None:
                _terminate_group(process, self.stop_grace_s)
            self._restore_sigterm_handler()
            self._upload_log()

    def _upload_log(self) -> None:
        if self._tmp is None:
            return
        if self.log_location is not None and self.log_path.exists():
            with contextlib.suppress(Exception):  # a lost log must not hide the run's outcome
                storage.write_bytes(self.log_location, self.log_path.read_bytes())
        self._tmp.cleanup()
        self._tmp = None

    # ------------------------------------------------------------------ SIGTERM

    def _install_sigterm_handler(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        self._previous_handler = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._handler_installed = True

    def _restore_sigterm_handler(self) -> None:
        if self._handler_installed:
            signal.signal(signal.SIGTERM, self._previous_handler or signal.SIG_DFL)
            self._handler_installed = False

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous_handler
        self.stop()  # restores the previous handler too
        if callable(previous):
            previous(signum, frame)  # e.g. Dagster's: it interrupts the run
        elif previous != signal.SIG_IGN:
            # the default action: terminate, as the signal would have without us
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    # ------------------------------------------------------------------ context manager

    def __enter__(self) -> ManagedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _terminate_group(process: subprocess.Popen, grace_s: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    # children that outlived their parent in the group (a server's workers)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


__all__ = [
    "ManagedServer",
    "ManagedServerError",
    "free_port",
    "log_tail",
    "managed_model_id",
    "server_argv",
]
