"""Nova's ``math`` benchmark (MATH, zero-shot chain of thought) and lighteval's ``aime24``:
prompts, final-answer extraction and answer equivalence.

``math``
    Reimplements the behaviour of Amazon's published Nova lighteval task
    (aws-samples/sample-Nova-lighteval-custom-task, ``custom_tasks/math/zs_cot.py`` and
    ``math/utils.py``, lighteval 0.10.0): data ``EleutherAI/hendrycks_math``, its seven
    subsets, split ``test``, 8192 new tokens, no stop sequence. The prompt is
    :func:`math_prompt`. The gold answer is the last boxed answer of the dataset's
    ``solution`` field and the prediction's is the last boxed answer of the output, both
    found by :func:`last_boxed_answer`; they are compared by :func:`math_answers_equal`,
    OpenAI's PRM800K grader (``prm800k/grading/grader.py``, its MATH normaliser included),
    which the published code uses unchanged. Its quirks are kept on purpose, so that
    scores match Nova's; the ones that bias a score are named where they happen (look for
    "Quirk").

``aime24``
    lighteval 0.10.0's task: data ``HuggingFaceH4/aime_2024``, split ``train``, 32768 new
    tokens, prompt :func:`aime_prompt` (``aime_prompt_fn``), gold the ``answer`` field.
    lighteval scores it with its math-verify extraction and sympy comparison;
    :func:`score_aime` does not depend on math-verify and compares integers instead (see
    its docstring for what that changes).

The sympy step (:func:`_equal_under_sympy`) has no wall-clock limit: a signal handler
works only in the main thread and a thread cannot be killed, so instead the expressions
that can make sympy run for seconds to hours are refused before sympy sees them (see
``SYMPY_MAX_CHARS`` and :func:`_sympy_budget_ok`); a refused comparison counts as "not
equal", as an exception does.
"""

from __future__ import annotations

import contextlib
import re

from pylatexenc.latex2text import LatexNodes2Text

MATH_SUBTASKS: tuple[str, ...] = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)
MATH_HF_REPO = "EleutherAI/hendrycks_math"
MATH_SPLIT = "test"
MATH_GENERATION_SIZE = 8192
MATH_METRIC = "math_exact_match"

AIME_HF_REPO = "HuggingFaceH4/aime_2024"
AIME_SPLIT = "train"
AIME_GENERATION_SIZE = 32768

# ---------------------------------------------------------------------------------------
# Prompts


def math_prompt(problem: str) -> str:
    """Nova's MATH zero-shot chain-of-thought prompt, byte for byte."""
    return (
        "Solve the following math problem step by step.\n"
        "Problem:\n" + problem + "\n"
        "Remember to put your answer inside \\boxed{}\n"
    )


# lighteval's template is a stripped triple-quoted string formatted with the problem: the
# text before the problem is fixed (note the two spaces after "clearly.").
_AIME_PROMPT_HEAD = (
    "Solve the following math problem efficiently and clearly.  The last line of your "
    "response should be of the following format: 'Therefore, the final answer is: "
    "$\\boxed{ANSWER}$. I hope it is correct' (without quotes) where ANSWER is just the "
    "final number or expression that solves the problem. Think step by step before "
    "answering.\n\n"
)


def aime_prompt(problem: str) -> str:
    """lighteval 0.10.0's ``aime_prompt_fn`` query, byte for byte."""
    return _AIME_PROMPT_HEAD + problem


# ---------------------------------------------------------------------------------------
# Final-answer extraction


def last_boxed_answer(text: str | None) -> str | None:
    """The content of the last boxed answer in ``text`` as the published Nova code finds it
    (the MATH benchmark's own ``last_boxed_only_string`` + ``remove_boxed``), or None.

    - ``\\boxed{...}``: the last ``\\boxed`` with its braces matched (nested braces kept),
      its content unwrapped. Unbalanced braces give None.
    - ``\\boxed `` followed by a space: the text after the LAST ``"\\boxed "`` up to the next
      ``$`` (or to the end of the text when there is none), which may be ``""``.
      Quirk: this form wins whenever it occurs anywhere in the text, even when a
      ``\\boxed{...}`` comes after it.
    - ``\\fbox{...}``: the published code looks for it when there is no ``\\boxed`` but then
      unwraps only ``\\boxed{``, so an ``\\fbox`` answer is never extracted. Quirk: None.
    """
    if text is None:
        return None
    if "\\boxed " in text:
        return text.split("\\boxed ")[-1].split("$")[0]
    start = text.rfind("\\boxed")
    if start < 0:
        return None  # \fbox or nothing: no answer either way (see the docstring)
    end = _closing_brace(text, start)
    if end is None:
        return None
    boxed = text[start : end + 1]
    if not boxed.startswith("\\boxed{"):
        return None  # e.g. "\boxed5 ... {x}": the braces found are not the box's
    return boxed[len("\\boxed{") : -1]


def _closing_brace(text: str, start: int) -> int | None:
    """Index of the ``}`` that brings the brace depth, counted from ``start``, back to 0."""
    depth = 0
    for index in range(start, len(text)):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
    return None


# ---------------------------------------------------------------------------------------
# The MATH normaliser (Hendrycks et al.), first stage of the PRM800K grader


_ENCLOSING_TEXT = re.compile(r"^\\text\{(?P<text>.+?)\}$")


def _mathd_normalize(answer: str) -> str:
    answer = answer.strip()
    try:
        match = _ENCLOSING_TEXT.search(answer)
        if match is not None:
            answer = match.group("text").strip()
        return _mathd_strip(answer)
    except Exception:
        # an assertion or an index error in the helpers below: compare the answer as it is
        return answer


def _mathd_strip(string: str) -> str:
    string = string.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    string = string.replace("tfrac", "frac").replace("dfrac", "frac")
    string = string.replace("\\left", "").replace("\\right", "")
    string = string.replace("^{\\circ}", "").replace("^\\circ", "")
    string = string.replace("\\$", "")
    string = _drop_units_on_the_right(string)
    string = string.replace("\\%", "")
    string = string.replace(" .", " 0.").replace("{.", "{0.")
    if not string:
        return string
    if string[0] == ".":
        string = "0" + string
    parts = string.split("=")
    if len(parts) == 2 and len(parts[0]) <= 2:  # "k = 5" -> " 5"
        string = parts[1]
    string = _brace_sqrt_argument(string)
    string = string.replace(" ", "")
    string = _brace_frac_arguments(string)
    if string == "0.5":
        string = "\\frac{1}{2}"
    return _slash_to_frac(string)


def _drop_units_on_the_right(string: str) -> str:
    # "\text{ " (with a space) is taken to start a unit; two of them raise, as upstream
    # does, and the caller then keeps the answer unnormalised.
    if "\\text{ " not in string:
        return string
    parts = string.split("\\text{ ")
    if len(parts) != 2:
        raise ValueError("more than one \\text{ ")
    return parts[0]


def _brace_sqrt_argument(string: str) -> str:
    """``\\sqrt3`` -> ``\\sqrt{3}``: a one-character argument gets braces. Quirk: that character
    may be a space (``\\sqrt 3`` -> ``\\sqrt{ }3``); an ``\\sqrt`` with nothing after it
    raises (IndexError), which the caller catches."""
    if "\\sqrt" not in string:
        return string
    head, *rest = string.split("\\sqrt")
    pieces = [head]
    for piece in rest:
        if piece[0] == "{":
            pieces.append("\\sqrt" + piece)
        else:
            pieces.append("\\sqrt{" + piece[0] + "}" + piece[1:])
    return "".join(pieces)


def _brace_frac_arguments(string: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1{72}`` -> ``\\frac{1}{72}``. A ``\\frac``
    followed by a single character leaves the whole string as it was; one followed by
    nothing raises (IndexError), which the caller catches."""
    head, *rest = string.split("\\frac")
    pieces = [head]
    for piece in rest:
        pieces.append("\\frac")
        if piece[0] == "{":
            pieces.append(piece)
            continue
        if len(piece) < 2:
            return string
        numerator, second, tail = piece[0], piece[1], piece[2:]
        if second == "{":
            pieces.append("{" + numerator + "}" + second + tail)
        else:
            pieces.append("{" + numerator + "}{" + second + "}" + tail)
    return "".join(pieces)


def _slash_to_frac(string: str) -> str:
    """``3/4`` -> ``\\frac{3}{4}`` when both sides are integers written canonically."""
    parts = string.split("/")
    if len(parts) != 2:
        return string
    try:
        numerator, denominator = int(parts[0]), int(parts[1])
    except ValueError:
        return string
    if string != f"{numerator}/{denominator}":
        return string
    return "\\frac{" + str(numerator) + "}{" + str(denominator) + "}"


# ---------------------------------------------------------------------------------------
# The PRM800K normaliser, second stage


_UNITS = (
    "degree",
    "cm",
    "centimeter",
    "meter",
    "mile",
    "second",
    "minute",
    "hour",
    "day",
    "week",
    "month",
    "year",
    "foot",
    "feet",
    "inch",
    "yard",
)
# Quirk: the units are removed wherever they occur, inside words too ("Monday" -> "Mon",
# "perimeter" -> "peri"); both sides lose the same letters, so text answers still match.
_UNIT_PATTERNS = tuple(re.compile(unit + r"(es)?(s)? *(\^[0-9]+)?") for unit in _UNITS)
_DEGREE_CIRC = re.compile(r"\^ *\\circ")
_THOUSANDS_THIN_SPACE = re.compile(r",\\! *")
_SPACED_DIGITS = re.compile(r"([0-9]) +([0-9])")
_MINUS_SPACES = re.compile(r"- *")
_THOUSANDS_COMMA = re.compile(r"(\d)(,)(\d\d\d)($|\D)")


def _prm_normalize(expr: str) -> str:
    match = _ENCLOSING_TEXT.search(expr)
    if match is not None:
        expr = match.group("text")
    expr = expr.replace("\\%", "%").replace("\\$", "$").replace("$", "").replace("%", "")
    expr = expr.replace(" or ", " , ").replace(" and ", " , ")
    expr = expr.replace("million", "*10^6").replace("billion", "*10^9")
    expr = expr.replace("trillion", "*10^12")
    for pattern in _UNIT_PATTERNS:
        expr = pattern.sub("", expr)
    expr = _DEGREE_CIRC.sub("", expr)
    if expr and expr[0] == "{" and expr[-1] == "}":
        expr = expr[1:-1]
    expr = _THOUSANDS_THIN_SPACE.sub("", expr)
    if _parses_as_float(expr) and _close_to_int(float(expr)):
        expr = str(round(float(expr)))
    if "\\" in expr:
        with contextlib.suppress(Exception):  # pylatexenc's errors: keep the text as it is
            expr = _latex_to_plain(expr)
    expr = _MINUS_SPACES.sub("-", expr)
    # "7 3/4" -> "7+3/4" (a mixed number). Quirk: so does "10 000" (from "10\,000"), which
    # is then no integer and fails against "10000".
    expr = _SPACED_DIGITS.sub(r"\1+\2", expr)
    expr = expr.replace(" ", "").replace("{", "").replace("}", "").lower()
    if _string_is_int(expr):
        expr = str(int(float(expr.replace(",", ""))))
    return expr


def _latex_to_plain(expr: str) -> str:
    expr = expr.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac")
    expr = expr.replace("\\frac", " \\frac")  # so that "1\frac{1}{2}" reads as a mixed number
    expr = LatexNodes2Text().latex_to_text(expr)  # a fresh converter each time, as upstream
    for symbol, plain in (("√", "sqrt"), ("π", "pi"), ("∞", "inf"), ("∪", "U")):
        expr = expr.replace(symbol, plain)
    expr = expr.replace("·", "*").replace("×", "*")
    return expr.strip()


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _close_to_int(value: float) -> bool:
    try:
        return abs(value - round(value)) <= 1e-7
    except (OverflowError, ValueError):  # inf, nan
        return False


def _strip_thousands_commas(expr: str) -> str:
    """``1,234,567`` -> ``1234567``, leaving a tuple's commas ("1,2") alone."""
    while True:
        stripped = _THOUSANDS_COMMA.sub(r"\1\3\4", expr)
        if stripped == expr:
            return stripped
        expr = stripped


def _string_is_int(text: str) -> bool:
    try:
        value = float(_strip_thousands_commas(text))
    except ValueError:
        return False
    return _close_to_int(value)


_FRACTION = re.compile(r"^-?[0-9]+.?/0*[1-9][0-9]*.?$")


def _is_fraction(expr: str) -> bool:
    return _FRACTION.search(expr) is not None


_TUPLE_CHARS = "()[]"


def _tuple_elements(expr: str) -> list[str]:
    """The elements of a tuple or interval ``(a,b)``/``[a,b)``, else ``[expr]``; ``[]`` for
    ``""``. Nested brackets make the whole an element of its own."""
    expr = _strip_thousands_commas(expr)
    if not expr:
        return []
    inner = expr[1:-1]
    if (
        len(expr) > 2
        and expr[0] in _TUPLE_CHARS
        and expr[-1] in _TUPLE_CHARS
        and not any(char in inner for char in _TUPLE_CHARS)
    ):
        return [element.strip() for element in inner.split(",")]
    return [expr]


# ---------------------------------------------------------------------------------------
# sympy


SYMPY_MAX_CHARS = 256
"""Longest ``(gold)-(given)`` expression handed to sympy. Not upstream: upstream has no
limit. MATH gold answers are far shorter; a longer expression is refused (not equal)."""

_SYMPY_BAD_SUBSTRINGS = ("^{", "^(")
_SYMPY_BAD_PATTERNS = (re.compile(r"\^[0-9]+\^"), re.compile(r"\^[0-9][0-9]+"))
_BIG_FACTORIAL = re.compile(r"(\d{6,}|\))\s*!")
_MAX_POWER_TOWER = 4


def _sympy_allowed(expr: str) -> bool:
    """Upstream's screen: at most two distinct letters (no text, no function names, which
    also keeps sympy's ``eval`` of the expression harmless) and no ``^{``, ``^(``,
    ``^12...`` or ``^2^``, which it names as things sympy may hang on."""
    letters = {char for char in expr.replace("sqrt", "").replace("frac", "") if char.isalpha()}
    if len(letters) > 2:
        return False
    if any(bad in expr for bad in _SYMPY_BAD_SUBSTRINGS):
        return False
    return not any(pattern.search(expr) for pattern in _SYMPY_BAD_PATTERNS)


def _sympy_budget_ok(expr: str) -> bool:
    """This project's additions to upstream's screen, against inputs that keep sympy busy
    for seconds to forever (measured with sympy 1.14); each refusal means "not equal":

    - longer than ``SYMPY_MAX_CHARS``;
    - Python's ``**`` held to upstream's rules for ``^`` (``9**9**9`` never returns);
    - a factorial of a 6+ digit number or of a bracketed group (``1000000!`` takes 7 s,
      ``(9!)!`` 2 s, ``((9!)!)!`` forever);
    - a bracketed group raised to a power that holds a power, nested deeper than
      ``_MAX_POWER_TOWER`` (``(((((((9)^9)^9)^9)^9)^9)^9)^9``, 7 high, takes 5 s; each
      level multiplies the digits by 9).

    What a real answer may lose: an expression over ``SYMPY_MAX_CHARS`` (MATH's gold
    answers are far shorter) and the factorial of a bracketed group (``(n+1)!`` against
    ``(n+1)n!``), which upstream would have handed to sympy.
    """
    if len(expr) > SYMPY_MAX_CHARS:
        return False
    if "**" in expr and not _sympy_allowed(expr.replace("**", "^")):
        return False
    if _BIG_FACTORIAL.search(expr):
        return False
    return _power_tower_height(expr.replace("**", "^")) <= _MAX_POWER_TOWER


def _power_tower_height(expr: str) -> int:
    """How many powers are stacked on bracketed groups: ``(x+1)^2`` is 1, ``((9^9)^9)^9`` 3."""
    heights = [0]
    tallest = 0
    for index, char in enumerate(expr):
        if char == "(":
            heights.append(0)
        elif char == ")" and len(heights) > 1:
            inner = heights.pop()
            raised = expr[index + 1 : index + 2] == "^"
            height = inner + 1 if raised else inner
            heights[-1] = max(heights[-1], height)
            tallest = max(tallest, height)
        elif char == "^" and (index == 0 or expr[index - 1] != ")"):
            heights[-1] = max(heights[-1], 1)
            tallest = max(tallest, 1)
    return tallest


def _equal_under_sympy(gold: str, given: str) -> bool:
    expr = f"({gold})-({given})"
    if not (_sympy_allowed(expr) and _sympy_budget_ok(expr)):
        return False
    # imported here, not with the module: sympy takes ~0.5 s to import
    import sympy
    from sympy.parsing import sympy_parser

    try:
        parsed = sympy_parser.parse_expr(
            expr.replace("^", "**"),
            transformations=(
                *sympy_parser.standard_transformations,
                sympy_parser.implicit_multiplication_application,
            ),
        )
        return bool(sympy.simplify(parsed) == 0)
    except Exception:  # upstream catches everything; KeyboardInterrupt still propagates
        return False


# ---------------------------------------------------------------------------------------
# Grading


def math_answers_equal(prediction_answer: str, gold_answer: str) -> bool:
    """The PRM800K grader, as Nova's published MATH task uses it. Correct when

    (a) both answers normalise to the same string under the MATH normaliser, or under
        PRM800K's (which turns LaTeX into text with pylatexenc), or
    (b) they have the same number of elements (tuples and intervals element-wise, with
        the same opening and closing brackets) and each pair is equal: two plain
        fractions ``a/b`` only as strings (an unreduced fraction is wrong), an integer
        against a non-integer never, anything else when sympy simplifies the difference
        to 0.
    """
    if prediction_answer is None or gold_answer is None:
        return False
    if _mathd_normalize(gold_answer) == _mathd_normalize(prediction_answer):
        return True
    gold = _prm_normalize(gold_answer)
    given = _prm_normalize(prediction_answer)
    if gold == given:
        return True
    if not given:
        return False
    gold_elements = _tuple_elements(gold)
    given_elements = _tuple_elements(given)
    if len(gold_elements) > 1 and (gold[0] != given[0] or gold[-1] != given[-1]):
        return False
    if len(gold_elements) != len(given_elements):
        return False
    # Here both sides have the same number (>= 1) of elements: "" was returned above.
    for gold_element, given_element in zip(gold_elements, given_elements, strict=True):
        if _is_fraction(gold_element) and _is_fraction(given_element):
            equal = gold_element == given_element
        elif _string_is_int(gold_element) != _string_is_int(given_element):
            equal = False
        else:
            equal = _equal_under_sympy(gold_element, given_element)
        if not equal:
            return False
    return True


def score_math(output: str, solution: str) -> float:
    """Nova's ``math_exact_match`` for one sample: 1.0 when the last boxed answer of the
    model's ``output`` equals that of the dataset's ``solution``, else 0.0 (also when either
    has no boxed answer; upstream compares placeholder strings then, which never match)."""
    gold = last_boxed_answer(solution)
    predicted = last_boxed_answer(output)
    if gold is None or predicted is None:
        return 0.0
    return 1.0 if math_answers_equal(predicted, gold) else 0.0


# ---------------------------------------------------------------------------------------
# AIME


_FINAL_ANSWER = re.compile(
    r"final answer.{0,100}?\s+is:?\s*(?:\$|\\\(|\\\[)?\s*(?:\\boxed\{|\\text\{|\{)?\s*"
    r"([+-]?\d[\d,]*(?:\.\d+)?)",
    re.IGNORECASE,
)
_AIME_WRAPPERS = re.compile(r"^\\(?:text|textbf|mathbf|mathrm|boxed)\s*\{(.*)\}$", re.DOTALL)
_AIME_INTEGER = re.compile(r"^\+?(\d+)(?:\.0*)?$")


def aime_final_answer(output: str) -> str | None:
    """The final answer of an AIME output: the content of its last ``\\boxed{...}`` (braces
    matched), else the number after the last "final answer ... is" (lighteval's wording
    ``Therefore, the final answer is: ...``), else None."""
    start = output.rfind("\\boxed{")
    if start >= 0:
        end = _closing_brace(output, start)
        if end is not None:
            return output[start + len("\\boxed{") : end]
    matches = _FINAL_ANSWER.findall(output)
    return matches[-1] if matches else None


def aime_integer(answer: str) -> int | None:
    """An AIME answer as an integer 0-999, or None: ``$033$``, ``\\text{33}``, ``x = 33``,
    ``33^\\circ``, ``33.0`` and ``33.`` all read 33; anything else is None."""
    text = answer.strip()
    for _ in range(4):
        text = text.strip().strip("$").strip()
        if "=" in text:
            text = text.rsplit("=", 1)[1].strip()
        for noise in ("^{\\circ}", "^\\circ", "\\%", "\\!", "\\,", "{,}", ","):
            text = text.replace(noise, "")
        text = text.rstrip(".").strip()
        match = _AIME_WRAPPERS.match(text)
        if match is not None:
            text = match.group(1)
        elif text.startswith("{") and text.endswith("}"):
            text = text[1:-1]
        else:
            break
    number = _AIME_INTEGER.match(text.replace(" ", ""))
    if number is None:
        return None
    value = int(number.group(1))
    return value if value <= 999 else None


def score_aime(output: str, answer: str | int) -> float:
    """1.0 when the final answer of ``output`` (:func:`aime_final_answer`) is the integer
    ``answer``, else 0.0.

    lighteval 0.10.0 scores ``aime24`` with ``math_pass@1:1_samples``: math-verify style
    extraction (in priority order: "final answer is X. I hope", "final answer ... is X",
    the last ``\\boxed``, "answer: X", then any last number or LaTeX expression in the
    text), each parsed to sympy and compared symbolically. Differences here: the last
    boxed answer comes first and "final answer ... is X" only when there is none, no
    "answer:"/last-number fallback (an output with neither scores 0), and the comparison
    is of integers 0-999 (AIME answers are such integers, so a symbolic form such as
    ``\\frac{408}{2}`` scores 0 here and 1 under lighteval).
    """
    gold = aime_integer(str(answer))
    if gold is None:
        raise ValueError(f"AIME answer is not an integer 0-999: {answer!r}")
    final = aime_final_answer(output)
    if final is None:
        return 0.0
    return 1.0 if aime_integer(final) == gold else 0.0
