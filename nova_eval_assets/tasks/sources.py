"""Where a benchmark's rows come from, in this order: a file the recipe names
(``dataset.path``: JSONL, Parquet or CSV, local or ``s3://``, in the task's normalized
format), the task's dataset on the Hugging Face hub read at run time (``huggingface_hub``
downloads the repository's files at a pinned revision into its cache; offline, the cache
is read), or rows a package ships (HumanEval). Each yields :class:`SourceRow` (a row's
fields, where it came from, and its subtask when its file says it) one at a time, file
by file, a record batch at a time: memory stays bounded by the batch.

Tests put fixture files in the hub's cache layout and set ``HF_HUB_OFFLINE=1``: the same
code path as a real download, with no network.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from nova_eval_assets import storage
from nova_eval_assets.dataset import StrictJsonError, parse_strict_json
from nova_eval_assets.tasks.base import BenchmarkTask, HubSource

FILE_FORMATS = (".jsonl", ".parquet", ".csv", ".json")


class SourceUnavailable(RuntimeError):
    """A benchmark's rows cannot be read: which dataset, why, and the fix."""


@dataclass(frozen=True)
class SourceRow:
    file: str  # the file the row is in (for messages and the rejected-rows file)
    line: int  # its line (JSONL, CSV: the data line) or row number (Parquet), from 1
    fields: Mapping[str, Any] | None  # None: the line is not a JSON object (see problem)
    subtask: str | None = None  # from the hub's per-subtask files
    problem: str | None = None
    text: str | None = None  # the line as read, for a rejected JSONL line


@dataclass(frozen=True)
class BenchmarkSource:
    """The files (or package) a benchmark reads, resolved; ``description`` is what results
    record as the dataset (a path, ``hf://datasets/<repo>@<commit>``, or a package)."""

    description: str
    files: tuple[tuple[str, str | None], ...]  # (file, subtask of its rows or None)
    task: BenchmarkTask

    def rows(self) -> Iterator[SourceRow]:
        if not self.files and self.task.package_rows is not None:
            for number, fields in enumerate(self.task.package_rows(), 1):
                yield SourceRow(self.description, number, fields)
            return
        for file, subtask in self.files:
            yield from _file_rows(file, subtask)

    def sha256(self) -> str:
        """Of the files read, in order (the package's name and version for a package)."""
        import hashlib

        digest = hashlib.sha256()
        if not self.files:
            digest.update(self.description.encode())
        for file, _ in self.files:
            digest.update(storage.sha256(file).encode())
        return digest.hexdigest()


def resolve_source(
    task: BenchmarkTask, path: str | None, revision: str | None, subtasks: list[str]
) -> BenchmarkSource:
    """The source of ``task``'s rows: ``path`` (dataset.path, resolved), else its hub
    dataset at ``revision`` (default: the task's), else its package; the hub's per-subtask
    files are read for ``subtasks`` only ([]: all)."""
    if path is None and task.url is not None:
        path = task.url
    if path is not None and path.startswith(HUB_PREFIX):
        repo, hub_revision, files = hub_path(path)
        return _hub_source(task, HubSource(repo, files), revision or hub_revision, subtasks)
    if path is not None and path.startswith(("http://", "https://")):
        local = downloaded(path, task)
        return BenchmarkSource(path, ((local, None),), task)
    if path is not None:
        suffix = Path(path.split("?", 1)[0]).suffix.lower()
        if suffix not in FILE_FORMATS:
            raise SourceUnavailable(
                f"dataset.path {path!r}: a {task.name} dataset is a "
                f"{', '.join(FILE_FORMATS)} file in the task's normalized format"
            )
        if not storage.exists(path):
            raise SourceUnavailable(f"dataset.path {path!r} ({task.name}'s rows) does not exist")
        return BenchmarkSource(path, ((path, None),), task)
    if task.hub is not None:
        return _hub_source(task, task.hub, revision or task.hub.revision, subtasks)
    if task.package_rows is not None:
        return BenchmarkSource(_package_description(task), (), task)
    raise SourceUnavailable(f"task {task.name} has no source: set dataset.path")


HUB_PREFIX = "hf://datasets/"


def hub_path(path: str) -> tuple[str, str, str]:
    """(repo, revision, file glob) of ``hf://datasets/<owner>/<name>[@<revision>]/<glob>``
    (a dataset.path that reads a hub repository's files at run time; revision default
    ``main``)."""
    parts = path[len(HUB_PREFIX) :].split("/", 2)
    if len(parts) < 3 or not all(parts):
        raise SourceUnavailable(
            f"dataset.path {path!r}: a hub dataset is hf://datasets/<owner>/<name>"
            "[@<revision>]/<file or glob>"
        )
    owner, name, files = parts
    name, _, revision = name.partition("@")
    return f"{owner}/{name}", revision or "main", files


def download_cache() -> Path:
    """Where files downloaded at run time are kept: $NOVA_EVAL_CACHE, else
    ~/.cache/nova-eval."""
    configured = os.environ.get("NOVA_EVAL_CACHE", "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "nova-eval"


def downloaded(url: str, task: BenchmarkTask, timeout_s: float = 120.0) -> str:
    """The local copy of ``url`` (a task's rows published as a file, e.g. Natural Plan's),
    fetched once into :func:`download_cache` (atomically: a failed download leaves
    nothing) and reused after."""
    import hashlib
    import urllib.error
    import urllib.request

    name = Path(url.split("?", 1)[0]).name or "data"
    folder = download_cache() / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:16]
    local = folder / name
    if local.is_file():
        return str(local)
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{name}.{os.getpid()}.partial"
    try:
        with partial.open("wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as answer:
            while chunk := answer.read(1 << 20):
                out.write(chunk)
        os.replace(partial, local)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        raise SourceUnavailable(
            f"{task.name}'s rows could not be downloaded from {url} ({exc}); download the "
            "file yourself and name it in dataset.path"
        ) from exc
    return str(local)


def _package_description(task: BenchmarkTask) -> str:
    """``package <name>==<version>`` (its rows' source, as results record it)."""
    from importlib.metadata import PackageNotFoundError, version

    name = task.package or task.name
    try:
        return f"package {name}=={version(name)}"
    except PackageNotFoundError:
        return f"package {name} (not installed)"


def hub_problem(
    task: BenchmarkTask, revision: str | None, subtasks: list[str], timeout_s: float
) -> str | None:
    """Why ``task``'s hub dataset cannot be read (None: it is in the cache, or the hub
    answers for it), without downloading it: the cache first, then one metadata request."""
    hub = task.hub
    if hub is None:
        return None
    revision = revision or hub.revision
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError

    try:
        snapshot_download(hub.repo, repo_type="dataset", revision=revision, local_files_only=True)
        return None
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    fix = (
        "allow this machine to reach huggingface.co once (the files are cached), or set "
        f"dataset.path to a copy of the rows in {task.name}'s normalized format"
    )
    where = f"the {task.name} dataset {hub.repo} (revision {revision})"
    if constants.HF_HUB_OFFLINE:
        return f"{where} is not in the hub cache and HF_HUB_OFFLINE is set; {fix}"
    try:
        HfApi().dataset_info(hub.repo, revision=revision, timeout=timeout_s)
    except GatedRepoError:
        return (
            f"{where} is gated: accept its terms on huggingface.co and set HF_TOKEN, or set "
            "dataset.path to your copy"
        )
    except (HfHubHTTPError, OSError, ValueError) as exc:
        return f"{where} cannot be reached ({type(exc).__name__}: {exc}); {fix}"
    return None


def _hub_source(
    task: BenchmarkTask, hub: HubSource, revision: str, subtasks: list[str]
) -> BenchmarkSource:
    patterns = (
        [hub.files.format(subtask=s) for s in (subtasks or task.subtasks)]
        if hub.per_subtask
        else [hub.files]
    )
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as exc:  # pragma: no cover - transformers brings it
        raise SourceUnavailable(f"{hub.repo}: huggingface_hub is not installed ({exc})") from exc
    try:
        folder = Path(
            snapshot_download(
                hub.repo, repo_type="dataset", revision=revision, allow_patterns=patterns
            )
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        gated = (
            " The dataset is gated: accept its terms on huggingface.co and set HF_TOKEN."
            if hub.gated
            else ""
        )
        raise SourceUnavailable(
            f"the {task.name} dataset {hub.repo} (revision {revision}) could not be read from "
            f"the Hugging Face hub or its cache: {type(exc).__name__}: {exc}.{gated} Fix: "
            "allow this machine to reach huggingface.co once (the files are cached), or set "
            f"dataset.path to a copy of the rows in {task.name}'s normalized format"
        ) from exc
    files: list[tuple[str, str | None]] = []
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    for pattern, subtask in zip(
        patterns, subtasks or task.subtasks if hub.per_subtask else [None], strict=False
    ):
        matched = [n for n in names if fnmatch.fnmatch(n, pattern)]
        if not matched:
            raise SourceUnavailable(
                f"the {task.name} dataset {hub.repo}@{revision} has no file matching "
                f"{pattern!r}; set dataset.path to a copy of the rows"
            )
        files += [(str(folder / n), subtask) for n in matched]
    return BenchmarkSource(f"hf://datasets/{hub.repo}@{folder.name}", tuple(files), task)


def _file_rows(file: str, subtask: str | None) -> Iterator[SourceRow]:
    suffix = Path(file).suffix.lower()
    if suffix == ".jsonl":
        yield from _jsonl_rows(file, subtask)
        return
    if suffix == ".json":
        yield from _json_rows(file, subtask)
        return
    if suffix == ".parquet":
        batches = storage.iter_parquet_batches(file, None, batch_size=storage.batch_rows())
    elif suffix == ".csv":
        batches = _csv_batches(file)
    else:
        raise SourceUnavailable(f"{file}: not a {', '.join(FILE_FORMATS)} file")
    number = 0
    for batch in batches:
        for fields in batch.to_pylist():
            number += 1
            yield SourceRow(file, number, fields, subtask)


def _json_rows(file: str, subtask: str | None) -> Iterator[SourceRow]:
    """A dataset published as one JSON document (Natural Plan's): a list of records, or an
    object of records keyed by id (the key becomes the record's ``id``). Read whole: such
    files are small; a large dataset belongs in JSONL or Parquet."""
    try:
        document = json.loads(storage.read_bytes(file))
    except ValueError as exc:
        raise SourceUnavailable(f"{file}: not a JSON document ({exc})") from exc
    if isinstance(document, dict):
        records = [
            {"id": key, **value} if isinstance(value, dict) else value
            for key, value in document.items()
        ]
    elif isinstance(document, list):
        records = document
    else:
        raise SourceUnavailable(f"{file}: a JSON dataset is a list or an object of records")
    for number, record in enumerate(records, 1):
        if isinstance(record, dict):
            yield SourceRow(file, number, record, subtask)
        else:
            problem = f"record {number} is not a JSON object"
            yield SourceRow(file, number, None, subtask, problem, json.dumps(record)[:200])


def _csv_batches(file: str) -> Iterator[pa.RecordBatch]:
    fs, path = storage.filesystem(file)
    with fs.open_input_stream(path) as stream:
        # every column as text: an answer "1" must not become the number 1
        reader = pacsv.open_csv(
            stream, convert_options=pacsv.ConvertOptions(strings_can_be_null=False)
        )
        for batch in reader:
            yield batch.cast(pa.schema([pa.field(f.name, pa.string()) for f in batch.schema]))


def _jsonl_rows(file: str, subtask: str | None) -> Iterator[SourceRow]:
    for number, raw in enumerate(storage.iter_raw_lines(file), 1):
        try:
            text = raw.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            text = raw.data.decode("utf-8", errors="replace")
            yield SourceRow(file, number, None, subtask, f"not valid UTF-8 ({exc.reason})", text)
            continue
        if not text.strip():
            continue
        try:
            fields = parse_strict_json(text)
        except (StrictJsonError, ValueError, RecursionError) as exc:
            yield SourceRow(file, number, None, subtask, f"not valid JSON: {exc}", text)
            continue
        if not isinstance(fields, dict):
            kind = type(fields).__name__
            yield SourceRow(file, number, None, subtask, f"not a JSON object ({kind})", text)
            continue
        yield SourceRow(file, number, fields, subtask, text=text)


def row_text(row: SourceRow) -> str:
    """A source row as the rejected-rows file keeps it: its line, or its fields as JSON."""
    if row.text is not None:
        return row.text
    return json.dumps(row.fields, default=str, ensure_ascii=False)
