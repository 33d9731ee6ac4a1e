"""How many rows an aggregate covers, and why the others are not scored.

A row is left out of the metrics when its inference failed (for instance a prompt longer
than the model's context: the engine returns ``finish_reason: "error"`` with the reason),
when the BYOM preprocessor failed on it, or when its postprocessing failed. Those rows stay
in every per-example output with their error; this section says how many there are and why.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

MAX_LISTED = 20


def _reason(error: str) -> str:
    """An error message with its numbers folded, so rows failing the same way group."""
    return re.sub(r"\d+", "N", error.strip().splitlines()[0] if error.strip() else "error")[:200]


def coverage_section(table: pa.Table) -> dict[str, Any]:
    """Rows, scored rows and failures by stage and reason, from the joined examples table."""
    rows = table.num_rows
    scored = int(pc.sum(table["scored"]).as_py() or 0) if rows else 0
    failures: list[dict[str, Any]] = []
    stage_of = {
        "preprocess_error": "preprocess",
        "error": "inference",
        "postprocess_error": "postprocess",
    }
    columns = [c for c in stage_of if c in table.schema.names]
    unscored = table.filter(pc.invert(pc.fill_null(table["scored"], False))) if rows else table
    for row in unscored.select(["row_index", "line", *columns]).to_pylist():
        # the first stage that failed is why the row is not scored
        column = next((c for c in columns if row[c]), None)
        failures.append(
            {
                "row_index": row["row_index"],
                "line": row["line"],
                "stage": stage_of[column] if column else "unknown",
                "error": row[column] if column else "not scored",
            }
        )
    by_stage = Counter(f["stage"] for f in failures)
    reasons = Counter((f["stage"], _reason(f["error"])) for f in failures)
    return {
        "rows": rows,
        "scored_rows": scored,
        "unscored_rows": rows - scored,
        "share_scored": round(scored / rows, 6) if rows else None,
        "failed_rows_by_stage": dict(sorted(by_stage.items())),
        "failure_reasons": [
            {"stage": stage, "reason": reason, "rows": count}
            for (stage, reason), count in reasons.most_common(MAX_LISTED)
        ],
        "first_failures": failures[:MAX_LISTED],
    }


def coverage_markdown(coverage: dict[str, Any]) -> str:
    text = (
        f"\nThe metrics cover {coverage['scored_rows']} of {coverage['rows']} rows"
        f"{'' if not coverage['unscored_rows'] else ':'}"
    )
    if not coverage["unscored_rows"]:
        return text + " (every row).\n"
    unscored = coverage["unscored_rows"]
    text += f" {unscored} {'row is' if unscored == 1 else 'rows are'} not scored.\n\n"
    text += "".join(
        f"- {r['rows']} x {r['stage']}: {r['reason']}\n" for r in coverage["failure_reasons"]
    )
    return text
