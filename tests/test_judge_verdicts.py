"""Judge prompts and strict verdict parsing; mapping position verdicts back to A/B."""

from __future__ import annotations

import pytest

from nova_eval_assets.judge.pairwise import row_outcome
from nova_eval_assets.judge.prompts import (
    BACKWARD,
    FORWARD,
    JUDGE_SYSTEM_PROMPT,
    pass_prompts,
    render,
    request_index,
)
from nova_eval_assets.judge.verdicts import (
    Preference,
    Verdict,
    parse_judgment,
    rationale_of,
    to_ab,
    to_position,
)

# ---------------------------------------------------------------- prompts


def test_forward_shows_a_first_and_backward_shows_b_first():
    prompts = pass_prompts("Which?", "ANSWER-A", "ANSWER-B", system="Be brief.")
    forward, backward = prompts[FORWARD].user, prompts[BACKWARD].user
    assert forward.index("[Response 1]\nANSWER-A") < forward.index("[Response 2]\nANSWER-B")
    assert backward.index("[Response 1]\nANSWER-B") < backward.index("[Response 2]\nANSWER-A")
    assert "[Instructions the assistant was given]\nBe brief." in forward
    assert prompts[FORWARD].system == JUDGE_SYSTEM_PROMPT
    # the judge never learns which response is the baseline
    assert "response_A" not in forward and "baseline" not in forward.lower()


def test_prompt_without_system_and_order_variants():
    rationale_first = render("q", "a", "b").user
    verdict_first = render("q", "a", "b", order="verdict_first").user
    assert "[Instructions" not in rationale_first
    assert rationale_first.endswith("then end with the verdict [[1]], [[2]] or [[tie]].")
    assert "Start your answer with the verdict [[1]], [[2]] or [[tie]]" in verdict_first
    with pytest.raises(ValueError, match="unknown judge order"):
        render("q", "a", "b", order="sideways")


def test_request_index_gives_each_pass_its_own_row():
    assert [request_index(r, p) for r in (0, 1) for p in (FORWARD, BACKWARD)] == [0, 1, 2, 3]


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("The first is correct.\nVerdict: [[1]]", Verdict.FIRST),
        ("Verdict: [[2]]\nResponse 2 follows the JSON format.", Verdict.SECOND),
        ("Both are equally vague. Verdict: [[tie]]", Verdict.TIE),
        ("[[ TIE ]]", Verdict.TIE),
        ("[[Tie]] both fine", Verdict.TIE),
        ("The verdict is [1].", Verdict.FIRST),  # single brackets (small judges)
        ("[2]\n\nResponse 2 is better.", Verdict.SECOND),
        ("Verdict: [[2]] ... so, again, [[2]]", Verdict.SECOND),  # repeats that agree
    ],
)
def test_valid_verdicts(text, verdict):
    parsed = parse_judgment(text)
    assert parsed.ok and parsed.error is None
    assert parsed.verdict is verdict


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Response 1 is better.", "no verdict marker"),
        ("Verdict: [[A]]", "no verdict marker"),
        ("**1**", "no verdict marker"),
        ("[Response 1]\nI don't know.", "no verdict marker"),
        ("[[[1]]]", "no verdict marker"),
        ("[1]] and [[2]", "no verdict marker"),
        ("The verdict is [1].\n\nThe decision was [2].", "conflicting verdict markers"),
        (
            "The verdict is [[1]] if Response 1 is better, [[2]] if Response 2 is better, "
            "or [[tie]] if they are equally good.",
            "conflicting verdict markers (first, second, tie)",
        ),
        ("", "empty output"),
        ("   \n ", "empty output"),
    ],
)
def test_unparsable_outputs_are_errors_never_guesses(text, reason):
    parsed = parse_judgment(text)
    assert parsed.verdict is None
    assert reason in parsed.error
    assert parsed.rationale == text.strip()  # the raw text is kept


def test_generation_failure_is_an_error_with_its_message():
    parsed = parse_judgment("", generation_error="HTTP 500 from server")
    assert parsed.verdict is None
    assert parsed.error == "generation failed: HTTP 500 from server"


def test_rationale_drops_markers_and_labels():
    assert rationale_of("Rationale: A is wrong.\nVerdict: [[2]]") == "A is wrong."
    assert rationale_of("Verdict: [[1]]\nExplanation here.") == "Explanation here."
    assert rationale_of("Final verdict is [[tie]]") == ""
    parsed = parse_judgment("Because X. Verdict: [[1]]")
    assert parsed.rationale == "Because X."
    assert parsed.verdict_span == (22, 23)


# ---------------------------------------------------------------- mapping back to A/B


@pytest.mark.parametrize(
    ("verdict", "forward", "backward"),
    [
        (Verdict.FIRST, Preference.A, Preference.B),
        (Verdict.SECOND, Preference.B, Preference.A),
        (Verdict.TIE, Preference.TIE, Preference.TIE),
        (None, Preference.ERROR, Preference.ERROR),
    ],
)
def test_backward_mapping_both_ways(verdict, forward, backward):
    assert to_ab(verdict, FORWARD) is forward
    assert to_ab(verdict, BACKWARD) is backward
    # and back again: the position the preferred response was shown in
    assert to_position(forward, FORWARD) is verdict
    assert to_position(backward, BACKWARD) is verdict


def test_a_judge_that_prefers_b_by_content_agrees_in_both_passes():
    # forward: B is Response 2 -> "[[2]]"; backward: B is Response 1 -> "[[1]]"
    forward = to_ab(parse_judgment("Verdict: [[2]]").verdict, FORWARD)
    backward = to_ab(parse_judgment("Verdict: [[1]]").verdict, BACKWARD)
    assert forward is backward is Preference.B


def test_mapping_rejects_unknown_pass():
    with pytest.raises(ValueError, match="pass must be"):
        to_ab(Verdict.FIRST, "sideways")


@pytest.mark.parametrize(
    ("forward", "backward", "outcome"),
    [
        ("A", "A", "A"),
        ("B", "B", "B"),
        ("tie", "tie", "tie"),
        ("A", "B", "inconsistent"),
        ("B", "A", "inconsistent"),
        ("B", "tie", "B"),
        ("tie", "A", "A"),
        ("error", "B", "B"),
        ("tie", "error", "tie"),
        ("error", "error", "inference_error"),
    ],
)
def test_row_outcome(forward, backward, outcome):
    assert row_outcome(Preference(forward), Preference(backward)) == outcome
