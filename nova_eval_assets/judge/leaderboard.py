"""The judge leaderboard: Bradley-Terry over every judge result of a set of recipes.

:func:`build_leaderboard` reads each judge recipe's ``judgments.parquet``
(:func:`comparison_of`), fits the ratings (:func:`bradley_terry.leaderboard`) and writes
``leaderboard.parquet`` and ``leaderboard.json`` under ``<output root>/judge_leaderboard/``
(:func:`leaderboard_dir`); :func:`read_leaderboard` reads the JSON back. Writes only in
that folder.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from nova_eval_assets import storage
from nova_eval_assets.judge import bradley_terry as bt
from nova_eval_assets.judge.results import nan_to_none, read_judgments
from nova_eval_assets.judge.settings import is_judge, labels
from nova_eval_assets.layout import output_root
from nova_eval_assets.recipe import LoadedRecipe

LEADERBOARD_FOLDER = "judge_leaderboard"


def leaderboard_dir(recipes: list[LoadedRecipe]) -> str:
    """``<output root>/judge_leaderboard`` of the first judge recipe (by name)."""
    judges = sorted((r for r in recipes if is_judge(r)), key=lambda r: r.name)
    if not judges:
        raise ValueError("no judge recipes (llm_judge, mm_llm_judge)")
    return storage.join(output_root(judges[0]), LEADERBOARD_FOLDER)


def comparison_of(loaded: LoadedRecipe) -> bt.Comparison | None:
    """The judge result of one recipe as a leaderboard comparison (None: not run yet)."""
    table = read_judgments(loaded)
    if table is None or table.num_rows == 0:
        return None
    forward = bt.preference_codes(table["forward_preference"].to_pylist())
    backward = bt.preference_codes(table["backward_preference"].to_pylist())
    baseline, challenger = labels(loaded)
    return bt.Comparison(baseline, challenger, bt.outcome_counts(forward, backward), loaded.name)


LEADERBOARD_SCHEMA = pa.schema(
    [
        ("rank", pa.int64()),
        ("model", pa.string()),
        ("rating", pa.float64()),
        ("rating_lower", pa.float64()),
        ("rating_upper", pa.float64()),
        ("rank_lower", pa.float64()),
        ("rank_upper", pa.float64()),
        ("theta", pa.float64()),
        ("points", pa.float64()),
        ("judgments", pa.float64()),
        ("win_share", pa.float64()),
        ("is_anchor", pa.bool_()),
        ("connected_to_anchor", pa.bool_()),
    ]
)


def build_leaderboard(
    recipes: list[LoadedRecipe],
    anchor: str | None = None,
    rounds: int = bt.DEFAULT_ROUNDS,
    seed: int = bt.DEFAULT_SEED,
) -> dict[str, Any]:
    """Fit the leaderboard over every judge result on disk; write Parquet and JSON."""
    judges = sorted((r for r in recipes if is_judge(r)), key=lambda r: r.name)
    comparisons, missing = [], []
    for loaded in judges:
        comparison = comparison_of(loaded)
        if comparison is None:
            missing.append(loaded.name)
        else:
            comparisons.append(comparison)
    folder = leaderboard_dir(recipes)
    if not comparisons:
        raise ValueError(
            "no judge results yet; materialize a judge recipe's judge_results first "
            f"(judge recipes: {', '.join(r.name for r in judges) or 'none'})"
        )
    board = bt.leaderboard(comparisons, anchor=anchor or None, rounds=rounds, seed=seed)
    table = pa.Table.from_pylist(board.rows, schema=LEADERBOARD_SCHEMA)
    parquet_path = storage.join(folder, "leaderboard.parquet")
    json_path = storage.join(folder, "leaderboard.json")
    storage.write_parquet(parquet_path, table)
    document = {
        "anchor": board.anchor,
        "scale": "Elo: 1000 + 400 / ln(10) * (theta - theta_anchor)",
        "bootstrap": {"rounds": rounds, "seed": seed, "unit": "prompts, per judge result"},
        "counting_rule": "each pass is one judgment; a tie counts half to each side",
        "results": [
            {
                "recipe": c.source,
                "baseline": c.baseline,
                "challenger": c.challenger,
                "baseline_points": c.a_points,
                "challenger_points": c.b_points,
            }
            for c in comparisons
        ],
        "results_not_run": missing,
        "models": nan_to_none(board.rows),
    }
    lines = ["| rank | model | rating | 95% interval | judgments |", "|---:|---|---:|---|---:|"]
    for row in board.rows:
        anchor_mark = " (anchor)" if row["is_anchor"] else ""
        lines.append(
            f"| {row['rank']} | {row['model']}{anchor_mark} | {row['rating']:.1f} | "
            f"[{row['rating_lower']:.1f}, {row['rating_upper']:.1f}] | {row['judgments']:.0f} |"
        )
    document["markdown"] = "\n".join(lines) + "\n"
    document["paths"] = {"leaderboard": parquet_path, "json": json_path}
    storage.write_json(json_path, document)
    return document


def read_leaderboard(recipes: list[LoadedRecipe]) -> dict[str, Any]:
    """What the last :func:`build_leaderboard` over these recipes wrote."""
    return storage.read_json(storage.join(leaderboard_dir(recipes), "leaderboard.json"))
