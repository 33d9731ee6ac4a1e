select
    eval_name || '/' || run_id || '/' || cast(row_index as varchar) || '/' || pass as judgment_key,
    eval_name,
    run_date,
    run_id,
    run_timestamp,
    row_index,
    example_id,
    pass,
    judge_model,
    baseline,
    challenger,
    prompt,
    response_a,
    response_b,
    rationale,
    verdict,
    outcome,
    preference_b,
    metadata,
    metadata_map,
    error
from {{ source('nova_eval', 'judge_judgments') }}
where eval_name <> '_schema'
