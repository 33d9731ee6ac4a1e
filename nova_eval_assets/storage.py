"""Where files live, and reading and writing them: local paths or ``s3://`` URIs.

Every write is atomic: a local file is written beside its target and renamed into place,
and an S3 object appears only when its upload completes, so a killed run never leaves a
half-written file that a later stage would read.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

BATCH_ROWS_ENV = "NOVA_EVAL_BATCH_ROWS"


def batch_rows(default: int = 8_192) -> int:
    """Rows per record batch of the streaming stages: memory is bounded by this, not by the
    dataset. $NOVA_EVAL_BATCH_ROWS overrides it (tests use a few hundred)."""
    value = os.environ.get(BATCH_ROWS_ENV, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"${BATCH_ROWS_ENV} = {value!r}: a positive number of rows")
    return int(value)


def is_remote(location: str) -> bool:
    return "://" in location


def join(root: str, *parts: str) -> str:
    if is_remote(root):
        return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(root, *parts))


def s3_endpoint() -> str | None:
    """The S3 endpoint URL when not AWS's (MinIO, moto, a VPC endpoint)."""
    return os.environ.get("NOVA_EVAL_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL") or None


def split_s3(location: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    bucket, _, key = location[len("s3://") :].partition("/")
    return bucket, key


def s3_client() -> Any:
    """A boto3 S3 client on the endpoint pyarrow uses here (for what pyarrow cannot do:
    conditional writes)."""
    import boto3

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return boto3.client("s3", endpoint_url=s3_endpoint(), region_name=region)


def _filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    if location.startswith("s3://"):
        endpoint = s3_endpoint()
        bucket_key = location[len("s3://") :]
        options: dict[str, Any] = {}
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            options.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            options["region"] = region
        return pafs.S3FileSystem(**options), bucket_key
    if is_remote(location):
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), str(Path(location).resolve())


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of ``location`` and the path within it (for pyarrow.dataset)."""
    return _filesystem(location)


def exists(location: str) -> bool:
    fs, path = _filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def list_files(location: str, suffix: str = "") -> list[str]:
    """Files directly or deeply under ``location``, as locations in the same scheme, sorted."""
    fs, path = _filesystem(location)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    found = sorted(
        i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix)
    )
    if location.startswith("s3://"):
        return [f"s3://{p}" for p in found]
    return found


@contextmanager
def atomic_output(location: str) -> Iterator[pa.NativeFile]:
    """A writable stream that becomes ``location`` only if the block completes."""
    fs, path = _filesystem(location)
    if isinstance(fs, pafs.LocalFileSystem):
        parent = Path(path).parent
        parent.mkdir(parents=True, exist_ok=True)
        temp = str(parent / f".{Path(path).name}.{uuid.uuid4().hex}.tmp")
        try:
            with fs.open_output_stream(temp) as stream:
                yield stream
            os.replace(temp, path)
        finally:
            if os.path.exists(temp):
                os.remove(temp)
    else:  # object stores publish an object only when its upload completes
        stream = fs.open_output_stream(path)
        try:
            yield stream
        except BaseException:
            # Closing completes the upload (a killed process never does), so an error
            # inside the block must remove what closing published.
            with suppress(Exception):
                stream.close()
            with suppress(OSError):
                fs.delete_file(path)
            raise
        stream.close()


def write_bytes(location: str, data: bytes) -> None:
    with atomic_output(location) as stream:
        stream.write(data)


def write_text(location: str, text: str) -> None:
    write_bytes(location, text.encode("utf-8"))


def write_json(location: str, obj: Any) -> None:
    write_text(location, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=True) + "\n")


def write_jsonl(location: str, rows: Iterable[dict[str, Any]]) -> int:
    count = 0
    with atomic_output(location) as stream:
        buffer = io.StringIO()
        for row in rows:
            buffer.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
            if buffer.tell() > 1 << 20:
                stream.write(buffer.getvalue().encode("utf-8"))
                buffer = io.StringIO()
        stream.write(buffer.getvalue().encode("utf-8"))
    return count


def read_bytes(location: str) -> bytes:
    fs, path = _filesystem(location)
    with fs.open_input_stream(path) as stream:
        return stream.read()


def sha256(location: str) -> str:
    """The file's SHA-256 (hex), read in chunks: datasets can be larger than memory."""
    digest = hashlib.sha256()
    fs, path = _filesystem(location)
    with fs.open_input_stream(path) as stream:
        while chunk := stream.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_json(location: str) -> Any:
    return json.loads(read_bytes(location))


def iter_lines(location: str) -> Iterator[str]:
    """Lines of a UTF-8 text file without their line endings, streamed."""
    fs, path = _filesystem(location)
    with fs.open_input_stream(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")  # type: ignore[arg-type]
        for line in text:
            yield line.rstrip("\r\n")


@dataclass(frozen=True)
class RawLine:
    """One line of a file as bytes, without its line ending.

    ``offset`` is the byte offset of the line's first byte in the file and ``size`` its
    length in bytes. A line longer than the reader's ``max_bytes`` is ``oversized``: only
    its first bytes are kept in ``data``, so a huge line never sits whole in memory.
    """

    offset: int
    data: bytes
    size: int
    oversized: bool = False


_READ_CHUNK = 1 << 20
_OVERSIZED_KEEP = 1024
_UTF8_BOM = b"\xef\xbb\xbf"


def iter_raw_lines(location: str, max_bytes: int | None = None) -> Iterator[RawLine]:
    """Lines of a file as bytes (split on ``\\n``, a trailing ``\\r`` dropped), streamed.

    Bytes, not text, so that a caller can say which line holds an invalid UTF-8 byte and
    still read the others. A UTF-8 byte-order mark at the start of the file is skipped.
    Lines over ``max_bytes`` are read in chunks and kept only as a short prefix.
    """
    fs, path = _filesystem(location)
    limit = max_bytes if max_bytes is not None else -1
    with fs.open_input_stream(path) as raw:
        stream = io.BufferedReader(raw, buffer_size=_READ_CHUNK)  # type: ignore[arg-type]
        offset = 0
        while True:
            piece = stream.readline(_READ_CHUNK)
            if not piece:
                return
            start = offset
            kept, size, tail, truncated = [piece], len(piece), piece[-2:], False
            while not piece.endswith(b"\n"):  # a line longer than one chunk
                piece = stream.readline(_READ_CHUNK)
                if not piece:
                    break
                size += len(piece)
                tail = (tail + piece)[-2:]
                if truncated:
                    continue
                kept.append(piece)
                # over the limit even without a line ending and a byte-order mark
                if 0 <= limit < size - 2 - len(_UTF8_BOM):
                    truncated = True
                    kept = [b"".join(kept)[:_OVERSIZED_KEEP]]
            offset = start + size
            ending = 2 if tail == b"\r\n" else 1 if tail.endswith(b"\n") else 0
            size -= ending
            data = b"".join(kept)
            if len(data) > size:  # it holds the whole line and its ending
                data = data[:size]
            if start == 0 and data.startswith(_UTF8_BOM):
                data, start, size = data[len(_UTF8_BOM) :], len(_UTF8_BOM), size - len(_UTF8_BOM)
            if 0 <= limit < size:
                yield RawLine(start, data[:_OVERSIZED_KEEP], size, oversized=True)
            else:
                yield RawLine(start, data, size)


def write_parquet(location: str, table: pa.Table) -> None:
    with atomic_output(location) as stream:
        pq.write_table(table, stream, compression="zstd")


@contextmanager
def parquet_writer(location: str, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
    """Write a Parquet file in row batches; it appears only once complete."""
    with (
        atomic_output(location) as stream,
        pq.ParquetWriter(stream, schema, compression="zstd") as writer,
    ):
        yield writer


def read_parquet(location: str, columns: list[str] | None = None) -> pa.Table:
    fs, path = _filesystem(location)
    return pq.read_table(path, filesystem=fs, columns=columns)


def write_arrow(location: str, table: pa.Table) -> None:
    """An Arrow IPC file, its buffers zstd-compressed: for short-lived files written in the
    hot path (block checkpoints): about six times cheaper to write than Parquet (no
    per-value encoding), and larger on disk."""
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with (
        atomic_output(location) as stream,
        pa.ipc.new_file(stream, table.schema, options=options) as writer,
    ):
        writer.write_table(table)


def read_arrow(location: str) -> pa.Table:
    """An Arrow IPC file (:func:`write_arrow`) as a table."""
    fs, path = _filesystem(location)
    with fs.open_input_file(path) as source:
        return pa.ipc.open_file(source).read_all()


T = TypeVar("T")


def prefetched(batches: Iterator[T], ahead: int = 1) -> Iterator[T]:
    """The same items, the next ones made (a batch decoded, and whatever else ``batches``
    does to it) in a background thread while the caller works on the current one (Parquet
    decoding and Arrow's kernels let go of the GIL)."""
    queue: Queue[Any] = Queue(maxsize=ahead)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                if stop.is_set():
                    return
                queue.put(batch)
            queue.put(done)
        except BaseException as exc:  # handed to the consumer
            queue.put(exc)

    worker = threading.Thread(target=produce, name="prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = queue.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            with suppress(Empty):
                queue.get(timeout=0.05)
        worker.join()


def iter_parquet_batches(
    location: str,
    columns: list[str] | None = None,
    batch_size: int = 65_536,
    rows: tuple[int, int] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Record batches of a Parquet file, streamed; ``columns`` may name nested fields
    (``"token_logprobs.list.element.logprob"``) so unread leaves are never decoded;
    ``rows=(start, end)`` reads only those rows, decoding only the row groups that hold them.

    One row group at a time: pyarrow pre-buffers every row group a reader is given, so a
    reader over the whole file would hold the whole file in memory."""
    fs, path = _filesystem(location)
    with fs.open_input_file(path) as source:
        parquet = pq.ParquetFile(source)
        position = 0
        for group in range(parquet.num_row_groups):
            size = parquet.metadata.row_group(group).num_rows
            first, position = position, position + size
            if rows is None:
                skip, left = 0, size
            elif first + size <= rows[0] or first >= rows[1]:
                continue
            else:
                skip = max(rows[0] - first, 0)
                left = min(rows[1], first + size) - first - skip
                if left <= 0:
                    continue
            for batch in parquet.iter_batches(
                batch_size=batch_size, row_groups=[group], columns=columns
            ):
                cut = min(skip, batch.num_rows)
                skip -= cut
                batch = batch.slice(cut, left)
                left -= batch.num_rows
                if batch.num_rows:
                    yield batch
                if left == 0:
                    break


def parquet_rows(location: str) -> int:
    """Rows of a Parquet file, from its footer."""
    fs, path = _filesystem(location)
    with fs.open_input_file(path) as source:
        return pq.ParquetFile(source).metadata.num_rows


def parquet_schema(location: str) -> pa.Schema:
    fs, path = _filesystem(location)
    with fs.open_input_file(path) as source:
        return pq.ParquetFile(source).schema_arrow


def delete(location: str) -> None:
    fs, path = _filesystem(location)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type == pafs.FileType.File:
        fs.delete_file(path)
