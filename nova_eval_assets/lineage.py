"""Lineage: what a stage's output was made from, recorded in the output itself.

Every replica's inference Parquet carries, in its schema metadata, the content hash of the
prompts it read, the model checkpoint's hash (``model_id``) and the inference code version
(model path, inference settings and the inference code itself). The metrics Parquet of a
replica carries the data version of the inference output it scored. From these:

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
import pyarrow.fs as pafs

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
    "openai": ("base.py", "constraints.py", "openai.py"),
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


def table_sha256(table: pa.Table) -> str:
    """Hash of a table's schema (without metadata) and values, batch by batch. Timing
    columns (``*_seconds``, ``latency_s``) are left out: they differ on every run."""
    table = table.select([name for name in table.column_names if not _timing(name)])
    table = _canonical_lists(table)
    sha = hashlib.sha256(str(table.schema.remove_metadata()).encode())
    for batch in table.to_batches(max_chunksize=65_536):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema.remove_metadata()) as writer:
            writer.write_batch(batch)
        sha.update(sink.getvalue())
    return sha.hexdigest()


def _canonical_lists(table: pa.Table) -> pa.Table:
    """Top-level list<primitive> columns rebuilt from their lengths, values and nulls: equal
    lists can be laid out in different buffers, and their item field named differently (an
    all-null list column built in memory and the same column read back from Parquet, which
    names it "element"): the hash must see neither."""
    import pyarrow.compute as pc

    columns = []
    for column in table.columns:
        type_ = column.type
        if pa.types.is_list(type_) and not pa.types.is_nested(type_.value_type):
            array = column.combine_chunks()
            lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy(zero_copy_only=False)
            offsets = np.zeros(len(array) + 1, dtype=np.int32)
            np.cumsum(lengths, out=offsets[1:])
            column = pa.ListArray.from_arrays(
                pa.array(offsets, pa.int32()),
                pc.list_flatten(array),
                type=pa.list_(type_.value_type),  # Parquet reads the item back as "element"
                mask=array.is_null() if array.null_count else None,
            )
        columns.append(column)
    return pa.table(columns, names=table.column_names)


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
    metadata = dict(table.schema.metadata or {})
    metadata[METADATA_KEY] = json.dumps(lineage, sort_keys=True).encode()
    return table.replace_schema_metadata(metadata)


def table_lineage(table: pa.Table) -> dict[str, Any] | None:
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else None


def read_lineage(location: str) -> dict[str, Any] | None:
    """The lineage recorded in a Parquet file's footer (None: missing file or no lineage)."""
    if not storage.exists(location):
        return None
    raw = (storage.parquet_schema(location).metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else None


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
    return digest(
        "inference",
        INFERENCE_REVISION,
        recipe.run.model_name_or_path,
        recipe.inference,
        engine_source_hash(recipe.inference.engine),
    )


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


def prompts_hash(prompts: pa.Table) -> str:
    """The content hash a prompts table records (computed when it records none)."""
    recorded = (table_lineage(prompts) or {}).get("sha256")
    return recorded or table_sha256(prompts)


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
