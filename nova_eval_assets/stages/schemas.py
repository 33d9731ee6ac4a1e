"""Arrow schemas of what the stages hand each other: prompts, inference outputs, metrics."""

from __future__ import annotations

import pyarrow as pa

TOP_TOKEN = pa.struct([("token", pa.string()), ("logprob", pa.float64())])
TOKEN_LOGPROB = pa.struct(
    [
        ("token", pa.string()),
        ("logprob", pa.float64()),
        ("top", pa.list_(TOP_TOKEN)),
        # inference.response_format: renormalized over the allowed tokens; the model's top
        # token was not allowed (null without a constraint)
        ("constrained_logprob", pa.float64()),
        ("forced", pa.bool_()),
    ]
)
PROMPT_COLUMNS = [
    pa.field("row_index", pa.int64(), nullable=False),
    pa.field("line", pa.int64()),
    pa.field("system", pa.string()),
    pa.field("prompt", pa.string()),
    pa.field("gold", pa.string()),
    pa.field("metadata", pa.string()),
    pa.field("preprocess_error", pa.string()),  # BYOM: why preprocessing failed for the row
    pa.field("preprocess_seconds", pa.float64()),
]
# What outputs keep of a row's images: how many, and the sha256 (hex) of each decoded image,
# in order. The images themselves (data URIs) are in the validated and prompts tables only.
IMAGE_COLUMNS = [
    pa.field("image_count", pa.int32()),
    pa.field("image_sha256", pa.list_(pa.string())),
]
IMAGES_FIELD = pa.field("images", pa.list_(pa.string()))  # data URIs, in order; null: none
PROMPTS_SCHEMA = pa.schema([*PROMPT_COLUMNS, IMAGES_FIELD, *IMAGE_COLUMNS])
INFERENCE_SCHEMA = pa.schema(
    [
        *PROMPT_COLUMNS,
        *IMAGE_COLUMNS,
        pa.field("replica", pa.int32()),
        pa.field("prediction", pa.string()),  # the answer (without reasoning), as scored
        pa.field("reasoning", pa.string()),  # inference.reasoning_effort: the model's thinking
        pa.field("finish_reason", pa.string()),
        pa.field("error", pa.string()),
        pa.field("prompt_tokens", pa.int32()),
        pa.field("completion_tokens", pa.int32()),
        # the row's generation budget: inference.max_new_tokens, or less when the prompt
        # leaves less of the model's context
        pa.field("max_new_tokens", pa.int32()),
        pa.field("latency_s", pa.float64()),
        pa.field("token_logprobs", pa.list_(TOKEN_LOGPROB)),
        # evaluation.task inspect: what Inspect recorded of the row (JSON: the task's scores,
        # reduced over epochs, and its EvalSample per epoch); null for every other task
        pa.field("inspect_record", pa.string()),
    ]
)
METRICS_SCHEMA = pa.schema(
    [
        pa.field("row_index", pa.int64(), nullable=False),
        pa.field("scored", pa.bool_()),
        pa.field("metrics", pa.map_(pa.string(), pa.float64())),
        pa.field("bleu_stats", pa.list_(pa.float64())),
        # BYOM: the postprocessor's metrics (also merged into `metrics`) or its error
        pa.field("custom_metrics", pa.map_(pa.string(), pa.float64())),
        pa.field("postprocess_error", pa.string()),
        pa.field("postprocess_seconds", pa.float64()),
        # classification extension: labels read from gold and prediction
        pa.field("gold_label", pa.string()),
        pa.field("predicted_label", pa.string()),
        pa.field("label_valid", pa.bool_()),
        pa.field("label_problem", pa.string()),
        # a benchmark's scorer: why a row scored as it did (humaneval: how the tests failed)
        pa.field("score_note", pa.string()),
    ]
)
