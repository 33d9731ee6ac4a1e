-- Reliability bins per run: equal-width bins of confidence against how often the metric
-- var('calibration_metric') (0/1, default em) was 1. Confidence is the table's
-- `confidence` where the analysis computed it, else exp(mean token log probability);
-- confidence_source says which. ECE of a run = sum(num_examples * abs(gap)) / sum(num_examples).
{% set bins = var('calibration_bins') | int %}
with examples as (
    select
        eval_name,
        run_date,
        run_id,
        case when confidence is not null then 'confidence' else 'exp_mean_logprob' end
            as confidence_source,
        coalesce(confidence, exp(mean_logprob)) as confidence,
        {{ map_value('metrics', var_literal('calibration_metric')) }} as correct
    from {{ ref('stg_eval_examples') }}
    where scored
),

binned as (
    select
        *,
        least(cast(floor(confidence * {{ bins }}) as integer), {{ bins - 1 }}) as bin
    from examples
    where confidence is not null and correct is not null
)

select
    eval_name,
    run_date,
    run_id,
    confidence_source,
    bin,
    cast(bin as double) / {{ bins }} as bin_lower,
    cast(bin + 1 as double) / {{ bins }} as bin_upper,
    count(*) as num_examples,
    avg(confidence) as mean_confidence,
    avg(correct) as accuracy,
    avg(correct) - avg(confidence) as gap
from binned
group by eval_name, run_date, run_id, confidence_source, bin
