"""One run at a time in a run folder (``<output root>/<run.name>/``).

Two runs of one recipe in one output folder share ``stages/``: a ``--limit 8`` run beside a
full run overwrites the full run's prompts, and the full run then reports its 8 rows as
"every row". So ``nova-eval run`` holds a lock on the run folder while it runs: the file
(or object) ``run.lock`` in it, holding its owner (host, pid, start time, command).

- A local folder: the lock file is created with ``O_CREAT | O_EXCL`` (only one creator
  wins). It is stale when its host is this host and its process is gone (the pid is not
  running, is a zombie, or was reused by a process started at another time).
- ``s3://``: the lock object is written with ``If-None-Match: *`` (only one writer wins)
  and holds an expiry that a thread pushes forward while the run lives (``If-Match`` on
  the lock's ETag, so a run that lost its lock never overwrites the new holder's). It is
  stale once expired, or, like a local one, when its process on this host is gone.

A stale lock is taken over by replacing it atomically, never by deleting it and creating
a new one, so two runs that find the same stale lock never both win: locally the
replacement happens under ``flock`` of the run folder (released by the kernel if the
process dies) after reading the lock again; on S3 it is a put with ``If-Match`` on the
stale lock's ETag. The lock is released when the run ends: success, failure or an
interrupt.

No Dagster here: :mod:`nova_eval_assets.assets.materialize` takes the lock around a run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nova_eval_assets import storage

logger = logging.getLogger(__name__)

LOCK_NAME = "run.lock"
#: an S3 lock expires this long after its last refresh (a crashed holder frees it then)
S3_LOCK_TTL_S = 120.0
#: a local lock file that is not valid JSON this long after it was created was left by a
#: process that died between creating and writing it (a write of a few hundred bytes)
UNWRITTEN_LOCK_GRACE_S = 10.0


def process_start(pid: int) -> str | None:
    """When ``pid`` started (Linux: clock ticks since boot, from /proc), to tell a pid
    reused by another process from the original; None where /proc has no answer."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # fields after "(comm)": state is field 3, starttime field 22
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_alive(pid: int, started: str | None = None) -> bool:
    """Whether process ``pid`` of this host still runs (a zombie does not), and is the one
    that started at ``started`` when that is known."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True  # no /proc (macOS): kill(pid, 0) is all there is
    if state in ("Z", "X"):
        return False
    return started is None or process_start(pid) in (None, started)


@dataclass(frozen=True)
class LockOwner:
    """Who holds a run folder's lock; written into the lock as JSON."""

    host: str
    pid: int
    started_at: str  # ISO-8601, UTC
    command: str
    token: str  # tells this acquisition from any other, the same process's included
    pid_start: str | None = None  # :func:`process_start` of pid
    expires_at: float | None = None  # S3 only: Unix time

    @classmethod
    def current(cls, command: str | None = None, ttl_s: float | None = None) -> LockOwner:
        pid = os.getpid()
        return cls(
            host=socket.gethostname(),
            pid=pid,
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            command=command or default_command(),
            token=uuid.uuid4().hex,
            pid_start=process_start(pid),
            expires_at=None if ttl_s is None else time.time() + ttl_s,
        )

    @classmethod
    def from_json(cls, data: bytes) -> LockOwner:
        """Raises ValueError for what no run wrote (a lock being written, or another file)."""
        fields = json.loads(data)
        owner = cls(**{k: fields.get(k) for k in cls.__dataclass_fields__})
        if not (isinstance(owner.host, str) and isinstance(owner.pid, int) and owner.token):
            raise ValueError("not a run lock")
        return owner

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2) + "\n").encode()

    def renewed(self, ttl_s: float) -> LockOwner:
        return LockOwner(**{**asdict(self), "expires_at": time.time() + ttl_s})

    def is_stale(self, now: float | None = None) -> bool:
        """The holder is gone: its process on this host died, or (S3) the lock expired."""
        if self.host == socket.gethostname() and not process_alive(self.pid, self.pid_start):
            return True
        return self.expires_at is not None and (now or time.time()) > self.expires_at

    def describe(self) -> str:
        return (
            f"pid {self.pid} on host {self.host}, since {self.started_at} (command: {self.command})"
        )


def default_command() -> str:
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])


class RunLockHeld(RuntimeError):
    """Another live run holds the run folder's lock."""

    def __init__(self, location: str, owner: LockOwner | None, remote: bool) -> None:
        self.location = location
        self.owner = owner
        holder = owner.describe() if owner else "a run that is still writing the lock"
        other_host = owner is not None and owner.host != socket.gethostname()
        if other_host and not remote:
            gone = (
                f"; if that run is gone (its host is not this one, so its process cannot be "
                f"checked from here), delete {location}"
            )
        elif remote and owner is not None and owner.expires_at is not None:
            expiry = datetime.fromtimestamp(owner.expires_at, UTC).isoformat(timespec="seconds")
            gone = f"; if that run is gone, its lock expires at {expiry}"
        else:
            gone = ""
        super().__init__(
            f"another run holds {location}: {holder}. Two runs in one run folder would "
            "overwrite each other's stages. Wait for it to end (or rerun with --wait), stop "
            "it, or give this run another output folder (run.output_s3_path or "
            f"$NOVA_EVAL_OUTPUT_ROOT){gone}"
        )


class RunLock:
    """The lock of the run folder ``root`` (see the module docstring)::

    with RunLock(root).acquire(wait=False):
        ...
    """

    def __init__(self, root: str, command: str | None = None, ttl_s: float = S3_LOCK_TTL_S) -> None:
        self.root = root
        self.location = storage.join(root, LOCK_NAME)
        self.remote = storage.is_remote(root)
        self.ttl_s = ttl_s
        self.owner = LockOwner.current(command, ttl_s if self.remote else None)
        self._backend: _LocalLock | _S3Lock = (
            _S3Lock(self.location) if self.remote else _LocalLock(Path(self.location))
        )
        self._refresher: threading.Thread | None = None
        self._stop = threading.Event()
        self.lost = False  # S3: another run took the lock over (this run's refreshes stopped)

    def acquire(
        self,
        wait: bool = False,
        poll_s: float = 2.0,
        on_wait: Callable[[LockOwner | None], None] | None = None,
    ) -> RunLock:
        """Take the lock (a stale one is taken over). Raises :class:`RunLockHeld` when a
        live run holds it, or, with ``wait``, polls every ``poll_s`` until it is free,
        calling ``on_wait(holder)`` once first."""
        waited = False
        while True:
            if self.remote:  # its expiry counts from now, not from a wait's start
                self.owner = self.owner.renewed(self.ttl_s)
            acquired, holder = self._backend.try_acquire(self.owner)
            if acquired:
                break
            if not wait:
                raise RunLockHeld(self.location, holder, self.remote)
            if not waited and on_wait is not None:
                on_wait(holder)
            waited = True
            time.sleep(poll_s)
        if self.remote:
            self._refresher = threading.Thread(
                target=self._refresh, name="run-lock-refresh", daemon=True
            )
            self._refresher.start()
        return self

    def _refresh(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            renewed = self.owner.renewed(self.ttl_s)
            try:
                kept = self._backend.refresh(renewed)
            except Exception as exc:  # a network blip: the next refresh may pass
                logger.warning("could not refresh the run lock %s: %s", self.location, exc)
                continue
            if not kept:
                self.lost = True
                logger.warning(
                    "the run lock %s was taken over by another run (it expired); this run's "
                    "stages may be overwritten",
                    self.location,
                )
                return
            self.owner = renewed

    def release(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join()
        if not self.lost:
            self._backend.release(self.owner)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


class _LocalLock:
    def __init__(self, path: Path) -> None:
        self.path = path

    def try_acquire(self, owner: LockOwner) -> tuple[bool, LockOwner | None]:
        """(True, None) when ``owner`` now holds the lock, else (False, the live holder;
        None for a lock that its creator is still writing)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # the holder may release it between two looks: look again
            if self._create(owner):
                return True, None
            held = self._read()
            if held is _GONE:
                continue
            if held is None and not self._unwritten_too_long():
                return False, None
            if held is not None and not held.is_stale():
                return False, held
            if self._take_over(owner, held):
                return True, None
        held = self._read()
        return False, held if isinstance(held, LockOwner) else None

    def _create(self, owner: LockOwner) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as out:
            out.write(owner.to_json())
        return True

    def _read(self) -> Any:
        """The holder; None for a lock not (yet) valid JSON; _GONE when there is none."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return _GONE
        try:
            return LockOwner.from_json(data)
        except (ValueError, TypeError, AttributeError):
            return None

    def _unwritten_too_long(self) -> bool:
        with contextlib.suppress(FileNotFoundError):
            return time.time() - self.path.stat().st_mtime > UNWRITTEN_LOCK_GRACE_S
        return False

    def _take_over(self, owner: LockOwner, stale: LockOwner | None) -> bool:
        """Replace the stale lock with ``owner``'s, under flock of the folder, after
        checking that the lock is still the stale one (another run may have won)."""
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            if self._read() != stale:
                return False
            temp = self.path.with_name(f".{self.path.name}.{owner.token}.tmp")
            temp.write_bytes(owner.to_json())
            os.replace(temp, self.path)
            return True
        finally:
            os.close(folder)  # releases the flock

    def release(self, owner: LockOwner) -> None:
        held = self._read()
        if isinstance(held, LockOwner) and held.token == owner.token:
            self.path.unlink(missing_ok=True)


class _S3Lock:
    def __init__(self, location: str) -> None:
        self.bucket, self.key = storage.split_s3(location)
        self.client = storage.s3_client()
        self.etag: str | None = None

    def _put(self, owner: LockOwner, **condition: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            answer = self.client.put_object(
                Bucket=self.bucket,
                Key=self.key,
                Body=owner.to_json(),
                ContentType="application/json",
                **condition,
            )
        except ClientError as exc:
            # 412: the condition failed; 409: a concurrent conditional write won
            if exc.response["ResponseMetadata"]["HTTPStatusCode"] in (409, 412):
                return False
            raise
        self.etag = answer["ETag"]
        return True

    def _read(self) -> tuple[Any, str | None]:
        from botocore.exceptions import ClientError

        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return _GONE, None
            raise
        try:
            return LockOwner.from_json(answer["Body"].read()), answer["ETag"]
        except (ValueError, TypeError, AttributeError):
            return None, answer["ETag"]

    def try_acquire(self, owner: LockOwner) -> tuple[bool, LockOwner | None]:
        """As :meth:`_LocalLock.try_acquire`."""
        for _ in range(3):
            if self._put(owner, IfNoneMatch="*"):
                return True, None
            held, etag = self._read()
            if held is _GONE:
                continue
            # an object that is no lock owner is refreshed by no run: taken over
            if held is not None and not held.is_stale():
                return False, held
            if self._put(owner, IfMatch=etag):  # only one run replaces this version
                return True, None
        held, _ = self._read()
        return False, held if isinstance(held, LockOwner) else None

    def refresh(self, owner: LockOwner) -> bool:
        return self._put(owner, IfMatch=self.etag)

    def release(self, owner: LockOwner) -> None:
        held, _ = self._read()
        if isinstance(held, LockOwner) and held.token == owner.token:
            self.client.delete_object(Bucket=self.bucket, Key=self.key)


_GONE = object()  # no lock at all (released between two looks)


@contextlib.contextmanager
def run_lock(
    root: str,
    wait: bool = False,
    on_wait: Callable[[LockOwner | None], None] | None = None,
) -> Iterator[RunLock]:
    """Hold the lock of the run folder ``root`` for the block (:class:`RunLock`)."""
    lock = RunLock(root).acquire(wait=wait, on_wait=on_wait)
    try:
        yield lock
    finally:
        lock.release()
