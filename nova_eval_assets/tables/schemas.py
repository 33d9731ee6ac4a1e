"""The Athena-ready tables: their Arrow schemas, partitioning and column comments.

Every table lives under ``<tables root>/<table>/`` in Hive layout::

    <table>/eval_name=<recipe>/run_date=<yyyy-mm-dd>/run_id=<run id>/part-00000.parquet

``eval_name`` and ``run_date`` are the table's partition columns (in the path only; Athena
projects them, see :mod:`nova_eval_assets.tables.ddl`). ``run_id`` is a folder of its own, so
one run's files can be replaced as a unit, and also a data column inside the files, so
queries can group by it without Athena having to project an open-ended set of values.

The schemas only ever gain nullable columns; readers union files by column name.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

# Partition columns: in the Hive path, not in the files. Athena projects both.
PARTITION_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("eval_name", pa.string()),
    ("run_date", pa.date32()),
)
RUN_ID = "run_id"

TOP_TOKEN = pa.struct([("token", pa.string()), ("logprob", pa.float64())])
TOKEN_LOGPROB = pa.struct(
    [
        ("token", pa.string()),
        ("logprob", pa.float64()),
        ("top", pa.list_(TOP_TOKEN)),
        ("constrained_logprob", pa.float64()),  # inference.response_format (else null)
        ("forced", pa.bool_()),
    ]
)
TIMESTAMP = pa.timestamp("ms")  # UTC, without a zone (Athena's timestamp)


def _f(name: str, type_: pa.DataType, comment: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"comment": comment})


# Columns every table starts with: which run a row belongs to.
RUN_COLUMNS = [
    _f(RUN_ID, pa.string(), "evaluation run; also the run_id=<id> folder", nullable=False),
    _f("run_timestamp", TIMESTAMP, "when the run's results were written (UTC)"),
    _f("model_name", pa.string(), "run.model_name_or_path of the recipe"),
    _f("task", pa.string(), "evaluation.task (gen_qa, llm_judge, mmlu, ...)"),
    _f("dataset_sha256", pa.string(), "sha256 of the dataset file"),
]

EVAL_EXAMPLES = pa.schema(
    [
        *RUN_COLUMNS,
        _f("row_index", pa.int64(), "0-based position among the dataset's valid rows", False),
        _f(
            "example_id",
            pa.string(),
            "sha256 of system, prompt, gold and any image hashes (first 16 hex digits)",
        ),
        _f("line", pa.int64(), "1-based line in the dataset file"),
        _f("replica", pa.int32(), "replica partition that generated the row"),
        _f("system", pa.string(), "system prompt"),
        _f("prompt", pa.string(), "prompt the model saw"),
        _f("gold", pa.string(), "expected output"),
        _f("prediction", pa.string(), "model output"),
        _f("metadata", pa.string(), "the input metadata string, unchanged"),
        _f(
            "metadata_map",
            pa.map_(pa.string(), pa.string()),
            "metadata parsed as a JSON object; non-string values JSON-encoded",
        ),
        _f("finish_reason", pa.string(), "stop, length or error"),
        _f("error", pa.string(), "inference error message, if any"),
        _f("scored", pa.bool_(), "false when inference failed; left out of aggregates"),
        _f(
            "metrics",
            pa.map_(pa.string(), pa.float64()),
            "per-example metrics, built-in and custom",
        ),
        _f("confidence", pa.float64(), "confidence in the prediction (0..1), when computed"),
        _f("mean_logprob", pa.float64(), "mean log probability of the generated tokens"),
        _f("gold_label", pa.string(), "label parsed from gold, for classification recipes"),
        _f("predicted_label", pa.string(), "label parsed from the prediction"),
        _f("prompt_tokens", pa.int32(), "prompt length in tokens"),
        _f("completion_tokens", pa.int32(), "generated tokens"),
        _f("latency_s", pa.float64(), "the row's share of its batch's generation time"),
        _f(
            "token_logprobs",
            pa.list_(TOKEN_LOGPROB),
            "per generated token: text, log probability and the top alternatives",
        ),
        # images are never copied into the tables: their count and hashes are
        _f("image_count", pa.int32(), "images shown with the prompt (0 for text)"),
        _f(
            "image_sha256",
            pa.list_(pa.string()),
            "sha256 (hex) of each decoded image shown with the prompt, in order",
        ),
        _f("subtask", pa.string(), "a benchmark's subtask of the row (mmlu's subject, ...)"),
        _f("score_note", pa.string(), "a benchmark scorer's note on the row (humaneval: why)"),
        _f("preprocess_error", pa.string(), "why the BYOM preprocessor failed for the row"),
        _f(
            "postprocess_error",
            pa.string(),
            "why the BYOM postprocessor or the reward function gave the row no metrics",
        ),
    ]
)

EVAL_METRICS = pa.schema(
    [
        *RUN_COLUMNS,
        _f("metric", pa.string(), "metric name as in the results JSON", nullable=False),
        _f("value", pa.float64(), "aggregated value"),
        _f("stderr", pa.float64(), "standard error of the value"),
        _f(
            "aggregation",
            pa.string(),
            "mean, corpus, min, max, sum, count, rate, bradley_terry or percentile",
        ),
        _f("stratum", pa.string(), "'all', or '<metadata field>=<value>'", nullable=False),
        _f("stratum_field", pa.string(), "metadata field of the stratum (null for all)"),
        _f("stratum_value", pa.string(), "metadata value of the stratum (null for all)"),
        _f("num_examples", pa.int64(), "examples the value covers"),
        _f("source", pa.string(), "gen_qa, custom, judge or analysis"),
    ]
)

JUDGE_JUDGMENTS = pa.schema(
    [
        *RUN_COLUMNS,
        _f("row_index", pa.int64(), "0-based position of the prompt in the dataset", False),
        _f("example_id", pa.string(), "sha256 of prompt and both responses (16 hex digits)"),
        _f("pass", pa.string(), "forward (A shown first) or backward (B shown first)", False),
        _f("judge_model", pa.string(), "the judge model"),
        _f("baseline", pa.string(), "what produced response_A"),
        _f("challenger", pa.string(), "what produced response_B"),
        _f("system", pa.string(), "system prompt of the judged task"),
        _f("prompt", pa.string(), "the judged prompt"),
        _f("response_a", pa.string(), "baseline response"),
        _f("response_b", pa.string(), "challenger response"),
        _f("raw_output", pa.string(), "the judge's raw output for this pass"),
        _f("rationale", pa.string(), "the judge's rationale"),
        _f("verdict", pa.string(), "the verdict as given in this pass: first, second or tie"),
        _f("outcome", pa.string(), "mapped back to the responses: A, B, tie or inference_error"),
        _f("preference_b", pa.float64(), "soft preference for B from verdict log probabilities"),
        _f("metadata", pa.string(), "the input metadata string"),
        _f("metadata_map", pa.map_(pa.string(), pa.string()), "metadata parsed"),
        _f("latency_s", pa.float64(), "judge generation time for this pass"),
        _f("error", pa.string(), "why the judgment failed, if it did"),
        _f("weighted_score_a", pa.float64(), "rubric judge: A's weighted criteria score (0..1)"),
        _f("weighted_score_b", pa.float64(), "rubric judge: B's weighted criteria score (0..1)"),
        _f("score_margin", pa.float64(), "rubric judge: weighted_score_a - weighted_score_b"),
    ]
)

JUDGE_CRITERIA = pa.schema(
    [
        *RUN_COLUMNS,
        _f("row_index", pa.int64(), "0-based position of the prompt in the dataset", False),
        _f("example_id", pa.string(), "sha256 of prompt and both responses (16 hex digits)"),
        _f("pass", pa.string(), "forward (A shown first) or backward (B shown first)", False),
        _f("criterion", pa.string(), "the criterion's name as the judge wrote it", False),
        _f("judge_model", pa.string(), "the judge model"),
        _f("baseline", pa.string(), "what produced response_A"),
        _f("challenger", pa.string(), "what produced response_B"),
        _f("description", pa.string(), "what the criterion checks, in the judge's words"),
        _f("type", pa.string(), "scale (scores 1..5) or binary (1 = true, 0 = false)"),
        _f("raw_weight", pa.float64(), "the weight as the judge wrote it (null: missing)"),
        _f("weight", pa.float64(), "its share of the weighted scores (0: not counted)"),
        _f("score_a", pa.float64(), "A's score as given (scale 1..5, binary 1/0)"),
        _f("score_b", pa.float64(), "B's score as given (scale 1..5, binary 1/0)"),
        _f("normalized_a", pa.float64(), "A's score on 0..1: (s-1)/4 for scale"),
        _f("normalized_b", pa.float64(), "B's score on 0..1: (s-1)/4 for scale"),
        _f("justification_a", pa.string(), "why A got its score"),
        _f("justification_b", pa.string(), "why B got its score"),
        _f("counted", pa.bool_(), "both sides validly scored: in the weighted scores"),
        _f("problem", pa.string(), "what was missing or invalid in the criterion"),
        _f("judgment_outcome", pa.string(), "the pass's verdict: A, B, tie or inference_error"),
        _f("metadata", pa.string(), "the input metadata string"),
        _f("metadata_map", pa.map_(pa.string(), pa.string()), "metadata parsed"),
    ]
)

JUDGE_SUMMARY = pa.schema(
    [
        *RUN_COLUMNS,
        _f("judge_model", pa.string(), "the judge model"),
        _f("baseline", pa.string(), "what produced response_A"),
        _f("challenger", pa.string(), "what produced response_B"),
        _f("num_prompts", pa.int64(), "prompts judged"),
        _f("num_judgments", pa.int64(), "judgments (two passes per prompt)"),
        *[
            field
            for key in ("a_scores", "b_scores", "ties", "inference_error", "score")
            for field in (
                _f(key, pa.float64(), f"Nova's {key}"),
                _f(f"{key}_stderr", pa.float64(), f"standard error of {key}"),
            )
        ],
        _f("winrate", pa.float64(), "Bradley-Terry probability that B is preferred"),
        _f("lower_rate", pa.float64(), "bootstrap 2.5th percentile of winrate"),
        _f("upper_rate", pa.float64(), "bootstrap 97.5th percentile of winrate"),
        _f("flip_rate", pa.float64(), "share of prompts whose two passes disagree"),
        _f("first_position_winrate", pa.float64(), "win rate of the answer shown first"),
        _f("longer_answer_winrate", pa.float64(), "win rate of the longer answer"),
        *[
            field
            for key in ("weighted_score_a", "weighted_score_b", "score_margin")
            for field in (
                _f(key, pa.float64(), f"rubric judge: mean {key} over prompts"),
                _f(f"{key}_stderr", pa.float64(), f"standard error of {key}"),
            )
        ],
    ]
)


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: pa.Schema
    description: str


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "eval_examples",
            EVAL_EXAMPLES,
            "One row per evaluated example: prompt, gold, prediction, metadata, per-example "
            "metrics and token log probabilities.",
        ),
        TableSpec(
            "eval_metrics",
            EVAL_METRICS,
            "Aggregated metrics per run with standard errors, overall and by metadata stratum.",
        ),
        TableSpec(
            "judge_judgments",
            JUDGE_JUDGMENTS,
            "One row per judge pass (forward and backward) of an LLM-as-a-judge run.",
        ),
        TableSpec(
            "judge_criteria",
            JUDGE_CRITERIA,
            "One row per criterion per judgment of a rubric LLM-as-a-judge run.",
        ),
        TableSpec(
            "judge_summary",
            JUDGE_SUMMARY,
            "One row per LLM-as-a-judge run: Nova's summary keys and position-bias diagnostics.",
        ),
    )
}
TABLE_NAMES = tuple(TABLES)


def partition_schema() -> pa.Schema:
    return pa.schema([pa.field(name, type_) for name, type_ in PARTITION_COLUMNS])


def full_schema(table: str) -> pa.Schema:
    """The columns a query sees: the file columns, then the partition columns."""
    schema = TABLES[table].schema
    for field in partition_schema():
        schema = schema.append(field)
    return schema


def comment(field: pa.Field) -> str:
    return (field.metadata or {}).get(b"comment", b"").decode()
