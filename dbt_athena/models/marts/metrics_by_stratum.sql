-- Every per-example metric of every run by every metadata field and value, computed from
-- the examples themselves (mean and standard error of the mean over the scored rows).
-- Corpus BLEU by stratum is in eval_metrics (stratum <> 'all').
with strata as (
    {{ unnest_map(ref('stg_eval_examples'), 'metadata_map', 'stratum_field', 'stratum_value',
                  ['eval_name', 'run_date', 'run_id', 'model_name', 'scored', 'metrics']) }}
),

metric_values as (
    {{ unnest_map('strata', 'metrics', 'metric', 'metric_value',
                  ['eval_name', 'run_date', 'run_id', 'model_name', 'scored',
                   'stratum_field', 'stratum_value']) }}
)

select
    eval_name,
    run_date,
    run_id,
    model_name,
    stratum_field,
    stratum_value,
    metric,
    count(*) as num_examples,
    avg(metric_value) as value,
    stddev_samp(metric_value) / sqrt(count(*)) as stderr
from metric_values
where scored
group by eval_name, run_date, run_id, model_name, stratum_field, stratum_value, metric
