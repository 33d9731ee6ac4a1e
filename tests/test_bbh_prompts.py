"""Nova's BBH fs_cot task: the prompt byte for byte, and the answer extraction and scoring
under compat_nova (published rule, defects included) and our fix.

The expected prompts are what aws-samples/sample-Nova-lighteval-custom-task's
``build_bbh_fs_cot_prompt`` produces. The expected extractions are worked by hand from its
rule: lower-case, newlines to spaces; if "the (correct) answer is ... the (correct) answer
is X" pairs occur (findall, left to right, without overlap), the X of the last pair;
else the last single statement's X; X runs up to a quote, full stop, comma, semicolon or
asterisk, after an optional double quote and * or **, and is stripped.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources

import pytest

from nova_eval_assets.tasks.bbh_prompts import (
    BBH_SUBSETS,
    PROMPTS_RESOURCE,
    bbh_prompt,
    bbh_prompt_parts,
    extract_bbh_answer,
    score_bbh,
)

SPORTS_INPUT = (
    'Is the following sentence plausible? "Joao Moutinho caught the screen pass in the NFC'
    ' championship."'
)
DATE_INPUT = (
    "Jane was born on the last day of Feburary in 2001. Today is her 16-year-old birthday."
    " What is the date yesterday in MM/DD/YYYY?\nOptions:\n(A) 02/27/2017\n(B) 02/27/2016\n"
    "(C) 03/27/2017"
)

# fmt: off
EXPECTED_SPORTS_UNDERSTANDING = (
    "[{'content': 'Determine whether an artificially constructed sentence relating to sport"
    's is plausible or not.\\n\\nIs the following sentence plausible? "Bam Adebayo scored a'
    ' reverse layup in the Western Conference Finals."\\n\\nConclude your answer with: "So '
    'the answer is yes or no.".\', \'role\': \'user\'}, {\'content\': "Let\'s think step by'
    ' step. Bam Adebayo is an American basketball player. Scoring a reverse layup in the We'
    'stern Conference Finals is part of the NBA Finals. So the answer is yes.", \'role\': '
    "'assistant'}, {'content': 'Determine whether an artificially constructed sentence rela"
    'ting to sports is plausible or not.\\n\\nIs the following sentence plausible? "Santi C'
    'azorla scored a touchdown."\\n\\nConclude your answer with: "So the answer is yes or n'
    'o.".\', \'role\': \'user\'}, {\'content\': "Let\'s think step by step. Santi Cazorla i'
    's a soccer player. Touchdown is part of American football and rugby. So the answer is '
    'no.", \'role\': \'assistant\'}, {\'content\': \'Determine whether an artificially cons'
    'tructed sentence relating to sports is plausible or not.\\n\\nIs the following sentenc'
    'e plausible? "DeMar DeRozan was called for the goal tend."\\n\\nConclude your answer w'
    'ith: "So the answer is yes or no.".\', \'role\': \'user\'}, {\'content\': "Let\'s thin'
    'k step by step. DeMar DeRozan is an American basketball player. Goal tending is part o'
    'f basketball. So the answer is yes.", \'role\': \'assistant\'}]\n'
    'Determine whether an artificially constructed sentence relating to sports is plausible'
    ' or not.\n'
    'Is the following sentence plausible? "Joao Moutinho caught the screen pass in the NFC '
    'championship."\n'
    'Conclude your answer with: "The correct answer is yes or no.".\n'
    '    '
)

EXPECTED_DATE_UNDERSTANDING = (
    "[{'content': 'Infer the date from context.\\n\\nToday is Christmas Eve of 1937. What i"
    's the date 10 days ago in MM/DD/YYYY?\\nOptions:\\n(A) 12/14/2026\\n(B) 12/14/1950\\n('
    'C) 12/14/2007\\n(D) 12/14/1937\\n(E) 07/14/1938\\n(F) 12/14/1988\\n\\nConclude your an'
    'swer with: "So the answer is (answer_letter).". Where answer_letter is A, or B, or ...'
    '\', \'role\': \'user\'}, {\'content\': "Let\'s think step by step.\\nIf today is Chris'
    "tmas Eve of 1937, then today's date is December 24, 1937. 10 days before today is Dece"
    'mber 14, 1937, that is 12/14/1937. So the answer is (D).", \'role\': \'assistant\'}, {'
    "'content': 'Infer the date from context.\\n\\nTomorrow is 11/12/2019. What is the date"
    ' one year ago from today in MM/DD/YYYY?\\nOptions:\\n(A) 09/04/2018\\n(B) 11/11/2018\\'
    'n(C) 08/25/2018\\n(D) 11/02/2018\\n(E) 11/04/2018\\n\\nConclude your answer with: "So '
    'the answer is (answer_letter).". Where answer_letter is A, or B, or ...\', \'role\': '
    '\'user\'}, {\'content\': "Let\'s think step by step.\\nIf tomorrow is 11/12/2019, then'
    ' today is 11/11/2019. The date one year ago from today is 11/11/2018. So the answer is'
    ' (B).", \'role\': \'assistant\'}, {\'content\': \'Infer the date from context.\\n\\nJa'
    'ne and John married on Jan 2, 1958. It is their 5-year anniversary today. What is the '
    'date tomorrow in MM/DD/YYYY?\\nOptions:\\n(A) 01/11/1961\\n(B) 01/03/1963\\n(C) 01/18/'
    '1961\\n(D) 10/14/1960\\n(E) 01/03/1982\\n(F) 12/03/1960\\n\\nConclude your answer with'
    ': "So the answer is (answer_letter).". Where answer_letter is A, or B, or ...\', \'rol'
    'e\': \'user\'}, {\'content\': "Let\'s think step by step.\\nIf Jane and John married o'
    "n Jan 2, 1958, then and if it is their 5-year anniversary today, then today's date is "
    'Jan 2, 1963. The date tomorrow is Jan 3, 1963, that is 01/03/1963. So the answer is (B'
    ').", \'role\': \'assistant\'}]\n'
    'Infer the date from context.\n'
    'Jane was born on the last day of Feburary in 2001. Today is her 16-year-old birthday. '
    'What is the date yesterday in MM/DD/YYYY?\n'
    'Options:\n'
    '(A) 02/27/2017\n'
    '(B) 02/27/2016\n'
    '(C) 03/27/2017\n'
    'Conclude your answer with: "The correct answer is (answer_letter).". Where answer_lett'
    'er is A, or B, or ...\n'
    '    '
)

PUBLISHED_PROMPT_SHA256 = {
    "boolean_expressions": "9c2cc17c56218e22591e159e7cdd5b57",
    "causal_judgement": "8b9762bbe59adef137e0fd83334ead84",
    "date_understanding": "55898a9d41ce73abed8f04d047b10b3c",
    "disambiguation_qa": "42f7a85ce445a52233d000c7b62e65e2",
    "dyck_languages": "7c855210b637d8f8a5fbc72973ead62b",
    "formal_fallacies": "15aa11765305063ca39128cde748d743",
    "geometric_shapes": "521d7db29a18f9f50d37ee5a043adc16",
    "hyperbaton": "6f42e26a1985c7bff477d51493d04c39",
    "logical_deduction_five_objects": "33b148e5c4aac44eeb5b811d464005ce",
    "logical_deduction_seven_objects": "33b148e5c4aac44eeb5b811d464005ce",
    "logical_deduction_three_objects": "33b148e5c4aac44eeb5b811d464005ce",
    "movie_recommendation": "5805e2de423ab524dbe7013063287636",
    "multistep_arithmetic_two": "256c59cc48e50c5c7f0d9e4475051eec",
    "navigate": "6af3c7ec77531d43087c22ea0c2e7053",
    "object_counting": "14d62879da6a9893a005f27d216f570a",
    "penguins_in_a_table": "8a993b2283f4aec91f2925ddfd3b642f",
    "reasoning_about_colored_objects": "d81adb84772732b170a56130bfaa5235",
    "ruin_names": "419a86e085b3320c62e3cf8fa6419b6a",
    "salient_translation_error_detection": "dc965021da53a7f4d199e21c172a3f36",
    "snarks": "03a80787dcdbc78caeb6402dfd86908f",
    "sports_understanding": "78fe011f1faefce36506b2dcc5116d4f",
    "temporal_sequences": "82c5ce43dce2f03e114867f1aec7d2d5",
    "tracking_shuffled_objects_five_objects": "e07276013fc4bbcf5f2ceb97c8858a64",
    "tracking_shuffled_objects_seven_objects": "e07276013fc4bbcf5f2ceb97c8858a64",
    "tracking_shuffled_objects_three_objects": "e07276013fc4bbcf5f2ceb97c8858a64",
    "web_of_lies": "77b3cba5677475ab0921868a0ae50f90",
    "word_sorting": "e7d3370679c6458c8b43f25111d0568f",
}

# fmt: on


def test_bbh_prompt_is_nova_byte_for_byte() -> None:
    assert bbh_prompt("sports_understanding", SPORTS_INPUT) == EXPECTED_SPORTS_UNDERSTANDING
    assert bbh_prompt("date_understanding", DATE_INPUT) == EXPECTED_DATE_UNDERSTANDING


@pytest.mark.parametrize("subset", BBH_SUBSETS)
def test_every_subsets_prompt_matches_nova(subset: str) -> None:
    # sha256 (first 32 hex digits) of the published prompt for the input "<input>"
    digest = hashlib.sha256(bbh_prompt(subset, "<input>").encode("utf-8")).hexdigest()
    assert digest[:32] == PUBLISHED_PROMPT_SHA256[subset]


def test_subsets_and_data_agree() -> None:
    assert len(BBH_SUBSETS) == 27
    assert list(BBH_SUBSETS) == sorted(BBH_SUBSETS)
    assert set(PUBLISHED_PROMPT_SHA256) == set(BBH_SUBSETS)
    # shipped as package data, read through importlib.resources
    raw = resources.files("nova_eval_assets.tasks").joinpath(PROMPTS_RESOURCE).read_text("utf-8")
    assert list(json.loads(raw)["subsets"]) == list(BBH_SUBSETS)
    for subset, parts in bbh_prompt_parts().items():
        exemplars = parts["exemplars"]
        assert [m["role"] for m in exemplars] == ["user", "assistant"] * 3, subset
        # the key order is part of the rendered prompt
        assert all(list(m) == ["content", "role"] for m in exemplars), subset
        assert parts["preamble"] and parts["instruction"], subset


def test_unknown_subset_is_refused() -> None:
    with pytest.raises(ValueError):
        bbh_prompt("not_a_subset", "x")


# --- extraction and scoring ------------------------------------------------------------

# (output, target, extracted compat, extracted ours, score compat, score ours)
BBH_CASES = [
    ("So the answer is (A).", "(A)", "(a)", "(a)", 1.0, 1.0),
    ("The correct answer is (b)", "(B)", "(b)", "(b)", 1.0, 1.0),  # both lower-cased
    ("The correct answer is (A), not (B).", "(A)", "(a)", "(a)", 1.0, 1.0),  # stops at ','
    # an option with its text: compat compares "(a) 12/11/1937" with "(a)"; ours accepts it
    ("The correct answer is (A) 12/11/1937.", "(A)", "(a) 12/11/1937", "(a) 12/11/1937", 0.0, 1.0),
    ("**The correct answer is (E) Jupiter**", "(E)", "(e) jupiter", "(e) jupiter", 0.0, 1.0),
    ("The correct answer is (A) 12/11/1937.", "(B)", "(a) 12/11/1937", "(a) 12/11/1937", 0.0, 0.0),
    ("The correct answer is (A)12/11/1937", "(A)", "(a)12/11/1937", "(a)12/11/1937", 0.0, 0.0),
    # a bare letter for an option target: compat 0, ours 1
    ("The correct answer is A.", "(A)", "a", "a", 0.0, 1.0),
    ("The correct answer is a", "(A)", "a", "a", 0.0, 1.0),
    # quotes and asterisks: one optional '"', then '*' or '**', are stepped over
    ("The correct answer is True.", "True", "true", "true", 1.0, 1.0),
    ('The correct answer is "valid".', "valid", "valid", "valid", 1.0, 1.0),
    ("The correct answer is **Yes**.", "Yes", "yes", "yes", 1.0, 1.0),
    ("The correct answer is *No*", "No", "no", "no", 1.0, 1.0),
    ("The correct answer is: **(D)**", "(D)", "(d)", "(d)", 1.0, 1.0),
    # a single quote is not stepped over (in a last statement)
    ("The correct answer is 'valid'.", "valid", "'valid'", "'valid'", 0.0, 0.0),
    ("the answer is: invalid", "invalid", "invalid", "invalid", 1.0, 1.0),  # "correct" optional
    ("Yes. So the answer is Yes.", "yes", "yes", "yes", 1.0, 1.0),
    # several statements: two (or four) pair up and the last wins in both modes ...
    ("The answer is (B). The correct answer is (C).", "(C)", "(c)", "(c)", 1.0, 1.0),
    ("So the answer is No. Therefore, the correct answer is Yes.", "Yes", "yes", "yes", 1.0, 1.0),
    ("The correct answer is Yes; the answer is No.", "No", "no", "no", 1.0, 1.0),
    ("The correct answer is 24, the answer is 25", "25", "25", "25", 1.0, 1.0),
    (
        "The answer is (A). The answer is (B). The answer is (C). The answer is (D).",
        "(D)",
        "(d)",
        "(d)",
        1.0,
        1.0,
    ),
    # ... but three make one pair and a leftover: compat reads the middle one
    (
        "The answer is (A). The answer is (B). The correct answer is (C).",
        "(C)",
        "(b)",
        "(c)",
        0.0,
        1.0,
    ),
    (
        "The answer is True. Let me double-check: the answer is False."
        " So the correct answer is True.",
        "True",
        "false",
        "true",
        0.0,
        1.0,
    ),
    # no punctuation between statements: the pair's answer runs on to the end
    (
        "The correct answer is (A) and the correct answer is (B) and the correct answer is (C)",
        "(C)",
        "(b) and the correct answer is (c)",
        "(c)",
        0.0,
        1.0,
    ),
    # a statement quoted inside another: the inner answer stops at the quote
    ('The answer is "the answer is (B)"', "(B)", "(b)", "(b)", 1.0, 1.0),
    # free-form answers
    ("The correct answer is ) ] }", ") ] }", ") ] }", ") ] }", 1.0, 1.0),
    (
        "The correct answer is apple banana cherry.",
        "apple banana cherry",
        "apple banana cherry",
        "apple banana cherry",
        1.0,
        1.0,
    ),
    ("The correct answer is 12.", "12", "12", "12", 1.0, 1.0),
    ("The correct answer is 0.", "0", "0", "0", 1.0, 1.0),
    # numbers stop at ',' and '.': a thousands separator truncates
    ("The correct answer is -1,234.", "-1234", "-1", "-1", 0.0, 0.0),
    ("The correct answer is\n12", "12", "12", "12", 1.0, 1.0),
    # no answer: compat reads the string "0", which scores against target "0"
    ("I cannot tell.", "0", None, None, 1.0, 0.0),
    ("The correct answer is.", "0", None, None, 1.0, 0.0),  # nothing after "is"
    ("I cannot tell.", "(A)", None, None, 0.0, 0.0),
    ("Answer: (A)", "(A)", None, None, 0.0, 0.0),
    ("The correct answer is $\\boxed{(A)}$", "(A)", "$\\boxed{(a)}$", "$\\boxed{(a)}$", 0.0, 0.0),
]


@pytest.mark.parametrize(("output", "target", "compat", "ours", "compat_score", "score"), BBH_CASES)
def test_bbh_extraction_and_score(
    output: str,
    target: str,
    compat: str | None,
    ours: str | None,
    compat_score: float,
    score: float,
) -> None:
    assert extract_bbh_answer(output, compat_nova=True) == compat
    assert extract_bbh_answer(output, compat_nova=False) == ours
    assert extract_bbh_answer(output) == ours  # ours is the default
    assert score_bbh(output, target, compat_nova=True) == compat_score
    assert score_bbh(output, target, compat_nova=False) == score
    assert score_bbh(output, target) == score


def test_case_table_is_large_enough() -> None:
    assert len(BBH_CASES) >= 30


def test_last_statement_without_an_answer_is_skipped() -> None:
    # ours: the final "the answer is." reads nothing, so the one before it counts
    assert extract_bbh_answer("So the answer is (B). I hope the answer is.") == "(b)"
