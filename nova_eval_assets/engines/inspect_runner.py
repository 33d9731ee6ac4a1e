"""An engine that runs Inspect AI tasks: each request is one of a task's samples.

The inference stage hands it a block of prompt rows as it hands any engine; it runs the
rows' Inspect task on those samples (``inspect_ai.eval`` of the task over a dataset of
those samples: the task's solver, then its scorers) with the recipe's model as an Inspect
provider
(engines/inspect_provider.py), or with Inspect's own provider where the recipe names one
(``evaluation.inspect_model``). Each row comes back as a :class:`Generation` (the final
answer, its tokens and usage) carrying its Inspect record: the scores reduced over epochs
and the EvalSample of each epoch (JSON), which the inference table keeps, so that resume by
block, replicas and the report work as for any task. A sample Inspect marks as errored is
the row's error; an eval that fails as a whole (the task's own code raised) stops the block
with Inspect's message.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from nova_eval_assets import storage
from nova_eval_assets.engines.base import (
    BLOCK_BATCHES,
    Engine,
    Generation,
    GenerationRequest,
    SamplingSettings,
    TokenLogprob,
)
from nova_eval_assets.engines.inspect_provider import (
    PROVIDER,
    STOP_REASONS,
    NovaEvalModelAPI,
)
from nova_eval_assets.layout import safe_name
from nova_eval_assets.tasks.inspect_task import (
    SAMPLE_ID_FIELD,
    TASK_FIELD,
    InspectBenchmark,
    sample_ids,
    task_by_name,
)

#: rows per batch when Inspect's own provider answers (no engine of ours to ask)
PROVIDER_BATCH = 8
#: Inspect's stop reasons as our finish reasons (any other: stop)
FINISH_REASONS = {stop: finish for finish, stop in STOP_REASONS.items()}


class InspectTaskError(RuntimeError):
    """An Inspect eval that failed as a whole: the task, and Inspect's message."""


def sample_rows(prompts: str) -> dict[int, tuple[str, str | int]]:
    """row_index -> (Inspect task, sample id), from the prompts table's metadata."""
    rows: dict[int, tuple[str, str | int]] = {}
    for batch in storage.iter_parquet_batches(prompts, ["row_index", "metadata"]):
        for row, metadata in zip(
            batch.column("row_index").to_pylist(), batch.column("metadata").to_pylist(), strict=True
        ):
            fields = json.loads(metadata or "{}")
            rows[row] = (fields[TASK_FIELD], fields[SAMPLE_ID_FIELD])
    return rows


class InspectTaskEngine:
    """The recipe's Inspect tasks over blocks of their samples (the :class:`Engine` shape)."""

    name = "inspect"

    def __init__(
        self,
        benchmark: InspectBenchmark,
        prompts: str,
        spec_dir: str,
        inner: Engine | None,
        inspect_model: str | None,
        settings: SamplingSettings,
        batch_size: int | None,
    ):
        self.benchmark, self.inner, self.spec_dir = benchmark, inner, spec_dir
        self.tasks = task_by_name(benchmark.specs, benchmark.args_json)
        self.rows = sample_rows(prompts)
        self.samples: dict[str, dict[str, Any]] = {}  # task -> sample id (text) -> Sample
        self.default_batch_size = inner.default_batch_size if inner else PROVIDER_BATCH
        batch = batch_size or self.default_batch_size
        if inner is not None:
            from inspect_ai.model import GenerateConfig, Model

            self.api = NovaEvalModelAPI(
                model_name=_model_name(inner),
                answering_engine=inner,
                settings=settings,
                batch_size=batch,
            )
            self.model: Any = Model(api=self.api, config=GenerateConfig())
            self.model_id = inner.model_id
            self.model_name = f"{PROVIDER}/{self.api.model_name}"
        else:
            from inspect_ai.model import get_model

            assert inspect_model is not None
            self.api = None
            self.model = get_model(inspect_model)
            self.model_id = f"inspect:{inspect_model}"
            self.model_name = inspect_model
        self.max_samples = max(batch * BLOCK_BATCHES, 8)

    def block_size(self, batch_size: int) -> int:
        if self.inner is not None:
            return self.inner.block_size(batch_size)
        return batch_size * BLOCK_BATCHES

    def runtime(self) -> dict[str, Any]:
        inner = getattr(self.inner, "runtime", None)
        return {
            "engine": "inspect",
            "model": self.model_name,
            "answering_engine": inner() if callable(inner) else None,
        }

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        settings: SamplingSettings,
        batch_size: int | None = None,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> list[Generation]:
        by_task: dict[str, list[GenerationRequest]] = {}
        for request in requests:
            by_task.setdefault(self.rows[request.row_index][0], []).append(request)
        answers: dict[int, Generation] = {}
        for task_name, rows in by_task.items():
            answers.update(self._run_task(task_name, rows))
            if on_batch is not None:
                on_batch(len(answers), len(requests))
        return [answers[request.row_index] for request in requests]

    def _run_task(self, task_name: str, rows: list[GenerationRequest]) -> dict[int, Generation]:
        ids = {str(self.rows[r.row_index][1]): r.row_index for r in rows}
        if self.api is not None:
            self.api.row_of = ids
        folder = tempfile.mkdtemp(prefix="inspect-block-")
        try:  # the log's samples are read from its file: gone with the folder
            began = time.perf_counter()
            log = self._eval(task_name, rows, folder)
            seconds = (time.perf_counter() - began) / max(len(ids), 1)
            return self._answers(task_name, ids, log, seconds)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _eval(self, task_name: str, rows: list[GenerationRequest], folder: str) -> Any:
        from inspect_ai import eval as inspect_eval

        (log,) = inspect_eval(
            self._block_task(task_name, [self.rows[r.row_index][1] for r in rows]),
            model=self.model,
            log_dir=folder,
            display="none",
            fail_on_error=False,
            max_samples=self.max_samples,
            score=True,
            # a block's log is read once and deleted: no live viewer buffer, one write
            log_realtime=False,
            log_buffer=max(len(rows), 1),
        )
        if log.status != "success" or log.samples is None:
            message = log.error.message if log.error is not None else log.status
            raise InspectTaskError(f"Inspect task {task_name}: {message}")
        self._keep_spec(task_name, log.eval)
        return log

    def _block_task(self, task_name: str, ids: list[str | int]) -> Any:
        """The task over these samples only (their ids kept): Inspect's own ``sample_id``
        filter matches every sample of the dataset against every id (fnmatch), a third of
        a block's time at a few thousand samples."""
        from inspect_ai.dataset import MemoryDataset

        task = self.tasks[task_name]
        if task_name not in self.samples:
            self.samples[task_name] = {
                str(sid): sample.model_copy(update={"id": sid})
                for sid, sample in zip(sample_ids(task), task.dataset, strict=True)
            }
        by_id = self.samples[task_name]
        block = copy.copy(task)  # name, registry information, solver, scorers, config
        block.dataset = MemoryDataset(
            [by_id[str(sid)] for sid in ids],
            name=task.dataset.name,
            location=task.dataset.location,
            shuffled=task.dataset.shuffled,
        )
        return block

    def _answers(
        self, task_name: str, ids: dict[str, int], log: Any, seconds: float
    ) -> dict[int, Generation]:
        """Each row's generation from the block's log; ``seconds``: a row's share of the
        block's time."""
        reduced: dict[str, dict[str, Any]] = {}
        for reduction in log.reductions or []:
            for score in reduction.samples:
                reduced.setdefault(str(score.sample_id), {})[reduction.scorer] = {
                    "value": score.value,
                    "answer": score.answer,
                    "explanation": score.explanation,
                }
        epochs: dict[str, list[Any]] = {}
        for sample in log.samples:
            epochs.setdefault(str(sample.id), []).append(sample)
        answers: dict[int, Generation] = {}
        for sample_id, row in ids.items():
            samples = sorted(epochs.get(sample_id, []), key=lambda s: s.epoch)
            answers[row] = _generation(row, task_name, sample_id, samples, reduced, seconds)
        return answers

    def _keep_spec(self, task_name: str, spec: Any) -> None:
        """The task's EvalSpec, once: the report's Inspect log of the task starts from it."""
        location = spec_location(self.spec_dir, task_name)
        if not storage.exists(location):
            storage.write_text(location, spec.model_dump_json(exclude_none=True))


def _model_name(engine: Engine) -> str:
    return str(getattr(engine, "model_name", None) or getattr(engine, "model", None) or "model")


def _generation(
    row: int,
    task_name: str,
    sample_id: str,
    samples: list[Any],
    reduced: dict[str, dict[str, Any]],
    seconds: float,
) -> Generation:
    if not samples:
        return Generation.failed(row, f"Inspect task {task_name} returned no sample {sample_id}")
    first = samples[0]
    output = first.output
    usage = output.usage
    record = {
        "task": task_name,
        "sample_id": sample_id,
        "scores": reduced.get(sample_id, {}),
        "samples": [s.model_dump(mode="json", exclude_none=True) for s in samples],
    }
    errors = [s.error.message for s in samples if s.error is not None]
    tokens: list[TokenLogprob] = []
    choice = output.choices[0] if output.choices else None
    if choice is not None and choice.logprobs is not None:
        tokens = [
            TokenLogprob(
                token=lp.token,
                logprob=lp.logprob,
                top=[(t.token, t.logprob) for t in lp.top_logprobs or []],
            )
            for lp in choice.logprobs.content
        ]
    stop = choice.stop_reason if choice is not None else "unknown"
    return Generation(
        row_index=row,
        text=output.completion,
        tokens=tokens,
        prompt_tokens=usage.input_tokens if usage else 0,
        completion_tokens=usage.output_tokens if usage else len(tokens),
        latency_s=seconds,
        finish_reason="error" if errors else FINISH_REASONS.get(stop, "stop"),
        error="; ".join(errors)[:2000] if errors and not record["scores"] else None,
        inspect_record=json.dumps(record, ensure_ascii=False, default=str),
    )


def spec_location(spec_dir: str, task_name: str) -> str:
    return storage.join(spec_dir, f"{safe_name(task_name)}.spec.json")


def read_spec(spec_dir: str, task_name: str) -> dict[str, Any] | None:
    location = spec_location(spec_dir, task_name)
    return json.loads(storage.read_bytes(location)) if storage.exists(location) else None
