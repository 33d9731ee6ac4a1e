"""Tests for nova_eval_assets.tasks.math_answers: Nova's MATH task and lighteval's aime24.

Every expected extraction and score is worked out by hand from the published rules (the
Nova task's ``get_last_boxed`` and the PRM800K grader it uses; lighteval 0.10.0's aime
prompt), with the reasoning in a comment; none is echoed from the code under test.
Abbreviations in the comments: "mathd" is the grader's first normaliser (MATH's
``_strip_string``: ``\\text{ `` units, ``\\dfrac``, ``^\\circ``, ``\\$``, ``\\%``, ``k=``,
``\\sqrt3``, ``\\frac12``, ``0.5``, ``a/b``, spaces); "prm" is its second (units words,
``$``, braces, LaTeX to text with pylatexenc, ``1,000``, ``7 3/4`` -> ``7+3/4``, lower
case); then tuples element-wise, fraction pairs as strings, integer against non-integer
never, else ``sympy.simplify(gold - given) == 0``.
"""

from __future__ import annotations

import pytest

from nova_eval_assets.tasks.math_answers import (
    MATH_SUBTASKS,
    SYMPY_MAX_CHARS,
    aime_final_answer,
    aime_prompt,
    last_boxed_answer,
    math_answers_equal,
    math_prompt,
    score_aime,
    score_math,
)

# ---------------------------------------------------------------------------------------
# Prompts


def test_math_subtasks_are_the_seven_hendrycks_subsets() -> None:
    assert MATH_SUBTASKS == (
        "algebra",
        "counting_and_probability",
        "geometry",
        "intermediate_algebra",
        "number_theory",
        "prealgebra",
        "precalculus",
    )


def test_math_prompt_is_byte_identical_to_novas() -> None:
    problem = "If $f(x) = \\frac{3x-2}{x-2}$, what is $f(-2)$?\nExpress {it} as a fraction."
    # The string literal of the published build_math_zs_cot_question_prompt, verbatim:
    published = (
        f"Solve the following math problem step by step.\n"
        f"Problem:\n{problem}\n"
        "Remember to put your answer inside \\boxed{}\n"
    )
    assert math_prompt(problem) == published
    assert math_prompt("P") == (
        "Solve the following math problem step by step.\nProblem:\nP\n"
        "Remember to put your answer inside \\boxed{}\n"
    )
    assert math_prompt("P").encode() == (
        b"Solve the following math problem step by step.\nProblem:\nP\n"
        b"Remember to put your answer inside \\boxed{}\n"
    )


def test_aime_prompt_is_byte_identical_to_lighteval_0_10() -> None:
    # lighteval 0.10.0 tasks/default_prompts.py aime_prompt_fn, its template verbatim:
    template = """
Solve the following math problem efficiently and clearly.  The last line of your response should be of the following format: 'Therefore, the final answer is: $\\boxed{{ANSWER}}$. I hope it is correct' (without quotes) where ANSWER is just the final number or expression that solves the problem. Think step by step before answering.

{Question}
""".strip()  # noqa: E501
    problem = "Find the number of {x} such that $x^2 = 4$.\n"
    assert aime_prompt(problem) == template.format(Question=problem)
    assert aime_prompt("Q") == (
        "Solve the following math problem efficiently and clearly.  The last line of your "
        "response should be of the following format: 'Therefore, the final answer is: "
        "$\\boxed{ANSWER}$. I hope it is correct' (without quotes) where ANSWER is just "
        "the final number or expression that solves the problem. Think step by step "
        "before answering.\n\nQ"
    )


# ---------------------------------------------------------------------------------------
# MATH: model outputs -> extracted answer -> score against a gold solution

# (output, extracted answer or None, gold solution, score)
MATH_CASES = [
    # 1. two boxes: the LAST one is the answer (rfind)
    ("First \\boxed{3}; correcting: $\\boxed{5}$.", "5", "So it is $\\boxed{5}$.", 1.0),
    # 2. the last box is the wrong one: 3 vs 5, integers differ under sympy (3-5 != 0)
    ("$\\boxed{5}$? No: $\\boxed{3}$.", "3", "So it is $\\boxed{5}$.", 0.0),
    # 3. nested braces are matched; mathd strings equal
    ("Thus $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}", "$\\boxed{\\frac{1}{2}}$", 1.0),
    # 4. "\boxed " with a space: the text after it up to the next "$"
    ("The answer is $\\boxed 5$.", "5", "$\\boxed{5}$", 1.0),
    # 5. "\boxed " and no "$" after it: everything to the end of the text; mathd gives
    #    "5istheanswer", prm the same, not an integer against the integer 5 -> wrong
    ("\\boxed 5 is the answer", "5 is the answer", "$\\boxed{5}$", 0.0),
    # 6. quirk: a "\boxed " anywhere beats a later \boxed{}: after the last "\boxed " up to
    #    "$" is "7"
    ("Try $\\boxed 7$ first; finally $\\boxed{5}$", "7", "$\\boxed{5}$", 0.0),
    # 7. \fbox is found but never unwrapped (only "\boxed{" is): no answer
    ("Answer: $\\fbox{5}$", None, "$\\boxed{5}$", 0.0),
    # 8. a \boxed anywhere takes precedence over \fbox
    ("$\\fbox{3}$ then $\\boxed{5}$", "5", "$\\boxed{5}$", 1.0),
    # 9. no boxed answer at all
    ("The answer is 5.", None, "$\\boxed{5}$", 0.0),
    # 10. unbalanced braces: no closing brace brings the depth back to 0
    ("$\\boxed{5", None, "$\\boxed{5}$", 0.0),
    # 11. empty box: "" never equals a non-empty gold
    ("$\\boxed{}$", "", "$\\boxed{5}$", 0.0),
    # 12. unreduced fraction: prm "2/4" vs "1/2", both a/b fractions -> compared as strings
    ("$\\boxed{\\frac{2}{4}}$", "\\frac{2}{4}", "$\\boxed{\\frac{1}{2}}$", 0.0),
    # 13. mathd turns exactly "0.5" into \frac{1}{2}
    ("$\\boxed{0.5}$", "0.5", "$\\boxed{\\frac{1}{2}}$", 1.0),
    # 14. mathd: \frac12 -> \frac{1}{2}
    ("$\\boxed{\\frac12}$", "\\frac12", "$\\boxed{\\frac{1}{2}}$", 1.0),
    # 15. mathd: canonical a/b -> \frac{a}{b}
    ("$\\boxed{1/2}$", "1/2", "$\\boxed{\\frac{1}{2}}$", 1.0),
    # 16. mathd: a leading "." gets a 0: ".5" -> "0.5" -> \frac{1}{2}
    ("$\\boxed{.5}$", ".5", "$\\boxed{\\frac{1}{2}}$", 1.0),
    # 17. "0.50": not mathd's "0.5"; prm "0.50" vs "1/2": not both fractions, neither an
    #     integer -> sympy: 1/2 - 0.50 simplifies to 0
    ("$\\boxed{0.50}$", "0.50", "$\\boxed{\\frac{1}{2}}$", 1.0),
    # 18. 0.33 vs 1/3: sympy difference is 1/300, not 0
    ("$\\boxed{0.33}$", "0.33", "$\\boxed{\\frac13}$", 0.0),
    # 19. units: mathd cuts at "\text{ " -> "5"
    ("$\\boxed{5 \\text{ cm}}$", "5 \\text{ cm}", "$\\boxed{5}$", 1.0),
    # 20. everything after "\text{ " goes, the exponent too
    ("$\\boxed{5\\text{ cm}^2}$", "5\\text{ cm}^2", "$\\boxed{5}$", 1.0),
    # 21. a bare unit word: prm removes "cm" -> "5 " -> float 5 -> "5"
    ("$\\boxed{5 cm}$", "5 cm", "$\\boxed{5}$", 1.0),
    # 22. degrees: mathd removes "^\circ"
    ("$\\boxed{30^\\circ}$", "30^\\circ", "$\\boxed{30}$", 1.0),
    # 23. prm removes "degree"+"s"
    ("$\\boxed{30 degrees}$", "30 degrees", "$\\boxed{30^\\circ}$", 1.0),
    # 24. mathd: dfrac -> frac
    ("$\\boxed{\\dfrac{3}{4}}$", "\\dfrac{3}{4}", "$\\boxed{\\frac{3}{4}}$", 1.0),
    # 25. tuple: mathd removes the space -> "(1,2)" on both sides
    ("$\\boxed{(1, 2)}$", "(1, 2)", "$\\boxed{(1,2)}$", 1.0),
    # 26. tuple element-wise: first elements 2 vs 1 differ under sympy
    ("$\\boxed{(2,1)}$", "(2,1)", "$\\boxed{(1,2)}$", 0.0),
    # 27. interval: different opening bracket "[" vs "(" -> wrong before any element
    ("$\\boxed{[1,2)}$", "[1,2)", "$\\boxed{(1,2)}$", 0.0),
    # 28. tuple with an equivalent element: prm "(0.5,2)" vs "(1/2,2)"; 1/2 vs 0.5 by sympy,
    #     2 vs 2 by sympy
    ("$\\boxed{(0.5, 2)}$", "(0.5, 2)", "$\\boxed{\\left(\\frac{1}{2}, 2\\right)}$", 1.0),
    # 29. \left( \right) removed by mathd
    ("$\\boxed{\\left( 1, 2 \\right)}$", "\\left( 1, 2 \\right)", "$\\boxed{(1,2)}$", 1.0),
    # 30. interval with infinity: mathd strips \left/\right and spaces on both sides
    (
        "$\\boxed{(-\\infty, 3]}$",
        "(-\\infty, 3]",
        "$\\boxed{\\left(-\\infty,3\\right]}$",
        1.0,
    ),
    # 31. thousands comma: prm strips "1,000" -> "1000"
    ("$\\boxed{1,000}$", "1,000", "$\\boxed{1000}$", 1.0),
    # 32. "{,}": prm drops the braces, then strips the thousands comma
    ("$\\boxed{10{,}000}$", "10{,}000", "$\\boxed{10000}$", 1.0),
    # 33. quirk: "\," becomes a space in pylatexenc, "10 000" becomes the mixed number
    #     "10+000", not an integer against the integer 10000 -> wrong
    ("$\\boxed{10\\,000}$", "10\\,000", "$\\boxed{10000}$", 0.0),
    # 34. mathd drops "x =" (at most two characters before a single "=")
    ("$\\boxed{x = 5}$", "x = 5", "$\\boxed{5}$", 1.0),
    # 35. "xy " is three characters: kept; "xy=5" is no integer against 5
    ("$\\boxed{xy = 5}$", "xy = 5", "$\\boxed{5}$", 0.0),
    # 36. mathd: \sqrt2 -> \sqrt{2}
    ("$\\boxed{\\sqrt2}$", "\\sqrt2", "$\\boxed{\\sqrt{2}}$", 1.0),
    # 37. prm "2sqrt(2)" vs "sqrt(8)": sympy, 2*sqrt(2) - sqrt(8) = 0
    ("$\\boxed{2\\sqrt{2}}$", "2\\sqrt{2}", "$\\boxed{\\sqrt{8}}$", 1.0),
    # 38. prm "sqrt(2)/2" vs "1/sqrt(2)": "1/sqrt(2)" is no a/b fraction -> sympy: equal
    (
        "$\\boxed{\\frac{\\sqrt{2}}{2}}$",
        "\\frac{\\sqrt{2}}{2}",
        "$\\boxed{\\frac{1}{\\sqrt{2}}}$",
        1.0,
    ),
    # 39. pi: prm "pi*2" vs "2pi" (two letters p, i: allowed), sympy: equal
    ("$\\boxed{\\pi \\cdot 2}$", "\\pi \\cdot 2", "$\\boxed{2\\pi}$", 1.0),
    # 40. 6.28 vs 2*pi: sympy difference is 2*pi - 6.28, not 0
    ("$\\boxed{6.28}$", "6.28", "$\\boxed{2\\pi}$", 0.0),
    # 41. integer gold, non-integer form: prm "10/2" is no integer string -> no sympy, wrong
    ("$\\boxed{\\frac{10}{2}}$", "\\frac{10}{2}", "$\\boxed{5}$", 0.0),
    # 42. prm: "5.0" is a float close to an integer -> "5"
    ("$\\boxed{5.0}$", "5.0", "$\\boxed{5}$", 1.0),
    # 43. mixed number: prm "4 1/2" -> "4+1/2" vs "9/2": not both a/b fractions -> sympy 0
    ("$\\boxed{4\\frac{1}{2}}$", "4\\frac{1}{2}", "$\\boxed{\\frac{9}{2}}$", 1.0),
    # 44. text answers: prm unwraps \text{}, removes the unit "day" from both and lower-cases
    #     ("mon" == "mon")
    ("$\\boxed{monday}$", "monday", "$\\boxed{\\text{Monday}}$", 1.0),
    # 45. percent and dollars: mathd removes "\%" and "\$"
    ("$\\boxed{50\\%}$", "50\\%", "$\\boxed{50}$", 1.0),
    ("$\\boxed{\\$5}$", "\\$5", "$\\boxed{5}$", 1.0),
    # 46. a choice letter: prm "c" vs "(c)"; "(c)" is a one-element tuple "c"; sympy c-c = 0
    ("$\\boxed{C}$", "C", "$\\boxed{\\text{(C)}}$", 1.0),
    # 47. polynomial forms: prm "(x+1)^2" vs "x^2+2x+1", sympy expands to 0
    ("$\\boxed{(x+1)^2}$", "(x+1)^2", "$\\boxed{x^2+2x+1}$", 1.0),
    # 48. a gold solution without a box: no gold answer, scores 0
    ("$\\boxed{5}$", "5", "The answer is 5.", 0.0),
]


@pytest.mark.parametrize(("output", "extracted", "solution", "score"), MATH_CASES)
def test_math_outputs(output: str, extracted: str | None, solution: str, score: float) -> None:
    assert last_boxed_answer(output) == extracted
    assert score_math(output, solution) == score


def test_math_case_count() -> None:
    assert len(MATH_CASES) >= 30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # nesting two deep; the box's own closing brace is the one at depth 0
        ("$\\boxed{\\frac{\\sqrt{3}}{2}}$ done", "\\frac{\\sqrt{3}}{2}"),
        # "\boxed5 ... {x}": the matched braces do not start right after \boxed
        ("\\boxed5 and {x}", None),
        # "\boxed {5}" has "\boxed " (a space): the text after it up to "$"
        ("$\\boxed {5}$", "{5}"),
        (None, None),
        ("", None),
    ],
)
def test_last_boxed_answer_edges(text: str | None, expected: str | None) -> None:
    assert last_boxed_answer(text) == expected


@pytest.mark.parametrize(
    ("given", "gold", "equal"),
    [
        ("5", "5", True),
        # mathd: "k = 5" -> "5"
        ("k = 5", "5", True),
        # both unnormalisable \sqrt at the end (mathd raises and keeps the text): equal text
        ("\\sqrt", "\\sqrt", True),
        # unordered solution lists are ordered: "2,3" is no bracketed tuple, one element
        # "2,3" vs "3,2", sympy cannot subtract them -> wrong
        ("3, 2", "2, 3", False),
        # mathd drops spaces: same list, same order
        ("2, 3", "2,3", True),
        # None prediction
        (None, "5", False),
    ],
)
def test_math_answers_equal(given: str | None, gold: str, equal: bool) -> None:
    assert math_answers_equal(given, gold) is equal  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "given",
    [
        "9**9**9",  # without the screen sympy never returns
        "1000000!",  # 7 s
        "(9!)!",  # 2 s
        "((((((((9)^9)^9)^9)^9)^9)^9)^9)^9",  # a tower of 8: minutes or more
    ],
)
def test_sympy_budget_refuses_runaway_expressions(given: str) -> None:
    # a non-integer gold so that the comparison reaches the sympy step
    assert math_answers_equal(given, "\\sqrt{2}") is False


def test_sympy_length_budget_is_a_deviation() -> None:
    # Upstream would simplify sqrt(2)+0+0+... - sqrt(2) to 0 and call it equal; here the
    # expression is longer than SYMPY_MAX_CHARS and refused.
    long_given = "\\sqrt{2}" + "+0" * SYMPY_MAX_CHARS
    assert math_answers_equal(long_given, "\\sqrt{2}") is False
    assert math_answers_equal("\\sqrt{2}+0+0", "\\sqrt{2}") is True  # short: sympy says 0


# ---------------------------------------------------------------------------------------
# AIME

# (output, gold answer, score)
AIME_CASES = [
    # 1. the prompt's own format
    ("...\nTherefore, the final answer is: $\\boxed{204}$. I hope it is correct", "204", 1.0),
    # 2. the gold given as an int
    ("Therefore, the final answer is: $\\boxed{204}$.", 204, 1.0),
    # 3. leading zeros on either side are the same integer 33
    ("$\\boxed{033}$", "33", 1.0),
    ("$\\boxed{33}$", "033", 1.0),
    # 4. no box: "final answer is: X"
    ("Therefore, the final answer is: 204. I hope it is correct", "204", 1.0),
    # 5. no box, "final answer is $X$"
    ("So the final answer is $204$.", "204", 1.0),
    # 6. wrong number
    ("The final answer is 205", "204", 0.0),
    # 7. neither a box nor "final answer ... is": 0 (lighteval would take the last number)
    ("I think it's 204", "204", 0.0),
    # 8. the last box counts: 210
    ("$\\boxed{204}$ ... recheck ... $\\boxed{210}$", "204", 0.0),
    # 9. "x = 204": the right side
    ("$\\boxed{x = 204}$", "204", 1.0),
    # 10. a symbolic form is no integer: 0 (lighteval's sympy comparison would say 1)
    ("$\\boxed{\\frac{408}{2}}$", "204", 0.0),
    # 11. out of AIME's range: 1204 is not 0-999
    ("$\\boxed{1204}$", "204", 0.0),
    # 12. "204.0" and "\text{204}" read as 204
    ("$\\boxed{204.0}$", "204", 1.0),
    ("$\\boxed{\\text{204}}$", "204", 1.0),
    # 13. nested boxes: the last "\boxed{" is the inner one
    ("$\\boxed{\\boxed{204}}$", "204", 1.0),
    # 14. spaces and a degree sign
    ("$\\boxed{ 204^\\circ }$", "204", 1.0),
    # 15. a box wins over a "final answer is" before it
    ("The final answer is 204? No: $\\boxed{205}$", "204", 0.0),
]


@pytest.mark.parametrize(("output", "answer", "score"), AIME_CASES)
def test_aime_outputs(output: str, answer: str | int, score: float) -> None:
    assert score_aime(output, answer) == score


def test_aime_final_answer_extraction() -> None:
    assert aime_final_answer("$\\boxed{\\frac{408}{2}}$") == "\\frac{408}{2}"
    assert aime_final_answer("the final answer is: 17. I hope") == "17"
    assert aime_final_answer("no answer here") is None


def test_aime_rejects_a_gold_that_is_not_an_aime_answer() -> None:
    with pytest.raises(ValueError, match="0-999"):
        score_aime("$\\boxed{5}$", "five")
