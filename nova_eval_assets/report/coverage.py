"""How many rows an aggregate covers, and why the others are not scored.

A row is left out of the metrics when its inference failed (for instance a prompt longer
than the model's context: the engine returns ``finish_reason: "error"`` with the reason),
when the BYOM preprocessor failed on it, or when its postprocessing failed. Those rows stay
in every per-example output with their error; this section says how many there are and why.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

MAX_LISTED = 20


def _first_line(error: str) -> str:
    return error.strip().splitlines()[0][:200] if error.strip() else "error"


def _reason(error: str) -> str:
    """An error message with its numbers folded, so rows failing the same way group."""
    return re.sub(r"\d+", "N", _first_line(error))


_STAGE_OF = {
    "preprocess_error": "preprocess",
    "error": "inference",
    "postprocess_error": "postprocess",
}


class CoverageTally:
    """What :func:`coverage_section` reports, counted batch by batch: one entry per failure
    reason and the first failures, never one per row."""

    def __init__(self) -> None:
        self.rows = 0
        self.scored = 0
        self.by_stage: Counter[str] = Counter()
        self.reasons: Counter[tuple[str, str]] = Counter()
        # the first error of each group as it was, numbers intact (a port, a status, a size)
        self.examples: dict[tuple[str, str], str] = {}
        self.first_failures: list[dict[str, Any]] = []

    def add(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        self.scored += int(pc.sum(batch.column("scored")).as_py() or 0)
        columns = [c for c in _STAGE_OF if c in batch.schema.names]
        unscored = batch.filter(pc.invert(pc.fill_null(batch.column("scored"), False)))
        for row in unscored.select(["row_index", "line", *columns]).to_pylist():
            # the first stage that failed is why the row is not scored
            column = next((c for c in columns if row[c]), None)
            stage = _STAGE_OF[column] if column else "unknown"
            error = row[column] if column else "not scored"
            self.by_stage[stage] += 1
            self.reasons[stage, _reason(error)] += 1
            self.examples.setdefault((stage, _reason(error)), _first_line(error))
            if len(self.first_failures) < MAX_LISTED:
                self.first_failures.append(
                    {
                        "row_index": row["row_index"],
                        "line": row["line"],
                        "stage": stage,
                        "error": error,
                    }
                )

    def section(self) -> dict[str, Any]:
        rows, scored = self.rows, self.scored
        return {
            "rows": rows,
            "scored_rows": scored,
            "unscored_rows": rows - scored,
            "share_scored": round(scored / rows, 6) if rows else None,
            "failed_rows_by_stage": dict(sorted(self.by_stage.items())),
            "failure_reasons": [
                {
                    "stage": stage,
                    "reason": reason,
                    "rows": count,
                    "first": self.examples[stage, reason],
                }
                for (stage, reason), count in self.reasons.most_common(MAX_LISTED)
            ],
            "first_failures": self.first_failures,
        }


def coverage_section(examples: pa.Table | Iterable[pa.RecordBatch]) -> dict[str, Any]:
    """Rows, scored rows and failures by stage and reason, from the joined examples (a
    table or its record batches)."""
    tally = CoverageTally()
    for batch in examples.to_batches() if isinstance(examples, pa.Table) else examples:
        tally.add(batch)
    return tally.section()


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
        f"- {r['rows']} x {r['stage']}{', the first' if r['rows'] > 1 else ''}: "
        f"{r.get('first', r['reason'])}\n"
        for r in coverage["failure_reasons"]
    )
    return text
