"""LLM-as-a-judge: pairwise comparison of a baseline (A) and a challenger (B).

- :mod:`prompts`: the judge prompt; forward shows A first, backward shows B first.
- :mod:`verdicts`: strict verdict parsing, and mapping position verdicts back to A/B.
- :mod:`backends`: judge back ends behind the engine interface (hf, bedrock, openai).
- :mod:`pairwise`: both passes per prompt, the per-judgment table, soft preferences.
- :mod:`bradley_terry`: Nova's summary, bootstrap, position-bias diagnostics, leaderboard.
- :mod:`settings`: the recipe's judge section, sampling settings and the judge engine.
- :mod:`dataset`: the judge dataset: joined from two gen_qa recipes, validated, read.
- :mod:`summary`: Nova's summary and the diagnostics of a judgments table.
- :mod:`results`: the files a judge run writes (results JSON, details, judgments).
- :mod:`leaderboard`: Bradley-Terry over every judge result of a set of recipes.
- :mod:`pipeline`: the judge stages as plain functions (files in, files out);
  :func:`~pipeline.run_judge`, and the above re-exported.

Nothing here imports Dagster; ``nova_eval_assets.assets.judge`` wires it.
"""
