-- One row per example of every run, with its key; token log probabilities stay in the
-- source table (query them there when needed: they are most of its bytes).
select
    eval_name || '/' || run_id || '/' || cast(row_index as varchar) as example_key,
    eval_name,
    run_date,
    run_id,
    run_timestamp,
    model_name,
    task,
    dataset_sha256,
    row_index,
    example_id,
    system,
    prompt,
    gold,
    prediction,
    metadata,
    metadata_map,
    finish_reason,
    error,
    scored,
    metrics,
    confidence,
    mean_logprob,
    gold_label,
    predicted_label,
    prompt_tokens,
    completion_tokens,
    latency_s
from {{ source('nova_eval', 'eval_examples') }}
where eval_name <> '_schema'
