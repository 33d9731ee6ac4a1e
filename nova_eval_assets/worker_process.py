"""Worker processes that exchange framed messages with their parent over stdin and stdout.

A worker is ``python -m <module>``: a fresh interpreter that imports only what its module
needs. Nothing is forked from a process running threads (Dagster's are), and the caller's
main module is not imported again as multiprocessing's spawn would do.

A message is a kind (one ASCII letter), a JSON header and a payload of bytes (an Arrow IPC
stream where it carries a table)::

    kind (1 byte) | header length (uint32 LE) | header | payload length (uint64 LE) | payload

The worker's ``sys.stdout`` is pointed at stderr before it serves (:func:`serve_channel`), so
a stray ``print`` in code it runs cannot corrupt a frame.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any, NamedTuple

import pyarrow as pa

_HEADER = struct.Struct("<cI")
_PAYLOAD = struct.Struct("<Q")


class Message(NamedTuple):
    kind: str
    header: dict[str, Any]
    payload: bytes


class WorkerEnded(RuntimeError):
    """The worker process ended or its pipes broke before the message was exchanged."""


def write_message(
    stream: IO[bytes], kind: str, header: dict[str, Any] | None = None, payload: Any = b""
) -> None:
    """One message to `stream`, flushed (`payload`: bytes or an Arrow buffer)."""
    head = json.dumps(header or {}).encode("utf-8")
    view = memoryview(payload)
    stream.write(_HEADER.pack(kind.encode("ascii"), len(head)) + head + _PAYLOAD.pack(view.nbytes))
    if view.nbytes:
        stream.write(view)
    stream.flush()


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    data = stream.read(size)
    if data is None or len(data) < size:
        return None
    return data


def read_message(stream: IO[bytes]) -> Message | None:
    """The next message from `stream`; None at its end (or a frame cut short)."""
    start = _read_exactly(stream, _HEADER.size)
    if start is None:
        return None
    kind, head_size = _HEADER.unpack(start)
    head = _read_exactly(stream, head_size) if head_size else b"{}"
    size = _read_exactly(stream, _PAYLOAD.size)
    if head is None or size is None:
        return None
    (payload_size,) = _PAYLOAD.unpack(size)
    payload = _read_exactly(stream, payload_size) if payload_size else b""
    if payload is None:
        return None
    return Message(kind.decode("ascii"), json.loads(head), payload)


def arrow_payload(data: pa.Table | pa.RecordBatch) -> pa.Buffer:
    """A table or batch as the bytes of an Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, data.schema) as writer:
        writer.write(data)
    return sink.getvalue()


def arrow_table(payload: bytes) -> pa.Table:
    """The table an :func:`arrow_payload` carries."""
    return pa.ipc.open_stream(payload).read_all()


def arrow_batch(payload: bytes) -> pa.RecordBatch:
    """The table an :func:`arrow_payload` carries, as one record batch."""
    table = arrow_table(payload)
    batches = table.combine_chunks().to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)


class WorkerProcess:
    """``python -m <module>`` with its stdin and stdout as the message channel; its stderr
    is the parent's."""

    def __init__(self, module: str, role: str) -> None:
        self.role = role
        self.process = subprocess.Popen(
            [sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.sink: IO[bytes] = self.process.stdin
        self.source: IO[bytes] = self.process.stdout

    def send(self, kind: str, header: dict[str, Any] | None = None, payload: Any = b"") -> None:
        try:
            write_message(self.sink, kind, header, payload)
        except (OSError, ValueError) as exc:  # a broken or closed pipe: the worker is gone
            raise self.ended() from exc

    def receive(self) -> Message:
        try:
            message = read_message(self.source)
        except (OSError, ValueError) as exc:
            raise self.ended() from exc
        if message is None:
            raise self.ended()
        return message

    def ended(self) -> WorkerEnded:
        code = self.process.wait()
        return WorkerEnded(f"a {self.role} worker process ended (exit status {code})")

    def close(self, kill: bool = False) -> None:
        """End the worker: at once with `kill`, else by closing its stdin (it finishes what
        it holds and exits; killed if it has not within 30 s)."""
        if kill:
            self.process.kill()
        with contextlib.suppress(OSError):  # gone already
            self.sink.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.source.close()


def serve_channel() -> tuple[Iterator[Message], Any]:
    """In a worker: the messages from the parent, and a ``send(kind, header, payload)`` to
    it. A thread reads the messages as they come, so a parent that sends the next job
    before the last one is done never waits on a full pipe. Anything else the worker's
    code prints goes to stderr."""
    source = sys.stdin.buffer
    sink = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    arrived: queue.SimpleQueue[Message | None] = queue.SimpleQueue()

    def read() -> None:
        try:
            while (message := read_message(source)) is not None:
                arrived.put(message)
        finally:
            arrived.put(None)

    threading.Thread(target=read, daemon=True, name="nova-eval-worker-input").start()

    def messages() -> Iterator[Message]:
        while (message := arrived.get()) is not None:
            yield message

    def send(kind: str, header: dict[str, Any] | None = None, payload: Any = b"") -> None:
        write_message(sink, kind, header, payload)

    return messages(), send


__all__ = [
    "Message",
    "WorkerEnded",
    "WorkerProcess",
    "arrow_batch",
    "arrow_payload",
    "arrow_table",
    "read_message",
    "serve_channel",
    "write_message",
]
