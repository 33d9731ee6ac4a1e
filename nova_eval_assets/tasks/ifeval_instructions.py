"""IFEval's 25 verifiable instructions (google/IFEval): a checker per instruction id and the
strict / loose scoring of one response.

Semantics follow lighteval 0.10 (``lighteval/tasks/extended/ifeval/``), which copies Google's
``instruction_following_eval``: the same counting of words, sentences, paragraphs, bullets,
highlights, sections and placeholders, the same "less than" (``count < n``) and "at least"
(``count >= n``) relations, keywords and section splitters used as case-insensitive /
case-sensitive regular expressions as given, and the same loose variants. This is our own
code; only the definitions are the reference's.

- :func:`follow_instructions`: one prompt's response against its instruction ids and kwargs,
  to an :class:`IfevalResult` (per-instruction ``strict`` and ``loose`` lists).
- :func:`aggregate`: the four corpus scores as lighteval computes them (prompt level: mean
  over prompts; instruction level: pooled over all prompts' instructions).
- :func:`build_checker`, :data:`INSTRUCTION_IDS`: the registry.

Where we differ from the reference:

- No nltk data is used. The reference counts sentences with nltk's trained English Punkt
  model, and ``change_case:capital_word_frequency`` tokenizes words with
  ``nltk.word_tokenize`` (that Punkt model, then nltk's Treebank-style word tokenizer per
  sentence). We run nltk's Punkt *algorithm* with a small hand-written parameter set instead
  of the trained one: common English abbreviations (:data:`_ABBREVIATIONS`) and common
  sentence-starting words (:data:`_SENTENCE_STARTERS`); then the same regex-only word
  tokenizer (``NLTKWordTokenizer``) per sentence. Sentence counts can therefore differ from
  the reference's around an abbreviation, initial or capitalized word that the trained model
  knows and we do not (or the reverse). Capital-word counts almost never differ: a sentence
  break only splits a period off a token, which changes no token's casing.
- Where the reference would draw a *random* argument (an argument missing, or falsy and so
  dropped, or out of range, e.g. a negative count or ``nth_paragraph`` beyond
  ``num_paragraphs``), we raise ValueError: a random instruction is not a measurement. No
  published IFEval row we checked takes that path.
- ``keywords:letter_frequency`` with a ``letter`` that is not an ASCII letter (google/IFEval
  has ``#`` and ``!``): the reference checks a random letter instead; we count the character
  given, which is what those prompts ask for.
- langdetect is seeded (seed 0, on a private detector factory) so a language verdict is
  repeatable; the reference leaves it unseeded. As in the reference, a text langdetect cannot
  read (no letters) counts as followed.
- ``combination:repeat_prompt`` compares with its ``prompt_to_repeat`` kwarg, as the reference
  does; the ``prompt`` argument of :func:`follow_instructions` is accepted for the caller's
  convenience, but none of the 25 checkers reads it (the reference's hook that passes the
  prompt to a checker never fires for them either).

Checked against the GPT-4 responses published with Google's code (540 prompts, 832
instructions): every strict and loose verdict equals that of lighteval 0.10's own checkers
run with our sentence splitter, and equals Google's published results (trained Punkt) except
one ``letter_frequency`` instruction where the reference drew a random letter.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar

from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory
from langdetect.lang_detect_exception import LangDetectException

if TYPE_CHECKING:
    from nltk.tokenize.destructive import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

LESS_THAN = "less than"
AT_LEAST = "at least"
RELATIONS = (LESS_THAN, AT_LEAST)

# Our stand-in for the trained English Punkt parameters (see the module docstring).
# Abbreviations (lowercase, without the final period) after which a sentence does not end.
# Only forms that rarely end one: Punkt keeps going after a listed abbreviation unless the
# next word is one of _SENTENCE_STARTERS.
_ABBREVIATIONS = frozenset(
    {
        # titles and name suffixes
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "rev", "hon", "gen", "gov", "sen",
        "rep", "pres", "lt", "col", "sgt", "capt", "cmdr", "adm", "messrs",
        # companies
        "inc", "corp", "co", "ltd", "bros", "dept", "univ",
        # Latin and reference forms
        "e.g", "i.e", "vs", "cf", "al", "approx", "fig", "vol", "pp",
        # times and places written with inner periods
        "a.m", "p.m", "u.s", "u.k", "u.s.a", "d.c", "ph.d",
        # months
        "jan", "feb", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    }
)  # fmt: skip
# Common words that, capitalized, start a sentence: the trained model knows them from seeing
# them lowercase mid-sentence, so after a single capital and a period ("Plan B. The ...") or
# an abbreviation ("the U.S. It ...") it ends the sentence, where before a name
# ("J. Smith") it does not. Without this, Punkt reads every "X. Word" as an initial.
# ("I" is left out on purpose: never lowercase, so the trained model cannot tell it from a
# name either.)
_SENTENCE_STARTERS = frozenset(
    {
        "the", "a", "an", "this", "that", "these", "those", "it", "its", "they", "their",
        "there", "here", "we", "our", "you", "your", "he", "she", "his", "her", "my", "let",
        "in", "on", "at", "for", "with", "from", "by", "to", "as", "if", "when", "while",
        "after", "before", "during", "but", "and", "so", "or", "however", "also", "then",
        "now", "each", "every", "all", "some", "many", "most", "both", "other", "another",
        "one", "what", "how", "why", "where", "who", "which", "please", "thank", "thanks",
        "remember", "make", "use", "try", "be", "do", "is", "are", "can", "will", "would",
        "should", "not", "no", "yes", "finally", "first", "second", "next", "overall",
        "additionally", "furthermore", "moreover", "instead", "today", "just", "once",
        "since", "because", "although", "though", "even", "such", "unless", "whether",
    }
)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Text measures shared by several checkers


def count_words(text: str) -> int:
    """Runs of word characters, as the reference's ``RegexpTokenizer(r"\\w+")`` counts."""
    return len(re.findall(r"\w+", text))


# nltk is imported where it is first used: importing it takes seconds (it pulls in scipy and
# scikit-learn), and every recipe load lists the tasks, this module among them


@cache
def _sentence_splitter() -> PunktSentenceTokenizer:
    from nltk.tokenize.punkt import (  # the flags are nltk's own, private, values
        _ORTHO_BEG_UC,
        _ORTHO_MID_LC,
        PunktParameters,
        PunktSentenceTokenizer,
    )

    params = PunktParameters()
    params.abbrev_types = set(_ABBREVIATIONS)
    for word in _SENTENCE_STARTERS:
        # "seen capitalized starting a sentence and lowercase inside one", in Punkt's terms
        params.ortho_context[word] = _ORTHO_BEG_UC | _ORTHO_MID_LC
    return PunktSentenceTokenizer(params)


def split_sentences(text: str) -> list[str]:
    """Punkt sentences (nltk's algorithm, our abbreviation list; see the module docstring)."""
    return _sentence_splitter().tokenize(text)


def count_sentences(text: str) -> int:
    return len(split_sentences(text))


@cache
def _word_tokenizer() -> NLTKWordTokenizer:
    from nltk.tokenize.destructive import NLTKWordTokenizer

    return NLTKWordTokenizer()


def tokenize_words(text: str) -> list[str]:
    """``nltk.word_tokenize`` without its data: split into sentences, then Treebank-style
    word tokens per sentence (the tokenizer itself is regular expressions only)."""
    return [
        token
        for sentence in split_sentences(text)
        for token in _word_tokenizer().tokenize(sentence)
    ]


@cache
def _language_detectors() -> DetectorFactory:
    # a private factory, so seeding it leaves langdetect's module-level one alone
    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.seed = 0
    return factory


def detect_language(text: str) -> str:
    """langdetect's ISO 639-1 code for ``text``; raises LangDetectException when it has
    nothing to go on."""
    detector = _language_detectors().create()
    detector.append(text)
    return detector.detect()


def _compare(count: int, relation: str, threshold: int) -> bool:
    return count < threshold if relation == LESS_THAN else count >= threshold


def _require_relation(relation: str) -> None:
    if relation not in RELATIONS:
        raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")


def _require_non_negative(**counts: int) -> None:
    for name, value in counts.items():
        if value < 0:
            raise ValueError(f"{name} must not be negative, got {value}")


# ---------------------------------------------------------------------------------------------
# The checkers: each is built from its instruction's kwargs (its fields) and says whether a
# response follows it.


@dataclass(frozen=True)
class Checker:
    instruction_id: ClassVar[str]

    def follows(self, response: str) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class KeywordsExist(Checker):
    instruction_id = "keywords:existence"
    keywords: Sequence[str]

    def follows(self, response: str) -> bool:
        return all(re.search(keyword, response, flags=re.IGNORECASE) for keyword in self.keywords)


@dataclass(frozen=True)
class KeywordFrequency(Checker):
    instruction_id = "keywords:frequency"
    keyword: str
    frequency: int
    relation: str

    def __post_init__(self) -> None:
        _require_relation(self.relation)
        _require_non_negative(frequency=self.frequency)

    def follows(self, response: str) -> bool:
        occurrences = len(re.findall(self.keyword.strip(), response, flags=re.IGNORECASE))
        return _compare(occurrences, self.relation, self.frequency)


@dataclass(frozen=True)
class ForbiddenWords(Checker):
    instruction_id = "keywords:forbidden_words"
    forbidden_words: Sequence[str]

    def follows(self, response: str) -> bool:
        return not any(
            re.search(rf"\b{word}\b", response, flags=re.IGNORECASE)
            for word in self.forbidden_words
        )


@dataclass(frozen=True)
class LetterFrequency(Checker):
    instruction_id = "keywords:letter_frequency"
    letter: str
    let_frequency: int
    let_relation: str

    def __post_init__(self) -> None:
        _require_relation(self.let_relation)
        _require_non_negative(let_frequency=self.let_frequency)
        if len(self.letter.strip()) != 1:
            raise ValueError(f"letter must be one character, got {self.letter!r}")

    def follows(self, response: str) -> bool:
        # case-insensitive: both sides lowercased, as in the reference
        occurrences = Counter(response.lower())[self.letter.strip().lower()]
        return _compare(occurrences, self.let_relation, self.let_frequency)


@dataclass(frozen=True)
class ResponseLanguage(Checker):
    instruction_id = "language:response_language"
    language: str

    def follows(self, response: str) -> bool:
        try:
            return detect_language(response) == self.language
        except LangDetectException:
            return True  # undetectable text is not held against the response


@dataclass(frozen=True)
class NumberOfSentences(Checker):
    instruction_id = "length_constraints:number_sentences"
    num_sentences: int
    relation: str

    def __post_init__(self) -> None:
        _require_relation(self.relation)
        _require_non_negative(num_sentences=self.num_sentences)

    def follows(self, response: str) -> bool:
        return _compare(count_sentences(response), self.relation, self.num_sentences)


@dataclass(frozen=True)
class NumberOfParagraphs(Checker):
    """Paragraphs separated by the markdown divider ``***``; exactly ``num_paragraphs``."""

    instruction_id = "length_constraints:number_paragraphs"
    num_paragraphs: int

    def __post_init__(self) -> None:
        _require_non_negative(num_paragraphs=self.num_paragraphs)

    def follows(self, response: str) -> bool:
        paragraphs = re.split(r"\s?\*\*\*\s?", response)
        # an empty piece before the first or after the last divider is no paragraph; one
        # between two dividers means two dividers in a row, which fails
        inner = paragraphs[1:-1]
        if any(not paragraph.strip() for paragraph in inner):
            return False
        count = len(paragraphs)
        if not paragraphs[0].strip():
            count -= 1
        if len(paragraphs) > 1 and not paragraphs[-1].strip():
            count -= 1
        return count == self.num_paragraphs


@dataclass(frozen=True)
class NumberOfWords(Checker):
    instruction_id = "length_constraints:number_words"
    num_words: int
    relation: str

    def __post_init__(self) -> None:
        _require_relation(self.relation)
        _require_non_negative(num_words=self.num_words)

    def follows(self, response: str) -> bool:
        return _compare(count_words(response), self.relation, self.num_words)


@dataclass(frozen=True)
class NthParagraphFirstWord(Checker):
    """Exactly ``num_paragraphs`` paragraphs separated by blank lines (``\\n\\n``), and
    paragraph ``nth_paragraph`` (from 1) starts with ``first_word``."""

    instruction_id = "length_constraints:nth_paragraph_first_word"
    num_paragraphs: int
    nth_paragraph: int
    first_word: str

    def __post_init__(self) -> None:
        _require_non_negative(num_paragraphs=self.num_paragraphs)
        if not 1 <= self.nth_paragraph <= self.num_paragraphs:
            raise ValueError(
                f"nth_paragraph must be in 1..{self.num_paragraphs}, got {self.nth_paragraph}"
            )

    def follows(self, response: str) -> bool:
        paragraphs = response.split("\n\n")
        count = sum(1 for paragraph in paragraphs if paragraph.strip())
        # as in the reference, the nth piece of the split is read (blank pieces included),
        # while only non-blank pieces are counted
        if self.nth_paragraph > count:
            return False
        paragraph = paragraphs[self.nth_paragraph - 1].strip()
        if not paragraph:
            return False
        word = paragraph.split()[0].lstrip("'").lstrip('"')
        first_word = re.split(r"""[.,?!'"]""", word, maxsplit=1)[0].lower()
        return count == self.num_paragraphs and first_word == self.first_word.lower()


@dataclass(frozen=True)
class NumberOfPlaceholders(Checker):
    """At least ``num_placeholders`` square-bracket placeholders such as ``[address]``."""

    instruction_id = "detectable_content:number_placeholders"
    num_placeholders: int

    def __post_init__(self) -> None:
        _require_non_negative(num_placeholders=self.num_placeholders)

    def follows(self, response: str) -> bool:
        return len(re.findall(r"\[.*?\]", response)) >= self.num_placeholders


@dataclass(frozen=True)
class Postscript(Checker):
    """A line that starts (after blanks) with the postscript marker, in any case."""

    instruction_id = "detectable_content:postscript"
    postscript_marker: str

    def follows(self, response: str) -> bool:
        marker = self.postscript_marker.strip()
        # the two markers of the dataset are matched leniently about their dots' spacing;
        # any other marker is used as a regular expression, as in the reference
        if marker == "P.P.S":
            pattern = r"\s*p\.\s?p\.\s?s.*$"
        elif marker == "P.S.":
            pattern = r"\s*p\.\s?s\..*$"
        else:
            pattern = r"\s*" + marker.lower() + r".*$"
        return re.search(pattern, response.lower(), flags=re.MULTILINE) is not None


@dataclass(frozen=True)
class NumberOfBullets(Checker):
    """Exactly ``num_bullets`` markdown bullets: lines starting with ``*`` (not ``**``) or
    ``-``."""

    instruction_id = "detectable_format:number_bullet_lists"
    num_bullets: int

    def __post_init__(self) -> None:
        _require_non_negative(num_bullets=self.num_bullets)

    def follows(self, response: str) -> bool:
        stars = re.findall(r"^\s*\*[^\*].*$", response, flags=re.MULTILINE)
        dashes = re.findall(r"^\s*-.*$", response, flags=re.MULTILINE)
        return len(stars) + len(dashes) == self.num_bullets


CONSTRAINED_RESPONSE_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


@dataclass(frozen=True)
class ConstrainedResponse(Checker):
    """One of the fixed answers appears anywhere in the response."""

    instruction_id = "detectable_format:constrained_response"

    def follows(self, response: str) -> bool:
        stripped = response.strip()
        return any(option in stripped for option in CONSTRAINED_RESPONSE_OPTIONS)


@dataclass(frozen=True)
class NumberOfHighlights(Checker):
    """At least ``num_highlights`` markdown highlights, ``*text*`` or ``**text**``, on one
    line each, with some non-blank text between the asterisks."""

    instruction_id = "detectable_format:number_highlighted_sections"
    num_highlights: int

    def __post_init__(self) -> None:
        _require_non_negative(num_highlights=self.num_highlights)

    def follows(self, response: str) -> bool:
        # as in the reference: in "**bold**" the single pattern finds only the empty "**"
        # pairs, so it counts once, through the double pattern
        single = re.findall(r"\*[^\n\*]*\*", response)
        double = re.findall(r"\*\*[^\n\*]*\*\*", response)
        highlights = sum(1 for match in single if match.strip("*").strip())
        highlights += sum(1 for match in double if match[2:-2].strip())
        return highlights >= self.num_highlights


@dataclass(frozen=True)
class MultipleSections(Checker):
    """At least ``num_sections`` sections, each opened by the splitter and a number
    ("SECTION 1"); the splitter is a case-sensitive regular expression."""

    instruction_id = "detectable_format:multiple_sections"
    section_spliter: str  # the dataset's spelling
    num_sections: int

    def __post_init__(self) -> None:
        _require_non_negative(num_sections=self.num_sections)

    def follows(self, response: str) -> bool:
        splitter = r"\s?" + self.section_spliter.strip() + r"\s?\d+\s?"
        return len(re.split(splitter, response)) - 1 >= self.num_sections


@dataclass(frozen=True)
class JsonFormat(Checker):
    """The whole response parses as JSON, optionally inside a ``` (or ```json) fence."""

    instruction_id = "detectable_format:json_format"

    def follows(self, response: str) -> bool:
        text = response.strip()
        # the reference's chain of prefix removals: the tagged fences, then a bare ```
        for fence in ("```json", "```Json", "```JSON", "```"):
            text = text.removeprefix(fence)
        text = text.removesuffix("```").strip()
        try:
            json.loads(text)
        except ValueError:
            return False
        return True


@dataclass(frozen=True)
class Title(Checker):
    """A title in double angular brackets, ``<<title>>``, on one line."""

    instruction_id = "detectable_format:title"

    def follows(self, response: str) -> bool:
        titles = re.findall(r"<<[^\n]+>>", response)
        return any(title.lstrip("<").rstrip(">").strip() for title in titles)


@dataclass(frozen=True)
class TwoResponses(Checker):
    """Two different responses separated by ``******``."""

    instruction_id = "combination:two_responses"

    def follows(self, response: str) -> bool:
        parts = response.split("******")
        # blank text is allowed only before the first or after the last separator
        if any(not part.strip() for part in parts[1:-1]):
            return False
        answers = [part for part in parts if part.strip()]
        return len(answers) == 2 and answers[0].strip() != answers[1].strip()


@dataclass(frozen=True)
class RepeatPrompt(Checker):
    """The response starts with ``prompt_to_repeat``, ignoring case and outer blanks."""

    instruction_id = "combination:repeat_prompt"
    prompt_to_repeat: str

    def follows(self, response: str) -> bool:
        return response.strip().lower().startswith(self.prompt_to_repeat.strip().lower())


@dataclass(frozen=True)
class EndPhrase(Checker):
    """The response ends with ``end_phrase``, ignoring case, outer blanks and outer double
    quotes of the response."""

    instruction_id = "startend:end_checker"
    end_phrase: str

    def follows(self, response: str) -> bool:
        ending = response.strip().strip('"').lower()
        return ending.endswith(self.end_phrase.strip().lower())


@dataclass(frozen=True)
class CapitalWordFrequency(Checker):
    """Words written all in capitals (``str.isupper`` of each word token)."""

    instruction_id = "change_case:capital_word_frequency"
    capital_frequency: int
    capital_relation: str

    def __post_init__(self) -> None:
        _require_relation(self.capital_relation)
        _require_non_negative(capital_frequency=self.capital_frequency)

    def follows(self, response: str) -> bool:
        capitals = sum(1 for token in tokenize_words(response) if token.isupper())
        return _compare(capitals, self.capital_relation, self.capital_frequency)


def _is_english(text: str) -> bool:
    try:
        return detect_language(text) == "en"
    except LangDetectException:
        return True  # undetectable text is not held against the response


@dataclass(frozen=True)
class EnglishCapital(Checker):
    instruction_id = "change_case:english_capital"

    def follows(self, response: str) -> bool:
        return response.isupper() and _is_english(response)


@dataclass(frozen=True)
class EnglishLowercase(Checker):
    instruction_id = "change_case:english_lowercase"

    def follows(self, response: str) -> bool:
        return response.islower() and _is_english(response)


@dataclass(frozen=True)
class NoComma(Checker):
    instruction_id = "punctuation:no_comma"

    def follows(self, response: str) -> bool:
        return "," not in response


@dataclass(frozen=True)
class Quotation(Checker):
    """The whole response (outer blanks aside) is wrapped in double quotes."""

    instruction_id = "startend:quotation"

    def follows(self, response: str) -> bool:
        stripped = response.strip()
        return len(stripped) > 1 and stripped[0] == '"' and stripped[-1] == '"'


_CHECKERS: dict[str, type[Checker]] = {
    checker.instruction_id: checker
    for checker in (
        KeywordsExist,
        KeywordFrequency,
        ForbiddenWords,
        LetterFrequency,
        ResponseLanguage,
        NumberOfSentences,
        NumberOfParagraphs,
        NumberOfWords,
        NthParagraphFirstWord,
        NumberOfPlaceholders,
        Postscript,
        NumberOfBullets,
        ConstrainedResponse,
        NumberOfHighlights,
        MultipleSections,
        JsonFormat,
        Title,
        TwoResponses,
        RepeatPrompt,
        EndPhrase,
        CapitalWordFrequency,
        EnglishCapital,
        EnglishLowercase,
        NoComma,
        Quotation,
    )
}

INSTRUCTION_IDS: tuple[str, ...] = tuple(_CHECKERS)


def build_checker(instruction_id: str, kwargs: Mapping[str, Any] | None) -> Checker:
    """The checker of ``instruction_id`` built from its row's kwargs.

    Falsy values are dropped first, as lighteval does: google/IFEval pads every kwargs dict
    with nulls for the other instructions' arguments. ValueError for an unknown id, or for
    arguments the checker lacks or does not take.
    """
    checker_class = _CHECKERS.get(instruction_id)
    if checker_class is None:
        raise ValueError(f"unknown IFEval instruction id: {instruction_id!r}")
    given = {name: value for name, value in (kwargs or {}).items() if value}
    expected = {field.name for field in fields(checker_class)}
    required = {
        field.name
        for field in fields(checker_class)
        if field.default is MISSING and field.default_factory is MISSING
    }
    unexpected = sorted(given.keys() - expected)
    missing = sorted(required - given.keys())
    if unexpected or missing:
        raise ValueError(
            f"{instruction_id}: kwargs missing {missing} or not taken {unexpected} "
            f"(takes {sorted(expected)})"
        )
    return checker_class(**given)


# ---------------------------------------------------------------------------------------------
# Scoring one response


@dataclass(frozen=True)
class IfevalResult:
    """Whether a response followed each of its prompt's instructions, in order."""

    strict: list[bool]
    loose: list[bool]

    @property
    def prompt_level_strict_acc(self) -> float:
        return 1.0 if all(self.strict) else 0.0

    @property
    def prompt_level_loose_acc(self) -> float:
        return 1.0 if all(self.loose) else 0.0

    @property
    def inst_level_strict_acc(self) -> float:
        """This prompt's fraction; pool :attr:`strict` over prompts for the corpus score."""
        return sum(self.strict) / len(self.strict)

    @property
    def inst_level_loose_acc(self) -> float:
        return sum(self.loose) / len(self.loose)


def loose_variants(response: str) -> list[str]:
    """The response with markdown asterisks removed or not, and with its first line, last
    line or both dropped or not: eight texts, the response itself first."""
    lines = response.split("\n")
    trimmed = [
        response,
        "\n".join(lines[1:]).strip(),
        "\n".join(lines[:-1]).strip(),
        "\n".join(lines[1:-1]).strip(),
    ]
    return trimmed + [text.replace("*", "") for text in trimmed]


def _follows(check: Callable[[str], bool], texts: Iterable[str]) -> bool:
    # an empty (all blank) text never follows an instruction
    return any(text.strip() and check(text) for text in texts)


def follow_instructions(
    prompt: str,
    response: str,
    instruction_ids: Sequence[str],
    kwargs: Sequence[Mapping[str, Any] | None],
) -> IfevalResult:
    """Score one response against its prompt's instructions (``kwargs[i]`` belongs to
    ``instruction_ids[i]``). Strict: the response as it is; loose: any of its
    :func:`loose_variants`. ``prompt`` is not read by any checker (see the module docstring).
    """
    if not instruction_ids:
        raise ValueError("an IFEval prompt needs at least one instruction")
    if len(kwargs) != len(instruction_ids):
        raise ValueError(f"{len(instruction_ids)} instruction ids but {len(kwargs)} kwargs entries")
    checkers = [
        build_checker(instruction_id, instruction_kwargs)
        for instruction_id, instruction_kwargs in zip(instruction_ids, kwargs, strict=True)
    ]
    variants = loose_variants(response)
    return IfevalResult(
        strict=[_follows(checker.follows, [response]) for checker in checkers],
        loose=[_follows(checker.follows, variants) for checker in checkers],
    )


def aggregate(results: Sequence[IfevalResult]) -> dict[str, float]:
    """lighteval's four corpus scores: prompt level is the mean over prompts, instruction
    level pools every prompt's instructions."""
    if not results:
        raise ValueError("no IFEval results to aggregate")
    strict = [followed for result in results for followed in result.strict]
    loose = [followed for result in results for followed in result.loose]
    return {
        "prompt_level_strict_acc": sum(r.prompt_level_strict_acc for r in results) / len(results),
        "inst_level_strict_acc": sum(strict) / len(strict),
        "prompt_level_loose_acc": sum(r.prompt_level_loose_acc for r in results) / len(results),
        "inst_level_loose_acc": sum(loose) / len(loose),
    }
