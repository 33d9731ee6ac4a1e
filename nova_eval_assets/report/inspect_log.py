"""Inspect AI logs (``.eval``) of our evaluations, written through inspect_ai's own log API.

- :func:`write_inspect_log`: a log from a spec, a stream of samples (one at a time or in
  batches) and the aggregate results, written with inspect_ai's ``EvalRecorder`` as
  ``inspect_ai.log.write_eval_log`` writes one, its buffer written out every few hundred
  samples so that memory stays bounded by a batch (but for the recorder's sample summaries,
  a few KiB a sample, which it keeps for the log's index). The log appears under its name
  only once complete.
- :func:`examples_to_samples`: a record batch of our examples table (the inference columns,
  then the metrics columns: stages/report.py) as Inspect samples, one per row (a judge's
  judgments: judge/results.py, from the helpers here).
- :func:`recipe_eval_header`, :func:`eval_results`: the log's header from a recipe and its
  results JSON (report/results.py).
- :func:`write_examples_inspect_log`: all of it for a run's results JSON and examples table.

Mapping, per row: ``id`` = ``row_index``; ``input`` = the prompt, a string (``messages``:
the conversation, the system prompt first, if any, and the answer last); ``target`` =
``gold``;
``output`` = one choice holding the prediction (and the reasoning), its stop reason and
log probabilities; ``scores`` = one score named after the task whose value is the row's
``metrics`` (a dict: as Inspect has a scorer of several values), its answer the
prediction, its explanation ``score_note``; ``metadata`` = the row's metadata JSON with
``line`` and ``replica``; an inference error is the sample's error. The aggregates: one
EvalScore per metric with its ``value`` and ``stderr`` (the same metric names in every
score, so the viewer shows them as one table), each further results entry (a benchmark's
subtasks) as a metric group of the same score.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa
from inspect_ai._util.error import EvalError
from inspect_ai.log import (
    EvalConfig,
    EvalDataset,
    EvalMetric,
    EvalPlan,
    EvalPlanStep,
    EvalResults,
    EvalSample,
    EvalScore,
    EvalSpec,
    EvalStats,
)
from inspect_ai.log._condense import condense_sample
from inspect_ai.log._log import EvalStatus, HeadlineMetric
from inspect_ai.log._recorders.eval import EvalRecorder
from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessage,
    ChatMessageAssistant,
    ChatMessageSystem,
    ChatMessageUser,
    ContentReasoning,
    ContentText,
    GenerateConfig,
    Logprobs,
    ModelOutput,
    ModelUsage,
)
from inspect_ai.scorer import Score

from nova_eval_assets import storage
from nova_eval_assets.engines.base import SamplingSettings
from nova_eval_assets.engines.inspect_provider import STOP_REASONS, inspect_logprobs, token_usage
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import LoadedRecipe
from nova_eval_assets.tasks.base import subtask_of_key

#: run.inspect_log: auto writes the log for an evaluation of at most this many rows: the
#: viewer, and the log's zip of one member per sample, are not made for millions
INSPECT_LOG_AUTO_MAX_ROWS = 20_000
#: the recorder's buffer is written out (and its memory freed) every this many samples
SAMPLES_PER_WRITE = 256
#: rows of a table turned into samples at once: their objects are what the log holds in
#: memory (a sample with its token log probabilities is some tens of KiB of objects)
ROWS_PER_BATCH = 1_024
#: the metric names of every single-valued score (the viewer tabulates scores that share them)
VALUE, STDERR = "value", "stderr"
STDERR_SUFFIX = "_stderr"
_COPY_CHUNK = 8 << 20

# ---------------------------------------------------------------- the writer


def inspect_log_decision(setting: str | bool, rows: int) -> tuple[bool, str | None]:
    """Whether ``run.inspect_log`` (``auto``, true, false) writes the log of ``rows`` rows,
    and, when auto leaves it out, the warning that says how to ask for it."""
    if setting is True or setting is False:
        return setting, None
    if rows <= INSPECT_LOG_AUTO_MAX_ROWS:
        return True, None
    return False, (
        f"no Inspect log (.eval) written: {rows} rows is more than run.inspect_log: auto "
        f"writes ({INSPECT_LOG_AUTO_MAX_ROWS}); set run.inspect_log: true to write it anyway"
    )


def write_inspect_log(
    location: str,
    spec: EvalSpec,
    samples: Iterable[EvalSample] | Iterable[Sequence[EvalSample]],
    results: EvalResults | None,
    stats: EvalStats | None = None,
    status: EvalStatus = "success",
    plan: EvalPlan | None = None,
) -> str:
    """Write the Inspect log ``location`` (a ``.eval`` path or ``s3://`` URI) and return it.

    ``samples`` are EvalSamples, or lists of them (batches, read one at a time): memory
    holds a batch and :data:`SAMPLES_PER_WRITE` samples. Filled from the samples when left
    out: ``stats``' model usage (and ``stats`` itself), ``results``' total and completed
    counts and each score's scored / unscored samples (a score counts the samples that have
    a score under its scorer's name). The file appears under ``location`` only once
    complete: an error on the way leaves nothing there."""
    if storage.is_remote(location):
        with tempfile.TemporaryDirectory(prefix="inspect-log-") as folder:
            local = os.path.join(folder, Path(location).name)
            _run(_record, local, spec, samples, results, stats, status, plan)
            with open(local, "rb") as source, storage.atomic_output(location) as target:
                shutil.copyfileobj(source, target, _COPY_CHUNK)
        return location
    path = Path(location).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    # not *.eval: the viewer never lists a log being written
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        _run(_record, str(temp), spec, samples, results, stats, status, plan)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return str(path)


def _run(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` (a coroutine function) to completion on an event loop of its own:
    this thread's, or a worker thread's when this thread already runs one."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return anyio.run(function, *args)
    with ThreadPoolExecutor(1, thread_name_prefix="inspect-log") as worker:
        return worker.submit(anyio.run, function, *args).result()


async def _record(
    location: str,
    spec: EvalSpec,
    samples: Iterable[EvalSample] | Iterable[Sequence[EvalSample]],
    results: EvalResults | None,
    stats: EvalStats | None,
    status: EvalStatus,
    plan: EvalPlan | None,
) -> None:
    """What ``write_eval_log`` does (init, start, a sample at a time, finish), with the
    buffered samples written out every :data:`SAMPLES_PER_WRITE`; on an error the recorder
    discards what it wrote."""
    started_at = _iso_now()
    recorder = EvalRecorder(str(Path(location).parent))
    await recorder.log_init(spec, location, clean=True)
    tally = _SampleTally()
    try:
        await recorder.log_start(spec, plan or EvalPlan(config=spec.model_generate_config))
        for sample in _each_sample(samples):
            tally.add(sample)
            await recorder.log_sample(spec, _condensed(sample))
            if tally.samples % SAMPLES_PER_WRITE == 0:
                await _write_buffered(recorder, spec)
        stats = stats.model_copy() if stats is not None else EvalStats(started_at=started_at)
        stats.model_usage = stats.model_usage or tally.usage
        stats.completed_at = stats.completed_at or _iso_now()
        await recorder.log_finish(spec, status, stats, tally.complete(results), None)
    except BaseException:
        await recorder.log_discard(spec)
        raise


async def _write_buffered(recorder: EvalRecorder, spec: EvalSpec) -> None:
    """The samples buffered so far written into the log's zip (a local temporary file), so
    that memory holds at most SAMPLES_PER_WRITE of them. ``EvalRecorder.flush`` does this,
    then copies the whole zip to its destination: done that often it would copy the log
    hundreds of times (and the recorder's buffer is searched once per sample, so it must
    stay short); the one copy is ``log_finish``'s."""
    await recorder.data[recorder._log_file_key(spec)].write_buffered_samples()


def _condensed(sample: EvalSample) -> EvalSample:
    """``condense_sample`` (as ``write_eval_log`` does it) for a sample with events or
    attachments: it moves content repeated across events into attachments. A sample of
    ours has neither, and condensing it would cost as much as writing it."""
    return condense_sample(sample) if sample.events or sample.attachments else sample


def _each_sample(
    samples: Iterable[EvalSample] | Iterable[Sequence[EvalSample]],
) -> Iterator[EvalSample]:
    for item in samples:
        if isinstance(item, EvalSample):
            yield item
        else:
            yield from item


class _SampleTally:
    """What the header says of the samples, counted as they are written."""

    def __init__(self) -> None:
        self.samples = 0
        self.errors = 0
        # (scorer, score): a dict-valued score counts each of its keys
        self.scored: Counter[tuple[str, str]] = Counter()
        self.usage: dict[str, ModelUsage] = {}

    def add(self, sample: EvalSample) -> None:
        self.samples += 1
        self.errors += sample.error is not None
        for scorer, score in (sample.scores or {}).items():
            names = score.value if isinstance(score.value, Mapping) else (scorer,)
            self.scored.update((scorer, name) for name in names)
        for model, usage in sample.model_usage.items():
            self.usage[model] = self.usage[model] + usage if model in self.usage else usage

    def complete(self, results: EvalResults | None) -> EvalResults | None:
        if results is None:
            return None
        results = results.model_copy(deep=True)
        results.total_samples = results.total_samples or self.samples
        results.completed_samples = results.completed_samples or self.samples - self.errors
        for score in results.scores:
            if score.scored_samples is None:
                score.scored_samples = self.scored[score.scorer, score.name]
                score.unscored_samples = self.samples - score.scored_samples
        return results


def sample_batch_rows() -> int:
    """Rows turned into samples at once: :data:`ROWS_PER_BATCH`, or the pipeline's batch
    (:func:`storage.batch_rows`) when smaller."""
    return min(ROWS_PER_BATCH, storage.batch_rows())


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------- samples


def column_values(batch: pa.RecordBatch, name: str) -> list[Any]:
    """The column as Python values, or Nones when the table has no such column (files
    written before it was added)."""
    index = batch.schema.get_field_index(name)
    return batch.column(index).to_pylist() if index >= 0 else [None] * batch.num_rows


def sample_metadata(text: str | None, **ours: Any) -> dict[str, Any]:
    """The row's metadata JSON as a dict (text that is not a JSON object: under
    ``metadata``), after our own fields (a field of the row's own wins)."""
    row: Any = None
    if text:
        try:
            row = json.loads(text)
        except ValueError:
            row = text
    fields = {key: value for key, value in ours.items() if value is not None}
    if isinstance(row, dict):
        return {**fields, **row}
    return {**fields, "metadata": row} if row is not None else fields


def _logprobs(tokens: list[dict[str, Any]] | None) -> Logprobs | None:
    """A row's ``token_logprobs`` cell as Inspect's log probabilities."""
    return inspect_logprobs(
        (t["token"], t["logprob"], ((x["token"], x["logprob"]) for x in t.get("top") or ()))
        for t in tokens or ()
    )


def assistant_message(
    text: str, reasoning: str | None, model: str, **metadata: Any
) -> ChatMessageAssistant:
    content: str | list[Any] = text
    if reasoning:
        content = [ContentReasoning(reasoning=reasoning), ContentText(text=text)]
    return ChatMessageAssistant(
        content=content, model=model, source="generate", metadata=metadata or None
    )


def conversation(system: str | None, prompt: str) -> list[ChatMessage]:
    """The messages the model was given: the system prompt (if any) and the prompt. A
    sample's input is the prompt alone (a string: what its summary, which the recorder
    keeps for every sample, holds is then the least), as Inspect's ``system_message``
    solver has it, so the viewer's list shows each row's own prompt."""
    user = ChatMessageUser(content=prompt, source="input")
    return [ChatMessageSystem(content=system), user] if system else [user]


def eval_error(message: str) -> EvalError:
    return EvalError(message=message, traceback=message, traceback_ansi=message)


def examples_to_samples(
    batch: pa.RecordBatch, model: str, scorer: str = "metrics"
) -> list[EvalSample]:
    """Our examples table's rows (stages/report.py: the inference columns, then the metrics
    columns) as Inspect samples, their metrics the value of their score ``scorer`` (the
    task): see the module's docstring for what goes where."""
    rows = range(batch.num_rows)
    column = {name: column_values(batch, name) for name in _EXAMPLE_COLUMNS}
    samples = []
    for i in rows:
        prompt = column["prompt"][i] or ""
        messages = conversation(column["system"][i], prompt)
        finish = column["finish_reason"][i]
        latency = column["latency_s"][i]
        usage = token_usage(column["prompt_tokens"][i], column["completion_tokens"][i])
        answer = assistant_message(column["prediction"][i] or "", column["reasoning"][i], model)
        output = ModelOutput(
            model=model,
            choices=[
                ChatCompletionChoice(
                    message=answer,
                    stop_reason=STOP_REASONS.get(finish or "", "unknown"),
                    logprobs=_logprobs(column["token_logprobs"][i]),
                )
            ],
            usage=usage,
            time=latency,
        )
        failure = column["error"][i] or column["preprocess_error"][i]
        scores = None
        if failure is None and column["scored"][i]:
            score = Score(
                value=dict(column["metrics"][i] or []),
                answer=column["predicted_label"][i] or column["prediction"][i],
                explanation=column["score_note"][i],
            )
            scores = {scorer: score}
        metadata = sample_metadata(
            column["metadata"][i],
            line=column["line"][i],
            replica=column["replica"][i],
            finish_reason=finish,
            image_sha256=column["image_sha256"][i] or None,
            gold_label=column["gold_label"][i],
            label_problem=column["label_problem"][i],
            postprocess_error=column["postprocess_error"][i],
        )
        samples.append(
            EvalSample(
                id=column["row_index"][i],
                epoch=1,
                input=prompt,
                target=column["gold"][i] or "",
                messages=[*messages, answer],
                output=output,
                scores=scores,
                metadata=metadata,
                model_usage={model: usage},
                total_time=latency,
                working_time=latency,
                error=eval_error(failure) if failure is not None else None,
            )
        )
    return samples


_EXAMPLE_COLUMNS = (
    "row_index", "line", "system", "prompt", "gold", "metadata", "preprocess_error",
    "image_sha256", "replica", "prediction", "reasoning", "finish_reason", "error",
    "prompt_tokens", "completion_tokens", "latency_s", "token_logprobs", "scored", "metrics",
    "postprocess_error", "gold_label", "predicted_label", "label_problem", "score_note",
)  # fmt: skip


# ---------------------------------------------------------------- the header


def generate_config(settings: SamplingSettings) -> GenerateConfig:
    """Our sampling settings as Inspect's GenerateConfig, where they map (top_k -1 and
    top_logprobs 0 are off: unset)."""
    return GenerateConfig(
        max_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k if settings.top_k > 0 else None,
        seed=settings.seed,
        logprobs=settings.top_logprobs > 0 or None,
        top_logprobs=settings.top_logprobs or None,
        reasoning_effort=settings.reasoning_effort,  # type: ignore[arg-type]
    )


def _package_versions() -> dict[str, str]:
    found = {}
    for package in ("nova-eval", "inspect_ai"):
        with suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


def recipe_eval_header(
    loaded: LoadedRecipe,
    config_general: Mapping[str, Any],
    rows: int,
    settings: SamplingSettings,
    engine: Mapping[str, Any] | None = None,
) -> tuple[EvalSpec, EvalPlan, EvalStats]:
    """The log's spec, plan and stats from the recipe and its results JSON's
    ``config_general``: task = ``evaluation.task``, model = ``config_general.model_name``
    (the judge's model for a judge), the dataset, created = the results' timestamp,
    ``settings`` as the generate config, ``config_general`` itself as the spec's metadata;
    ``engine`` (what ran the model) as the plan's one step; the run's start and end (the
    results' timestamp, less the evaluation's time when known)."""
    created = datetime.strptime(config_general["timestamp"], "%Y-%m-%dT%H-%M-%S.%fZ")
    created = created.replace(tzinfo=UTC)
    seconds = config_general.get("total_evaluation_time_secondes")
    started = created - timedelta(seconds=seconds) if seconds is not None else created
    dataset = config_general.get("dataset") or {}
    location = dataset.get("path")
    config = generate_config(settings)
    recipe = loaded.recipe
    spec = EvalSpec(
        eval_id=uuid.uuid4().hex,
        run_id=uuid.uuid4().hex,
        created=created.isoformat(),
        task=recipe.evaluation.task,
        task_id=recipe.run.name,
        task_display_name=f"{recipe.run.name} ({recipe.evaluation.task})",
        task_args={"strategy": recipe.evaluation.strategy, "metric": recipe.evaluation.metric},
        dataset=EvalDataset(
            name=Path(location).stem if location else recipe.evaluation.task,
            location=location,
            samples=rows,
        ),
        model=config_general["model_name"],
        model_generate_config=config,
        config=EvalConfig(limit=recipe.run.limit),
        packages=_package_versions(),
        metadata=dict(config_general),
    )
    step = EvalPlanStep(solver="generate", params=dict(engine or {}))
    stats = EvalStats(started_at=started.isoformat(), completed_at=created.isoformat())
    return spec, EvalPlan(steps=[step], config=config), stats


def eval_results(
    results: Mapping[str, Mapping[str, float | None]],
    scorer: str,
    total_samples: int = 0,
    completed_samples: int = 0,
    families: Mapping[str, Sequence[str]] | None = None,
    headline: str | None = None,
) -> EvalResults:
    """EvalResults from our results JSON's ``results`` (``{key: {metric: value, ...}, "all":
    {...}}``) of the samples' score ``scorer``, whose value is a dict of metrics: as Inspect
    has a dict-valued scorer's results, one EvalScore per metric of ``all``, named after it,
    with metrics ``value`` and ``stderr`` (its ``<metric>_stderr``; the same names in every
    score, so the viewer shows them as one table). ``families`` names metrics that go
    together in one score (``{"winrate": ["winrate", "lower_rate", "upper_rate"]}``:
    metrics named as they are). Every other entry (a benchmark's subtasks, the task's
    pooled rows) adds the same metrics to each score, grouped under its subtask (or its
    key) unless it equals ``all``. A null value (nothing scored) is left out.
    ``headline``: the score that leads. The sample counts left 0 are counted by
    :func:`write_inspect_log`."""
    overall = results["all"]
    grouped = {name: list(members) for name, members in (families or {}).items()}
    in_family = {member for members in grouped.values() for member in members}
    others = [
        (subtask_of_key(key) or key, key, values)
        for key, values in results.items()
        if key != "all" and dict(values) != dict(overall)
    ]
    scores = []
    for name in _metric_names(overall):
        if name in in_family:
            continue
        metrics = _value_and_stderr(overall, name, None, "all")
        for group, key, values in others:
            metrics.update(_value_and_stderr(values, name, group, key))
        if metrics:
            scores.append(EvalScore(name=name, scorer=scorer, metrics=metrics))
    for name, members in grouped.items():
        metrics = {
            member: EvalMetric(name=member, value=overall[member])
            for member in members
            if overall.get(member) is not None
        }
        if metrics:
            scores.append(EvalScore(name=name, scorer=scorer, metrics=metrics))
    if headline is not None:
        scores.sort(key=lambda score: score.name != headline)
    return EvalResults(
        total_samples=total_samples,
        completed_samples=completed_samples,
        scores=scores,
        headline=HeadlineMetric(scorer=scorer, score=scores[0].name) if scores else None,
    )


def _metric_names(values: Mapping[str, Any]) -> list[str]:
    return [
        name
        for name in values
        if not (name.endswith(STDERR_SUFFIX) and name[: -len(STDERR_SUFFIX)] in values)
    ]


def _value_and_stderr(
    values: Mapping[str, float | None], name: str, group: str | None, key: str
) -> dict[str, EvalMetric]:
    prefix = f"{group}/" if group else ""
    metrics = {}
    for metric, value in ((VALUE, values.get(name)), (STDERR, values.get(name + STDERR_SUFFIX))):
        if value is not None:
            metrics[prefix + metric] = EvalMetric(
                name=metric, group=group, value=value, metadata={"results_key": key}
            )
    return metrics


# ---------------------------------------------------------------- a run's log


def write_examples_inspect_log(
    loaded: LoadedRecipe,
    document: Mapping[str, Any],
    examples: str,
    settings: SamplingSettings,
    headline: str | None = None,
) -> str:
    """The Inspect log of an evaluation whose results JSON is ``document`` and examples table
    ``examples`` (streamed, a record batch at a time), beside the results:
    :meth:`EvalLayout.inspect_log`. ``settings``: what the model was sampled with;
    ``headline``: the metric that leads (a benchmark's)."""
    config_general = document["config_general"]
    model = config_general["model_name"]
    spec, plan, stats = recipe_eval_header(
        loaded,
        config_general,
        storage.parquet_rows(examples),
        settings,
        config_general.get("inference_engine"),
    )
    present = set(storage.parquet_schema(examples).names)
    columns = [name for name in _EXAMPLE_COLUMNS if name in present]
    batches = (
        examples_to_samples(batch, model, loaded.recipe.evaluation.task)
        for batch in storage.iter_parquet_batches(examples, columns, sample_batch_rows())
    )
    results = eval_results(document["results"], loaded.recipe.evaluation.task, headline=headline)
    if "classification" in document:
        results.metadata = {"classification": document["classification"]}
    location = EvalLayout.for_recipe(loaded).inspect_log(
        config_general["timestamp"], loaded.recipe.evaluation.task
    )
    return write_inspect_log(location, spec, batches, results, stats, plan=plan)
