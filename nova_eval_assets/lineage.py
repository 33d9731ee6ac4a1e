"""Lineage: what a stage's output was made from, recorded in the output itself.

Every replica's inference Parquet carries, in its footer, the content hash of the prompts
it read (which the prompts Parquet records in its own footer, hashed batch by batch as it
is written: :class:`ContentHasher`), the model checkpoint's hash (``model_id``) and the
inference code version (model path, inference settings and the inference code itself).
The metrics Parquet of a replica carries the data version of the inference output it
scored. From these:

* the Dagster assets report code versions and data versions (so the UI knows what is
  stale and unchanged stages are not recomputed),
* an inference partition whose inputs and code are unchanged reuses its output,
* the aggregate refuses a mix of replicas made from different prompts, models or settings
  (:func:`check_replicas`).

No Dagster here: the assets and the automation conditions call these functions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from nova_eval_assets import storage
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import LoadedRecipe

METADATA_KEY = b"nova_eval.lineage"
#: Bump when the inference stage's output changes for the same inputs (not the engine: its
#: source files are hashed into the code version).
INFERENCE_REVISION = 2  # 2: token_logprobs carry constrained_logprob and forced
#: the engine sources whose change changes an engine's generations, per engine (so a change to
#: one engine does not invalidate the outputs of the others); the managed server, the CPU
#: thread split and the factory do not change what a model writes
_ENGINE_SOURCES = {
    "bedrock": ("base.py", "bedrock.py", "constraints.py"),
    "hf": (
        "base.py",
        "constraints.py",
        "decoder.py",
        "hf.py",
        "models.py",
        "reasoning.py",
        "vision.py",
    ),
    "openai": ("base.py", "collector.py", "constraints.py", "http_client.py", "openai.py"),
    "vllm": ("base.py", "constraints.py", "models.py", "reasoning.py", "vllm.py"),
}


def digest(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (pydantic models are dumped)."""
    plain = [p.model_dump() if hasattr(p, "model_dump") else p for p in parts]
    text = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- content hashes


def _timing(name: str) -> bool:
    return name.endswith("_seconds") or name == "latency_s"


class ContentHasher:
    """A table's content hash, fed batch by batch: the same whatever the batch boundaries
    (a stage hashes what it writes as it streams; :func:`table_sha256` hashes a whole table
    alike), the buffer layout, or the item field name of list columns (Parquet reads it
    back as "element"). It covers the column names and value types, and every value, null
    apart from empty. Timing columns (``*_seconds``, ``latency_s``) are left out: they
    differ on every run.

    Each column is split into streams, each hashed on its own as batches come: validity,
    lengths and bytes of strings and lists, fixed-width values, and the streams of list
    items and struct fields below. A stream of a batch is its values' encodings one after
    the other, so two batches feed a stream exactly what their concatenation would.
    """

    def __init__(self, schema: pa.Schema):
        fields = [f for f in schema if not _timing(f.name)]
        self._names = [f.name for f in fields]
        self._types = "\n".join(f"{f.name}: {_type_text(f.type)}" for f in fields)
        self._streams: dict[str, Any] = {}
        # streams are keyed by position (column 2, its field 0: "2.0"; list items: "[]"),
        # so no column name can stand for another's stream; the names are in `_types`.
        # Every stream exists from the start: an empty table hashes as one without batches.
        for index, f in enumerate(fields):
            self._feed(str(index), pa.array([], f.type))

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        for index, name in enumerate(self._names):
            column = batch.column(name)
            for chunk in column.chunks if isinstance(column, pa.ChunkedArray) else [column]:
                self._feed(str(index), chunk)

    def hexdigest(self) -> str:
        sha = hashlib.sha256(b"nova_eval content v2\n" + self._types.encode())
        for key, stream in self._streams.items():
            sha.update(f"\n{key}:".encode() + stream.digest())
        return sha.hexdigest()

    def _write(self, key: str, data: Any) -> None:
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = hashlib.sha256()
        stream.update(data)

    def _feed(self, key: str, array: pa.Array) -> None:
        type_ = array.type
        if pa.types.is_dictionary(type_):
            array, type_ = array.dictionary_decode(), type_.value_type
        if pa.types.is_string_view(type_) or pa.types.is_binary_view(type_):
            wide = pa.large_string() if pa.types.is_string_view(type_) else pa.large_binary()
            array, type_ = array.cast(wide), wide
        valid = array.is_valid().to_numpy(zero_copy_only=False)
        self._write(f"{key}#valid", valid.tobytes())
        if pa.types.is_null(type_):
            return
        if pa.types.is_struct(type_):
            for index, child in enumerate(array.flatten()):
                self._feed(f"{key}.{index}", child)
        elif pa.types.is_map(type_):
            # as a list of key/value structs (list kernels take no maps)
            offsets = array.offsets.to_numpy()
            entries = array.values.slice(offsets[0], offsets[-1] - offsets[0])
            as_list = pa.ListArray.from_arrays(
                pa.array(offsets - offsets[0], pa.int32()), entries, mask=array.is_null()
            )
            self._feed_list(key, as_list)
        elif pa.types.is_list(type_) or pa.types.is_large_list(type_):
            self._feed_list(key, array)
        elif pa.types.is_fixed_size_list(type_):
            self._feed(f"{key}[]", array.flatten())
        elif (
            pa.types.is_string(type_)
            or pa.types.is_large_string(type_)
            or pa.types.is_binary(type_)
            or pa.types.is_large_binary(type_)
        ):
            empty = "" if pa.types.is_string(type_) or pa.types.is_large_string(type_) else b""
            filled = pc.fill_null(array, empty) if array.null_count else array
            wide = pa.types.is_large_string(type_) or pa.types.is_large_binary(type_)
            offsets = np.frombuffer(
                filled.buffers()[1],
                dtype=np.int64 if wide else np.int32,
                count=len(filled) + 1,
                offset=filled.offset * (8 if wide else 4),
            )
            self._write(f"{key}#len", np.diff(offsets).astype(np.int64).tobytes())
            data = filled.buffers()[2]
            if data is not None and offsets[-1] > offsets[0]:
                self._write(f"{key}#data", memoryview(data)[offsets[0] : offsets[-1]])
        elif pa.types.is_boolean(type_):
            values = pc.fill_null(array, False).to_numpy(zero_copy_only=False)
            self._write(f"{key}#values", values.tobytes())
        elif pa.types.is_integer(type_) or pa.types.is_floating(type_):
            filled = pc.fill_null(array, 0) if array.null_count else array
            self._write(f"{key}#values", filled.to_numpy(zero_copy_only=False).tobytes())
        else:  # dates, times, decimals...: their text
            self._feed(key, pc.cast(array, pa.large_string()))

    def _feed_list(self, key: str, array: pa.Array) -> None:
        lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy(zero_copy_only=False)
        self._write(f"{key}#len", lengths.astype(np.int64).tobytes())
        self._feed(f"{key}[]", array.flatten())  # the items of the valid lists, slice-aware


def _type_text(type_: pa.DataType) -> str:
    """A type as the content hash sees it: list item names left out, and string, binary
    and list types alike whatever their offset width."""
    if pa.types.is_dictionary(type_):
        return _type_text(type_.value_type)
    if pa.types.is_map(type_):
        return f"map<{_type_text(type_.key_type)}, {_type_text(type_.item_type)}>"
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        return f"list<{_type_text(type_.value_type)}>"
    if pa.types.is_fixed_size_list(type_):
        return f"list<{_type_text(type_.value_type)}>[{type_.list_size}]"
    if pa.types.is_struct(type_):
        return "struct<" + ", ".join(f"{f.name}: {_type_text(f.type)}" for f in type_) + ">"
    if pa.types.is_large_string(type_) or pa.types.is_string_view(type_):
        return "string"
    if pa.types.is_large_binary(type_) or pa.types.is_binary_view(type_):
        return "binary"
    return str(type_)


def table_sha256(table: pa.Table) -> str:
    """A whole table's content hash: :class:`ContentHasher` fed the table."""
    hasher = ContentHasher(table.schema)
    hasher.update(table)
    return hasher.hexdigest()


def parquet_sha256(location: str) -> str:
    """The content hash of a Parquet file's table, read batch by batch."""
    hasher = ContentHasher(storage.parquet_schema(location))
    for batch in storage.iter_parquet_batches(location, batch_size=storage.batch_rows()):
        hasher.update(batch)
    return hasher.hexdigest()


def stream_sha256(location: str, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes (local or s3://), read in chunks."""
    fs, path = storage.filesystem(location)
    sha = hashlib.sha256()
    with fs.open_input_stream(path) as stream:
        while block := stream.read(chunk):
            sha.update(block)
    return sha.hexdigest()


@dataclass(frozen=True)
class FileStat:
    size: int
    mtime_ns: int

    def key(self) -> str:
        return f"{self.size}:{self.mtime_ns}"


def stat(location: str) -> FileStat | None:
    """Size and modification time of a file, or None when it does not exist or cannot be
    reached (a symlink loop, a folder it may not list): the run then says why."""
    try:
        fs, path = storage.filesystem(location)
        info = fs.get_file_info(path)
    except (OSError, RuntimeError):  # RuntimeError: Path.resolve() of a symlink loop
        return None
    if info.type != pafs.FileType.File:
        return None
    return FileStat(int(info.size or 0), int(info.mtime_ns or 0))


def with_lineage(table: pa.Table, lineage: dict[str, Any]) -> pa.Table:
    return table.replace_schema_metadata(schema_with_lineage(table.schema, lineage).metadata)


def schema_with_lineage(schema: pa.Schema, lineage: dict[str, Any]) -> pa.Schema:
    """``schema`` recording ``lineage`` (for a file written batch by batch)."""
    metadata = dict(schema.metadata or {})
    metadata[METADATA_KEY] = json.dumps(lineage, sort_keys=True).encode()
    return schema.with_metadata(metadata)


def table_lineage(table: pa.Table) -> dict[str, Any] | None:
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else None


def read_lineage(location: str) -> dict[str, Any] | None:
    """The lineage recorded in a Parquet file's footer (None: missing file or no lineage).

    Read from the file's key-value metadata, which holds the table schema's metadata and
    what a streaming writer adds once every batch is written (:func:`record_lineage`)."""
    if not storage.exists(location):
        return None
    fs, path = storage.filesystem(location)
    with fs.open_input_file(path) as source:
        raw = (pq.ParquetFile(source).metadata.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else None


def record_lineage(writer: pq.ParquetWriter, lineage: dict[str, Any]) -> None:
    """Record ``lineage`` in the footer of a file being written batch by batch (what is
    known only at its end: a content hash). :func:`read_lineage` reads it; a table read
    from the file keeps the lineage its schema had when the writer opened."""
    writer.add_key_value_metadata({METADATA_KEY: json.dumps(lineage, sort_keys=True).encode()})


# ---------------------------------------------------------------- versions


ENGINES_FOLDER = Path(__file__).resolve().parent / "engines"


@cache
def engine_source_hash(engine: str = "hf", folder: Path = ENGINES_FOLDER) -> str:
    """The hash of the engine sources that shape `engine`'s generations."""
    sha = hashlib.sha256()
    for name in _ENGINE_SOURCES.get(engine, _ENGINE_SOURCES["hf"]):
        path = folder / name
        sha.update(name.encode() + (path.read_bytes() if path.exists() else b""))
    return sha.hexdigest()[:16]


def inference_code_version(loaded: LoadedRecipe) -> str:
    """What changes generations besides the data and the weights: the model reference, the
    inference settings (engine, sampling, batch size, seed) and the inference code. The
    prompt template is the model's chat template, so it is covered by the checkpoint hash."""
    recipe = loaded.recipe
    parts: list[Any] = [
        "inference",
        INFERENCE_REVISION,
        recipe.run.model_name_or_path,
        # how many processes send the requests changes nothing that is generated
        recipe.inference.model_dump(exclude={"client_processes"}),
        engine_source_hash(recipe.inference.engine),
    ]
    if recipe.evaluation.inspect_specs:  # an Inspect task's solver and scorers generate too
        from nova_eval_assets.tasks.inspect_task import code_identity

        evaluation = recipe.evaluation
        parts.append(
            code_identity(
                evaluation.inspect_specs, evaluation.inspect_args, evaluation.inspect_model
            )
        )
    return digest(*parts)


def model_id(loaded: LoadedRecipe) -> str:
    """The checkpoint's hash (``sha256:<hex>``) without loading the model; file hashes are
    memoized by (path, size, mtime), so this is cheap after the first call. A model this
    project cannot resolve locally is identified by its name."""
    from nova_eval_assets.engines.models import ModelResolutionError, resolve_model

    reference = loaded.recipe.run.model_name_or_path
    inference = loaded.recipe.inference
    if inference.engine == "bedrock":  # a Bedrock model is named, not hashed: where it runs
        from nova_eval_assets.engines.bedrock import default_region, lineage_model_id

        return lineage_model_id(reference, default_region(reference, inference.region))
    try:
        return resolve_model(reference).model_id
    except ModelResolutionError:
        return f"name:{reference}"


def prompts_hash(location: str) -> str:
    """The content hash a prompts file records (computed, batch by batch, when it records
    none: a file written before prompts recorded it)."""
    recorded = (read_lineage(location) or {}).get("sha256")
    return recorded or parquet_sha256(location)


def prompts_sha256(loaded: LoadedRecipe) -> str | None:
    """The content hash recorded in the current prompts file (None: no prompts yet)."""
    recorded = read_lineage(EvalLayout.for_recipe(loaded).prompts)
    return recorded.get("sha256") if recorded else None


def inference_lineage(
    loaded: LoadedRecipe, replica: int, prompts_hash: str, model: str
) -> dict[str, Any]:
    lineage = {
        "stage": "inference",
        "prompts_sha256": prompts_hash,
        "model_id": model,
        "code_version": inference_code_version(loaded),
        "replica": replica,
        "replicas": loaded.recipe.run.replicas,
    }
    lineage["data_version"] = digest(
        lineage["prompts_sha256"],
        lineage["model_id"],
        lineage["code_version"],
        replica,
        lineage["replicas"],
    )
    return lineage


# ---------------------------------------------------------------- replica agreement

#: what every replica of one evaluation must share
RUN_FIELDS = ("prompts_sha256", "model_id", "code_version", "replicas")


class StaleReplicasError(RuntimeError):
    """The replicas were not all made from the same prompts, model and settings."""


@dataclass
class ReplicaCheck:
    ok: bool
    problems: list[str] = field(default_factory=list)
    run: dict[str, Any] | None = None  # the shared RUN_FIELDS when ok
    data_versions: list[str] = field(default_factory=list)  # inference data version per replica

    def message(self, loaded: LoadedRecipe) -> str:
        lines = "\n".join(f"  - {p}" for p in self.problems)
        return (
            f"{loaded.name}: the replicas are not all from the same run, so they are not "
            f"aggregated:\n{lines}\nRematerialize the stale inference_outputs and "
            "postprocessed_metrics partitions (in the UI: 'Materialize changed and missing', "
            f"or a backfill of the {loaded.key}__replicas job), then the aggregate."
        )


def check_replicas(loaded: LoadedRecipe) -> ReplicaCheck:
    """Every replica has inference outputs and metrics, all made from the current prompts
    with the current inference settings and one model checkpoint, and each replica's
    metrics score its current inference output. Reads only Parquet footers."""
    layout = EvalLayout.for_recipe(loaded)
    replicas = loaded.recipe.run.replicas
    expected = {
        "prompts_sha256": prompts_sha256(loaded),
        "code_version": inference_code_version(loaded),
        "replicas": replicas,
    }
    problems: list[str] = []
    runs: dict[tuple, list[int]] = {}
    versions: list[str] = []
    for replica in range(replicas):
        inference = read_lineage(layout.inference(replica, replicas))
        if inference is None:
            problems.append(f"replica {replica}: no inference outputs with lineage")
            continue
        run = tuple(inference.get(name) for name in RUN_FIELDS)
        runs.setdefault(run, []).append(replica)
        for name, value in expected.items():
            if inference.get(name) != value:
                what = {"prompts_sha256": "prompts", "code_version": "inference settings"}
                problems.append(
                    f"replica {replica}: made from other {what.get(name, name)} than the "
                    f"current ones ({name} {inference.get(name)} != {value})"
                )
        metrics = read_lineage(layout.metrics(replica, replicas))
        if metrics is None:
            problems.append(f"replica {replica}: no metrics with lineage")
        elif metrics.get("inference_data_version") != inference.get("data_version"):
            problems.append(f"replica {replica}: metrics score an older inference output")
        else:
            versions.append(inference["data_version"])
    if len(runs) > 1:
        groups = "; ".join(
            f"replicas {members}: model {run[1]}, settings {run[2]}, prompts {str(run[0])[:12]}"
            for run, members in runs.items()
        )
        problems.append(f"the replicas come from {len(runs)} different runs ({groups})")
    shared = dict(zip(RUN_FIELDS, next(iter(runs)), strict=True)) if len(runs) == 1 else None
    return ReplicaCheck(ok=not problems, problems=problems, run=shared, data_versions=versions)
