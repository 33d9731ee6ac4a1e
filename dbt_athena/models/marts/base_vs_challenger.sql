-- Base against challenger: the latest run of two evaluations of the same dataset, metric
-- by metric, with the difference and its z-score (independent standard errors).
-- vars base_eval / challenger_eval pick the pair; empty compares every pair once.
with latest as (
    select * from {{ ref('metrics_over_time') }}
    where is_latest
)

select
    b.dataset_sha256,
    b.metric,
    b.eval_name as base_eval,
    c.eval_name as challenger_eval,
    b.model_name as base_model,
    c.model_name as challenger_model,
    b.run_id as base_run_id,
    c.run_id as challenger_run_id,
    b.value as base_value,
    c.value as challenger_value,
    c.value - b.value as difference,
    sqrt(coalesce(b.stderr * b.stderr, 0) + coalesce(c.stderr * c.stderr, 0)) as difference_stderr,
    (c.value - b.value)
        / nullif(sqrt(coalesce(b.stderr * b.stderr, 0) + coalesce(c.stderr * c.stderr, 0)), 0)
        as z_score
from latest as b
inner join latest as c
    on b.dataset_sha256 = c.dataset_sha256
    and b.metric = c.metric
    and b.eval_name <> c.eval_name
where
    {% if var('base_eval') %} b.eval_name = {{ var_literal('base_eval') }} {% else %} true {% endif %}
    and {% if var('challenger_eval') %} c.eval_name = {{ var_literal('challenger_eval') }}
        {% else %} b.eval_name < c.eval_name {% endif %}
