"""Custom metrics for the IT-support-ticket case study (recipes/support_tickets.yaml).

The model must answer with only a JSON object ``{"class", "thought", "description"}``
(``class`` one of eight triage classes, ``thought`` its reasoning, ``description`` a one-line
summary). Per example this processor returns:

- ``schema_valid``: 1 when the whole output (apart from surrounding white space) is a JSON
  object with exactly the three string fields class, thought and description, else 0.
- ``class_correct``: 1 when the output is a JSON object whose ``class`` string equals the
  gold class exactly, else 0 (not a JSON object, no class, wrong class).
- ``thought_rougeL``: ROUGE-L F-measure of the predicted ``thought`` against the gold
  ``thought`` (longest common subsequence of lower-cased ``[a-z0-9]+`` tokens, which is
  ``rouge_score``'s default tokenizer without stemming). Agreement with the annotator's
  rationale: the gold thoughts name the evidence that decides the class and the urgency.
- ``thought_grounding``: the share of the thought's content words (tokens of three or more
  characters that are not stop words) that occur in the ticket text. A rationale should
  rest on what the requester wrote; a generic thought ("this is a software problem") or an
  invented one scores low. For reference, the gold thoughts score 0.57 on average (they
  quote the ticket, then add triage words such as "outage" or "minor" that it lacks), so a
  gold thought scores about 0.78 on ``reasoning_quality`` against itself: a practical ceiling.
- ``reasoning_quality``: the mean of ``thought_rougeL`` and ``thought_grounding``, in 0..1.
  Neither half is enough alone: copying the ticket maximizes grounding but not agreement
  with the rationale; paraphrasing the gold rationale without the ticket's words is
  rewarded only by ROUGE. An output without a string ``thought`` (invalid JSON included)
  scores 0 on all three thought metrics, so averages stay over every example.

Metrics are aggregated with the recipe's ``processor.aggregation`` (average: each is then
a rate or a mean score).

The preprocessor (off in the shipped recipe) tidies white space in the ticket text: it
strips the ends, drops trailing spaces on each line, turns tabs and runs of spaces into one
space and keeps at most one blank line; system prompt and gold pass through unchanged.

The module uses only the standard library and nova-eval's SDK, so this file runs in process
(``processor.handler: processors/ticket_classification.py:lambda_handler``) and, unchanged,
as an AWS Lambda function with ``nova_eval_assets.byom`` packaged as a layer.
"""

from __future__ import annotations

import json
import re

from nova_eval_assets.byom import build_lambda_handler, postprocess, preprocess

FIELDS = ("class", "thought", "description")
_TOKEN = re.compile(r"[a-z0-9]+")
_STOP_WORDS = """
    about above after again against all also and any are because been before being below
    between both but can cannot could did does doing down during each few for from further
    had has have having her here hers him his how into its itself just more most not now
    off once only other our ours out over own same she should so some such than that the
    their theirs them then there these they this those through too under until very was
    were what when where which while who whom why will with would you your yours
"""
STOP_WORDS = frozenset(_STOP_WORDS.split())


def tokens(text: str) -> list[str]:
    """Lower-cased ``[a-z0-9]+`` tokens (rouge_score's default tokenization, no stemming)."""
    return _TOKEN.findall(text.lower())


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (beta 1) on :func:`tokens`: 2PR/(P+R) with P = LCS/len(prediction),
    R = LCS/len(reference); 0 if either side has no tokens."""
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return 0.0
    previous = [0] * (len(ref) + 1)
    for p in pred:
        current = [0]
        for j, r in enumerate(ref, start=1):
            current.append(previous[j - 1] + 1 if p == r else max(previous[j], current[j - 1]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def grounding(thought: str, ticket: str) -> float:
    """Share of the thought's content words (>= 3 characters, not stop words) that occur
    among the ticket's tokens; 0 for a thought without content words."""
    content = [t for t in tokens(thought) if len(t) >= 3 and t not in STOP_WORDS]
    if not content:
        return 0.0
    ticket_words = set(tokens(ticket))
    return sum(t in ticket_words for t in content) / len(content)


def parse_object(text: str) -> dict | None:
    """The output as a JSON object (the whole text, white space aside), or None."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def ticket_metrics(ticket: str, output: str, gold: str) -> dict[str, float]:
    predicted = parse_object(output)
    expected = parse_object(gold) or {}
    schema_valid = (
        predicted is not None
        and set(predicted) == set(FIELDS)
        and all(isinstance(predicted[f], str) for f in FIELDS)
    )
    predicted_class = predicted.get("class") if predicted else None
    class_correct = isinstance(predicted_class, str) and predicted_class == expected.get("class")
    thought = predicted.get("thought") if predicted else None
    if isinstance(thought, str):
        rouge = rouge_l(thought, str(expected.get("thought", "")))
        grounded = grounding(thought, ticket)
    else:
        rouge = grounded = 0.0
    return {
        "class_correct": float(class_correct),
        "schema_valid": float(schema_valid),
        "thought_rougeL": rouge,
        "thought_grounding": grounded,
        "reasoning_quality": (rouge + grounded) / 2,
    }


def tidy_whitespace(text: str) -> str:
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


@preprocess
def preprocessor(event: dict, context) -> dict:
    data = event["data"]
    return {
        "statusCode": 200,
        "body": {
            "system": data.get("system"),
            "prompt": tidy_whitespace(data["prompt"]),
            "gold": data["gold"],
        },
    }


@postprocess
def postprocessor(event: dict, context) -> dict:
    data = event["data"]
    metrics = ticket_metrics(data["prompt"], data["inference_output"], data["gold"])
    return {
        "statusCode": 200,
        "body": [{"metric": name, "value": value} for name, value in metrics.items()],
    }


lambda_handler = build_lambda_handler(preprocessor=preprocessor, postprocessor=postprocessor)
