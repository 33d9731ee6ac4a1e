"""Rows of the tables, from what an evaluation wrote.

* ``eval_examples``: ``eval_results/examples.parquet`` (our typed per-example table),
  streamed in record batches and given the run's identity, a stable ``example_id``, the
  metadata parsed into a map and the mean token log probability. Images are not in it
  (only their ``image_count`` and ``image_sha256``); an examples file written before
  images were a field gives a count of 0 and no hashes.
* ``eval_metrics``: the results JSON's ``all`` section (one row per metric with its
  ``_stderr`` sibling), plus every metric by metadata stratum computed from the examples.
* ``judge_judgments`` / ``judge_summary``: a judge run's per-judgment Parquet and its
  summary, mapped onto the table columns by name (see :func:`to_judge_judgments`).
* ``judge_criteria``: a rubric judge's criteria, one row per criterion per judgment
  (:func:`to_judge_criteria`).

Nothing here imports Dagster or the inference engines.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from threadpoolctl import threadpool_limits

from nova_eval_assets import storage
from nova_eval_assets.analysis.columns import (
    FilledColumns,
    iter_batches,
    metric_columns,
    row_count,
    stats_matrix,
)
from nova_eval_assets.engines.cpu_threads import available_cores
from nova_eval_assets.metrics import PER_EXAMPLE_METRICS, bleu_from_stats, bootstrap_bleu_stderr
from nova_eval_assets.metrics.gather import map_entries
from nova_eval_assets.metrics.stats import mean_and_stderr
from nova_eval_assets.recipe import is_judge_task
from nova_eval_assets.tables.schemas import (
    EVAL_EXAMPLES,
    EVAL_METRICS,
    JUDGE_CRITERIA,
    JUDGE_JUDGMENTS,
    JUDGE_SUMMARY,
    TIMESTAMP,
)
from nova_eval_assets.tables.writer import RunPartition
from nova_eval_assets.tasks.base import SUBTASK_FIELD, subtask_of_key
from nova_eval_assets.tasks.registry import benchmark_task

MAX_STRATUM_VALUES = 50
# at most this many strata bootstrap at once, each with its chunk and its examples' rows
BOOTSTRAP_WORKERS = 8
JUDGE_AGGREGATIONS = {
    "a_scores": "count",
    "b_scores": "count",
    "ties": "count",
    "inference_error": "count",
    "score": "mean",
    "winrate": "bradley_terry",
    "lower_rate": "percentile",
    "upper_rate": "percentile",
}


@dataclass(frozen=True)
class RunInfo:
    """Who a set of rows belongs to: the run's identity and what every row repeats."""

    eval_name: str
    run_id: str
    run_timestamp: datetime  # UTC
    model_name: str | None = None
    task: str | None = None
    dataset_sha256: str | None = None

    @property
    def run_date(self) -> str:
        return self.run_timestamp.strftime("%Y-%m-%d")

    @property
    def partition(self) -> RunPartition:
        return RunPartition(self.eval_name, self.run_id, self.run_date)

    def columns(self, n: int) -> dict[str, pa.Array]:
        """The run columns (schemas.RUN_COLUMNS) repeated ``n`` times."""
        ts = self.run_timestamp.astimezone(UTC).replace(tzinfo=None)
        return {
            "run_id": pa.repeat(pa.scalar(self.run_id), n),
            "run_timestamp": pa.repeat(pa.scalar(ts, TIMESTAMP), n),
            "model_name": pa.repeat(pa.scalar(self.model_name, pa.string()), n),
            "task": pa.repeat(pa.scalar(self.task, pa.string()), n),
            "dataset_sha256": pa.repeat(pa.scalar(self.dataset_sha256, pa.string()), n),
        }


def parse_stamp(stamp: str) -> datetime:
    """Nova's file-name timestamp (``2025-01-02T03-04-05.678Z``) as a UTC datetime."""
    for fmt in ("%Y-%m-%dT%H-%M-%S.%fZ", "%Y-%m-%dT%H-%M-%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
        try:
            return datetime.strptime(stamp, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)


def run_info(eval_name: str, results: Mapping[str, Any], run_id: str | None = None) -> RunInfo:
    """The run a results document describes. Its id is the results timestamp unless
    ``run_id`` names the run (rerunning under the same id replaces the run's rows)."""
    config = results.get("config_general") or {}
    stamp = config.get("timestamp")
    moment = parse_stamp(stamp) if stamp else datetime.now(UTC)
    dataset = config.get("dataset") or {}
    return RunInfo(
        eval_name=eval_name,
        run_id=run_id or stamp or moment.strftime("%Y-%m-%dT%H-%M-%S.%f")[:-3] + "Z",
        run_timestamp=moment,
        model_name=config.get("model_name"),
        task=config.get("task"),
        dataset_sha256=dataset.get("sha256") if isinstance(dataset, dict) else None,
    )


# ---------------------------------------------------------------- eval_examples


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def parse_metadata(text: str | None) -> list[tuple[str, str]] | None:
    """A metadata string as map entries: a JSON object's keys with string values (other
    JSON values JSON-encoded); anything else is ``{"metadata": text}``; null stays null."""
    if text is None:
        return None
    try:
        parsed = json.loads(text)
    except ValueError:
        return [("metadata", text)]
    if isinstance(parsed, dict):
        return [(str(k), _value_text(v)) for k, v in parsed.items()]
    return [("metadata", text)]


def _array(column: pa.ChunkedArray) -> pa.Array:
    """The column as one array; one that already is one is not copied (combine_chunks
    copies even a single chunk)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def metadata_maps(metadata: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``parse_metadata`` over a column, each distinct string parsed once."""
    if isinstance(metadata, pa.ChunkedArray):
        metadata = _array(metadata)
    encoded = pc.dictionary_encode(metadata)
    parsed = [parse_metadata(text) for text in encoded.dictionary.to_pylist()]
    maps = pa.array(parsed, type=pa.map_(pa.string(), pa.string()))
    return maps.take(encoded.indices)


def _hash_input(columns: tuple[pa.Array, ...]) -> pa.Array:
    """What :func:`example_ids` hashes of each row, built column-wise: per column ``\\x01``
    and its UTF-8 text (``\\x00`` for null), then ``\\x1f``. Large types: a batch of long
    texts may pass 2 GiB once its columns are joined."""

    def byte(value: str) -> pa.Scalar:
        return pa.scalar(value, pa.large_string())

    parts: list[Any] = []
    for column in columns:
        text = column.cast(pa.large_string())
        marked = pc.binary_join_element_wise(byte("\x01"), text, byte(""))
        parts += [pc.if_else(text.is_null(), byte("\x00"), marked), byte("\x1f")]
    return pc.binary_join_element_wise(*parts, byte("")).cast(pa.large_binary())


def example_ids(*columns: pa.Array) -> pa.Array:
    """sha256 over the given string columns of each row (16 hex digits): the same example
    gets the same id in every run, so runs and models can be compared row by row."""
    sha256 = hashlib.sha256
    # the bytes are joined by Arrow; only the hashing itself is a Python call per row
    digests = [sha256(data).hexdigest()[:16] for data in _hash_input(columns).to_pylist()]
    return pa.array(digests, pa.string())


def mean_logprobs(token_logprobs: pa.Array) -> pa.Array:
    """Mean log probability of each row's generated tokens (null without tokens)."""
    n = len(token_logprobs)
    flat = pc.list_flatten(token_logprobs)
    if len(flat) == 0:
        return pa.nulls(n, pa.float64())
    parents = pc.list_parent_indices(token_logprobs).to_numpy()
    values = pc.struct_field(flat, "logprob").to_numpy(zero_copy_only=False)
    counts = np.bincount(parents, minlength=n)
    sums = np.bincount(parents, weights=values, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    return pa.array(means, pa.float64(), mask=counts == 0)


def _example_ids(column: Any, image_count: pa.Array) -> pa.Array:
    """example_ids of system, prompt and gold; a row with images also hashes its images'
    hashes, so the same text over other images is another example (text rows keep the
    ids they always had)."""
    texts = (column("system"), column("prompt"), column("gold"))
    ids = example_ids(*texts)
    if not pc.any(pc.greater(image_count, 0)).as_py():
        return ids
    images = column("image_sha256")
    # the hashes joined by ",", null for a row without images (an empty or null list)
    joined = pc.binary_join(images, ",")
    hashes = pc.if_else(pc.greater(pc.list_value_length(images), 0), joined, None)
    with_images = example_ids(*texts, hashes)
    return pc.if_else(pc.greater(image_count, 0), with_images, ids)


def to_eval_examples(batch: pa.RecordBatch | pa.Table, run: RunInfo) -> pa.Table:
    """One batch of examples.parquet as eval_examples rows (columns it lacks are null)."""
    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    table = table.combine_chunks()
    n = table.num_rows
    present = set(table.column_names)

    def column(name: str) -> pa.Array:
        type_ = EVAL_EXAMPLES.field(name).type
        if name in present:
            return _array(table[name]).cast(type_)
        return pa.nulls(n, type_)

    image_count = pc.fill_null(column("image_count"), 0)
    derived: dict[str, pa.Array] = {
        **run.columns(n),
        "example_id": _example_ids(column, image_count),
        "image_count": image_count,
        "metadata_map": (maps := metadata_maps(column("metadata"))),
        SUBTASK_FIELD: pc.map_lookup(maps, SUBTASK_FIELD, "first"),
        "mean_logprob": mean_logprobs(column("token_logprobs")),
    }
    arrays = [derived[f.name] if f.name in derived else column(f.name) for f in EVAL_EXAMPLES]
    return pa.Table.from_arrays(arrays, schema=EVAL_EXAMPLES)


def examples_batches(
    examples_location: str, run: RunInfo, batch_rows: int | None = None
) -> Iterator[pa.Table]:
    """examples.parquet as eval_examples rows, in record batches of ``batch_rows`` rows
    (default :func:`storage.batch_rows`). Batches are read and transformed in a background
    thread, one ahead, while the caller writes the previous one: Parquet decoding and
    encoding release the GIL, so the two overlap."""
    size = storage.batch_rows() if batch_rows is None else batch_rows
    batches = storage.iter_parquet_batches(examples_location, batch_size=size)
    yield from storage.prefetched(to_eval_examples(batch, run) for batch in batches)


# ---------------------------------------------------------------- eval_metrics


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def flatten_numbers(section: Mapping[str, Any], prefix: str = "") -> dict[str, float | None]:
    """Numeric leaves of a results section; nested objects become dotted names."""
    out: dict[str, float | None] = {}
    for key, value in section.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_numbers(value, f"{name}."))
        elif value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
            out[name] = _finite(value)
    return out


def metric_kind(name: str, task: str | None, custom_aggregation: str) -> tuple[str, str]:
    """(aggregation, source) of a metric in the results JSON."""
    benchmark = benchmark_task(task) if task else None
    if benchmark is not None and name in benchmark.metric_names:
        return "mean", benchmark.name
    if is_judge_task(task) or name in JUDGE_AGGREGATIONS:
        return JUDGE_AGGREGATIONS.get(name, "mean"), "judge"
    if name == "bleu":
        return "corpus", "gen_qa"
    if name in PER_EXAMPLE_METRICS:
        return "mean", "gen_qa"
    aggregation = {"average": "mean"}.get(custom_aggregation, custom_aggregation)
    return aggregation, "custom"


def overall_metric_rows(
    results: Mapping[str, Any], custom_aggregation: str = "average"
) -> list[dict[str, Any]]:
    """The results JSON's ``all`` metrics and, for a benchmark, each subtask's (stratum
    ``subtask=<name>``: the results' own per-subtask values)."""
    config = results.get("config_general") or {}
    sections = results.get("results") or {}
    n = config.get("num_scored", config.get("num_prompts", config.get("num_examples")))
    rows = _section_rows(sections.get("all") or {}, config, custom_aggregation, n, None)
    subtask_rows = config.get("subtask_rows") or {}
    for key, section in sections.items():
        subtask = subtask_of_key(key)
        if subtask is not None:
            count = subtask_rows.get(subtask)
            rows += _section_rows(section, config, custom_aggregation, count, subtask)
    return rows


def _section_rows(
    section: Mapping[str, Any],
    config: Mapping[str, Any],
    custom_aggregation: str,
    n: int | None,
    subtask: str | None,
) -> list[dict[str, Any]]:
    numbers = flatten_numbers(section)
    rows = []
    for name, value in numbers.items():
        if name.endswith("_stderr"):
            continue
        aggregation, source = metric_kind(name, config.get("task"), custom_aggregation)
        rows.append(
            {
                "metric": name,
                "value": value,
                "stderr": numbers.get(f"{name}_stderr"),
                "aggregation": aggregation,
                "stratum": "all" if subtask is None else f"{SUBTASK_FIELD}={subtask}",
                "stratum_field": None if subtask is None else SUBTASK_FIELD,
                "stratum_value": subtask,
                "num_examples": n,
                "source": source,
            }
        )
    return rows


def _aggregate(values: np.ndarray, aggregation: str) -> tuple[float | None, float | None]:
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return None, None
    if aggregation == "mean":
        mean, stderr = mean_and_stderr(values)
        return _finite(mean), _finite(stderr)
    reducer = {"min": np.min, "max": np.max, "sum": np.sum}[aggregation]
    return float(reducer(values)), None


_METADATA_ENTRY = pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())]))


class _FieldCodes:
    """One metadata field over the examples: its distinct values (every row's) and, per
    batch, the code of each scored row's value (-1: the row lacks the field), until it has
    more distinct values than are stratified."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.chunks: dict[int, np.ndarray] = {}
        self.too_many = False

    def add(
        self, batch: int, rows: np.ndarray, values: pa.Array, scored_size: int, limit: int
    ) -> None:
        """``values[i]`` is the field's value in the row at position ``rows[i]`` among the
        batch's scored rows (-1: not scored)."""
        encoded = pc.dictionary_encode(values)
        local = [
            self.values.setdefault(v, len(self.values)) for v in encoded.dictionary.to_pylist()
        ]
        if len(self.values) > limit:
            self.too_many = True
            self.chunks.clear()
            return
        keep = rows >= 0
        codes = self.chunks.setdefault(batch, np.full(scored_size, -1, dtype=np.int32))
        picked = encoded.indices.to_numpy(zero_copy_only=False)[keep]
        codes[rows[keep]] = np.asarray(local, dtype=np.int32)[picked]

    def codes(self, sizes: list[int]) -> np.ndarray:
        parts = [self.chunks.get(b, np.full(size, -1, np.int32)) for b, size in enumerate(sizes)]
        return np.concatenate(parts) if parts else np.zeros(0, np.int32)


def _add_metadata(
    fields: dict[str, _FieldCodes],
    batch: int,
    metadata: pa.Array,
    scored: np.ndarray,
    limit: int,
) -> None:
    """Every metadata field of one batch into ``fields`` (see :class:`_FieldCodes`)."""
    entries = metadata_maps(metadata).cast(_METADATA_ENTRY)
    flat = pc.list_flatten(entries)
    if len(flat) == 0:
        return
    parents = pc.list_parent_indices(entries).to_numpy(zero_copy_only=False)
    position = np.where(scored, np.cumsum(scored) - 1, -1)  # among the batch's scored rows
    keys = pc.dictionary_encode(pc.struct_field(flat, "key"))
    key_codes = keys.indices.to_numpy(zero_copy_only=False)
    values = pc.struct_field(flat, "value")
    scored_size = int(scored.sum())
    for code, name in enumerate(keys.dictionary.to_pylist()):
        field = fields.setdefault(name, _FieldCodes())
        if field.too_many:
            continue
        pick = key_codes == code
        rows, picked = position[parents[pick]], values.filter(pa.array(pick))
        field.add(batch, rows, picked, scored_size, limit)


def stratum_metric_rows(
    examples: str | pa.Table,
    custom_aggregation: str = "average",
    max_values: int = MAX_STRATUM_VALUES,
    skip_subtask: bool = False,
) -> list[dict[str, Any]]:
    """Every metric by every metadata field with 2..``max_values`` distinct values.

    Columns used: ``metadata``, ``scored``, ``metrics`` and (for corpus BLEU) ``bleu_stats``
    of examples.parquet (or a table), read in record batches of :func:`storage.batch_rows`
    rows: of each scored row only its metric values, BLEU statistics and a code per
    metadata field are kept, and a field is dropped once it has too many distinct values.
    Per-example metrics are averaged (custom metrics use the recipe's aggregation), BLEU is
    the corpus BLEU of the stratum with its bootstrap stderr (the strata's bootstraps run
    side by side, see :func:`corpus_bleu_by_subset`); rows not scored are left out.
    """
    names: dict[str, None] = {}  # every row's metrics, in first-seen order
    # the scored rows' metric values and BLEU statistics, filled in place (never per-batch
    # parts beside their concatenation); at most every row is scored
    capacity = row_count(examples)
    scored_values, scored_stats = FilledColumns(capacity), FilledColumns(capacity)
    sizes: list[int] = []  # scored rows per batch
    fields: dict[str, _FieldCodes] = {}
    longest_stats = 0
    columns = ["metadata", "scored", "metrics", "bleu_stats"]
    for number, batch in enumerate(iter_batches(examples, columns, storage.batch_rows())):
        present = batch.schema.names
        if "metrics" not in present:
            return []
        scored = pc.fill_null(batch.column("scored"), False)
        keys, _ = map_entries(batch.column("metrics"))
        names.update(dict.fromkeys(keys.dictionary.to_pylist()))
        start = sum(sizes)
        for name, column in metric_columns(batch.column("metrics").filter(scored)).items():
            scored_values.put(name, start, column, missing=np.nan)  # NaN: batches without
        sizes.append(int(pc.sum(scored).as_py() or 0))
        if "bleu_stats" in present:
            lengths = pc.list_value_length(batch.column("bleu_stats"))
            longest_stats = max(longest_stats, pc.max(lengths).as_py() or 0)
            scored_stats.put(
                "stats", start, stats_matrix(batch.column("bleu_stats").filter(scored))
            )
        scored_rows = scored.to_numpy(zero_copy_only=False)
        _add_metadata(fields, number, batch.column("metadata"), scored_rows, max_values)
    total = sum(sizes)
    values = {
        name: scored_values.get(name, total) if name in scored_values else np.full(total, np.nan)
        for name in names
    }
    stats = scored_stats.get("stats", total) if longest_stats > 0 else None
    complete = ~np.isnan(stats).any(axis=1) if stats is not None else None
    rows: list[dict[str, Any]] = []
    bleu_rows: list[tuple[int, np.ndarray]] = []  # (position in rows, its examples)
    for field_name in sorted(fields):
        field = fields[field_name]
        if field.too_many or not 2 <= len(field.values) <= max_values:
            continue
        if field_name == SUBTASK_FIELD and skip_subtask:
            continue  # a benchmark's results hold its subtasks' values (overall_metric_rows)
        codes = field.codes(sizes)
        for value in sorted(field.values):
            mask = codes == field.values[value]
            count = int(mask.sum())
            common = {
                "stratum": f"{field_name}={value}",
                "stratum_field": field_name,
                "stratum_value": value,
                "num_examples": count,
            }
            for name in names:
                aggregation, source = metric_kind(name, "gen_qa", custom_aggregation)
                mean, stderr = _aggregate(values[name][mask], aggregation)
                rows.append(
                    {"metric": name, "value": mean, "stderr": stderr, **common}
                    | {"aggregation": aggregation, "source": source}
                )
            if complete is not None:
                with_stats = mask & complete
                if with_stats.any():  # value and stderr filled in below, all strata at once
                    bleu_rows.append((len(rows), with_stats))
                    rows.append(
                        {"metric": "bleu", "value": None, "stderr": None, **common}
                        | {"aggregation": "corpus", "source": "gen_qa"}
                    )
    if stats is not None and bleu_rows:
        results = corpus_bleu_by_subset(stats, [subset for _, subset in bleu_rows])
        for (position, _), (value, stderr) in zip(bleu_rows, results, strict=True):
            rows[position].update(value=value, stderr=stderr)
    return rows


def _blas_on_one_thread() -> AbstractContextManager[Any]:
    """BLAS (the bootstrap's count-matrix products) on one thread while the bootstraps run
    on several: OpenBLAS's own threads would compete with them for the CPUs and spin while
    waiting (about 15 % more time at a million rows on 2 CPUs). Results are the same."""
    return threadpool_limits(limits=1, user_api="blas")


def _corpus_bleu(stats: np.ndarray) -> tuple[float | None, float | None]:
    """Corpus BLEU of per-example statistics and its bootstrap stderr, as
    :func:`aggregate_gen_qa` computes them (same rounds and seed)."""
    bleu = bleu_from_stats(stats.sum(axis=0))
    stderr = bootstrap_bleu_stderr(stats)
    return _finite(bleu), _finite(stderr)


def corpus_bleu_by_subset(
    stats: np.ndarray, subsets: list[np.ndarray], workers: int | None = None
) -> list[tuple[float | None, float | None]]:
    """:func:`_corpus_bleu` of ``stats[subset]`` for each row mask in ``subsets``.

    The seeded bootstrap (a multinomial draw per round and example) is nearly all of the
    time of the tables, and numpy draws it without the GIL: the subsets run on ``workers``
    threads (default: one per CPU, at most :data:`BOOTSTRAP_WORKERS`), largest first so the
    last to finish is a small one. Each holds its subset's rows and one chunk of counts
    (metrics.stats) at a time; a subset's rows are copied out only when its
    turn comes. The results are those of one bootstrap after the other.
    """
    if not subsets:
        return []
    workers = max(1, min(workers or min(available_cores(), BOOTSTRAP_WORKERS), len(subsets)))
    sizes = [int(subset.sum()) for subset in subsets]
    order = sorted(range(len(subsets)), key=lambda i: -sizes[i])
    with (
        _blas_on_one_thread() if workers > 1 else nullcontext(),
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stratum-bleu") as pool,
    ):
        futures = {i: pool.submit(lambda m: _corpus_bleu(stats[m]), subsets[i]) for i in order}
        return [futures[i].result() for i in range(len(subsets))]


def metrics_table(run: RunInfo, rows: list[dict[str, Any]]) -> pa.Table:
    n = len(rows)
    data = {**run.columns(n)}
    for field in EVAL_METRICS:
        if field.name not in data:
            data[field.name] = pa.array([r.get(field.name) for r in rows], field.type)
    return pa.table(data, schema=EVAL_METRICS)


# ---------------------------------------------------------------- judge tables

_JUDGMENT_ALIASES = {
    "response_A": "response_a",
    "response_B": "response_b",
    "prompt_index": "row_index",
}
# per-pass columns of a wide judgments table (judge.pairwise.JUDGMENTS_SCHEMA), renamed
_PASS_ALIASES = {"raw": "raw_output", "preference": "outcome", "soft_b": "preference_b"}
_OUTCOMES = {"error": "inference_error"}
_PASSES = ("forward", "backward")


def _long_judgments(table: pa.Table) -> pa.Table:
    """A table with one row per prompt and ``forward_*`` / ``backward_*`` columns (as the
    judge writes it) becomes one row per pass, the pass's own columns without the prefix
    (its mapped-back ``preference`` is the judgment's ``outcome``); a table that already
    has a ``pass`` column is returned as it is."""
    if "pass" in table.column_names:
        return table
    names = table.column_names
    per_pass = {n for n in names for p in _PASSES if n.startswith(f"{p}_")}
    if not per_pass:
        return table.append_column("pass", pa.repeat(pa.scalar("forward"), table.num_rows))
    # the prompt-level outcome combines both passes; each row gets its own pass's
    shared = [n for n in names if n not in per_pass and n != "outcome"]
    parts = []
    for which in _PASSES:
        part = table.select(shared)
        for name in names:
            if name.startswith(f"{which}_"):
                short = name[len(which) + 1 :]
                part = part.append_column(_PASS_ALIASES.get(short, short), table[name])
        parts.append(part.append_column("pass", pa.repeat(pa.scalar(which), table.num_rows)))
    return pa.concat_tables(parts, promote_options="permissive")


def to_judge_judgments(
    table: pa.Table, run: RunInfo, extra: Mapping[str, Any] | None = None
) -> pa.Table:
    """A judge's judgments table as judge_judgments rows, one per pass. Columns are matched
    by name (``response_A`` / ``response_B`` as in the dataset are accepted, and a wide
    table with ``forward_*`` / ``backward_*`` columns is split into its passes); ``extra``
    gives values for columns the table lacks (``judge_model``, ``baseline``, ``challenger``).
    """
    table = table.rename_columns([_JUDGMENT_ALIASES.get(n, n) for n in table.column_names])
    table = _long_judgments(table).combine_chunks()
    n = table.num_rows
    extra = dict(extra or {})

    def column(name: str) -> pa.Array:
        type_ = JUDGE_JUDGMENTS.field(name).type
        given = table[name] if name in table.column_names else None
        if given is not None and (name not in extra or given.null_count < n):
            return _array(given).cast(type_)
        if name in extra:
            return pa.repeat(pa.scalar(extra[name], type_), n)
        if name == "row_index":
            return pa.array(np.arange(n), pa.int64())
        return pa.nulls(n, type_)

    outcomes = column("outcome")
    for given, renamed in _OUTCOMES.items():
        outcomes = pc.if_else(pc.equal(outcomes, given), renamed, outcomes)
    derived: dict[str, pa.Array] = {**run.columns(n), "outcome": outcomes}
    if "example_id" not in table.column_names:
        derived["example_id"] = example_ids(
            column("prompt"), column("response_a"), column("response_b")
        )
    if "metadata_map" not in table.column_names:
        derived["metadata_map"] = metadata_maps(column("metadata"))
    arrays = [derived[f.name] if f.name in derived else column(f.name) for f in JUDGE_JUDGMENTS]
    return pa.Table.from_arrays(arrays, schema=JUDGE_JUDGMENTS)


# judge diagnostics (judge.bradley_terry.position_bias) under their table column names
JUDGE_DIAGNOSTICS = {
    "flip_rate": "flip_rate",
    "first_position_win_rate": "first_position_winrate",
    "length_bias": "longer_answer_winrate",
    "prompts": "num_prompts",
    "judgments": "num_judgments",
}


def judge_summary_table(
    run: RunInfo, summary: Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> pa.Table:
    """One judge_summary row from Nova's summary keys (``a_scores``, ..., ``winrate``) and
    any diagnostics of the same names; ``extra`` fills judge_model, baseline, challenger."""
    values = {**flatten_numbers(summary), **dict(extra or {})}
    # the rubric's keys are Nova's mixed case (weighted_score_A); the columns lowercase
    values.update({k.lower(): v for k, v in values.items() if k.lower() not in values})
    data = {**run.columns(1)}
    for field in JUDGE_SUMMARY:
        if field.name not in data:
            value = values.get(field.name)
            if pa.types.is_integer(field.type) and value is not None:
                value = int(value)
            data[field.name] = pa.array([value], field.type)
    return pa.table(data, schema=JUDGE_SUMMARY)


def to_judge_criteria(
    table: pa.Table, run: RunInfo, extra: Mapping[str, Any] | None = None
) -> pa.Table:
    """A rubric judge's judgments table (``forward_criteria`` / ``backward_criteria`` lists,
    judge.rubric) as judge_criteria rows: one per criterion per pass, with the prompt's
    identity, the pass's verdict and metadata; ``extra`` fills judge_model, baseline and
    challenger where the table lacks them."""
    extra = dict(extra or {})
    n = table.num_rows
    text = {
        name: _array(table[name]) if name in table.column_names else pa.nulls(n, pa.string())
        for name in ("prompt", "response_A", "response_B", "metadata")
    }
    ids = example_ids(text["prompt"], text["response_A"], text["response_B"])
    maps = metadata_maps(text["metadata"])
    parts = []
    for which in _PASSES:
        lists = _array(table[f"{which}_criteria"])
        flat = pc.list_flatten(lists)
        rows = pc.list_parent_indices(lists)
        count = len(flat)

        def shared(name: str, rows: pa.Array = rows, count: int = count) -> pa.Array:
            type_ = JUDGE_CRITERIA.field(name).type
            if name in table.column_names and table[name].null_count < n:
                return _array(table[name]).cast(type_).take(rows)
            if name in extra:
                return pa.repeat(pa.scalar(extra[name], type_), count)
            return pa.nulls(count, type_)

        outcome = _array(table[f"{which}_preference"]).take(rows)
        for given, renamed in _OUTCOMES.items():
            outcome = pc.if_else(pc.equal(outcome, given), renamed, outcome)
        columns: dict[str, pa.Array] = {
            **run.columns(count),
            "row_index": _array(table["row_index"]).cast(pa.int64()).take(rows),
            "example_id": ids.take(rows),
            "pass": pa.repeat(pa.scalar(which), count),
            "criterion": pc.struct_field(flat, "name"),
            "judgment_outcome": outcome,
            "metadata": text["metadata"].take(rows),
            "metadata_map": maps.take(rows),
        }
        for field in JUDGE_CRITERIA:
            if field.name in columns:
                continue
            if field.name in flat.type.names:
                columns[field.name] = pc.struct_field(flat, field.name).cast(field.type)
            else:
                columns[field.name] = shared(field.name)
        parts.append(
            pa.Table.from_arrays([columns[f.name] for f in JUDGE_CRITERIA], schema=JUDGE_CRITERIA)
        )
    return pa.concat_tables(parts)
