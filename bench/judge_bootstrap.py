"""The judge's bootstrap: vectorized (multinomial counts over distinct outcomes) against a
per-round resampling loop, side by side in one run.

    python bench/judge_bootstrap.py [--judgments 1000000] [--rounds 1000] [--repeats 5]
                                    [--loop-rounds 20] [--seed 1234]

The data: ``--judgments`` judgments, i.e. ``judgments / 2`` prompts with a forward and a
backward preference each (A, B, tie or error, drawn once from a fixed seed, with the two
passes of a prompt correlated as real judges are).

- **vectorized**: :func:`bradley_terry.summary_from_counts` after
  :func:`bradley_terry.outcome_counts`, i.e. what a judge recipe runs: count the 16 distinct
  (forward, backward) outcomes, draw a ``(rounds, 16)`` multinomial count matrix, and get
  every round's winrate as dot products; percentiles 2.5/97.5. The timing includes
  counting the outcomes from the per-prompt arrays and the stderr of every Nova key.
- **loop**: the textbook bootstrap: for each round, draw ``n`` prompt indices with
  replacement (both passes of a prompt travel together), sum A's and B's points with
  numpy over the resampled prompts, and compute the winrate. It is timed on
  ``--loop-rounds`` rounds and scaled linearly to ``--rounds`` (each round does the same
  work, so the scaling is exact up to noise); the report says so.

Both are timed ``--repeats`` times and the medians are printed, with their ratio. The two
give the same distribution (tests/test_judge_bradley_terry.py checks it); the script also
prints both intervals as a sanity check.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nova_eval_assets.judge import bradley_terry as bt  # noqa: E402


def make_judgments(judgments: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    prompts = judgments // 2
    rng = np.random.default_rng(seed)
    forward = rng.choice([bt.A, bt.B, bt.TIE, bt.ERROR], size=prompts, p=[0.3, 0.45, 0.17, 0.08])
    flip = rng.random(prompts) < 0.3  # a position-biased judge changes its mind 30% of the time
    backward = np.where(flip, rng.choice([bt.A, bt.B, bt.TIE], size=prompts), forward)
    return forward.astype(np.int8), backward.astype(np.int8)


def vectorized(forward: np.ndarray, backward: np.ndarray, rounds: int, seed: int) -> dict:
    return bt.summary_from_counts(bt.outcome_counts(forward, backward), rounds=rounds, seed=seed)


def loop(forward: np.ndarray, backward: np.ndarray, rounds: int, seed: int) -> np.ndarray:
    ties = ((forward == bt.TIE).astype(np.float64) + (backward == bt.TIE)) / 2
    a_points = (forward == bt.A).astype(np.float64) + (backward == bt.A) + ties
    b_points = (forward == bt.B).astype(np.float64) + (backward == bt.B) + ties
    rng = np.random.default_rng(seed)
    n = forward.size
    rates = np.empty(rounds)
    for r in range(rounds):
        idx = rng.integers(0, n, n)
        a, b = a_points[idx].sum(), b_points[idx].sum()
        rates[r] = b / (a + b) if a + b else np.nan
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judgments", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loop-rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()

    forward, backward = make_judgments(args.judgments, args.seed)
    print(
        f"{args.judgments:,} judgments ({forward.size:,} prompts x 2 passes), "
        f"{args.rounds} bootstrap rounds, {args.repeats} repeats"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"numpy {np.__version__}, Python {platform.python_version()}"
    )

    vector_times, loop_times = [], []
    summary = vectorized(forward, backward, args.rounds, args.seed)  # warm-up
    for _ in range(args.repeats):
        started = time.perf_counter()
        summary = vectorized(forward, backward, args.rounds, args.seed)
        vector_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        rates = loop(forward, backward, args.loop_rounds, args.seed)
        loop_times.append((time.perf_counter() - started) * args.rounds / args.loop_rounds)

    vector, looped = statistics.median(vector_times), statistics.median(loop_times)
    print(
        f"vectorized (multinomial over 16 outcomes): median {vector:.4f} s "
        f"(runs: {', '.join(f'{t:.4f}' for t in vector_times)})"
    )
    print(
        f"per-round loop ({args.loop_rounds} rounds timed, scaled to {args.rounds}): "
        f"median {looped:.2f} s (runs: {', '.join(f'{t:.2f}' for t in loop_times)})"
    )
    print(f"speedup: {looped / vector:.0f}x")
    print(
        f"winrate {summary['winrate']:.5f}, vectorized 95% interval "
        f"[{summary['lower_rate']:.5f}, {summary['upper_rate']:.5f}]; loop rounds span "
        f"[{np.nanmin(rates):.5f}, {np.nanmax(rates):.5f}]"
    )
    ok = vector < 2.0 and looped / vector >= 50
    print("targets (< 2 s median, >= 50x faster):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
