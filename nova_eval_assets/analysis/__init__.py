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
- :mod:`examples`: one evaluation's examples table as per-example columns;
- :mod:`evaluation`: the whole analysis of one evaluation (:func:`~evaluation.analyze`);
- :mod:`evaluation_pair`: the comparison of two evaluations of one dataset;
- :mod:`outputs`: the plots, and writing an analysis or a comparison into a folder;
- :mod:`pipeline`: what the assets call (recipe in, files out); re-exports the above.
"""
