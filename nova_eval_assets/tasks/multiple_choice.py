"""Nova's zero-shot chain-of-thought multiple-choice benchmarks (mmlu, mmlu_pro, gpqa):
their prompts, their answer extraction and GPQA's choice order.

Behaviour follows Amazon Nova's published lighteval tasks
(aws-samples/sample-Nova-lighteval-custom-task, ``custom_tasks/{mmlu,mmlu_pro,gpqa}/zs_cot.py``).
The prompts are byte-identical to what that code produces in every mode. ``compat_nova=True``
also reproduces its extraction and GPQA ordering exactly, defects included; ``False`` (our
default) fixes them:

- the answer letter must be a standalone token: the published fallback reads the first
  letter of the range after "the correct answer is", so "is absolutely B" reads as A (and,
  for mmlu_pro's A-J, "is indeed (C)" reads as I);
- markdown emphasis before the letter ("is **B**") is read, where the published code finds
  nothing;
- GPQA: the published code shuffles with a generator re-seeded with 5715 for every
  question, so every question shows the same order (A, B, D, C) and the correct answer is
  always (A); we give each question its own order from a hash of the question.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Sequence
from functools import cache

MMLU_LETTERS = "ABCD"
# the published mmlu_pro extraction accepts A-J whatever a question's option count (some
# MMLU-Pro questions have fewer than ten), so compat extraction must get all ten
MMLU_PRO_LETTERS = "ABCDEFGHIJ"
GPQA_LETTERS = "ABCD"

# Each published prompt is a triple-quoted f-string whose lines after the first are indented
# by four spaces, blank lines included, and which ends in a newline and those four spaces.
_PROMPT_LINE_BREAK = "\n    "


def _zs_cot_prompt(
    question: str, choice_block: str, letter_list: str, example_options: str, others_line: str
) -> str:
    lines = [
        f"What is the correct answer to this question: {question}",
        "Choices:",
        choice_block,
        "",
        "Required format:",
        "- Explain your reasoning step by step",
        f'- End with: "The correct answer is (X)." where X is {letter_list}',
        "",
        "Example:",
        "Question: What is 2 + 2?",
        example_options,
        "",
        "Let me solve this step by step:",
        "- I need to add 2 + 2",
        "- 2 + 2 = 4",
        "- Looking at the options, 4 corresponds to choice (B)",
        others_line,
        "",
        "The correct answer is (B).",
        "",
    ]
    return _PROMPT_LINE_BREAK.join(lines)


_FOUR_LETTER_LIST = "A, B, C, or D"
_FOUR_EXAMPLE_OPTIONS = "(A) 3 (B) 4 (C) 5 (D) 6"
_FOUR_OTHERS_LINE = "- Options (A) 3, (C) 5, and (D) 6 are incorrect"


def _labelled(letters: str, choices: Sequence[str]) -> list[str]:
    return [f"({letter}) {choice}" for letter, choice in zip(letters, choices, strict=True)]


def mmlu_prompt(question: str, choices: Sequence[str]) -> str:
    """Nova's mmlu zs_cot prompt: four choices, each on its own indented line."""
    if len(choices) != 4:
        raise ValueError(f"mmlu has 4 choices, got {len(choices)}")
    choice_block = _PROMPT_LINE_BREAK.join(_labelled(MMLU_LETTERS, choices))
    return _zs_cot_prompt(
        question, choice_block, _FOUR_LETTER_LIST, _FOUR_EXAMPLE_OPTIONS, _FOUR_OTHERS_LINE
    )


def mmlu_pro_prompt(question: str, options: Sequence[str]) -> str:
    """Nova's mmlu_pro zs_cot prompt: up to ten options. As published, the options are joined
    by bare newlines (only the first is indented), and the format line always lists A-J even
    when a question has fewer options."""
    if not 1 <= len(options) <= len(MMLU_PRO_LETTERS):
        raise ValueError(f"mmlu_pro has 1 to 10 options, got {len(options)}")
    choice_block = "\n".join(_labelled(MMLU_PRO_LETTERS[: len(options)], options))
    return _zs_cot_prompt(
        question,
        choice_block,
        "A, B, C, D, E, F, G, H, I, or J",
        "(A) 3 (B) 4 (C) 5 (D) 6 (E) 7 (F) 8 (G) 9 (H) 10 (I) 1 (J) 2",
        "- Other options are incorrect",
    )


def gpqa_prompt(question: str, shown_choices: Sequence[str]) -> str:
    """Nova's gpqa zs_cot prompt from :func:`gpqa_choices`' labelled lines. As published,
    the lines are joined by bare newlines (only the first is indented)."""
    if len(shown_choices) != 4:
        raise ValueError(f"gpqa has 4 choices, got {len(shown_choices)}")
    return _zs_cot_prompt(
        question,
        "\n".join(shown_choices),
        _FOUR_LETTER_LIST,
        _FOUR_EXAMPLE_OPTIONS,
        _FOUR_OTHERS_LINE,
    )


# --- answer extraction ---------------------------------------------------------------

_ANSWER_HEAD = r"the\s*correct\s*answer\s*is[:\s]*"


@cache
def _answer_patterns(letters: str, compat_nova: bool) -> tuple[re.Pattern[str], re.Pattern[str]]:
    if not letters or not letters.isalpha() or not letters.isascii():
        raise ValueError(f"letters must be ASCII letters, got {letters!r}")
    letter = f"([{letters.lower()}])"
    # re.IGNORECASE on lower-cased text, as published: it differs from plain matching only
    # for the few non-ASCII letters that case-fold to ASCII ones (dotless i, long s)
    # \boxed{B}, \boxed{\text{B}}, \(\boxed{B}\), \[\boxed{B}\]: the published pattern's
    # optional tails after the brace cannot change whether or what it matches, so they are
    # left out. \boxed{(B)} is not read (published behaviour, kept in both modes).
    boxed = re.compile(
        _ANSWER_HEAD
        + r"[(\s]*(?:\\\s*[\[(]\s*)?\\boxed\s*\{(?:\\text\s*\{)?\s*"
        + letter
        + r"\s*\}",
        re.IGNORECASE,
    )
    if compat_nova:
        # whatever letter of the range comes first after the optional "(" and spaces
        plain = re.compile(_ANSWER_HEAD + r"[(\s]*" + letter, re.IGNORECASE)
    else:
        # the letter stands alone: not followed by another letter; markdown emphasis
        # (* and _) may come before it
        plain = re.compile(_ANSWER_HEAD + r"[(\s*_]*" + letter + r"(?![^\W\d_])", re.IGNORECASE)
    return boxed, plain


def extract_choice(output: str, letters: str, compat_nova: bool = False) -> str | None:
    """The answer letter (upper case) of a generated output, or None.

    As published: the output is lower-cased with newlines as spaces; the first
    "the correct answer is \\boxed{X}" anywhere wins over any plain statement; otherwise
    the first "the correct answer is X" whose X reads as a letter of ``letters``. A
    statement that does not read (the prompt's own "(X)" placeholder, a letter out of
    range) is skipped and a later one may be read.
    """
    text = output.replace("\n", " ").strip().lower()
    boxed, plain = _answer_patterns(letters, compat_nova)
    match = boxed.search(text) or plain.search(text)
    return match.group(1).upper() if match else None


def score_choice(output: str, gold_letter: str, letters: str, compat_nova: bool = False) -> float:
    """1.0 when the extracted letter is the gold letter, else 0.0 (no answer scores 0)."""
    return 1.0 if extract_choice(output, letters, compat_nova) == gold_letter.upper() else 0.0


# --- GPQA's choices ------------------------------------------------------------------

# What np.random.default_rng(5715).shuffle does to [0, 1, 2, 3]; the published code
# re-creates that generator for every question, so this is every question's order
# (tests check that numpy still agrees). Fixed here so that compat does not depend on
# numpy's streams.
NOVA_GPQA_ORDER = (0, 1, 3, 2)

_ORDERS_OF_FOUR = tuple(itertools.permutations(range(4)))


def clean_gpqa_choice(choice: str | None) -> str:
    """The published GPQA choice cleaning: strip, " [title]" to ". ", drop [...] spans,
    then one pass of double spaces to single (three spaces leave two). A missing choice
    becomes a single space."""
    if choice is None:
        return " "
    text = choice.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _question_order(question_key: str) -> tuple[int, ...]:
    digest = hashlib.sha256(question_key.encode("utf-8")).digest()
    # 2**64 % 24 / 2**64 is a negligible bias over the 24 orders
    return _ORDERS_OF_FOUR[int.from_bytes(digest[:8], "big") % len(_ORDERS_OF_FOUR)]


def gpqa_choices(
    correct: str | None,
    incorrect: Sequence[str | None],
    compat_nova: bool,
    question_key: str,
) -> tuple[list[str], str]:
    """The labelled choice lines in shown order ("(A) text", ...) and the gold letter.

    ``compat_nova``: as published, labels are given before shuffling (correct answer
    (A), then the incorrect ones (B)-(D)) and travel with their text, so every question
    shows (A), (B), (D), (C) and the gold letter is always A. Otherwise the cleaned
    choices are put in an order of their own per question, from a hash of
    ``question_key`` (the question text, say), and labelled A-D in shown order.
    """
    if len(incorrect) != 3:
        raise ValueError(f"gpqa has 3 incorrect answers, got {len(incorrect)}")
    texts = [clean_gpqa_choice(c) for c in (correct, *incorrect)]
    if compat_nova:
        labelled = _labelled(GPQA_LETTERS, texts)
        return [labelled[i] for i in NOVA_GPQA_ORDER], GPQA_LETTERS[0]
    order = _question_order(question_key)
    shown = _labelled(GPQA_LETTERS, [texts[i] for i in order])
    return shown, GPQA_LETTERS[order.index(0)]


# ---------------------------------------------------------------------------------------
# confidence (ours, beyond Nova): the chosen letter's probability among the allowed letters

_LETTER_DECORATION = " \t\n()[]*_.:"


def letter_confidence(
    tokens: Sequence[tuple[str, Sequence[tuple[str, float]]]] | None,
    letter: str | None,
    letters: str,
) -> float:
    """The probability of ``letter`` among ``letters`` where the model wrote it: at the last
    generated token that spells the letter (spaces, brackets, asterisks and a full stop
    around it ignored), the alternatives that spell one of ``letters`` renormalized. NaN
    without log probabilities, without a letter, or when the letter is not found."""
    if not tokens or letter is None:
        return float("nan")
    for text, top in reversed(tokens):
        if text.strip(_LETTER_DECORATION).upper() != letter:
            continue
        probabilities: dict[str, float] = {}
        for alternative, logprob in top:
            spelled = alternative.strip(_LETTER_DECORATION).upper()
            if len(spelled) == 1 and spelled in letters and spelled not in probabilities:
                probabilities[spelled] = math.exp(logprob)
        total = sum(probabilities.values())
        return probabilities[letter] / total if letter in probabilities and total else math.nan
    return float("nan")


def choice_metrics(
    output: str,
    gold_letter: str,
    letters: str,
    compat_nova: bool,
    tokens: Sequence[tuple[str, Sequence[tuple[str, float]]]] | None,
) -> dict[str, float]:
    """``accuracy`` and, where log probabilities were captured, ``confidence``. Beyond
    Nova's extraction (not under ``compat_nova``): an output that is the letter alone, as
    ``inference.response_format: {type: choice, choices: [A, B, C, D]}`` makes it."""
    chosen = extract_choice(output, letters, compat_nova)
    bare = output.strip().strip("()").strip()
    if chosen is None and not compat_nova and len(bare) == 1 and bare.upper() in letters:
        chosen = bare.upper()
    metrics = {"accuracy": float(chosen == gold_letter)}
    if tokens:
        metrics["confidence"] = letter_confidence(tokens, chosen, letters)
    return metrics
