"""Analysis of an evaluation's per-example results (plain Python, no Dagster).

- :mod:`confidence`: confidence per example from the token log probabilities;
- :mod:`labels`: labels read from JSON golds and predictions;
- :mod:`calibration`: ECE (equal-width / equal-mass bins), Brier, reliability diagram,
  selective accuracy / coverage, the threshold that reaches a target accuracy;
- :mod:`strata`: every metric by every metadata field;
- :mod:`failures`: error categories, low-confidence and overconfident examples;
- :mod:`comparison`: paired tests between two evaluations of one dataset;
- :mod:`resampling`: the seeded bootstrap they share;
- :mod:`columns`: reading the examples table column-wise in batches;
- :mod:`pipeline`: the whole analysis / comparison, and writing its outputs.
"""
