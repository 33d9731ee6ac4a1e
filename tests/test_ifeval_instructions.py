"""IFEval's 25 instruction checkers on hand-written responses, strict and loose, and the four
prompt / instruction scores on a small hand-worked set."""

from __future__ import annotations

from typing import Any

import pytest

from nova_eval_assets.tasks.ifeval_instructions import (
    INSTRUCTION_IDS,
    IfevalResult,
    aggregate,
    build_checker,
    count_sentences,
    count_words,
    follow_instructions,
    loose_variants,
    tokenize_words,
)

FOLLOWED = (True, True)
NOT_FOLLOWED = (False, False)
LOOSE_ONLY = (False, True)  # fails as written, passes once a line or the asterisks go


def verdicts(instruction_id: str, response: str, **kwargs: Any) -> tuple[bool, bool]:
    result = follow_instructions("the prompt", response, [instruction_id], [kwargs])
    return result.strict[0], result.loose[0]


# (instruction id, kwargs, response, (strict, loose))
CASES = [
    # keywords:existence: every keyword, a case-insensitive regex, anywhere
    ("keywords:existence", {"keywords": ["apple", "Banana"]}, "An APPLE and a banana.", FOLLOWED),
    ("keywords:existence", {"keywords": ["apple", "banana"]}, "Only an apple.", NOT_FOLLOWED),
    ("keywords:existence", {"keywords": ["red apple"]}, "A **red** apple.", LOOSE_ONLY),
    # keywords:frequency: occurrences, substrings included ("concatenate" holds "cat")
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "at least"},
     "A Cat and a CAT.", FOLLOWED),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "at least"},
     "concatenate the cat", FOLLOWED),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "at least"},
     "One cat.", NOT_FOLLOWED),
    # boundary: 2 occurrences are not "less than 2"
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "less than"},
     "A cat and a cat.", NOT_FOLLOWED),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "less than"},
     "One cat.", FOLLOWED),
    # 2 with the first line, 1 without it
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "less than"},
     "Here is my cat poem:\nA cat sat.", LOOSE_ONLY),
    # keywords:forbidden_words: whole words only, any case
    ("keywords:forbidden_words", {"forbidden_words": ["dog"]}, "I have a cat.", FOLLOWED),
    ("keywords:forbidden_words", {"forbidden_words": ["dog"]}, "My Dog barks.", NOT_FOLLOWED),
    ("keywords:forbidden_words", {"forbidden_words": ["dog"]}, "Dogma and hotdogs.", FOLLOWED),
    ("keywords:forbidden_words", {"forbidden_words": ["dog"]},
     "Sure, no dog here:\nI like cats.", LOOSE_ONLY),
    # keywords:letter_frequency: case-insensitive; "banana" has 3 a's, "Ana" 2
    ("keywords:letter_frequency", {"letter": "a", "let_frequency": 3, "let_relation": "at least"},
     "banana", FOLLOWED),
    ("keywords:letter_frequency", {"letter": "a", "let_frequency": 3, "let_relation": "at least"},
     "Ana", NOT_FOLLOWED),
    ("keywords:letter_frequency", {"letter": "A", "let_frequency": 3, "let_relation": "less than"},
     "banana", NOT_FOLLOWED),
    ("keywords:letter_frequency", {"letter": "a", "let_frequency": 3, "let_relation": "less than"},
     "Ana", FOLLOWED),
    # a non-letter is counted as given (the reference would pick a random letter)
    ("keywords:letter_frequency", {"letter": "#", "let_frequency": 2, "let_relation": "at least"},
     "#one #two", FOLLOWED),
    # "Sure, an answer:" holds a's; without it, "Yes." has none
    ("keywords:letter_frequency", {"letter": "a", "let_frequency": 1, "let_relation": "less than"},
     "Sure, an answer:\nYes.", LOOSE_ONLY),
    # language:response_language (langdetect)
    ("language:response_language", {"language": "fr"},
     "Le chat dort sur le canapé pendant que les enfants jouent dans le jardin.", FOLLOWED),
    ("language:response_language", {"language": "fr"},
     "The cat sleeps on the sofa while the children play in the garden.", NOT_FOLLOWED),
    ("language:response_language", {"language": "de"},
     "Die Katze schläft auf dem Sofa, während die Kinder im Garten spielen.", FOLLOWED),
    # nothing langdetect can read counts as followed, as in the reference
    ("language:response_language", {"language": "fr"}, "12345 !!! 678", FOLLOWED),
    # length_constraints:number_sentences: "less than" is <, "at least" is >=
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"},
     "One. Two.", FOLLOWED),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"},
     "One. Two. Three.", NOT_FOLLOWED),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"},
     "One. Two. Three.", FOLLOWED),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"},
     "One. Two.", NOT_FOLLOWED),
    # "Sure!" is a sentence of its own; without the first line one sentence is left
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "less than"},
     "Sure! Here you go:\nOne sentence only.", LOOSE_ONLY),
    # length_constraints:number_paragraphs: exactly n, split on the *** divider
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "A\n***\nB\n***\nC", FOLLOWED),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "A\n***\nB", NOT_FOLLOWED),
    # empty pieces at either end do not count
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3},
     "***\nA\n***\nB\n***\nC\n***", FOLLOWED),
    # an empty paragraph between two dividers fails
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3},
     "A\n***\n***\nB\n***\nC", NOT_FOLLOWED),
    # four with the last line, three (and a trailing divider) without it
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3},
     "A\n***\nB\n***\nC\n***\nP.S. bye", LOOSE_ONLY),
    # length_constraints:number_words: runs of word characters
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"},
     "one two three four", FOLLOWED),
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"},
     "one two three four five", NOT_FOLLOWED),
    ("length_constraints:number_words", {"num_words": 5, "relation": "at least"},
     "one two three four five", FOLLOWED),
    ("length_constraints:number_words", {"num_words": 5, "relation": "at least"},
     "one two three four", NOT_FOLLOWED),
    # 6 words with the first line, 2 without
    ("length_constraints:number_words", {"num_words": 4, "relation": "less than"},
     "Here is the answer:\nYes indeed.", LOOSE_ONLY),
    # length_constraints:nth_paragraph_first_word: exactly n paragraphs (blank-line separated)
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "Second"},
     "First para.\n\nSecond, para.\n\nThird.", FOLLOWED),
    # a leading quote is dropped and the word ends at the closing one
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "second"},
     'First.\n\n"Second" is quoted.\n\nThird.', FOLLOWED),
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "second"},
     "First.\n\nSecond.", NOT_FOLLOWED),
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "second"},
     "First.\n\nAnother.\n\nThird.", NOT_FOLLOWED),
    # the reference reads the nth piece of the split, blank pieces included: strictly 3
    # paragraphs but piece 2 is "First."; the loose variants are stripped, so there it is
    # "Second."
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "second"},
     "\n\nFirst.\n\nSecond.\n\nThird.", LOOSE_ONLY),
    # 2 non-blank paragraphs, but piece 2 of the split is the blank " "
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "second"},
     "First.\n\n \n\nSecond.", NOT_FOLLOWED),
    # strictly the first word is "sure:" (":" does not end a word); loosely it is "first"
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 3, "nth_paragraph": 1, "first_word": "first"},
     "Sure:\nFirst.\n\nSecond here.\n\nThird.", LOOSE_ONLY),
    # detectable_content:number_placeholders: at least n [..]
    ("detectable_content:number_placeholders", {"num_placeholders": 2},
     "[name] lives at [address].", FOLLOWED),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "[name] only.",
     NOT_FOLLOWED),
    ("detectable_content:number_placeholders", {"num_placeholders": 3}, "[a][b] and [c]",
     FOLLOWED),
    # detectable_content:postscript: the marker anywhere, any case, loose dot spacing
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\nP.S. bye", FOLLOWED),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\n  p. s. bye",
     FOLLOWED),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\nPS bye", NOT_FOLLOWED),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Hi.\nP. P. S more",
     FOLLOWED),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Hi.\nP.S. more",
     NOT_FOLLOWED),
    ("detectable_content:postscript", {"postscript_marker": "Note:"}, "Hi.\nNOTE: more",
     FOLLOWED),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\n*P*.*S*. bye",
     LOOSE_ONLY),
    # detectable_format:number_bullet_lists: exactly n lines opening with "* " or "-"
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* a\n* b", FOLLOWED),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "Intro\n  - a\n* b", FOLLOWED),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "**Bold** line\n* a\n* b",
     FOLLOWED),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* a", NOT_FOLLOWED),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* a\n* b\n* c", LOOSE_ONLY),
    # detectable_format:constrained_response: one fixed answer, exact case, anywhere
    ("detectable_format:constrained_response", {}, "My answer is yes.", FOLLOWED),
    ("detectable_format:constrained_response", {}, "Well. My answer is maybe. Because.",
     FOLLOWED),
    ("detectable_format:constrained_response", {}, "my answer is yes.", NOT_FOLLOWED),
    ("detectable_format:constrained_response", {}, "My answer is yes", NOT_FOLLOWED),
    # detectable_format:number_highlighted_sections: at least n *x* or **x**
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2},
     "*one* and *two*", FOLLOWED),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2},
     "*one* and **two**", FOLLOWED),
    # "**bold**" is one highlight, not two
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "**bold**",
     NOT_FOLLOWED),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 1}, "* * and **  **",
     NOT_FOLLOWED),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 1}, "*across\nlines*",
     NOT_FOLLOWED),
    # detectable_format:multiple_sections: at least n, splitter and number, case-sensitive
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "SECTION 1\nfoo\nSECTION 2\nbar", FOLLOWED),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "SECTION 1\nfoo\nSECTION 2\nbar\nSECTION 3\nbaz", FOLLOWED),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "Section 1\nfoo\nSection 2\nbar", NOT_FOLLOWED),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "SECTION 1\nfoo", NOT_FOLLOWED),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "**SECTION** 1\nfoo\n**SECTION** 2\nbar", LOOSE_ONLY),
    # detectable_format:json_format: the whole text, optionally fenced
    ("detectable_format:json_format", {}, '{"a": 1}', FOLLOWED),
    ("detectable_format:json_format", {}, '```json\n{"a": 1}\n```', FOLLOWED),
    ("detectable_format:json_format", {}, '```JSON\n{"a": 1}\n```', FOLLOWED),
    ("detectable_format:json_format", {}, "```\n[1, 2]\n```", FOLLOWED),
    ("detectable_format:json_format", {}, '{"a": 1,}', NOT_FOLLOWED),
    ("detectable_format:json_format", {}, 'JSON: {"a": 1}', NOT_FOLLOWED),
    ("detectable_format:json_format", {}, 'Here you go:\n{"a": 1}', LOOSE_ONLY),
    # detectable_format:title: <<non-blank>> on one line
    ("detectable_format:title", {}, "<<My Title>>\nBody.", FOLLOWED),
    ("detectable_format:title", {}, "<<   >>\nBody.", NOT_FOLLOWED),
    ("detectable_format:title", {}, "<<>>\nBody.", NOT_FOLLOWED),
    ("detectable_format:title", {}, "<<My\nTitle>>", NOT_FOLLOWED),
    # combination:two_responses: two different texts around ******
    ("combination:two_responses", {}, "First answer.\n******\nSecond answer.", FOLLOWED),
    ("combination:two_responses", {}, "******\nFirst.\n******\nSecond.\n******", FOLLOWED),
    ("combination:two_responses", {}, "Same.\n******\n Same. ", NOT_FOLLOWED),
    ("combination:two_responses", {}, "A\n******\n******\nB", NOT_FOLLOWED),
    # three answers; without the last line two are left, before a trailing separator
    ("combination:two_responses", {}, "A\n******\nB\n******\nC", LOOSE_ONLY),
    # combination:repeat_prompt: starts with the prompt, any case
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem."},
     "  write a POEM. Roses are red.", FOLLOWED),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem."}, "A poem: roses.",
     NOT_FOLLOWED),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem."},
     "Sure!\nWrite a poem. Roses are red.", LOOSE_ONLY),
    # startend:end_checker: ends with the phrase, any case, outer quotes ignored
    ("startend:end_checker", {"end_phrase": "Any other questions?"},
     "Done. Any other questions?", FOLLOWED),
    ("startend:end_checker", {"end_phrase": "Any other questions?"},
     '"Done. any other questions?"\n', FOLLOWED),
    ("startend:end_checker", {"end_phrase": "Any other questions?"},
     "Any other questions? Thanks.", NOT_FOLLOWED),
    ("startend:end_checker", {"end_phrase": "Any other questions?"},
     "Done. **Any other questions?**", LOOSE_ONLY),
    # change_case:capital_word_frequency: all-capital word tokens
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "HELLO big WORLD", FOLLOWED),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "HELLO world", NOT_FOLLOWED),
    ("change_case:capital_word_frequency",
     {"capital_frequency": 2, "capital_relation": "less than"}, "HELLO world", FOLLOWED),
    ("change_case:capital_word_frequency",
     {"capital_frequency": 2, "capital_relation": "less than"}, "HELLO WORLD", NOT_FOLLOWED),
    # Treebank tokens: "DON'T" is "DO" + "N'T", two capital words
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "You said DON'T.", FOLLOWED),
    ("change_case:capital_word_frequency",
     {"capital_frequency": 1, "capital_relation": "less than"}, "NOTE:\nhello world", LOOSE_ONLY),
    # change_case:english_capital: str.isupper and English
    ("change_case:english_capital", {},
     "THIS IS AN ENGLISH SENTENCE ABOUT THE WEATHER TODAY.", FOLLOWED),
    ("change_case:english_capital", {}, "This is an English sentence about the weather today.",
     NOT_FOLLOWED),
    ("change_case:english_capital", {},
     "ЭТО ДЛИННОЕ ПРЕДЛОЖЕНИЕ НАПИСАНО НА РУССКОМ ЯЗЫКЕ О ПОГОДЕ.", NOT_FOLLOWED),
    ("change_case:english_capital", {}, "12345", NOT_FOLLOWED),  # nothing upper case
    ("change_case:english_capital", {},
     "Sure, here it is:\nTHIS IS AN ENGLISH SENTENCE ABOUT THE WEATHER TODAY.", LOOSE_ONLY),
    # change_case:english_lowercase: str.islower and English
    ("change_case:english_lowercase", {},
     "this is an english sentence about the weather today.", FOLLOWED),
    ("change_case:english_lowercase", {}, "This is an English sentence about the weather today.",
     NOT_FOLLOWED),
    ("change_case:english_lowercase", {},
     "le chat dort sur le canapé pendant que les enfants jouent dans le jardin.", NOT_FOLLOWED),
    ("change_case:english_lowercase", {},
     "Sure, here it is:\nthis is an english sentence about the weather today.", LOOSE_ONLY),
    # punctuation:no_comma
    ("punctuation:no_comma", {}, "No commas here.", FOLLOWED),
    ("punctuation:no_comma", {}, "Apples, pears.", NOT_FOLLOWED),
    ("punctuation:no_comma", {}, "Sure, here it is:\nNo commas here.", LOOSE_ONLY),
    # startend:quotation: wrapped in double quotes, outer blanks aside
    ("startend:quotation", {}, '"Wrapped."', FOLLOWED),
    ("startend:quotation", {}, '  "Wrapped."\n', FOLLOWED),
    ("startend:quotation", {}, '"', NOT_FOLLOWED),
    ("startend:quotation", {}, 'Not "wrapped".', NOT_FOLLOWED),
    ("startend:quotation", {}, 'Sure:\n"Wrapped."', LOOSE_ONLY),
]  # fmt: skip


@pytest.mark.parametrize(
    ("instruction_id", "kwargs", "response", "expected"),
    CASES,
    ids=[f"{case[0]}-{index}" for index, case in enumerate(CASES)],
)
def test_checker(
    instruction_id: str, kwargs: dict[str, Any], response: str, expected: tuple[bool, bool]
) -> None:
    assert verdicts(instruction_id, response, **kwargs) == expected


def test_every_instruction_has_cases_that_follow_and_that_do_not() -> None:
    for instruction_id in INSTRUCTION_IDS:
        outcomes = {case[3] for case in CASES if case[0] == instruction_id}
        assert FOLLOWED in outcomes, instruction_id
        assert NOT_FOLLOWED in outcomes, instruction_id


def test_the_25_instruction_ids() -> None:
    assert sorted(INSTRUCTION_IDS) == sorted(
        [
            "keywords:existence",
            "keywords:frequency",
            "keywords:forbidden_words",
            "keywords:letter_frequency",
            "language:response_language",
            "length_constraints:number_sentences",
            "length_constraints:number_paragraphs",
            "length_constraints:number_words",
            "length_constraints:nth_paragraph_first_word",
            "detectable_content:number_placeholders",
            "detectable_content:postscript",
            "detectable_format:number_bullet_lists",
            "detectable_format:constrained_response",
            "detectable_format:number_highlighted_sections",
            "detectable_format:multiple_sections",
            "detectable_format:json_format",
            "detectable_format:title",
            "combination:two_responses",
            "combination:repeat_prompt",
            "startend:end_checker",
            "change_case:capital_word_frequency",
            "change_case:english_capital",
            "change_case:english_lowercase",
            "punctuation:no_comma",
            "startend:quotation",
        ]
    )


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("One. Two! Three? Four", 4),
        ("It costs 3.5 dollars. Wow!", 2),
        ("Dr. Smith met Mr. Jones. They talked.", 2),  # known abbreviations
        ("J. Smith went home.", 1),  # an initial before a name
        ("We chose plan B. The rest followed.", 2),  # a capital before a sentence starter
        ("I live in the U.S. It is big.", 2),
        ("See e.g. the docs.", 1),
        ("Wait... what?", 1),  # an ellipsis before a lowercase word goes on
        ("Wait... What?", 2),
        ("", 0),
    ],
)
def test_sentence_counts(text: str, sentences: int) -> None:
    assert count_sentences(text) == sentences


def test_word_counting() -> None:
    assert count_words("don't stop-now, 42 times") == 6  # don, t, stop, now, 42, times
    # the Treebank tokens of nltk.word_tokenize, sentence by sentence
    assert tokenize_words('He said "NO." Then LEFT.') == [
        "He", "said", "``", "NO", ".", "''", "Then", "LEFT", ".",
    ]  # fmt: skip


def test_loose_variants() -> None:
    assert loose_variants("*A*\nB\nC") == [
        "*A*\nB\nC",  # as written
        "B\nC",  # first line dropped
        "*A*\nB",  # last line dropped
        "B",  # both dropped
        "A\nB\nC",  # and the same four without asterisks
        "B\nC",
        "A\nB",
        "B",
    ]


def test_a_blank_response_follows_nothing() -> None:
    # no comma in "  \n ", but an empty response never counts
    assert verdicts("punctuation:no_comma", "  \n ") == NOT_FOLLOWED


def test_kwargs_padding_with_nulls_is_dropped() -> None:
    # google/IFEval pads each kwargs dict with every other instruction's arguments as null
    padded = {"num_words": 3, "relation": "at least", "keyword": None, "num_sentences": None}
    result = follow_instructions(
        "p", "one two three", ["length_constraints:number_words"], [padded]
    )
    assert result.strict == [True]


def test_unknown_instruction_id_is_named() -> None:
    with pytest.raises(ValueError, match="keywords:nonsense"):
        follow_instructions("p", "text", ["keywords:nonsense"], [{}])


@pytest.mark.parametrize(
    ("instruction_id", "kwargs", "message"),
    [
        ("length_constraints:number_words", {"num_words": 3}, r"missing \['relation'\]"),
        ("length_constraints:number_words", {"num_words": 3, "relation": "at most"},
         "relation must be one of"),
        ("length_constraints:number_words", {"num_words": -1, "relation": "at least"},
         "num_words must not be negative"),
        ("punctuation:no_comma", {"num_words": 3}, r"not taken \['num_words'\]"),
        ("keywords:letter_frequency",
         {"letter": "ab", "let_frequency": 1, "let_relation": "at least"},
         "letter must be one character"),
        ("length_constraints:nth_paragraph_first_word",
         {"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "x"},
         r"nth_paragraph must be in 1\.\.2"),
        # an empty value is dropped like a null, so the argument is missing
        ("combination:repeat_prompt", {"prompt_to_repeat": ""}, r"missing \['prompt_to_repeat'\]"),
    ],
)  # fmt: skip
def test_bad_kwargs_raise(instruction_id: str, kwargs: dict[str, Any], message: str) -> None:
    # where the reference would make up a random argument, or fail on an unknown one
    with pytest.raises(ValueError, match=message):
        build_checker(instruction_id, kwargs)


def test_ids_and_kwargs_must_pair_up() -> None:
    with pytest.raises(ValueError, match="2 instruction ids but 1 kwargs"):
        follow_instructions("p", "text", ["punctuation:no_comma", "detectable_format:title"], [{}])


# A hand-worked set of four prompts.
PROMPTS = [
    # 1: the comma sits on the first line, so only loose drops it; 8 words >= 3 either way.
    #    strict [F, T], loose [T, T]
    (
        ["punctuation:no_comma", "length_constraints:number_words"],
        [{}, {"num_words": 3, "relation": "at least"}],
        "Sure, here it is:\none two three four",
    ),
    # 2: quoted, all lowercase English. strict [T, T], loose [T, T]
    (
        ["startend:quotation", "change_case:english_lowercase"],
        [{}, {}],
        '"this is an english sentence about the weather today."',
    ),
    # 3: a title; no "moon" in any variant; the comma is on the last line, which loose drops.
    #    strict [T, F, F], loose [T, F, T]
    (
        ["detectable_format:title", "keywords:existence", "punctuation:no_comma"],
        [{}, {"keywords": ["moon"]}, {}],
        "<<Night>>\nThe sun rose, slowly.",
    ),
    # 4: two bullets. strict [T], loose [T]
    (["detectable_format:number_bullet_lists"], [{"num_bullets": 2}], "* a\n* b"),
]


def score_prompts() -> list[IfevalResult]:
    return [
        follow_instructions("prompt", response, ids, kwargs) for ids, kwargs, response in PROMPTS
    ]


def test_hand_worked_prompts() -> None:
    results = score_prompts()
    assert [r.strict for r in results] == [
        [False, True],
        [True, True],
        [True, False, False],
        [True],
    ]
    assert [r.loose for r in results] == [[True, True], [True, True], [True, False, True], [True]]
    assert [r.prompt_level_strict_acc for r in results] == [0.0, 1.0, 0.0, 1.0]
    assert [r.prompt_level_loose_acc for r in results] == [1.0, 1.0, 0.0, 1.0]
    assert results[2].inst_level_strict_acc == pytest.approx(1 / 3)
    assert results[2].inst_level_loose_acc == pytest.approx(2 / 3)


def test_aggregate_pools_instructions_across_prompts() -> None:
    scores = aggregate(score_prompts())
    # prompt level: strict 0+1+0+1 of 4, loose 1+1+0+1 of 4
    # instruction level, pooled over 8 instructions: strict 1+2+1+1 = 5, loose 2+2+2+1 = 7
    # (the mean of per-prompt fractions would be (1/2 + 1 + 1/3 + 1) / 4 = 0.708, not 0.625)
    assert scores == pytest.approx(
        {
            "prompt_level_strict_acc": 0.5,
            "inst_level_strict_acc": 0.625,
            "prompt_level_loose_acc": 0.75,
            "inst_level_loose_acc": 0.875,
        }
    )
