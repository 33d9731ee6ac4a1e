"""Offline HTML reports of an evaluation's analysis and of a comparison.

One self-contained file each: inline CSS, tables, and the plots embedded as base64 PNG,
no script and nothing fetched, so it opens from disk in any browser. Every text from the
data is escaped. The same figures are in ``analysis.json`` / ``comparison.json``.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable
from typing import Any

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
  max-width: 1100px; color: #1f2328; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem;
  border-bottom: 1px solid #d0d7de; padding-bottom: 0.3rem; } h3 { margin-top: 1.4rem; }
.sub { color: #59636e; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.55rem; text-align: left;
  vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.small td { color: #8c959f; } tr.sig td { background: #fff8c5; }
.figures { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
.figures img { width: calc(50% - 0.5rem); min-width: 320px; border: 1px solid #d0d7de; }
.figures img.wide { width: 100%; max-width: 760px; }
.kpi { display: inline-block; margin: 0 1.4rem 0.6rem 0; } .kpi b { display: block;
  font-size: 1.35rem; } details { margin: 0.4rem 0; } summary { cursor: pointer; }
pre { white-space: pre-wrap; word-break: break-word; background: #f6f8fa; padding: 0.4rem;
  margin: 0.2rem 0; font-size: 0.82rem; }
.note { color: #9a6700; }
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        if value != 0 and abs(value) < 10 ** (-digits):
            return f"{value:.2e}"
        return f"{value:.{digits}f}"
    return esc(value)


def pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def image(png: bytes | None, alt: str, wide: bool = False) -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode("ascii")
    cls = ' class="wide"' if wide else ""
    return f'<img{cls} alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def table(
    header: list[str], rows: Iterable[list[str]], classes: Iterable[str] | None = None
) -> str:
    """``rows`` hold cell HTML; numeric-looking cells are right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row, cls in zip(rows, classes or _forever(""), strict=False):
        cells = "".join(
            f'<td class="num">{c}</td>' if _numeric(c) else f"<td>{c}</td>" for c in row
        )
        body.append(f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _forever(value: str) -> Iterable[str]:
    while True:
        yield value


def _numeric(cell: str) -> bool:
    text = cell.replace(",", "").replace("%", "").replace("±", "").replace(" ", "")
    try:
        float(text.split("[")[0] or "x")
    except ValueError:
        return False
    return True


def page(title: str, subtitle: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        f'<h1>{esc(title)}</h1><p class="sub">{subtitle}</p>{body}</body></html>\n'
    )


# ---------------------------------------------------------------- evaluation


def _kpis(items: list[tuple[str, str]]) -> str:
    return "".join(f'<span class="kpi"><b>{v}</b>{esc(k)}</span>' for k, v in items)


def _example_block(example: dict[str, Any], uses_labels: bool) -> str:
    head = (
        f"row {fmt(example.get('row_index'))} · {esc(example.get('category'))} · "
        f"confidence {fmt(example.get('confidence'), 3)}"
    )
    if uses_labels:
        head += (
            f" · predicted <b>{esc(example.get('predicted_label') or '(none)')}</b>, "
            f"gold <b>{esc(example.get('gold_label') or '(none)')}</b>"
        )
    parts = [f"<details><summary>{head}</summary>"]
    for key in ("prompt", "prediction", "gold", "metadata", "finish_reason"):
        if example.get(key) is not None:
            parts.append(f"<div><b>{key}</b><pre>{esc(example[key])}</pre></div>")
    parts.append("</details>")
    return "".join(parts)


def strata_tables(rows: list[dict[str, Any]], min_size: int) -> str:
    """One table per metadata field: its values down, every metric across."""
    out = []
    fields = list(dict.fromkeys(r["field"] for r in rows))
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    for field in fields:
        subset = [r for r in rows if r["field"] == field]
        values = list(dict.fromkeys(r["value"] for r in subset))
        cells = {(r["value"], r["metric"]): r for r in subset}
        body, classes = [], []
        for value in values:
            row_cells = [esc(value)]
            ns = []
            for metric in metrics:
                r = cells.get((value, metric))
                if r is None:
                    row_cells.append("")
                    continue
                ns.append(r["n"])
                row_cells.append(
                    f"{fmt(r['mean'])} ± {fmt(r['stderr'])}" if r["mean"] is not None else "n/a"
                )
            n = max(ns) if ns else 0
            small = n < min_size
            row_cells.insert(1, fmt(n) + (" (small)" if small else ""))
            body.append(row_cells)
            classes.append("small" if small else "")
        title = "all examples" if field == "(all)" else f"by {field}"
        out.append(f"<h3>{esc(title)}</h3>")
        out.append(table([field, "n", *metrics], body, classes))
    return "".join(out)


def evaluation_html(
    summary: dict[str, Any], strata: list[dict[str, Any]], images: dict[str, bytes]
) -> str:
    settings = summary["settings"]
    uses_labels = settings.get("label_field") is not None
    counts = summary["counts"]
    calib = summary["calibration"]
    review = calib["review_threshold"]
    failures = summary["failures"]
    measure = summary["confidence"]["measure"]
    label_note = (
        f"label field <code>{esc(settings['label_field'])}</code>"
        if uses_labels
        else f"correct: <code>{esc(settings['correctness_metric'])}</code> ≥ "
        f"{fmt(settings['quality_threshold'], 2)}"
    )
    subtitle = (
        f"model {esc(summary.get('model'))} · {fmt(counts['examples'])} examples, "
        f"{fmt(counts['scored'])} scored · {label_note} · confidence: {esc(measure)}"
    )
    body = []
    if summary.get("notes"):
        body.append("".join(f'<p class="note">{esc(n)}</p>' for n in summary["notes"]))

    # calibration
    body.append("<h2>Confidence and calibration</h2>")
    body.append(
        _kpis(
            [
                ("accuracy", pct(calib["accuracy"])),
                ("mean confidence", fmt(calib["mean_confidence"], 3)),
                ("ECE (equal width)", fmt(calib["ece_equal_width"], 3)),
                ("ECE (equal mass)", fmt(calib["ece_equal_mass"], 3)),
                ("Brier score", fmt(calib["brier"], 3)),
                ("examples with confidence", fmt(calib["n"])),
            ]
        )
    )
    if not calib["n"]:
        body.append(
            "<p>No example has a confidence with a correctness to compare it with, so there "
            "is nothing to calibrate (see the notes and the failure categories).</p>"
        )
    elif review["threshold"] is not None:
        body.append(
            f"<p>To reach <b>{pct(review['target_accuracy'])}</b> accuracy, accept answers "
            f"with confidence ≥ <b>{fmt(review['threshold'], 4)}</b>: that covers "
            f"{pct(review['coverage'])} of the examples at {pct(review['accuracy'])} "
            f"accuracy and routes <b>{fmt(review['n_review'])}</b> to human review.</p>"
        )
    else:
        body.append(
            f"<p>No confidence threshold reaches {pct(review['target_accuracy'])} accuracy; "
            "every answer would need review.</p>"
        )
    body.append(
        '<div class="figures">'
        + image(images.get("reliability"), "reliability diagram")
        + image(images.get("coverage"), "selective accuracy by coverage")
        + image(images.get("confidence_histogram"), "confidence histogram")
        + "</div>"
    )
    body.append("<h3>Confidence measures compared</h3>")
    body.append(
        table(
            ["measure", "n", "mean", "ECE (width)", "ECE (mass)", "Brier", "AURC"],
            [
                [
                    esc(m["measure"]) + (" (used)" if m["measure"] == measure else ""),
                    fmt(m["n"]),
                    fmt(m["mean_confidence"], 3),
                    fmt(m["ece_equal_width"], 3),
                    fmt(m["ece_equal_mass"], 3),
                    fmt(m["brier"], 3),
                    fmt(m["aurc"], 3),
                ]
                for m in summary["measures"]
            ],
        )
    )
    body.append("<h3>Mean of each measure for correct and incorrect examples</h3>")
    body.append(
        table(
            ["measure", "correct", "incorrect"],
            [
                [esc(m["measure"]), fmt(m["correct"], 3), fmt(m["incorrect"], 3)]
                for m in summary["measures_by_outcome"]
            ],
        )
    )
    for key, title in (("bins_equal_width", "equal-width"), ("bins_equal_mass", "equal-mass")):
        body.append(f"<details><summary>Reliability bins ({title})</summary>")
        body.append(
            table(
                ["bin", "n", "mean confidence", "accuracy", "gap"],
                [
                    [
                        f"({b['lo']:.3f}, {b['hi']:.3f}]",
                        fmt(b["n"]),
                        fmt(b["confidence"], 3),
                        fmt(b["accuracy"], 3),
                        fmt(b["accuracy"] - b["confidence"], 3),
                    ]
                    for b in calib[key]
                ],
            )
        )
        body.append("</details>")

    # failures
    thresholds = failures["thresholds"]
    body.append("<h2>Failures</h2>")
    findings = failures["findings"]
    body.append(
        table(
            ["finding", "threshold", "count", "rate"],
            [
                [
                    "low confidence",
                    f"confidence &lt; {fmt(thresholds['low_confidence_threshold'], 2)}",
                    fmt(findings["low_confidence"]["count"]),
                    pct(findings["low_confidence"]["rate"]),
                ],
                [
                    "overconfident errors",
                    f"confidence ≥ {fmt(thresholds['overconfident_threshold'], 2)}, incorrect",
                    fmt(findings["overconfident_error"]["count"]),
                    pct(findings["overconfident_error"]["rate"]),
                ],
            ],
        )
    )
    body.append("<h3>Error categories</h3>")
    body.append(
        table(
            ["category", "examples (any)", "rate", "primary"],
            [
                [
                    esc(name),
                    fmt(c["count"]),
                    pct(c["rate"]),
                    fmt(failures["primary"].get(name, 0)),
                ]
                for name, c in failures["categories"].items()
            ]
            + [["ok", "", "", fmt(failures["primary"].get("ok", 0))]],
        )
    )
    for key, shown in failures["examples"].items():
        if shown:
            body.append(f"<h3>Examples: {esc(key.replace('_', ' '))}</h3>")
            body.extend(_example_block(e, uses_labels) for e in shown)

    # strata
    body.append("<h2>By metadata</h2>")
    if summary.get("strata_notes"):
        body.append("".join(f'<p class="note">{esc(n)}</p>' for n in summary["strata_notes"]))
    body.append(
        f"<p>Mean ± standard error per stratum; strata with fewer than "
        f"{fmt(settings['min_stratum_size'])} examples are marked small (greyed), not "
        "hidden.</p>"
    )
    body.append(
        '<div class="figures">' + image(images.get("strata"), "strata", wide=True) + "</div>"
    )
    body.append(strata_tables(strata, settings["min_stratum_size"]))
    return page(f"Analysis: {summary['name']}", subtitle, "".join(body))


# ---------------------------------------------------------------- comparison


def _comparison_rows(
    rows: list[dict[str, Any]], holm: bool = True
) -> tuple[list[list[str]], list[str]]:
    body, classes = [], []
    for r in rows:
        ci = f"[{fmt(r['low'])}, {fmt(r['high'])}]"
        test = r["test"]
        if test == "mcnemar":
            test += f" ({r.get('mcnemar_a_only', 0)} vs {r.get('mcnemar_b_only', 0)})"
        body.append(
            [
                esc(r["metric"]) if r["field"] == "(all)" else esc(r["value"]),
                fmt(r["n"]),
                fmt(r["a"]),
                fmt(r["b"]),
                fmt(r["diff"]),
                ci,
                fmt(r["p_value"]),
                *([fmt(r.get("p_holm"))] if holm else []),
                esc(test),
            ]
        )
        classes.append("sig" if r["significant"] else ("small" if r["small"] else ""))
    return body, classes


def comparison_html(
    summary: dict[str, Any], rows: list[dict[str, Any]], images: dict[str, bytes]
) -> str:
    a, b = summary["baseline"], summary["candidate"]
    counts = summary["counts"]
    subtitle = (
        f"{esc(b)} (B) against {esc(a)} (A) · {fmt(counts['paired'])} paired examples, "
        f"{fmt(counts['scored_in_both'])} scored in both · diff = B − A"
    )
    body = []
    if summary.get("notes"):
        body.append("".join(f'<p class="note">{esc(n)}</p>' for n in summary["notes"]))
    body.append(
        "<p>Paired tests on the same examples: a seeded paired bootstrap of the difference "
        "(95% percentile interval, p-value of the null-shifted bootstrap) for every metric, "
        "and McNemar's exact test for 0/1 metrics. Highlighted rows: p &lt; 0.05. With "
        "many strata some differences look significant by chance; p (Holm) adjusts for "
        "the strata of a field.</p>"
    )
    header = ["metric", "n", f"A: {a}", f"B: {b}", "B − A", "95% interval", "p", "test"]
    overall = [r for r in rows if r["field"] == "(all)"]
    body.append("<h2>Overall</h2>")
    body.append(table(header, *_comparison_rows(overall, holm=False)))
    body.append(
        '<div class="figures">' + image(images.get("forest"), "differences", wide=True) + "</div>"
    )
    body.append("<h2>By metadata</h2>")
    fields = [f for f in dict.fromkeys(r["field"] for r in rows) if f != "(all)"]
    for field in fields:
        body.append(f"<h3>by {esc(field)}</h3>")
        metrics = dict.fromkeys(r["metric"] for r in rows if r["field"] == field)
        for i, metric in enumerate(metrics):
            subset = [r for r in rows if r["field"] == field and r["metric"] == metric]
            flagged = sum(r["significant"] for r in subset)
            opened = " open" if i == 0 else ""
            body.append(
                f"<details{opened}><summary>{esc(metric)} ({flagged} of {len(subset)} strata "
                "with p &lt; 0.05)</summary>"
            )
            body.append(table([field, *header[1:7], "p (Holm)", "test"], *_comparison_rows(subset)))
            body.append("</details>")
    return page(f"Comparison: {b} vs {a}", subtitle, "".join(body))
