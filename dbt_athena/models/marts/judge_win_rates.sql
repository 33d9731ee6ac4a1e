-- Win, tie and error counts of every LLM-as-a-judge run from its judgments, the win rate
-- of the challenger (B; a tie counts half), position bias (wins of whichever answer was
-- shown first), and the run's Bradley-Terry win rate with its bootstrap interval.
with judgments as (
    select * from {{ ref('stg_judge_judgments') }}
),

counts as (
    select
        eval_name,
        run_date,
        run_id,
        judge_model,
        baseline,
        challenger,
        count(*) as judgments,
        sum(case when outcome = 'A' then 1 else 0 end) as a_wins,
        sum(case when outcome = 'B' then 1 else 0 end) as b_wins,
        sum(case when outcome = 'tie' then 1 else 0 end) as ties,
        sum(case when outcome = 'inference_error' then 1 else 0 end) as inference_errors,
        sum(
            case
                when (pass = 'forward' and outcome = 'A')
                    or (pass = 'backward' and outcome = 'B') then 1
                else 0
            end
        ) as first_position_wins
    from judgments
    group by eval_name, run_date, run_id, judge_model, baseline, challenger
)

select
    c.*,
    (cast(c.b_wins as double) + 0.5 * c.ties) / nullif(c.judgments - c.inference_errors, 0)
        as b_win_rate,
    cast(c.first_position_wins as double) / nullif(c.a_wins + c.b_wins, 0)
        as first_position_win_rate,
    s.winrate as bradley_terry_winrate,
    s.lower_rate,
    s.upper_rate
from counts as c
left join {{ ref('stg_judge_summary') }} as s
    on c.eval_name = s.eval_name and c.run_id = s.run_id
