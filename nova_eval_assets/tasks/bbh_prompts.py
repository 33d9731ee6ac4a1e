"""Nova's BIG-Bench Hard few-shot chain-of-thought task (bbh, fs_cot): its prompt and its
answer extraction.

Behaviour follows Amazon Nova's published lighteval task
(aws-samples/sample-Nova-lighteval-custom-task, ``custom_tasks/bbh/{fs_cot,constants}.py``).
The exemplars, preambles and instructions are data (``data/bbh/fs_cot_prompts.json``): the
3-shot exemplars of BIG-Bench Hard's ``cot-prompts`` (MIT) as the chat messages Nova's
constants hold them.

``compat_nova=True`` reproduces the published extraction and scoring exactly; ``False`` (our
default) fixes three defects:

- the published extraction pairs answer statements up ("the answer is ... the answer is X")
  and takes the second of the last pair, so with three statements it reads the middle one;
  we read the last statement;
- an option answer written with its text, "(A) 12/11/1937", scores 0 against target "(A)"
  (and a bare "A" does too); we accept both for a target that is an option letter;
- no answer is read as the string "0", which scores 1 against target "0"; we score it 0.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

BBH_SUBSETS: tuple[str, ...] = (
    "boolean_expressions",
    "causal_judgement",
    "date_understanding",
    "disambiguation_qa",
    "dyck_languages",
    "formal_fallacies",
    "geometric_shapes",
    "hyperbaton",
    "logical_deduction_five_objects",
    "logical_deduction_seven_objects",
    "logical_deduction_three_objects",
    "movie_recommendation",
    "multistep_arithmetic_two",
    "navigate",
    "object_counting",
    "penguins_in_a_table",
    "reasoning_about_colored_objects",
    "ruin_names",
    "salient_translation_error_detection",
    "snarks",
    "sports_understanding",
    "temporal_sequences",
    "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects",
    "tracking_shuffled_objects_three_objects",
    "web_of_lies",
    "word_sorting",
)

PROMPTS_RESOURCE = "data/bbh/fs_cot_prompts.json"


@cache
def bbh_prompt_parts() -> dict[str, dict[str, Any]]:
    """subset -> {"preamble", "instruction", "exemplars"} from the package data (read once,
    when first needed: the task registry imports this module)."""
    text = resources.files(__package__).joinpath(PROMPTS_RESOURCE).read_text(encoding="utf-8")
    return json.loads(text)["subsets"]


@cache
def _rendered_exemplars(subset: str) -> str:
    # Nova puts the list of message dicts into an f-string: its Python repr, so the key
    # order (content, role) and repr's quoting are part of the prompt
    return repr(bbh_prompt_parts()[subset]["exemplars"])


def bbh_prompt(subset: str, input: str) -> str:
    """Nova's bbh fs_cot prompt: the exemplars, the subset's preamble, the input and the
    answer instruction, a line each, then a newline and four spaces (as published)."""
    if subset not in BBH_SUBSETS:
        raise ValueError(f"{subset!r} is not a BBH subset")
    parts = bbh_prompt_parts()[subset]
    return (
        f"{_rendered_exemplars(subset)}\n{parts['preamble']}\n{input}\n{parts['instruction']}\n    "
    )


# --- answer extraction ---------------------------------------------------------------

_STATEMENT_HEAD = r"the\s*(?:correct\s*)?answer\s*is[:\s]*"
# an optional opening quote and markdown emphasis, then the answer up to a quote, full
# stop, comma, semicolon or asterisk
_STATEMENT_ANSWER = r'\s*"?(?:\*\*|\*)?([^".,;*]+)'

_STATEMENT = re.compile(_STATEMENT_HEAD + _STATEMENT_ANSWER, re.IGNORECASE)
# published: a statement, anything (lazily), then another statement whose answer is kept
_STATEMENT_PAIR = re.compile(
    _STATEMENT_HEAD + r"\s*(?:\"|')?(.*?)" + _STATEMENT_HEAD + _STATEMENT_ANSWER, re.IGNORECASE
)
_HEAD_ONLY = re.compile(r"the\s*(?:correct\s*)?answer\s*is", re.IGNORECASE)

# what the published extraction returns when it finds no answer
_NOVA_NO_ANSWER = "0"

_OPTION_LETTER = re.compile(r"\(([a-z])\)")


def extract_bbh_answer(output: str, compat_nova: bool = False) -> str | None:
    """The answer of a generated output, lower-cased and stripped, or None.

    ``compat_nova``: the published two passes: the last pair of statements' second answer
    if any pair occurs, else the last single statement's. Otherwise: the last statement
    whose answer reads (a final statement with nothing after it is skipped).
    """
    text = output.replace("\n", " ").strip().lower()
    if compat_nova:
        pairs = _STATEMENT_PAIR.findall(text)
        if pairs:
            return pairs[-1][-1].strip()
        answers = _STATEMENT.findall(text)
        return answers[-1].strip() if answers else None
    for head in reversed(list(_HEAD_ONLY.finditer(text))):
        match = _STATEMENT.match(text, head.start())
        if match:
            return match.group(1).strip()
    return None


def score_bbh(output: str, target: str, compat_nova: bool = False) -> float:
    """1.0 when the extracted answer is the lower-cased target, else 0.0.

    Beyond the published rule (``compat_nova=False``): a target that is an option letter,
    "(A)", also accepts "(a) <option text>" and a bare "a"; no answer never scores.
    """
    answer = extract_bbh_answer(output, compat_nova)
    if compat_nova:
        return 1.0 if (answer if answer is not None else _NOVA_NO_ANSWER) == target.lower() else 0.0
    if answer is None:
        return 0.0
    gold = target.strip().lower()
    if answer == gold:
        return 1.0
    option = _OPTION_LETTER.fullmatch(gold)
    if option is None:
        return 0.0
    letter = option.group(1)
    option_with_text = re.fullmatch(rf"\({letter}\)\s.*", answer) is not None
    return 1.0 if option_with_text or answer == letter else 0.0
