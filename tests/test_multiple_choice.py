"""Nova's multiple-choice benchmarks (mmlu, mmlu_pro, gpqa): prompts byte for byte, and the
answer extraction under compat_nova (published rule, defects included) and our fix.

The expected prompts are what aws-samples/sample-Nova-lighteval-custom-task's
``build_*_zs_cot_prompt`` / ``create_gpqa_zs_cot_doc`` produce for these inputs. The expected
extractions are worked by hand from its rule: lower-case, newlines to spaces; the first
"the correct answer is \\boxed{X}" anywhere, else the first "the correct answer is" followed
by ``[:\\s]*[(\\s]*`` and a letter of the range (compat) or a standalone letter (ours).
"""

from __future__ import annotations

import numpy as np
import pytest

from nova_eval_assets.tasks.multiple_choice import (
    GPQA_LETTERS,
    MMLU_LETTERS,
    MMLU_PRO_LETTERS,
    NOVA_GPQA_ORDER,
    clean_gpqa_choice,
    extract_choice,
    gpqa_choices,
    gpqa_prompt,
    mmlu_pro_prompt,
    mmlu_prompt,
    score_choice,
)

# fmt: off
EXPECTED_MMLU = (
    "What is the correct answer to this question: Which gas makes up most of Earth's atmosp"
    'here?\n'
    '    Choices:\n'
    '    (A) Oxygen\n'
    '    (B) Nitrogen\n'
    '    (C) Argon\n'
    '    (D) Carbon dioxide\n'
    '    \n'
    '    Required format:\n'
    '    - Explain your reasoning step by step\n'
    '    - End with: "The correct answer is (X)." where X is A, B, C, or D\n'
    '    \n'
    '    Example:\n'
    '    Question: What is 2 + 2?\n'
    '    (A) 3 (B) 4 (C) 5 (D) 6\n'
    '    \n'
    '    Let me solve this step by step:\n'
    '    - I need to add 2 + 2\n'
    '    - 2 + 2 = 4\n'
    '    - Looking at the options, 4 corresponds to choice (B)\n'
    '    - Options (A) 3, (C) 5, and (D) 6 are incorrect\n'
    '    \n'
    '    The correct answer is (B).\n'
    '    '
)

EXPECTED_MMLU_PRO = (
    'What is the correct answer to this question: What is 7 * 6?\n'
    '    Choices:\n'
    '    (A) 36\n'
    '(B) 42\n'
    '(C) 48\n'
    '(D) 13\n'
    '(E) 76\n'
    '(F) 54\n'
    '(G) 49\n'
    '(H) 40\n'
    '(I) 56\n'
    '(J) 67\n'
    '    \n'
    '    Required format:\n'
    '    - Explain your reasoning step by step\n'
    '    - End with: "The correct answer is (X)." where X is A, B, C, D, E, F, G, H, I, or '
    'J\n'
    '    \n'
    '    Example:\n'
    '    Question: What is 2 + 2?\n'
    '    (A) 3 (B) 4 (C) 5 (D) 6 (E) 7 (F) 8 (G) 9 (H) 10 (I) 1 (J) 2\n'
    '    \n'
    '    Let me solve this step by step:\n'
    '    - I need to add 2 + 2\n'
    '    - 2 + 2 = 4\n'
    '    - Looking at the options, 4 corresponds to choice (B)\n'
    '    - Other options are incorrect\n'
    '    \n'
    '    The correct answer is (B).\n'
    '    '
)

EXPECTED_MMLU_PRO_FOUR_OPTIONS = (
    'What is the correct answer to this question: Which is a prime?\n'
    '    Choices:\n'
    '    (A) 4\n'
    '(B) 6\n'
    '(C) 7\n'
    '(D) 9\n'
    '    \n'
    '    Required format:\n'
    '    - Explain your reasoning step by step\n'
    '    - End with: "The correct answer is (X)." where X is A, B, C, D, E, F, G, H, I, or '
    'J\n'
    '    \n'
    '    Example:\n'
    '    Question: What is 2 + 2?\n'
    '    (A) 3 (B) 4 (C) 5 (D) 6 (E) 7 (F) 8 (G) 9 (H) 10 (I) 1 (J) 2\n'
    '    \n'
    '    Let me solve this step by step:\n'
    '    - I need to add 2 + 2\n'
    '    - 2 + 2 = 4\n'
    '    - Looking at the options, 4 corresponds to choice (B)\n'
    '    - Other options are incorrect\n'
    '    \n'
    '    The correct answer is (B).\n'
    '    '
)

EXPECTED_GPQA_COMPAT = (
    'What is the correct answer to this question: Which particle mediates the electromagnet'
    'ic force?\n'
    '    Choices:\n'
    '    (A) The photon. boson\n'
    '(B) The gluon \n'
    '(D) The Higgs  boson\n'
    '(C) The W boson\n'
    '    \n'
    '    Required format:\n'
    '    - Explain your reasoning step by step\n'
    '    - End with: "The correct answer is (X)." where X is A, B, C, or D\n'
    '    \n'
    '    Example:\n'
    '    Question: What is 2 + 2?\n'
    '    (A) 3 (B) 4 (C) 5 (D) 6\n'
    '    \n'
    '    Let me solve this step by step:\n'
    '    - I need to add 2 + 2\n'
    '    - 2 + 2 = 4\n'
    '    - Looking at the options, 4 corresponds to choice (B)\n'
    '    - Options (A) 3, (C) 5, and (D) 6 are incorrect\n'
    '    \n'
    '    The correct answer is (B).\n'
    '    '
)
# fmt: on


def test_mmlu_prompt_is_nova_byte_for_byte() -> None:
    prompt = mmlu_prompt(
        "Which gas makes up most of Earth's atmosphere?",
        ["Oxygen", "Nitrogen", "Argon", "Carbon dioxide"],
    )
    assert prompt == EXPECTED_MMLU


def test_mmlu_pro_prompt_is_nova_byte_for_byte() -> None:
    options = ["36", "42", "48", "13", "76", "54", "49", "40", "56", "67"]
    assert mmlu_pro_prompt("What is 7 * 6?", options) == EXPECTED_MMLU_PRO
    # fewer options: only those are listed, the format line still names A-J (as published)
    assert mmlu_pro_prompt("Which is a prime?", ["4", "6", "7", "9"]) == (
        EXPECTED_MMLU_PRO_FOUR_OPTIONS
    )


def test_gpqa_compat_prompt_and_gold_are_nova_byte_for_byte() -> None:
    shown, gold = gpqa_choices(
        "  The photon [title] boson ",
        ["The gluon [1]", "The W  boson", "The Higgs   boson"],
        compat_nova=True,
        question_key="Which particle mediates the electromagnetic force?",
    )
    assert shown == [
        "(A) The photon. boson",
        "(B) The gluon ",
        "(D) The Higgs  boson",
        "(C) The W boson",
    ]
    assert gold == "A"
    prompt = gpqa_prompt("Which particle mediates the electromagnetic force?", shown)
    assert prompt == EXPECTED_GPQA_COMPAT


@pytest.mark.parametrize(
    ("builder", "choices"),
    [
        (mmlu_prompt, ["a", "b", "c"]),
        (mmlu_prompt, ["a", "b", "c", "d", "e"]),
        (mmlu_pro_prompt, []),
        (mmlu_pro_prompt, [str(i) for i in range(11)]),
        (gpqa_prompt, ["(A) a", "(B) b", "(C) c"]),
    ],
)
def test_prompts_reject_a_wrong_number_of_choices(builder, choices) -> None:
    with pytest.raises(ValueError):
        builder("Q?", choices)


# --- extraction ----------------------------------------------------------------------

# (output, compat_nova=True, compat_nova=False)
MMLU_CASES = [
    ("The correct answer is (B).", "B", "B"),
    ("The correct answer is B.", "B", "B"),
    ("the correct answer is b", "B", "B"),  # lower case: the text is lower-cased anyway
    ("THE CORRECT ANSWER IS (C)", "C", "C"),
    ("The correct answer is: D", "D", "D"),  # [:\s]* takes the colon
    ("The correct answer is: (D) Carbon dioxide.", "D", "D"),
    ("The correct answer is (b) because the rest are noble gases", "B", "B"),
    ("The correct answer is B because it is most abundant", "B", "B"),
    ("The correct answer is B)", "B", "B"),
    ("The correct answer is\n(B)", "B", "B"),  # newline became a space
    ("Thecorrectansweris(C)", "C", "C"),  # every \s* may match nothing
    # compat reads the first a-d letter of the next word; ours needs a standalone letter
    ("The correct answer is absolutely B", "A", None),
    ("The correct answer is definitely (C).", "D", None),
    ("The correct answer is choice B.", "C", None),
    ("The correct answer is Both A and C", "B", None),
    ("The correct answer is ab", "A", None),
    # a statement that does not read is skipped: ours goes on to the later (B)
    ("The correct answer is absolutely clear: the correct answer is (B).", "A", "B"),
    # markdown emphasis: '*' and '_' stop compat's [(\s]*; ours steps over them
    ("The correct answer is **B**.", None, "B"),
    ("The correct answer is **(B)**", None, "B"),
    ("the correct answer is __C__", None, "C"),
    # boxed forms: \boxed{X}, \text{X} inside it, \( \) or \[ \] around it
    ("The correct answer is \\boxed{B}", "B", "B"),
    ("The correct answer is \\(\\boxed{D}\\)", "D", "D"),
    ("The correct answer is \\boxed{\\text{A}}", "A", "A"),
    # \boxed{(B)}: '(' is not a letter inside the braces, and the fallback stops at '\'
    ("The correct answer is \\boxed{(B)}", None, None),
    ("The correct answer is $\\boxed{C}$", None, None),  # '$' is allowed by neither
    ("The correct answer is: **\\boxed{B}**", None, None),  # '**' blocks the boxed path
    # first statement wins ...
    ("The correct answer is (A). Wait, the correct answer is (C).", "A", "A"),
    ("The correct answer is C and the correct answer is absolutely D", "C", "C"),
    # ... but a boxed statement anywhere wins over a plain one
    ("The correct answer is (A). On reflection, the correct answer is \\boxed{C}.", "C", "C"),
    # a boxed letter out of range does not read; the plain pass skips that statement too
    ("The correct answer is \\boxed{E}. The correct answer is (B).", "B", "B"),
    # the prompt's own placeholder (X) is not a letter of the range: the next one reads
    ('I will end with "The correct answer is (X)." The correct answer is (D).', "D", "D"),
    ("The correct answer is (E).", None, None),  # out of A-D
    ("The answer is (B).", None, None),  # "correct" is required
    ("The correct answer is 4, which is (B).", None, None),  # a digit is no letter
    ("The correct answer is [B]", None, None),
    ("Final: the correct answer is 'B'", None, None),
    ("", None, None),
    # "a" the article is a standalone token too: both read A (a known ambiguity)
    ("The correct answer is a combination, so the correct answer is (C).", "A", "A"),
]

MMLU_PRO_CASES = [
    ("The correct answer is (J).", "J", "J"),
    ("The correct answer is (E)", "E", "E"),
    ("the correct answer is i", "I", "I"),
    ("THE CORRECT ANSWER IS (G).", "G", "G"),
    ("The correct answer is: E", "E", "E"),
    ("The correct answer is (f)", "F", "F"),
    ("The correct answer is C.", "C", "C"),
    ("The correct answer is (I) 56", "I", "I"),
    ("The correct answer is a) 42", "A", "A"),
    ("The correct answer is\n\n(D)", "D", "D"),
    # with A-J, far more words start with a letter of the range than with mmlu's A-D
    ("The correct answer is indeed (C).", "I", None),
    ("The correct answer is found in option (G)", "F", None),
    ("The correct answer is given by (H)", "G", None),
    ("The correct answer is helium, (H)", "H", None),  # compat right by accident
    ("The correct answer is due to (A)", "D", None),
    ("The correct answer is either (B) or (C)", "E", None),
    ("The correct answer is jointly (B)", "J", None),
    ("The correct answer is bijective; the correct answer is (D)", "B", "D"),
    ("The correct answer is **G**", None, "G"),
    ("The correct answer is __(H)__", None, "H"),
    ("The correct answer is: *F*", None, "F"),
    ("The correct answer is \\boxed{J}", "J", "J"),
    ("The correct answer is \\boxed{\\text{C}}", "C", "C"),
    ("The correct answer is \\boxed{(F)}", None, None),
    ("The correct answer is $\\boxed{I}$", None, None),
    ("The correct answer is (B). Boxed: the correct answer is \\boxed{H}", "H", "H"),
    ("The correct answer is (X). So the correct answer is (I).", "I", "I"),
    ("The correct answer is (A). Actually the correct answer is (J).", "A", "A"),
    ("The correct answer is (K)", None, None),  # beyond J
    ("The correct answer is 42 (B)", None, None),
    ("The answer is (C)", None, None),
    ("No idea.", None, None),
]

GPQA_CASES = [
    ("The correct answer is (A).", "A", "A"),
    ("Step 1: ...\nStep 2: ...\nThe correct answer is (D)", "D", "D"),
    ("The correct answer is B", "B", "B"),
    ("The correct answer is: C", "C", "C"),
    ("the correct answer is (d)", "D", "D"),
    ("The Correct Answer Is (B)", "B", "B"),
    ("The correct answer is ( B )", "B", "B"),  # spaces inside the parentheses
    ("The correct answer is a). 3", "A", "A"),
    ("The correct answer is A, B or C", "A", "A"),  # first letter, followed by a comma
    ("The correct answer is about (C)", "A", None),
    ("The correct answer is clearly (B)", "C", None),
    ("The correct answer is because of decoherence (A)", "B", None),
    ("The correct answer is cis-isomer (A)", "C", None),
    ("The correct answer is decreased (D)", "D", None),  # compat right by accident
    ("The correct answer is both (A) and (B)", "B", None),
    ("The correct answer is **D**", None, "D"),
    ("The correct answer is\n**(C)**", None, "C"),
    ("The correct answer is: *A*", None, "A"),
    ("The correct answer is \\boxed{D}.", "D", "D"),
    ("The correct answer is \\[\\boxed{B}\\]", "B", "B"),
    ("The correct answer is \\boxed{ C }", "C", "C"),  # spaces inside the braces
    ("The correct answer is \\boxed{\\text{D}}", "D", "D"),
    ("The correct answer is \\boxed{(A)}", None, None),
    ("The correct answer is (A). The correct answer is \\boxed{D}.", "D", "D"),
    ("The correct answer is (C). Hmm, no: the correct answer is (A).", "C", "C"),
    ("The correct answer is (X).", None, None),  # the placeholder alone
    ("The correct answer is (X). Working it out, the correct answer is (B).", "B", "B"),
    ("The correct answer is (E)", None, None),
    ("The correct answer is 1.5 eV, option (B)", None, None),
    ("I think the correct answer: (B)", None, None),  # "is" is required
    ("The correct answer is 'C'", None, None),
]


def _check(output: str, letters: str, compat: str | None, ours: str | None) -> None:
    assert extract_choice(output, letters, compat_nova=True) == compat
    assert extract_choice(output, letters, compat_nova=False) == ours
    assert extract_choice(output, letters) == ours  # ours is the default


@pytest.mark.parametrize(("output", "compat", "ours"), MMLU_CASES)
def test_mmlu_extraction(output: str, compat: str | None, ours: str | None) -> None:
    _check(output, MMLU_LETTERS, compat, ours)


@pytest.mark.parametrize(("output", "compat", "ours"), MMLU_PRO_CASES)
def test_mmlu_pro_extraction(output: str, compat: str | None, ours: str | None) -> None:
    _check(output, MMLU_PRO_LETTERS, compat, ours)


@pytest.mark.parametrize(("output", "compat", "ours"), GPQA_CASES)
def test_gpqa_extraction(output: str, compat: str | None, ours: str | None) -> None:
    _check(output, GPQA_LETTERS, compat, ours)


def test_case_tables_are_large_enough() -> None:
    assert min(len(MMLU_CASES), len(MMLU_PRO_CASES), len(GPQA_CASES)) >= 30


def test_letters_bound_the_range() -> None:
    # the same output reads under A-J but not under A-D
    assert extract_choice("The correct answer is (E).", MMLU_PRO_LETTERS) == "E"
    assert extract_choice("The correct answer is (E).", MMLU_LETTERS) is None
    # compat: a restricted range skips "(I)" and reaches the later "(B)"; the published
    # mmlu_pro extraction always uses A-J, so pass MMLU_PRO_LETTERS to reproduce it
    text = "The correct answer is (I). No, the correct answer is (B)."
    assert extract_choice(text, "ABCDEFGH", compat_nova=True) == "B"
    assert extract_choice(text, MMLU_PRO_LETTERS, compat_nova=True) == "I"
    with pytest.raises(ValueError):
        extract_choice("x", "A-D")


def test_score_choice() -> None:
    assert score_choice("The correct answer is (B).", "B", MMLU_LETTERS) == 1.0
    assert score_choice("The correct answer is (B).", "b", MMLU_LETTERS) == 1.0
    assert score_choice("The correct answer is (C).", "B", MMLU_LETTERS) == 0.0
    assert score_choice("No answer.", "A", MMLU_LETTERS) == 0.0
    # "is absolutely B" with gold A: compat credits the 'a' of "absolutely", ours does not
    assert score_choice("The correct answer is absolutely B", "A", MMLU_LETTERS, True) == 1.0
    assert score_choice("The correct answer is absolutely B", "A", MMLU_LETTERS, False) == 0.0
    assert score_choice("The correct answer is **J**", "J", MMLU_PRO_LETTERS, True) == 0.0
    assert score_choice("The correct answer is **J**", "J", MMLU_PRO_LETTERS, False) == 1.0


# --- GPQA's choices ------------------------------------------------------------------


def _nova_order_for_one_question() -> list[int]:
    # what the published create_gpqa_zs_cot_doc does for every question
    rng = np.random.default_rng(5715)
    order = list(range(4))
    rng.shuffle(order)
    return order


def test_nova_gpqa_order_is_numpys_default_rng_5715() -> None:
    for _ in range(3):  # a fresh generator per question: the same order each time
        assert tuple(_nova_order_for_one_question()) == NOVA_GPQA_ORDER == (0, 1, 3, 2)


def test_gpqa_compat_shows_every_question_alike_with_gold_a() -> None:
    for n in range(20):
        shown, gold = gpqa_choices(
            f"right {n}", [f"wrong1 {n}", f"wrong2 {n}", f"wrong3 {n}"], True, f"Q{n}?"
        )
        assert shown == [f"(A) right {n}", f"(B) wrong1 {n}", f"(D) wrong3 {n}", f"(C) wrong2 {n}"]
        assert gold == "A"


def test_gpqa_own_order_spreads_gold_over_all_letters() -> None:
    golds = []
    for n in range(40):
        question = f"Made-up question number {n}: which option is right?"
        shown, gold = gpqa_choices("right", ["wrong1", "wrong2", "wrong3"], False, question)
        # labelled A-D in shown order; the gold letter labels the correct answer
        assert [line[:4] for line in shown] == ["(A) ", "(B) ", "(C) ", "(D) "]
        assert shown["ABCD".index(gold)] == f"({gold}) right"
        assert sorted(line[4:] for line in shown) == ["right", "wrong1", "wrong2", "wrong3"]
        golds.append(gold)
    assert set(golds) == {"A", "B", "C", "D"}


def test_gpqa_own_order_is_stable_per_question() -> None:
    first = gpqa_choices("r", ["w1", "w2", "w3"], False, "What is the spin of a photon?")
    again = gpqa_choices("r", ["w1", "w2", "w3"], False, "What is the spin of a photon?")
    assert first == again
    orders = {tuple(gpqa_choices("r", ["w1", "w2", "w3"], False, f"q{n}")[0]) for n in range(40)}
    assert len(orders) > 4  # questions get orders of their own


def test_gpqa_own_order_prompt_lists_letters_in_order() -> None:
    shown, gold = gpqa_choices("right", ["w1", "w2", "w3"], False, "Q?")
    prompt = gpqa_prompt("Q?", shown)
    assert "    Choices:\n    (A) " in prompt
    assert "\n(B) " in prompt and "\n(C) " in prompt and "\n(D) " in prompt
    assert f"({gold}) right" in prompt


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        (None, " "),  # a missing answer becomes one space
        ("  Photon  ", "Photon"),  # stripped first; the one double space pass finds none
        ("Article [title] Body", "Article. Body"),  # ". " then a double space, halved
        ("Value [1] here", "Value here"),  # [1] dropped: a double space, halved
        ("Value [1]", "Value "),  # dropped after the strip: a trailing space remains
        ("a   b", "a  b"),  # one pass: three spaces leave two
        ("[x] [y]", " "),
    ],
)
def test_clean_gpqa_choice(raw: str | None, cleaned: str) -> None:
    assert clean_gpqa_choice(raw) == cleaned


def test_gpqa_choices_needs_three_incorrect() -> None:
    with pytest.raises(ValueError):
        gpqa_choices("r", ["w1", "w2"], True, "Q?")
