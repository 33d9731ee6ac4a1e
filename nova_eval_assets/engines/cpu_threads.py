"""How many torch threads an engine process takes on CPU.

Torch gives every process one thread per core. Replica runs launched side by side on one
machine (a backfill from the UI, the daemon's queue) then oversubscribe the cores and
OpenMP's threads wait on each other: on 2 cores, two replica processes with 2 threads each
took 2.7x as long as with 1 thread each (BENCHMARKS.md). So each process with a CPU engine
registers itself in a folder of the cache, and before each batch takes an equal share of
the cores among the live registered processes of this machine. ``NOVA_EVAL_TORCH_THREADS``
fixes the count instead, and a set ``OMP_NUM_THREADS`` is left as it is.

Folder: ``<model cache root>/.cpu-engines/``, one empty file ``<host>-<pid>`` per process.
Files of processes that died without cleaning up (killed) are skipped and removed.
"""

from __future__ import annotations

import atexit
import os
import socket
import threading
from pathlib import Path

THREADS_ENV = "NOVA_EVAL_TORCH_THREADS"


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def fixed_threads() -> int | None:
    """``$NOVA_EVAL_TORCH_THREADS`` as a positive integer, or None when unset."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return None
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"{THREADS_ENV} must be a whole number >= 1, got {value!r}")
    return threads


def user_chose_threads() -> bool:
    """Whether the environment already fixes the thread count (``OMP_NUM_THREADS``, which
    torch reads at start), so that the engine leaves it alone."""
    return bool(os.environ.get("OMP_NUM_THREADS", "").strip())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class CoreShare:
    """This process's registration in ``folder``; engines of one process share it."""

    def __init__(self, folder: Path, cores: int | None = None) -> None:
        self.folder = folder
        self.cores = cores or available_cores()
        self.host = socket.gethostname()
        self._users = 0
        self._lock = threading.Lock()

    @property
    def entry(self) -> Path:
        return self.folder / f"{self.host}-{os.getpid()}"

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            if self._users == 1:
                self.folder.mkdir(parents=True, exist_ok=True)
                self.entry.touch()

    def release(self) -> None:
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0:
                self.entry.unlink(missing_ok=True)

    def live_processes(self) -> int:
        """Registered processes of this host that are still running (this one included)."""
        count = 0
        prefix = f"{self.host}-"
        try:
            entries = list(self.folder.iterdir())
        except FileNotFoundError:
            entries = []
        for entry in entries:
            pid_text = entry.name[len(prefix) :] if entry.name.startswith(prefix) else ""
            if not pid_text.isdigit():
                continue
            if int(pid_text) == os.getpid() or _alive(int(pid_text)):
                count += 1
            else:
                entry.unlink(missing_ok=True)
        return max(1, count)

    def threads(self) -> int:
        """This process's share of the cores: ``cores // live processes``, at least 1."""
        return max(1, self.cores // self.live_processes())


_shares: dict[tuple[Path, int], CoreShare] = {}


def process_share(folder: Path) -> CoreShare:
    """The one registration of this process in ``folder`` (removed at exit)."""
    key = (folder, os.getpid())  # a forked child registers on its own
    share = _shares.get(key)
    if share is None:
        share = _shares[key] = CoreShare(folder)
        atexit.register(share.entry.unlink, missing_ok=True)
    return share
