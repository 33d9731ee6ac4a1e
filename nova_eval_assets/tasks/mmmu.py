"""mmmu: MMMU (Yue et al., 2024; college-level questions over images), Nova's
general_multi_modal_benchmark (zs_cot, accuracy, 29 subjects: MMMU's 30 but
``diagnostics_and_laboratory_medicine``, as Nova's SDK lists them). Nova's prompt and scorer
are not public; ours:

- the validation split (the test split's answers are hidden), from ``dataset.path`` or the
  hub's ``MMMU/MMMU`` at run time (the data's owners ask that it not be redistributed:
  never shipped here); the subject is read from the row's ``id``
  (``validation_Art_Theory_12``) or its ``subject`` field;
- the images (``image_1`` .. ``image_7``: the hub's ``{bytes, path}`` or data URIs) shown
  with the prompt in order, each ``<image n>`` of the text left as MMMU writes it;
- multiple-choice questions: Nova's zero-shot chain-of-thought prompt of mmlu_pro with the
  options lettered, and its letter extraction (tasks/multiple_choice.py);
- open questions: the same prompt's wording without options, the answer read after the last
  "the correct answer is" (else the last line), correct when it equals the gold answer as a
  number (relative tolerance 1 %, MMMU's own numeric rule is looser) or, normalized
  (lowercase, no surrounding punctuation or spaces), as text.

A text-only model is refused before any row runs (the vision check of every image dataset).
"""

from __future__ import annotations

import ast
import base64
import io
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from nova_eval_assets.dataset import PIL_FORMATS, data_uri_problem
from nova_eval_assets.tasks.base import (
    BenchmarkTask,
    FieldProblem,
    HubSource,
    Sample,
    ScoreInput,
    TaskOptions,
    answer_index,
    per_row,
    required_text,
)
from nova_eval_assets.tasks.multiple_choice import (
    MMLU_PRO_LETTERS,
    choice_metrics,
    mmlu_pro_prompt,
)

SUBJECTS = (
    "Accounting", "Agriculture", "Architecture_and_Engineering", "Art", "Art_Theory",
    "Basic_Medical_Science", "Biology", "Chemistry", "Clinical_Medicine", "Computer_Science",
    "Design", "Economics", "Electronics", "Energy_and_Power", "Finance", "Geography",
    "History", "Literature", "Manage", "Marketing", "Materials", "Math",
    "Mechanical_Engineering", "Music", "Pharmacy", "Physics", "Psychology", "Public_Health",
    "Sociology",
)  # fmt: skip
SUBTASKS = tuple(subject.lower() for subject in SUBJECTS)
MAX_IMAGES = 7
OPEN_PROMPT = (
    "{question}\n\nThink step by step, then finish with the line "
    '"The correct answer is <your answer>", the answer as a number or a short phrase.'
)
_ID_SUBJECT = re.compile(r"^(?:dev|validation|test)_(.+)_\d+$")
_ANSWER = re.compile(r"the\s*correct\s*answer\s*is[:\s]*", re.IGNORECASE)
_NUMBER = re.compile(r"^[-+]?\d[\d,]*(?:\.\d+)?$|^[-+]?\.\d+$")


def subject_of(row: Mapping[str, Any], subtask: str | None) -> str:
    if subtask:
        return subtask
    named = row.get("subject")
    if not isinstance(named, str):
        found = _ID_SUBJECT.match(str(row.get("id") or ""))
        if not found:
            raise FieldProblem("id", "names no subject (validation_<Subject>_<n>)")
        named = found.group(1)
    subject = named.strip().lower().replace(" ", "_")
    if subject not in SUBTASKS:
        raise FieldProblem("id", f"{named!r} is not one of Nova's 29 MMMU subjects")
    return subject


def image_uri(value: Any, name: str) -> str:
    """One image as a data URI (the hub's ``{bytes, path}``, raw bytes or a data URI),
    checked as every dataset image is (dataset.data_uri_problem: format, size, sides)."""
    if isinstance(value, str):
        uri = value
    else:
        data = value.get("bytes") if isinstance(value, Mapping) else value
        if not isinstance(data, bytes | bytearray) or not data:
            raise FieldProblem(name, "must be an image: {bytes, path}, bytes or a data URI")
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as image:
                decoded = image.format or ""
        except UnidentifiedImageError as exc:
            raise FieldProblem(name, "is not an image Pillow can open") from exc
        kind = PIL_FORMATS.get(decoded)
        if kind is None:
            raise FieldProblem(
                name, f"is a {decoded or 'unknown'} image; png, jpeg, gif or webp only"
            )
        uri = f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}"
    problem = data_uri_problem(uri)
    if problem is not None:
        raise FieldProblem(name, problem)
    return uri


def _options(row: Mapping[str, Any]) -> list[str]:
    value = row.get("options")
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, str):  # the hub writes the list as Python source
        try:
            value = ast.literal_eval(value) if value.strip() else []
        except (ValueError, SyntaxError) as exc:
            raise FieldProblem("options", "is not a list") from exc
    if value is None:
        return []
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise FieldProblem("options", "must be a list of strings")
    if len(value) > len(MMLU_PRO_LETTERS):
        raise FieldProblem("options", f"has {len(value)} options, at most 10")
    return list(value)


def _sample(row: Mapping[str, Any], subtask: str | None, options: TaskOptions) -> Sample:
    question = required_text(row, "question")
    subject = subject_of(row, subtask)
    images = tuple(
        image_uri(row[f"image_{n}"], f"image_{n}")
        for n in range(1, MAX_IMAGES + 1)
        if row.get(f"image_{n}") is not None
    )
    if not images:
        raise FieldProblem("image_1", "missing: an MMMU question has at least one image")
    choices = _options(row)
    answer = row.get("answer")
    kind = "multiple-choice" if choices else "open"
    metadata = {"question_type": kind}
    if choices:
        target = MMLU_PRO_LETTERS[answer_index(answer, len(choices))]
        return Sample(mmlu_pro_prompt(question, choices), target, subject, metadata, None, images)
    if not isinstance(answer, str | int | float) or not str(answer).strip():
        raise FieldProblem("answer", "an open question needs its answer")
    prompt = OPEN_PROMPT.format(question=question)
    target = json.dumps({"open": str(answer).strip()})  # a letter is a multiple-choice gold
    return Sample(prompt, target, subject, metadata, None, images)


def open_answer(output: str) -> str:
    """What an open answer says: the rest of the line after the last "the correct answer
    is", else its last line; without surrounding spaces, quotes, ``*``, ``$`` or a final
    period."""
    text = output or ""
    heads = list(_ANSWER.finditer(text))
    if heads:
        text = text[heads[-1].end() :]
        text = text.splitlines()[0] if text.strip() else ""
    else:
        lines = text.strip().splitlines()
        text = lines[-1] if lines else ""
    return text.strip().strip("$*\"'` ").rstrip(".").strip()


def _as_number(text: str) -> float | None:
    text = text.strip().rstrip("%")
    if not _NUMBER.match(text):
        return None
    return float(text.replace(",", ""))


def open_correct(output: str, gold: str) -> bool:
    given = open_answer(output)
    number, expected = _as_number(given), _as_number(gold)
    if number is not None and expected is not None:
        return math.isclose(number, expected, rel_tol=0.01, abs_tol=1e-9)
    return given.lower() == gold.strip().strip(".").lower() != ""


def _score(row: ScoreInput, options: TaskOptions) -> dict[str, float]:
    if row.target.startswith("{"):
        return {"accuracy": float(open_correct(row.output, json.loads(row.target)["open"]))}
    letters = MMLU_PRO_LETTERS
    return choice_metrics(row.output, row.target, letters, options.compat_nova, row.tokens)


TASK = BenchmarkTask(
    name="mmmu",
    strategy="zs_cot",
    metric="accuracy",
    description="MMMU validation, images and college-level questions (29 subjects; ours)",
    fields=("id", "question", "options", "answer", "image_1"),
    sample=_sample,
    score=per_row(_score),
    headline="accuracy",
    metrics=(("accuracy", None),),
    subtasks=SUBTASKS,
    hub=HubSource("MMMU/MMMU", "*/validation-*.parquet"),
    redistribution="MMMU's authors ask that it not be redistributed",
    notes=(
        "Nova's MMMU prompt and scorer are not public: multiple-choice questions use Nova's "
        "mmlu_pro prompt and letter extraction; open questions a prompt and rule of ours.",
    ),
)
