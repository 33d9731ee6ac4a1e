"""What the pipeline stages do with a recipe's processor and classification settings.

Plain functions and classes over Arrow tables, record batches and row dicts, called by
:mod:`nova_eval_assets.stages`:

- :class:`Preprocessing` (``preprocessed_prompts``, batch by batch): each row's ``system``,
  ``prompt`` and ``gold`` are replaced by the preprocessor's answer, so inference sees, and every
  output records, the rewritten text. A row whose call fails keeps its original text, gets
  ``preprocess_error``, is still generated (so batching, and hence results, do not depend
  on which rows failed or on the replica count), and is left out of every metric.
- :class:`ReplicaExtras` (``postprocessed_metrics``, per replica, batch by batch): the
  postprocessor's metrics for every scored row (``custom_metrics``, merged into
  ``metrics``), or its ``postprocess_error``; and the classification columns
  (``gold_label``, ``predicted_label``, ``label_valid``, ``label_problem``).
- :class:`ExtrasTally`, then :func:`processor_section`, :func:`custom_aggregates`,
  :func:`classification_section` (``aggregated_report``): counts, timings and aggregates
  for the results JSON, gathered batch by batch.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from nova_eval_assets import resume
from nova_eval_assets.byom.rewards import RewardFunction, RewardOutcome, reward_sample
from nova_eval_assets.byom.runner import CallResult, ProcessorRunner, check_error_rate
from nova_eval_assets.metrics.classification import LabelCounts, extract_label
from nova_eval_assets.metrics.custom import aggregate_custom
from nova_eval_assets.metrics.gather import MetricValues, map_entries
from nova_eval_assets.metrics.gen_qa import PER_EXAMPLE_METRICS
from nova_eval_assets.recipe import LoadedRecipe

MAX_LISTED_ERRORS = 10


def runner_for(loaded: LoadedRecipe) -> ProcessorRunner:
    config = loaded.recipe.active_processor
    assert config is not None
    return ProcessorRunner.from_config(config, loaded.path.parent)


def reward_function_for(loaded: LoadedRecipe) -> RewardFunction | None:
    """The recipe's reward function (rft_eval's rl_env, or a gen_qa processor of
    lambda_type rft, or a preset); None when it has none."""
    config = loaded.recipe.active_processor
    if config is None or not config.is_reward_function:
        return None
    if config.preset_reward_function is not None:
        return RewardFunction(preset=config.preset_reward_function)
    return RewardFunction(runner_for(loaded), batch_size=config.reward_batch_size)


def preprocessing_enabled(loaded: LoadedRecipe) -> bool:
    config = loaded.recipe.active_processor
    return bool(config and config.preprocessing.enabled)


def postprocessing_enabled(loaded: LoadedRecipe) -> bool:
    config = loaded.recipe.active_processor
    return bool(config and config.postprocessing.enabled)


def first_errors(
    row_indices: Sequence[int], errors: Sequence[str | None], limit: int = MAX_LISTED_ERRORS
) -> list[dict[str, Any]]:
    listed = [
        {"row_index": r, "error": e}
        for r, e in zip(row_indices, errors, strict=True)
        if e is not None
    ]
    return listed[:limit]


# ---------------------------------------------------------------- preprocessed_prompts


class Preprocessing:
    """The recipe's preprocessor applied batch by batch (one runner for every batch), and a
    summary of the calls over all of them.

    :meth:`apply` rewrites each row's ``system``, ``prompt`` and ``gold`` with the
    preprocessor's answer and fills the processor columns. Failed calls are recorded,
    never raised; the caller writes the rows, then applies the recipe's
    ``max_error_rate`` with :func:`check_preprocess_rate`.
    """

    def __init__(self, loaded: LoadedRecipe):
        self.runner = runner_for(loaded) if preprocessing_enabled(loaded) else None
        self.errors = 0
        self.wall_seconds = 0.0
        self.call_seconds = 0.0
        self.first_errors: list[dict[str, Any]] = []

    def apply(self, prompts: pa.Table) -> pa.Table:
        if self.runner is None:
            return prompts
        rows = prompts.select(["system", "prompt", "gold"]).to_pylist()
        started = time.perf_counter()
        results = self.runner.preprocess(rows)
        self.wall_seconds += time.perf_counter() - started
        columns = {name: prompts[name].to_pylist() for name in ("system", "prompt", "gold")}
        for i, result in enumerate(results):
            if result.ok:
                for name in ("system", "prompt", "gold"):
                    columns[name][i] = result.body[name]
        errors = [r.error for r in results]
        table = prompts
        for name, values in (
            *columns.items(),
            ("preprocess_error", errors),
            ("preprocess_seconds", [r.seconds for r in results]),
        ):
            index = table.schema.get_field_index(name)
            field = table.schema.field(index)
            table = table.set_column(index, field, pa.array(values, type=field.type))
        self.errors += sum(e is not None for e in errors)
        self.call_seconds += sum(r.seconds for r in results)
        if len(self.first_errors) < MAX_LISTED_ERRORS:
            listed = first_errors(prompts["row_index"].to_pylist(), errors)
            self.first_errors = (self.first_errors + listed)[:MAX_LISTED_ERRORS]
        return table

    def summary(self) -> dict[str, Any]:
        """Counts and timings over every batch (empty when preprocessing is off)."""
        if self.runner is None:
            return {}
        return {
            "processor": self.runner.target,
            "preprocess_errors": self.errors,
            "preprocess_seconds": round(self.wall_seconds, 4),
            "preprocess_call_seconds": round(self.call_seconds, 4),
            "preprocess_first_errors": self.first_errors,
        }


def check_preprocess_rate(loaded: LoadedRecipe, summary: dict[str, Any], rows: int) -> None:
    if summary:
        check_error_rate(
            "preprocessing",
            summary["preprocess_errors"],
            rows,
            loaded.recipe.active_processor.max_error_rate,  # type: ignore[union-attr]
        )


# ---------------------------------------------------------------- postprocessed_metrics


def _custom_metrics(
    result: CallResult, builtin: Iterable[str]
) -> tuple[list[tuple[str, float]], str | None]:
    """The answer's metrics as (name, value) pairs, or an error for a clashing name."""
    taken = set(builtin)
    pairs = []
    for item in result.body:
        name = item["metric"]
        if name in taken or name.endswith("_stderr"):
            return [], (
                f"malformed answer: custom metric {name!r} clashes with a built-in metric "
                "or a _stderr key; rename it"
            )
        pairs.append((name, float(item["value"])))
    return pairs, None


_REWARD_COLUMNS = ("custom_metrics", "postprocess_error", "postprocess_seconds")
_REWARD_CHECKPOINT = pa.schema(
    [
        pa.field("row_index", pa.int64()),
        pa.field("custom_metrics", pa.map_(pa.string(), pa.float64())),
        pa.field("postprocess_error", pa.string()),
        pa.field("postprocess_seconds", pa.float64()),
    ]
)


def _metadata_of(row: dict[str, Any]) -> dict[str, Any]:
    try:
        parsed = json.loads(row.get("metadata") or "{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _sample_id(row: dict[str, Any], metadata: dict[str, Any], from_dataset: bool) -> str:
    """The id the reward function sees: an rft_eval line's own ``id``, else the row's
    index."""
    if from_dataset and "id" in metadata:
        return str(metadata["id"])
    return str(row["row_index"])


#: a scored row's built-in metric names, which custom metrics must not take
BUILTIN_METRICS = (*PER_EXAMPLE_METRICS, "bleu")


class ReplicaExtras:
    """The processor and classification columns of one replica, scored batch by batch, and
    the postprocessing summary over every batch (:meth:`summary`)."""

    def __init__(self, loaded: LoadedRecipe, checkpoints: resume.BlockCheckpoints | None = None):
        self.loaded = loaded
        self.rewards = reward_function_for(loaded)
        self.runner = (
            runner_for(loaded) if self.rewards is None and postprocessing_enabled(loaded) else None
        )
        # a reward function's answers, saved per batch: a rerun after a crash does not call
        # it again for the batches it already scored
        self.checkpoints = checkpoints if self.rewards is not None else None
        self.postprocessed = 0
        self.errors = 0
        self.wall_seconds = 0.0
        self.call_seconds = 0.0
        self.first_errors: list[dict[str, Any]] = []

    def score(
        self, outputs: pa.RecordBatch, scored: Sequence[bool], batch_index: int = 0
    ) -> dict[str, list[Any]]:
        """Per-row processor and classification columns for one batch of the replica.

        ``outputs`` has the columns ``row_index``, ``prompt``, ``gold`` and ``prediction``
        (and ``system`` and ``metadata`` for a reward function); a row becomes a Python
        dict only for the processor (classification reads two columns: at a million rows
        the dicts cost more than the labels).
        """
        n = outputs.num_rows
        columns: dict[str, list[Any]] = {
            "custom_metrics": [[] for _ in range(n)],
            "postprocess_error": [None] * n,
            "postprocess_seconds": [None] * n,
            "gold_label": [None] * n,
            "predicted_label": [None] * n,
            "label_valid": [None] * n,
            "label_problem": [None] * n,
        }
        if self.runner is not None:
            self._postprocess(outputs.to_pylist(), scored, columns)
        if self.rewards is not None:
            self._reward(outputs, scored, columns, batch_index)
        config = self.loaded.recipe.classification
        if config is not None:
            golds = outputs.column("gold").to_pylist()
            predictions = outputs.column("prediction").to_pylist()
            for i, (gold_text, prediction) in enumerate(zip(golds, predictions, strict=True)):
                gold = extract_label(gold_text, config.label_field, "strict", config.labels)
                if not gold.valid:
                    columns["label_problem"][i] = f"gold_{gold.problem}"
                    continue
                columns["gold_label"][i] = gold.label
                if not scored[i]:
                    continue
                pred = extract_label(
                    prediction, config.label_field, config.json_mode, config.labels
                )
                columns["predicted_label"][i] = pred.label
                columns["label_valid"][i] = pred.valid
                columns["label_problem"][i] = pred.problem
        return columns

    def _reward(
        self,
        outputs: pa.RecordBatch,
        scored: Sequence[bool],
        columns: dict[str, list[Any]],
        batch_index: int,
    ) -> None:
        saved = None
        if self.checkpoints is not None:
            saved = self.checkpoints.load(batch_index, outputs.column("row_index"))
        if saved is not None:
            for name in _REWARD_COLUMNS:
                columns[name] = saved.column(name).to_pylist()
            columns["custom_metrics"] = [m or [] for m in columns["custom_metrics"]]
        else:
            assert self.rewards is not None
            rows = outputs.to_pylist()
            todo = [i for i in range(len(rows)) if scored[i]]
            started = time.perf_counter()
            reward_rft = self.loaded.recipe.evaluation.scored_by_rewards
            metadata = [_metadata_of(rows[i]) for i in todo]
            samples = [
                reward_sample(
                    _sample_id(rows[i], meta, reward_rft),
                    rows[i].get("system"),
                    rows[i]["prompt"],
                    rows[i]["prediction"] or "",
                    json.loads(rows[i]["gold"]) if reward_rft else rows[i]["gold"],
                )
                for i, meta in zip(todo, metadata, strict=True)
            ]
            outcomes: list[RewardOutcome] = self.rewards.score(samples, metadata)
            self.wall_seconds += time.perf_counter() - started
            for i, outcome in zip(todo, outcomes, strict=True):
                columns["custom_metrics"][i] = outcome.metrics
                columns["postprocess_error"][i] = outcome.error
                columns["postprocess_seconds"][i] = outcome.seconds
            if self.checkpoints is not None:
                self.checkpoints.save(
                    batch_index,
                    pa.table(
                        {
                            "row_index": outputs.column("row_index"),
                            **{name: columns[name] for name in _REWARD_COLUMNS},
                        },
                        schema=_REWARD_CHECKPOINT,
                    ),
                )
        self._count(outputs.column("row_index").to_pylist(), sum(map(bool, scored)), columns)

    def _postprocess(
        self,
        outputs: Sequence[dict[str, Any]],
        scored: Sequence[bool],
        columns: dict[str, list[Any]],
    ) -> None:
        assert self.runner is not None
        todo = [i for i in range(len(outputs)) if scored[i]]
        started = time.perf_counter()
        results = self.runner.postprocess(
            [
                {
                    "prompt": outputs[i]["prompt"],
                    "inference_output": outputs[i]["prediction"] or "",
                    "gold": outputs[i]["gold"],
                }
                for i in todo
            ]
        )
        self.wall_seconds += time.perf_counter() - started
        for i, result in zip(todo, results, strict=True):
            columns["postprocess_seconds"][i] = result.seconds
            if result.ok:
                pairs, error = _custom_metrics(result, BUILTIN_METRICS)
                columns["custom_metrics"][i] = pairs
                columns["postprocess_error"][i] = error
            else:
                columns["postprocess_error"][i] = result.error
        self._count([o["row_index"] for o in outputs], len(todo), columns)

    def _count(
        self, row_indices: Sequence[int], called: int, columns: dict[str, list[Any]]
    ) -> None:
        """One batch's calls, errors, call time and first errors, into the summary."""
        errors = columns["postprocess_error"]
        self.postprocessed += called
        self.errors += sum(e is not None for e in errors)
        self.call_seconds += sum(s or 0.0 for s in columns["postprocess_seconds"])
        self.first_errors += first_errors(
            row_indices, errors, MAX_LISTED_ERRORS - len(self.first_errors)
        )

    def summary(self) -> dict[str, Any]:
        """The postprocessing counts and timings of every batch (empty when it is off)."""
        if self.runner is None and self.rewards is None:
            return {}
        target = self.rewards.target if self.rewards is not None else self.runner.target  # type: ignore[union-attr]
        return {
            "processor": target,
            "postprocessed": self.postprocessed,
            "postprocess_errors": self.errors,
            "postprocess_seconds": round(self.wall_seconds, 4),
            "postprocess_call_seconds": round(self.call_seconds, 4),
            "postprocess_first_errors": self.first_errors,
        }


# ---------------------------------------------------------------- aggregated_report


_TIMINGS = ("preprocess_seconds", "postprocess_seconds", "latency_s")


class ExtrasTally:
    """The processor and classification columns of the joined examples, counted batch by
    batch: what :func:`processor_section`, :func:`custom_aggregates` and
    :func:`classification_section` report, without a Python object per row."""

    def __init__(self, loaded: LoadedRecipe):
        self.loaded = loaded
        self.rows = 0
        self.set_counts: Counter[str] = Counter()  # non-null values per column
        self.seconds = dict.fromkeys(_TIMINGS, 0.0)
        self.first_errors: list[dict[str, Any]] = []
        self.custom_names: dict[str, None] = {}  # every row's, in first-seen order
        self.custom = MetricValues()  # the scored rows' custom metrics
        self.labels = LabelCounts()
        self.gold_invalid = 0

    def add(self, batch: pa.RecordBatch) -> None:
        names = batch.schema.names
        self.rows += batch.num_rows
        for name in ("preprocess_error", "postprocess_error", "postprocess_seconds"):
            if name in names:
                self.set_counts[name] += batch.num_rows - batch.column(name).null_count
        for name in _TIMINGS:
            if name in names:
                self.seconds[name] += float(pc.sum(batch.column(name)).as_py() or 0.0)
        self._add_errors(batch)
        scored = pc.fill_null(batch.column("scored"), False)
        if "custom_metrics" in names:
            keys, _ = map_entries(batch.column("custom_metrics"))
            self.custom_names.update(dict.fromkeys(keys.dictionary.to_pylist()))
            self.custom.add(batch.column("custom_metrics").filter(scored))
        if self.loaded.recipe.classification is not None:
            self._add_labels(batch.filter(scored))

    def _add_errors(self, batch: pa.RecordBatch) -> None:
        wanted = MAX_LISTED_ERRORS - len(self.first_errors)
        columns = [c for c in ("preprocess_error", "postprocess_error") if c in batch.schema.names]
        if wanted <= 0 or not columns:
            return
        failed = pc.is_valid(batch.column(columns[0]))
        for column in columns[1:]:
            failed = pc.or_(failed, pc.is_valid(batch.column(column)))
        rows = batch.filter(failed).slice(0, wanted).select(["row_index", *columns]).to_pylist()
        listed = [
            {"row_index": r["row_index"], "stage": stage, "error": r[f"{stage}_error"]}
            for r in rows
            for stage in ("preprocess", "postprocess")
            if r.get(f"{stage}_error") is not None
        ]
        self.first_errors += listed[:wanted]

    def _add_labels(self, scored: pa.RecordBatch) -> None:
        has_gold = pc.is_valid(scored.column("gold_label"))
        self.gold_invalid += scored.num_rows - int(pc.sum(has_gold).as_py() or 0)
        considered = scored.filter(has_gold)
        valid = pc.fill_null(considered.column("label_valid"), False)
        predicted = considered.column("predicted_label")
        self.labels.add(
            considered.column("gold_label").to_pylist(),
            pc.if_else(valid, predicted, pa.scalar(None, predicted.type)).to_pylist(),
            considered.column("label_problem").to_pylist(),
        )


def custom_aggregates(loaded: LoadedRecipe, tally: ExtrasTally) -> dict[str, float]:
    """Custom metrics of the scored rows, aggregated with ``processor.aggregation``."""
    values = tally.custom.arrays()
    if not values:
        return {}
    config = loaded.recipe.active_processor
    aggregation = config.aggregation if config else "average"
    return aggregate_custom(values, aggregation)


def processor_section(loaded: LoadedRecipe, tally: ExtrasTally) -> dict[str, Any] | None:
    """The processor's configuration, error counts and timings over the whole run."""
    config = loaded.recipe.active_processor
    if config is None:
        return None
    pre_errors = tally.set_counts["preprocess_error"]
    post_errors = tally.set_counts["postprocess_error"]
    return {
        "target": config.lambda_arn or config.handler or config.preset_reward_function,
        "kind": "lambda"
        if config.lambda_arn
        else "preset"
        if config.preset_reward_function
        else "local",
        "reward_function": config.is_reward_function,
        "preprocessing": config.preprocessing.enabled,
        "postprocessing": config.postprocessing.enabled,
        "aggregation": config.aggregation,
        "max_error_rate": config.max_error_rate,
        "custom_metrics": list(tally.custom_names),
        "preprocessed": tally.rows if config.preprocessing.enabled else 0,
        "postprocessed": tally.set_counts["postprocess_seconds"],
        "preprocess_errors": pre_errors,
        "postprocess_errors": post_errors,
        "processor_errors": pre_errors + post_errors,
        "preprocess_seconds": round(tally.seconds["preprocess_seconds"], 4),
        "postprocess_seconds": round(tally.seconds["postprocess_seconds"], 4),
        "inference_seconds": round(tally.seconds["latency_s"], 4),
        "first_errors": tally.first_errors,
    }


def check_report_rate(loaded: LoadedRecipe, section: dict[str, Any] | None, rows: int) -> None:
    if section:
        check_error_rate(
            "processor",
            section["processor_errors"],
            rows,
            loaded.recipe.active_processor.max_error_rate,  # type: ignore[union-attr]
        )


def classification_section(loaded: LoadedRecipe, tally: ExtrasTally) -> dict[str, Any] | None:
    """The classification report over scored rows with a valid gold label."""
    config = loaded.recipe.classification
    if config is None:
        return None
    return {
        "label_field": config.label_field,
        "json_mode": config.json_mode,
        "gold_invalid": tally.gold_invalid,
        **tally.labels.report(labels=config.labels),
    }


def reward_fingerprint(loaded: LoadedRecipe) -> str:
    """What a reward function's answers depend on beyond the rows: which function it is
    (and a local handler file's content), how it is called."""
    config = loaded.recipe.active_processor
    if config is None or not config.is_reward_function:
        return ""
    return json.dumps(
        [
            config.lambda_arn,
            config.handler,
            config.preset_reward_function,
            processor_fingerprint(loaded),
            config.reward_batch_size,
            loaded.recipe.evaluation.task,
        ]
    )


def processor_fingerprint(loaded: LoadedRecipe) -> str | None:
    """A content hash of a local handler file, so editing it changes the assets' code
    version (Dagster then marks the processed assets stale); None for other targets."""
    import hashlib

    config = loaded.recipe.active_processor
    if config is None or not config.handler:
        return None
    target = config.handler.rpartition(":")[0]
    if not (target.endswith(".py") or "/" in target or "\\" in target):
        return None
    from pathlib import Path

    path = Path(target)
    path = path if path.is_absolute() else loaded.path.parent / path
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return "missing"
