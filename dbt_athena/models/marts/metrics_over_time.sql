-- Every overall metric of every run, in time order per evaluation, with the change from
-- the evaluation's previous run and a flag on its latest run.
with overall as (
    select * from {{ ref('stg_eval_metrics') }}
    where stratum = 'all'
)

select
    eval_name,
    run_date,
    run_id,
    run_timestamp,
    model_name,
    dataset_sha256,
    metric,
    value,
    stderr,
    aggregation,
    num_examples,
    lag(value) over (
        partition by eval_name, metric order by run_timestamp, run_id
    ) as previous_value,
    value - lag(value) over (
        partition by eval_name, metric order by run_timestamp, run_id
    ) as change,
    row_number() over (
        partition by eval_name, metric order by run_timestamp desc, run_id desc
    ) = 1 as is_latest
from overall
