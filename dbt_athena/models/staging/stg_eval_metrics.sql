select
    eval_name || '/' || run_id || '/' || stratum || '/' || metric as metric_key,
    eval_name,
    run_date,
    run_id,
    run_timestamp,
    model_name,
    task,
    dataset_sha256,
    metric,
    value,
    stderr,
    aggregation,
    stratum,
    stratum_field,
    stratum_value,
    num_examples,
    source
from {{ source('nova_eval', 'eval_metrics') }}
where eval_name <> '_schema'
