select
    eval_name || '/' || run_id as run_key,
    *
from {{ source('nova_eval', 'judge_summary') }}
where eval_name <> '_schema'
