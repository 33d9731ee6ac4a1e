"""Confidence per example from the captured token log probabilities, column-wise.

Input: the ``token_logprobs`` column of the examples table (one list per example of
``{token, logprob, top: [{token, logprob}, ...], constrained_logprob, forced}``, ``token``
being the text of the generated token; the last two, set under ``inference.response_format``
and null otherwise, may be absent from older tables). Nothing here loops over examples in
Python: the lists are flattened once, and every measure is a numpy operation over the flat
arrays and their offsets.

The *answer* of an example is where the model states its answer:

- with a label field (``analysis.label_field``, e.g. ``class``), the value of that field in
  the generated JSON, found in the concatenated token texts by ``"class"\\s*:\\s*"...``
  (then ``'class': '...'``, then an unquoted value such as ``"class": 3``). The first
  answer token is the first token that overlaps the value's first character, so a token
  that carries JSON punctuation and the start of the label (``' "soft'``) counts, and
  one that is only punctuation (``'": "'``) does not;
- without one, the first token holding a non-white-space character.

Token texts are normalized before matching: SentencePiece ``▁`` and byte-level BPE ``Ġ``
become a space, ``Ċ`` / ``ĉ`` a newline / tab, and byte-fallback tokens ``<0xNN>``
their character (white space and quotes) or U+FFFD, so engines that report raw vocabulary
pieces are matched like those that report decoded text. Offsets are counted in UTF-8
bytes of the normalized texts throughout.

Measures (per example; NaN where undefined, e.g. an unscored row or no answer found):

- ``first_token_prob``: probability of the first answer token, exp of its log
  probability. With a label field this is the probability of the first token of the
  predicted label, the confidence measure of Nova's samples.
- ``label_prob``: probability of the whole predicted label, exp of the summed log
  probabilities of every token overlapping the value *and its closing quote*: the closing
  quote is what separates ``software`` from ``software_urgent``, which share a first token.
- ``label_confidence``: under constrained decoding (e.g. the classification shorthand, whose
  label field is an enum of the labels), the probability of the chosen label among the
  labels the constraint allowed: exp of the summed ``constrained_logprob`` of every token
  from the one holding the value's *opening* quote (the step that picks the opening quote
  already picks among label starts: ``'"'`` against ``'"hard'``) through the one holding
  its closing quote. Strictly it is the probability of this token sequence, which is the
  label's where no other token sequence the constraint allows spells the same label. NaN
  without ``constrained_logprob`` (no constraint, or an older table), where one of those
  tokens has none, without a label field, and where no quoted value with its closing quote
  is found (an unquoted value such as ``"class": 3``, or an output cut before the quote).
- ``forced_tokens``: how many generated tokens the constraint forced (the model's own top
  token was not allowed); 0 without a constraint.
- ``first_token_entropy``: entropy (nats) of the top-k distribution at the first answer
  token, renormalized over the k returned alternatives; ``first_token_top_mass`` is the
  probability those k alternatives cover (the entropy is a lower bound of the full one when
  the mass is below 1).
- ``mean_logprob`` (mean over generated tokens), ``mean_token_prob`` (its exp: the
  geometric-mean token probability), ``min_logprob`` / ``min_token_prob`` with
  ``min_token`` and ``min_token_position`` (the least likely token, first if tied),
  ``sequence_logprob`` (sum) and ``n_tokens``.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MEASURE_COLUMNS = {
    # a benchmark scorer's own per-row ``confidence`` metric (the chosen letter's
    # probability among the allowed letters: tasks/multiple_choice.py)
    "answer": "answer_prob",
    "first_token": "first_token_prob",
    "label": "label_prob",
    "label_confidence": "label_confidence",
    "mean_token": "mean_token_prob",
    "min_token": "min_token_prob",
}
TOKEN_MARKERS = {"▁": " ", "Ġ": " ", "Ċ": "\n", "ĉ": "\t"}
BYTE_TOKENS = {
    "<0x09>": "\t",
    "<0x0A>": "\n",
    "<0x0D>": "\r",
    "<0x20>": " ",
    "<0x22>": '"',
    "<0x27>": "'",
}


def normalize_tokens(tokens: pa.Array) -> pa.Array:
    """Token texts with SentencePiece / byte-level BPE markers and byte tokens resolved."""
    out = pc.fill_null(tokens, "")
    if pc.any(pc.match_substring_regex(out, "[▁ĠĊĉ]")).as_py():
        for marker, text in TOKEN_MARKERS.items():
            out = pc.replace_substring(out, marker, text)
    if pc.any(pc.match_substring(out, "<0x")).as_py():
        for byte_token, text in BYTE_TOKENS.items():
            out = pc.replace_substring(out, byte_token, text)
        out = pc.replace_substring_regex(out, "<0x[0-9A-Fa-f]{2}>", "\ufffd")
    return out


def _answer_patterns(label_field: str | None) -> list[str]:
    """RE2 patterns with groups pre (everything before the answer), val and close."""
    if label_field is None:
        return [r"(?s)^(?P<pre>\s*)(?P<val>\S)(?P<close>)"]
    key = re.escape(label_field)
    return [
        rf'(?s)^(?P<pre>.*?"{key}"\s*:\s*")(?P<val>(?:[^"\\]|\\.)*)(?P<close>"?)',
        rf"(?s)^(?P<pre>.*?'{key}'\s*:\s*')(?P<val>(?:[^'\\]|\\.)*)(?P<close>'?)",
        rf"""(?s)^(?P<pre>.*?["']{key}["']\s*:\s*)(?P<val>[^\s,}}\]"']+)(?P<close>)""",
    ]


def locate_answer(
    texts: pa.Array, label_field: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(found, start, value_bytes, close_bytes) of the answer in each text, UTF-8 bytes."""
    n = len(texts)
    found = np.zeros(n, dtype=bool)
    start = np.zeros(n, dtype=np.int64)
    value = np.zeros(n, dtype=np.int64)
    close = np.zeros(n, dtype=np.int64)
    todo = np.arange(n)
    for pattern in _answer_patterns(label_field):
        if todo.size == 0:
            break
        subset = texts if todo.size == n else texts.take(pa.array(todo))
        match = pc.extract_regex(subset, pattern)
        ok = match.is_valid().to_numpy(zero_copy_only=False)
        if ok.any():
            rows = todo[ok]
            matched = match.filter(pa.array(ok))
            found[rows] = True
            for name, out in (("pre", start), ("val", value), ("close", close)):
                field = pc.struct_field(matched, name)
                out[rows] = pc.binary_length(field).to_numpy(zero_copy_only=False)
        todo = todo[~ok]
    return found, start, value, close


_CLP = "constrained_logprob"


def _nan_array(n: int) -> np.ndarray:
    return np.full(n, np.nan)


def _span_sums(values: np.ndarray, first: np.ndarray, span: np.ndarray) -> np.ndarray:
    """Per row, the sum of ``values[first : first + span]`` (0 where ``span`` is 0)."""
    out = np.zeros(len(first))
    for k in range(int(span.max(initial=0))):
        rows = np.flatnonzero(span > k)
        out[rows] += values[first[rows] + k]
    return out


def confidence_columns(
    token_logprobs: pa.Array | pa.ChunkedArray, label_field: str | None
) -> dict[str, np.ndarray | pa.Array]:
    """Every measure of the module docstring for each example (see there)."""
    if isinstance(token_logprobs, pa.ChunkedArray):
        token_logprobs = token_logprobs.combine_chunks()
    n = len(token_logprobs)
    lengths = pc.fill_null(pc.list_value_length(token_logprobs), 0).to_numpy(zero_copy_only=False)
    lengths = lengths.astype(np.int64)
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    flat = pc.list_flatten(token_logprobs)
    tokens = pc.struct_field(flat, "token")
    logprob = pc.struct_field(flat, "logprob").to_numpy(zero_copy_only=False).astype(np.float64)

    # -- where the answer is, in bytes of the normalized token texts
    normalized = normalize_tokens(tokens)
    token_bytes = pc.binary_length(normalized).to_numpy(zero_copy_only=False).astype(np.int64)
    cum = np.zeros(len(token_bytes) + 1, dtype=np.int64)
    np.cumsum(token_bytes, out=cum[1:])
    cum_end = cum[1:]
    joined = pc.binary_join(
        pa.ListArray.from_arrays(pa.array(starts, pa.int64()).cast(pa.int32()), normalized), ""
    )
    has, pre, val, close = locate_answer(joined, label_field)
    row_base = cum[starts[:-1]]
    begin = row_base + pre
    first = np.searchsorted(cum_end, begin, side="right")
    found = has & (lengths > 0) & (first < starts[1:])
    row_last = np.maximum(starts[1:] - 1, 0)
    end_value = begin + np.maximum(val - 1, 0)
    end_close = begin + np.maximum(val + close - 1, 0)
    last_value = np.minimum(np.searchsorted(cum_end, end_value, side="right"), row_last)
    last_close = np.minimum(np.searchsorted(cum_end, end_close, side="right"), row_last)
    first = np.where(found, first, 0)
    last_value = np.where(found, np.maximum(last_value, first), 0)
    last_close = np.where(found, np.maximum(last_close, first), 0)

    first_logprob = np.where(found, logprob[first] if logprob.size else np.nan, np.nan)
    label_logprob = _span_sums(logprob, first, np.where(found, last_close - first + 1, 0))
    label_logprob[~found] = np.nan

    # -- under a constraint: the label among the allowed ones, and the forced tokens
    flat_type = flat.type
    label_confidence = _nan_array(n)
    closed = found & (close > 0) & (pre > 0)
    if label_field is not None and closed.any() and flat_type.get_field_index(_CLP) >= 0:
        constrained = pc.struct_field(flat, _CLP).to_numpy(zero_copy_only=False)
        constrained = constrained.astype(np.float64)  # a null becomes NaN, and so the sum
        opening = np.searchsorted(cum_end, begin - 1, side="right")
        opening = np.where(closed, np.minimum(opening, first), 0)
        span = np.where(closed, last_close - opening + 1, 0)
        label_confidence = np.exp(_span_sums(constrained, opening, span))
        label_confidence[~closed] = np.nan
    forced_tokens = np.zeros(n, dtype=np.int64)
    if flat_type.get_field_index("forced") >= 0 and len(flat):
        forced = pc.fill_null(pc.struct_field(flat, "forced"), False)
        forced = forced.to_numpy(zero_copy_only=False).astype(bool)
        owner = np.repeat(np.arange(n), lengths)
        forced_tokens = np.bincount(owner[forced], minlength=n)

    # -- the top-k distribution at the first answer token
    entropy, top_mass = _nan_array(n), _nan_array(n)
    if found.any() and flat_type.get_field_index("top") >= 0:
        rows = np.flatnonzero(found)
        chosen = pc.struct_field(flat, "top").take(pa.array(first[rows]))
        top_lp = pc.struct_field(pc.list_flatten(chosen), "logprob")
        top_lp = top_lp.to_numpy(zero_copy_only=False).astype(np.float64)
        parent = pc.list_parent_indices(chosen).to_numpy(zero_copy_only=False)
        keep = np.isfinite(top_lp)
        parent, top_lp = parent[keep], top_lp[keep]
        p = np.exp(top_lp)
        count = np.bincount(parent, minlength=rows.size)
        mass = np.bincount(parent, weights=p, minlength=rows.size)
        weighted = np.bincount(parent, weights=p * top_lp, minlength=rows.size)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = np.log(mass) - weighted / mass
        some = count > 0
        entropy[rows[some]] = np.maximum(h[some], 0.0)
        top_mass[rows[some]] = mass[some]

    # -- sequence measures
    parent = np.repeat(np.arange(n), lengths)
    finite = np.isfinite(logprob)
    counted = np.bincount(parent[finite], minlength=n)
    total = np.bincount(parent[finite], weights=logprob[finite], minlength=n)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(counted > 0, total / np.maximum(counted, 1), np.nan)
    minimum = _nan_array(n)
    min_position = np.full(n, -1, dtype=np.int64)
    min_token: pa.Array = pa.nulls(n, pa.string())
    nonempty = np.flatnonzero(counted > 0)
    if nonempty.size:
        filled = np.where(finite, logprob, np.inf)
        row_min = np.minimum.reduceat(filled, starts[:-1][lengths > 0])
        row_min_full = np.full(n, np.inf)
        row_min_full[lengths > 0] = row_min
        minimum[nonempty] = row_min_full[nonempty]
        candidates = np.flatnonzero(filled == row_min_full[parent])
        owners = parent[candidates]
        firsts = np.ones(owners.size, dtype=bool)
        firsts[1:] = owners[1:] != owners[:-1]
        where = candidates[firsts]
        rows = owners[firsts]
        min_position[rows] = where - starts[rows]
        texts = np.full(n, -1, dtype=np.int64)
        texts[rows] = where
        valid = texts >= 0
        min_token = pc.if_else(
            pa.array(valid),
            tokens.take(pa.array(np.where(valid, texts, 0))) if len(tokens) else min_token,
            pa.scalar(None, pa.string()),
        )
    first_position = np.where(found, first - starts[:-1], -1)
    label_tokens = np.where(found, last_value - first + 1, 0)
    if label_field is None:  # no label: the answer is the whole output
        label_logprob = _nan_array(n)
        label_tokens = np.zeros(n, dtype=np.int64)
    return {
        "answer_found": found,
        "answer_token_position": first_position.astype(np.int32),
        "label_tokens": label_tokens.astype(np.int32),
        "first_token_logprob": first_logprob,
        "first_token_prob": np.exp(first_logprob),
        "label_logprob": label_logprob,
        "label_prob": np.exp(label_logprob),
        "label_confidence": label_confidence,
        "forced_tokens": forced_tokens.astype(np.int32),
        "first_token_entropy": entropy,
        "first_token_top_mass": top_mass,
        "n_tokens": lengths.astype(np.int32),
        "sequence_logprob": np.where(counted > 0, total, np.nan),
        "mean_logprob": mean,
        "mean_token_prob": np.exp(mean),
        "min_logprob": minimum,
        "min_token_prob": np.exp(minimum),
        "min_token": min_token,
        "min_token_position": min_position.astype(np.int32),
    }
