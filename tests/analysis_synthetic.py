"""Synthetic examples tables for the analysis tests: the typed examples schema, a
classification task with JSON outputs, metadata, metrics and token log probabilities
whose first-label-token probability is known per row."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from nova_eval_assets.stages import INFERENCE_SCHEMA

EXAMPLES_SCHEMA = pa.schema(
    [
        *INFERENCE_SCHEMA,
        pa.field("scored", pa.bool_()),
        pa.field("metrics", pa.map_(pa.string(), pa.float64())),
        pa.field("bleu_stats", pa.list_(pa.float64())),
    ]
)
CLASSES = ("hardware", "software", "network", "access", "software_urgent")
SPLIT = {"software_urgent": ["software", "_", "urgent"], "hardware": ["hard", "ware"]}


def label_pieces(label: str) -> list[str]:
    return SPLIT.get(label, [label])


def output_tokens(label: str, style: str = "decoded") -> tuple[list[str], int]:
    """Token texts of ``{"class": "<label>", "thought": "ok"}`` and the index of the first
    label token. ``style``: decoded text, SentencePiece (``▁``) or byte-level BPE (``Ġ``)."""
    space = {"decoded": " ", "sentencepiece": "▁", "bpe": "Ġ"}[style]
    before = ["{", '"', "class", '":', f'{space}"']
    pieces = label_pieces(label)
    after = ['",', f'{space}"', "thought", '":', f'{space}"', "ok", '"}']
    return [*before, *pieces, *after], len(before)


def token_entries(tokens: list[str], logprobs: list[float], k: int = 3) -> list[dict[str, Any]]:
    """Greedy: the chosen token is the most likely; alternatives share the rest."""
    entries = []
    for token, lp in zip(tokens, logprobs, strict=True):
        rest = max(1e-12, 1.0 - math.exp(lp))
        top = [{"token": token, "logprob": lp}]
        for j in range(1, k):
            alt = min(lp - 1e-6, math.log(rest / (k - 1)) - 0.01 * j)
            top.append({"token": f"alt{j}", "logprob": alt})
        entries.append({"token": token, "logprob": lp, "top": top})
    return entries


def make_examples(
    n: int = 400,
    seed: int = 0,
    style: str = "decoded",
    accuracy_of: Any = None,
    error_rows: int = 0,
    outcome_seed: int = 1,
) -> pa.Table:
    """``n`` classification examples. The first-label-token probability of row i is
    ``conf[i]`` ~ U(0.2, 1); the row is correct with probability ``conf`` (so calibrated),
    or with ``accuracy_of(conf, metadata)`` if given. A few rows are truncated, invalid
    JSON, empty, or (``error_rows``) inference errors."""
    data = np.random.default_rng(seed)  # the dataset: the same whatever the outcomes
    rng = np.random.default_rng([seed, outcome_seed])
    rows = []
    difficulties, priorities = ["easy", "medium", "hard"], ["low", "high", "critical"]
    golds = data.integers(len(CLASSES), size=n)
    confs = data.uniform(0.2, 1.0, size=n)
    levels = data.integers(3, size=(n, 2))
    for i in range(n):
        gold_label = CLASSES[golds[i]]
        conf = float(confs[i])
        meta = {
            "difficulty": difficulties[levels[i, 0]],
            "priority": priorities[levels[i, 1]] if i % 7 else "low",
        }
        if i % 11 == 0:
            meta["rare"] = "yes"
        p_right = conf if accuracy_of is None else accuracy_of(conf, meta)
        right = bool(rng.random() < p_right)
        label = gold_label if right else CLASSES[(CLASSES.index(gold_label) + 1) % len(CLASSES)]
        tokens, first = output_tokens(label, style)
        lps = [-0.01] * len(tokens)
        lps[first] = math.log(conf)
        for j in range(first + 1, first + len(label_pieces(label))):
            lps[j] = -0.05
        finish = "stop"
        kind = i % 50
        if kind == 13:  # truncated inside the thought
            tokens, lps, finish = tokens[:-2], lps[:-2], "length"
        elif kind == 29:  # not JSON at all
            tokens, lps = ["I", " think", " network"], [-0.3, -0.2, -0.9]
        elif kind == 37:  # empty
            tokens, lps = [" "], [-2.0]
        prediction = "".join(t.replace("▁", " ").replace("Ġ", " ") for t in tokens)
        gold = json.dumps({"class": gold_label, "thought": "ok"})
        error = None
        if i < error_rows:
            tokens, lps, prediction, finish, error = [], [], "", "error", "CUDA out of memory"
        scored = error is None
        em = float(prediction.strip() == gold.strip())
        f1 = float(rng.uniform(0, 1))
        rows.append(
            {
                "row_index": i,
                "line": i + 1,
                "system": "classify",
                "prompt": f"ticket {i}: something is broken",
                "gold": gold,
                "metadata": json.dumps(meta),
                "replica": 0,
                "prediction": prediction,
                "finish_reason": finish,
                "error": error,
                "prompt_tokens": 10,
                "completion_tokens": len(tokens),
                "latency_s": 0.01,
                "token_logprobs": token_entries(tokens, lps),
                "scored": scored,
                "metrics": [("em", em), ("f1", f1), ("custom_score", float(right) * 2)]
                if scored
                else [],
                "bleu_stats": [float(x) for x in rng.integers(1, 9, size=10)] if scored else None,
            }
        )
    return pa.Table.from_pylist(rows, schema=EXAMPLES_SCHEMA)


TICKETS_PATH = "recipes/data/support_tickets.jsonl"
TICKET_CLASSES = (
    "hardware",
    "hardware_urgent",
    "software",
    "software_urgent",
    "network",
    "network_urgent",
    "access",
    "access_urgent",
)
_PIECES = re.compile(r"\s*\w+|\s*[^\w\s]+|\s+")


def support_ticket_examples(root: Path, seed: int = 0, limit: int | None = None) -> pa.Table:
    """The shipped support-ticket dataset with synthetic model outputs: a JSON answer per
    ticket, right more often on easy tickets, some in a code fence, some truncated; tokens
    are word pieces (greedy: each chosen token is the most likely of its top 5)."""
    rng = np.random.default_rng(seed)
    lines = (root / TICKETS_PATH).read_text(encoding="utf-8").splitlines()[:limit]
    hit_rate = {"easy": 0.9, "medium": 0.7, "hard": 0.45}
    rows = []
    for i, line in enumerate(lines):
        record = json.loads(line)
        gold = json.loads(record["response"])
        meta = json.loads(record["metadata"])
        confidence = float(np.clip(rng.normal(hit_rate[meta["difficulty"]], 0.15), 0.05, 0.999))
        right = bool(rng.random() < confidence)
        label = gold["class"] if right else TICKET_CLASSES[rng.integers(len(TICKET_CLASSES))]
        answer = {"class": label, "thought": gold["thought"][:60], "description": "see ticket"}
        text = json.dumps(answer)
        finish = "stop"
        if i % 40 == 7:
            text = "```json\n" + text + "\n```"
        pieces = _PIECES.findall(text)
        if i % 40 == 19:
            pieces, finish = pieces[:12], "length"
        text = "".join(pieces)
        logprobs = [float(np.log(rng.uniform(0.85, 1.0))) for _ in pieces]
        first = _first_label_piece(pieces)
        if first is not None:
            logprobs[first] = float(np.log(confidence))
        tokens = token_entries(pieces, logprobs, k=5)
        em = float(text.strip() == record["response"].strip())
        rows.append(
            {
                "row_index": i,
                "line": i + 1,
                "system": record.get("system"),
                "prompt": record["query"],
                "gold": record["response"],
                "metadata": record["metadata"],
                "replica": 0,
                "prediction": text,
                "finish_reason": finish,
                "error": None,
                "prompt_tokens": len(record["query"]) // 4,
                "completion_tokens": len(pieces),
                "latency_s": 0.05,
                "token_logprobs": tokens,
                "scored": True,
                "metrics": [("em", em), ("f1", float(rng.random())), ("class_match", float(right))],
                "bleu_stats": [float(len(pieces)), float(len(pieces)), 5.0, 4.0, 3.0, 2.0]
                + [float(len(pieces))] * 4,
            }
        )
    return pa.Table.from_pylist(rows, schema=EXAMPLES_SCHEMA)


def _first_label_piece(pieces: list[str]) -> int | None:
    text, seen = "", None
    for j, piece in enumerate(pieces):
        text += piece
        if seen is None and re.search(r'"class"\s*:\s*"$', text):
            seen = len(text)
        elif seen is not None:
            return j
    return None
