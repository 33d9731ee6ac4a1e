-- A rubric judge's criteria: one row per criterion per judgment (pass).
select
    eval_name || '/' || run_id || '/' || cast(row_index as varchar) || '/' || pass || '/'
        || criterion as criterion_key,
    eval_name,
    run_date,
    run_id,
    run_timestamp,
    row_index,
    example_id,
    pass,
    criterion,
    judge_model,
    baseline,
    challenger,
    description,
    type,
    raw_weight,
    weight,
    score_a,
    score_b,
    normalized_a,
    normalized_b,
    justification_a,
    justification_b,
    counted,
    problem,
    judgment_outcome,
    metadata,
    metadata_map
from {{ source('nova_eval', 'judge_criteria') }}
where eval_name <> '_schema'
