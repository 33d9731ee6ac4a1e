"""Aggregating custom (processor) metrics with the recipe's ``processor.aggregation``.

Each custom metric is aggregated over the examples whose postprocessor returned it (rows
that were not scored, or whose processor call failed, contribute nothing):

- ``average``: the mean; ``<metric>_stderr`` is the sample std (ddof=1) / sqrt(n).
- ``min``, ``max``, ``sum``: that reduction; ``<metric>_stderr`` is the seeded bootstrap
  standard error of the same reduction (:func:`stats.bootstrap_stderr`: 1000 resamples of
  the examples with replacement, seed 1234, std with ddof=1 over the resampled values).

n == 1 gives stderr 0.0; a metric nobody returned does not appear.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .stats import DEFAULT_ROUNDS, DEFAULT_SEED, bootstrap_stderr, mean_and_stderr

AGGREGATIONS = ("average", "min", "max", "sum")
_REDUCERS = {"min": np.min, "max": np.max, "sum": np.sum}


def aggregate_custom(
    per_example: Mapping[str, Sequence[float]],
    aggregation: str = "average",
    *,
    rounds: int = DEFAULT_ROUNDS,
    seed: int = DEFAULT_SEED,
) -> dict[str, float]:
    """``{metric: value, metric_stderr: stderr, ...}`` in the order of ``per_example``."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    out: dict[str, float] = {}
    for name, values in per_example.items():
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size == 0:
            continue
        if aggregation == "average":
            out[name], out[f"{name}_stderr"] = mean_and_stderr(v)
        else:
            out[name] = float(_REDUCERS[aggregation](v))
            out[f"{name}_stderr"] = bootstrap_stderr(v, aggregation, rounds=rounds, seed=seed)
    return out
