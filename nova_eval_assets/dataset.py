"""Dataset schemas, line-by-line validation, and sharding into replicas.

A dataset is JSONL: one JSON object per line. Blank lines are ignored (they are not rows).
Every other line ends up either among the validated rows or among the rejected rows with
its line number and reasons, so every input row is accounted for. A dataset without a
single row (an empty file, only blank lines, or every row rejected) is always invalid.

Images (the optional ``images`` field of gen_qa and judge rows, ``mm_llm_judge`` rows
included) are a JSON array of objects ``{"data": "data:image/<format>;base64,
<data>"}``, kept in order as a ``list<string>`` of data URIs. The rules, and where they
come from:

* The shape, ``{"data": ...}`` only, ``data`` starting with ``data:image/`` and containing
  ``;base64,`` (matched case-insensitively: Nova's own example writes ``;Base64,``): the
  Nova Forge SDK's evaluation dataset validator (aws/nova-forge-sdk,
  ``src/amzn_nova_forge/dataset/dataset_validator/eval_dataset_validator.py``,
  ``ImageContent``), and the ``mm_llm_judge`` dataset format in Nova's evaluation recipe
  documentation ("Evaluation recipe examples": ``images`` is an array of objects with a
  ``data`` attribute holding a Base64-encoded image).
* Inline data only: the same ``mm_llm_judge`` documentation lists "Amazon S3 image URI is
  not supported", so ``s3://`` URIs (as ``data`` or as ``{"s3_uri": ...}``) are refused.
* Formats png, jpeg (``image/jpg`` accepted as its alias), gif and webp: Nova's
  multimodal documentation (Nova 1 user guide "Multimodal support": PNG, JPG, JPEG, GIF,
  WebP; Nova 2 "Multimodal understanding": PNG, JPEG, GIF, WebP). The data must decode as
  strict base64 and open with Pillow as one of these formats, the one the URI names.
* At most 8000 pixels per side: Nova's "Image understanding" page (a maximum resolution of
  8,000x8,000 pixels), also Bedrock Converse's limit.
* At most 20 images per row and 3.75 MiB per decoded image: Bedrock Converse's limits
  (``ImageBlock``), not Nova's. Nova states no per-image size or image count for its
  evaluation datasets; its model pages give a 25 MB limit for the whole inline request
  (base64 included) and, for Nova 2 Lite on Bedrock, 5 inline images per request, which
  this validator does not enforce (the engines here are not all Nova on Bedrock).

The SDK checks only the shape (its TODO says restrictions on image type are still to be
added); everything past the shape is this module's.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import io
import json
import os
import stat
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
from PIL import Image, UnidentifiedImageError

from nova_eval_assets import storage

MAX_LISTED_PROBLEMS = 20
# the recipe's default (DatasetConfig.max_line_bytes): room for ~100 MB of inline images
DEFAULT_MAX_LINE_BYTES = 128 * 1024 * 1024
# A row nests 3 deep (row, images, image). Python's JSON parser recurses: a line of 100000
# "[" raises RecursionError, so deep lines are refused, at one documented depth.
MAX_JSON_NESTING = 100
_TOO_DEEP = f"JSON nested deeper than {MAX_JSON_NESTING} levels"


@dataclass(frozen=True)
class DatasetSchema:
    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    # a format whose lines become another schema's rows (rft_eval's RFT lines: gen_qa rows)
    rows_as: DatasetSchema | None = None

    @property
    def fields(self) -> tuple[str, ...]:
        return self.required + self.optional


IMAGES = "images"  # the one non-string field: a list of data URIs (see the module docstring)
IMAGE_FORMATS = ("png", "jpeg", "gif", "webp")
# the format named in a data URI (``data:image/<name>;base64,``) -> the format it means
_URI_FORMATS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "gif": "gif", "webp": "webp"}
# Pillow's name of a decoded format -> ours (other formats are refused)
# (MPO: a camera's JPEG with extra pictures appended, a JPEG to every reader)
PIL_FORMATS = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "GIF": "gif", "WEBP": "webp"}
MAX_IMAGES_PER_ROW = 20  # Bedrock Converse's limit
MAX_IMAGE_BYTES = 3_932_160  # 3.75 MiB decoded: Bedrock Converse's limit
MAX_IMAGE_SIDE = 8000  # pixels per side: Nova's (and Bedrock Converse's) limit
IMAGE_SHAPE = '{"data": "data:image/<format>;base64,<data>"}'
_BASE64_MARK = ";base64,"
S3_REFUSED = (
    "S3 image URIs are not supported: Nova takes inline base64 data URIs only "
    "(data:image/<format>;base64,<data>)"
)

GEN_QA = DatasetSchema(
    "gen_qa", required=("query", "response"), optional=("system", "metadata", IMAGES)
)
JUDGE = DatasetSchema(
    "judge",
    required=("prompt", "response_A", "response_B"),
    optional=("system", "metadata", IMAGES),
)
# rft_eval: OpenAI's reinforcement fine-tuning lines, read into gen_qa rows (check_rft_row)
RFT = DatasetSchema(
    "rft", required=("messages", "reference_answer"), optional=("id",), rows_as=GEN_QA
)
# mm_llm_judge rows are judge rows: Nova's format lists images among its required fields,
# but here they stay optional, so a judge dataset joined from gen_qa recipes may mix rows
# with and without images (the judge then shows a row's images when it has some)
SCHEMAS = {
    "gen_qa": GEN_QA,
    "llm_judge": JUDGE,
    "mm_llm_judge": JUDGE,
    "rubric_llm_judge": JUDGE,
    "rft_eval": RFT,
}


@dataclass(frozen=True)
class Problem:
    line: int
    field: str | None
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", field '{self.field}'" if self.field else "")
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class RejectedRow:
    line: int
    raw: str
    reasons: list[str]

    def as_record(self) -> dict[str, object]:
        return {"line": self.line, "reasons": self.reasons, "raw": self.raw}


@dataclass
class ValidationOutcome:
    """What validating a dataset found. The counts cover every row; ``problems`` keeps every
    problem unless ``problems_kept`` caps it (a streaming pass keeps the first ones only).

    ``table`` (the valid rows) and ``rejected`` (the rejected rows) are filled only by
    :func:`validate_dataset`, which collects them in memory; a stage streaming the rows to
    files (:func:`validate_batches`) leaves them empty."""

    source: str
    table: pa.Table | None = None
    rejected: list[RejectedRow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    lines_read: int = 0  # rows read (non-blank lines), valid or not
    blank_lines: int = 0
    valid_rows: int = 0
    rejected_rows: int = 0
    problem_count: int = 0
    rows_with_images: int = 0  # valid rows with at least one image
    problems_kept: int | None = None  # None: every problem

    @property
    def no_rows(self) -> bool:
        """Nothing to evaluate: no row, or no valid one. Invalid under every policy."""
        return self.valid_rows == 0

    @property
    def ok(self) -> bool:
        return not self.problem_count and not self.no_rows

    def report(self, limit: int = MAX_LISTED_PROBLEMS) -> str:
        if self.ok:
            return f"{self.source}: {self.valid_rows} valid rows"
        if self.lines_read == 0:
            what = (
                f"the file has only blank lines ({self.blank_lines})"
                if self.blank_lines
                else "the file is empty"
            )
            return f"{self.source}: no rows: {what}"
        listed = self.problems[:limit]
        shown = "\n".join(f"  {self.source}: {p}" for p in listed)
        more = self.problem_count - len(listed)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        if self.no_rows:
            tail += f"\n  {self.source}: no valid rows: all {self.lines_read} rows were rejected"
        return (
            f"{self.source}: {self.problem_count} problem(s) in {self.rejected_rows} of "
            f"{self.lines_read} rows (showing the first {len(listed)}):\n"
            f"{shown}{tail}"
        )

    def add_problems(self, problems: list[Problem]) -> None:
        """Count a rejected row's problems; keep them while ``problems_kept`` allows."""
        self.problem_count += len(problems)
        if self.problems_kept is not None:
            problems = problems[: max(0, self.problems_kept - len(self.problems))]
        self.problems.extend(problems)


class DatasetError(ValueError):
    """A dataset with invalid rows under the strict ("fail") policy."""

    def __init__(self, outcome: ValidationOutcome):
        super().__init__(outcome.report())
        self.outcome = outcome


def arrow_schema(schema: DatasetSchema) -> pa.Schema:
    """Row index, line and the schema's fields, strings except ``images`` (optional): a
    ``list<string>`` of data URIs, null when the row has none."""
    schema = schema.rows_as or schema
    columns = [pa.field("row_index", pa.int64(), nullable=False), pa.field("line", pa.int64())]
    columns += [pa.field(name, pa.string(), nullable=False) for name in schema.required]
    columns += [
        pa.field(name, pa.list_(pa.string()) if name == IMAGES else pa.string())
        for name in schema.optional
    ]
    return pa.schema(columns)


def _object_of(
    line_number: int, text: str, schema: DatasetSchema
) -> tuple[dict | None, list[Problem]]:
    """The line's JSON object and a problem per field the schema does not know, or (None,
    why the line is not a JSON object)."""
    try:
        obj = parse_strict_json(text)
    except json.JSONDecodeError as exc:
        return None, [Problem(line_number, None, f"invalid JSON: {exc.msg} at column {exc.colno}")]
    except StrictJsonError as exc:
        return None, [Problem(line_number, None, str(exc))]
    if not isinstance(obj, dict):
        return None, [Problem(line_number, None, f"expected a JSON object, got {_kind(obj)}")]
    problems = [
        Problem(line_number, key, f"unknown field; allowed: {', '.join(schema.fields)}")
        for key in obj
        if key not in schema.fields
    ]
    return obj, problems


def check_row(
    line_number: int, text: str, schema: DatasetSchema, metadata_format: str
) -> tuple[dict[str, str | list[str] | None] | None, list[Problem]]:
    """One line: the parsed row, or the problems that reject it."""
    if schema is RFT:
        return check_rft_row(line_number, text)
    obj, problems = _object_of(line_number, text, schema)
    if obj is None:
        return None, problems
    row: dict[str, str | list[str] | None] = {}
    for name in schema.fields:
        value = obj.get(name)
        required = name in schema.required
        if value is None:
            if required:
                reason = "missing required field" if name not in obj else "must not be null"
                problems.append(Problem(line_number, name, reason))
            row[name] = None
            continue
        if name == IMAGES:
            uris, image_problems = check_images(line_number, value)
            problems += image_problems
            row[name] = uris
            continue
        if not isinstance(value, str):
            problems.append(Problem(line_number, name, f"must be a string, got {_kind(value)}"))
            continue
        if required and not value.strip():
            problems.append(Problem(line_number, name, "must not be empty"))
            continue
        row[name] = value
    metadata = row.get("metadata")
    if metadata_format == "json" and metadata is not None:
        try:
            parse_strict_json(metadata)
        except (json.JSONDecodeError, StrictJsonError) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            problems.append(
                Problem(
                    line_number,
                    "metadata",
                    f"the recipe says metadata is JSON (dataset.metadata_format: json), "
                    f"but it is not: {reason}",
                )
            )
    return (None, problems) if problems else (row, [])


def check_rft_row(
    line_number: int, text: str
) -> tuple[dict[str, str | list[str] | None] | None, list[Problem]]:
    """One RFT line (``{"messages": [system?, user], "reference_answer": <any JSON>,
    "id"?}``, text only, one user turn) as a gen_qa row: the user's text as ``query``, the
    system's as ``system``, ``reference_answer`` as its JSON text in ``response`` and the
    ``id`` in ``metadata`` (``{"id": ...}``). A message's content is a string, or a list of
    ``{"type": "text", "text": ...}`` parts, joined with newlines."""
    obj, problems = _object_of(line_number, text, RFT)
    if obj is None:
        return None, problems
    if "reference_answer" not in obj:
        problems.append(Problem(line_number, "reference_answer", "missing required field"))
    sample_id = obj.get("id")
    if "id" in obj and not (
        (isinstance(sample_id, str) and sample_id.strip())
        or (isinstance(sample_id, int) and not isinstance(sample_id, bool))
    ):
        problems.append(Problem(line_number, "id", "must be a non-empty string or an integer"))
    texts, message_problems = _rft_messages(line_number, obj.get("messages"), "messages" in obj)
    problems += message_problems
    if problems:
        return None, problems
    row: dict[str, str | list[str] | None] = {
        "query": texts["user"],
        "response": json.dumps(obj["reference_answer"], ensure_ascii=False),
        "system": texts.get("system"),
        "metadata": json.dumps({"id": str(sample_id)}) if "id" in obj else None,
        IMAGES: None,
    }
    return row, []


def _rft_messages(
    line_number: int, messages: object, present: bool
) -> tuple[dict[str, str], list[Problem]]:
    """{role: text} of an RFT line's messages (an optional system message, then one user
    message), or the problems."""

    def problem(reason: str) -> tuple[dict[str, str], list[Problem]]:
        return {}, [Problem(line_number, "messages", reason)]

    if not present or messages is None:
        return problem("missing required field" if not present else "must not be null")
    if not isinstance(messages, list) or not messages:
        return problem(f"must be a non-empty list of messages, got {_kind(messages)}")
    texts: dict[str, str] = {}
    roles = []
    for position, message in enumerate(messages):
        where = f"message {position}"
        if not isinstance(message, dict) or set(message) - {"role", "content"}:
            return problem(f"{where}: expected an object with role and content only")
        role, content = message.get("role"), message.get("content")
        if role not in ("system", "user"):
            return problem(
                f"{where}: role {json.dumps(role)}; an RFT evaluation line has an optional "
                "system message and one user message (no assistant turn: the model answers)"
            )
        if isinstance(content, list):
            parts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text":
                    return problem(
                        f'{where}: content parts must be {{"type": "text", "text": ...}} '
                        "(RFT evaluation takes text only)"
                    )
                if not isinstance(part.get("text"), str):
                    return problem(f"{where}: a text part's text must be a string")
                parts.append(part["text"])
            content = "\n".join(parts)
        if not isinstance(content, str) or not content.strip():
            return problem(f"{where}: content must be non-empty text")
        roles.append(role)
        texts[role] = content
    if roles not in (["user"], ["system", "user"]):
        return problem(
            f"roles {roles}: expected one user message, after an optional system message "
            "(RFT evaluation takes single-turn conversations)"
        )
    return texts, []


class StrictJsonError(ValueError):
    """JSON that Python's parser takes and this module refuses: NaN or Infinity (not JSON), a
    duplicate key (a parser silently keeps one of the values), or nesting deeper than
    :data:`MAX_JSON_NESTING`."""


def parse_strict_json(text: str) -> object:
    """``json.loads``, refusing what :class:`StrictJsonError` lists (a syntax error is a
    ``json.JSONDecodeError`` as usual)."""
    if text.startswith("\ufeff"):  # as json.loads says it
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    try:
        value = _STRICT_DECODER.decode(text)
    except RecursionError:  # far deeper than the limit: the parser gave up
        raise StrictJsonError(_TOO_DEEP) from None
    # fewer brackets than the limit cannot nest deeper: nearly every line skips the walk
    brackets = text.count("[") + text.count("{")
    if brackets > MAX_JSON_NESTING and _nests_deeper(value, MAX_JSON_NESTING):
        raise StrictJsonError(_TOO_DEEP)
    return value


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj = dict(pairs)
    if len(obj) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise StrictJsonError(
                    f"duplicate key {key!r}: JSON readers keep only one of its values"
                )
            seen.add(key)
    return obj


def _refuse_constant(name: str) -> object:
    raise StrictJsonError(f"{name} is not JSON (use null or a string)")


# one decoder for every line (json.loads with hooks builds a new one per call)
_STRICT_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_refuse_constant)


def _nests_deeper(value: object, limit: int) -> bool:
    """Whether arrays and objects in a parsed ``value`` nest more than ``limit`` deep (walked
    without recursion)."""
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, (dict, list)):
                if depth == limit:
                    return True
                if child:  # an empty one nests no further: not walked
                    stack.append((child, depth + 1))
    return False


def check_images(line_number: int, value: object) -> tuple[list[str] | None, list[Problem]]:
    """A row's ``images`` value: its data URIs in order, or the problems (each naming
    ``images`` or ``images[i]``, i counted from 0) that reject the row."""
    if not isinstance(value, list):
        reason = f"must be an array of image objects {IMAGE_SHAPE}, got {_kind(value)}"
        return None, [Problem(line_number, IMAGES, reason)]
    problems = []
    if len(value) > MAX_IMAGES_PER_ROW:
        reason = f"{len(value)} images; at most {MAX_IMAGES_PER_ROW} per row"
        problems.append(Problem(line_number, IMAGES, reason))
    uris = []
    for index, entry in enumerate(value):
        reason = image_entry_problem(entry)
        if reason is None:
            uris.append(entry["data"])
        else:
            problems.append(Problem(line_number, f"{IMAGES}[{index}]", reason))
    return (None, problems) if problems else (uris, [])


def image_entry_problem(entry: object) -> str | None:
    """Why one entry of ``images`` is not a valid image (None: it is)."""
    if isinstance(entry, str) and entry.lower().startswith("s3://"):
        return S3_REFUSED
    if not isinstance(entry, dict):
        return f"must be an object {IMAGE_SHAPE}, got {_kind(entry)}"
    if "s3_uri" in entry:
        return S3_REFUSED
    extra = [key for key in entry if key != "data"]
    if extra:
        keys = ", ".join(repr(key) for key in extra)
        return f"unknown key {keys}; an image has only 'data'"
    if "data" not in entry:
        return f"missing 'data' (an image is {IMAGE_SHAPE})"
    data = entry["data"]
    if not isinstance(data, str):
        return f"'data' must be a string, got {_kind(data)}"
    return data_uri_problem(data)


def _split_data_uri(data: str) -> tuple[str, str] | None:
    """(format named by the URI, base64 payload), or None without ``;base64,``."""
    mark = data.lower().find(_BASE64_MARK)
    if mark < 0:
        return None
    media = data[len("data:image/") : mark]
    return media.split(";", 1)[0].strip().lower(), data[mark + len(_BASE64_MARK) :]


def data_uri_problem(data: str) -> str | None:
    """Why an image's ``data`` is not a valid inline image (None: it is)."""
    if data.lower().startswith("s3://"):
        return S3_REFUSED
    if not data.lower().startswith("data:image/"):
        return f"must start with 'data:image/' (a base64 data URI), got {_preview(data)}"
    parts = _split_data_uri(data)
    if parts is None:
        return f"no ';base64,' in the data URI: expected {IMAGE_SHAPE}"
    named, payload = parts
    claimed = _URI_FORMATS.get(named)
    if claimed is None:
        return f"format {named!r} is not allowed; allowed: {', '.join(IMAGE_FORMATS)}"
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        return f"not base64 ({exc})"
    if len(raw) > MAX_IMAGE_BYTES:
        return f"image too large: {len(raw)} bytes decoded, over {MAX_IMAGE_BYTES} (3.75 MiB)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as image:
                decoded, (width, height) = image.format, image.size
                image.verify()
    except UnidentifiedImageError:
        return f"not an image: the {len(raw)} decoded bytes are no image format Pillow knows"
    except Exception as exc:  # a damaged image: Pillow raises OSError, SyntaxError, ...
        return f"not a readable image ({type(exc).__name__}: {exc})"
    actual = PIL_FORMATS.get(decoded or "")
    if actual is None:
        return f"the data is a {decoded} image; allowed: {', '.join(IMAGE_FORMATS)}"
    if actual != claimed:
        return f"format mismatch: the URI says image/{named}, the data is a {actual} image"
    if max(width, height) > MAX_IMAGE_SIDE:
        return f"image is {width}x{height} pixels; at most {MAX_IMAGE_SIDE} per side"
    return None


def _preview(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def data_uri_bytes(data: str) -> bytes:
    """The decoded image of a validated data URI."""
    parts = _split_data_uri(data)
    if parts is None:
        raise ValueError(f"not a base64 data URI: {_preview(data)}")
    return base64.b64decode(parts[1], validate=True)


def image_sha256(data: str) -> str:
    """sha256 (hex) of the decoded image of a validated data URI: what outputs keep
    instead of the image."""
    return hashlib.sha256(data_uri_bytes(data)).hexdigest()


def _kind(value: object) -> str:
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number"}
    return {**kinds, float: "number"}.get(type(value), type(value).__name__)


def validate_dataset(
    location: str,
    schema: DatasetSchema = GEN_QA,
    metadata_format: str = "json",
    limit: int | None = None,
    max_line_bytes: int | None = DEFAULT_MAX_LINE_BYTES,
) -> ValidationOutcome:
    """Validate every line of a JSONL dataset, keeping the valid rows (``table``), the
    rejected rows and every problem in memory: for small datasets and tests. The pipeline
    streams instead (:func:`validate_batches`)."""
    outcome = ValidationOutcome(source=location)
    batches = []
    for valid, rejected in validate_batches(
        outcome, schema, metadata_format, limit, max_line_bytes
    ):
        batches.append(valid)
        outcome.rejected.extend(rejected)
    outcome.table = pa.Table.from_batches(batches, schema=arrow_schema(schema))
    return outcome


def validate_batches(
    outcome: ValidationOutcome,
    schema: DatasetSchema = GEN_QA,
    metadata_format: str = "json",
    limit: int | None = None,
    max_line_bytes: int | None = DEFAULT_MAX_LINE_BYTES,
    rows_per_batch: int | None = None,
) -> Iterator[tuple[pa.RecordBatch, list[RejectedRow]]]:
    """Validate ``outcome.source`` line by line, yielding the valid rows (a record batch of
    :func:`arrow_schema`) and the rejected rows of every ``rows_per_batch`` rows read
    (default :func:`storage.batch_rows`), so memory is bounded by the batch. ``outcome``
    counts as the lines are read; it is complete once the iterator is.

    Lines are read as bytes and decoded one by one, so a line that is not UTF-8 or is
    longer than ``max_line_bytes`` is rejected with its line number while the others are
    validated as usual.
    """
    target = arrow_schema(schema)
    rows_per_batch = rows_per_batch or storage.batch_rows()
    pending: dict[str, list] = {name: [] for name in target.names}
    rejected: list[RejectedRow] = []

    def batch() -> tuple[pa.RecordBatch, list[RejectedRow]]:
        valid = pa.RecordBatch.from_pydict(pending, schema=target)
        for values in pending.values():
            values.clear()
        done = rejected.copy()
        rejected.clear()
        return valid, done

    for line_number, raw in _numbered_lines(outcome.source, max_line_bytes):
        text, problem = _decode(line_number, raw, max_line_bytes)
        if problem is None and not text.strip():
            outcome.blank_lines += 1  # blank lines are not rows
            continue
        if limit is not None and outcome.lines_read >= limit:
            break
        outcome.lines_read += 1
        if problem is None:
            row, problems = check_row(line_number, text, schema, metadata_format)
        else:
            row, problems = None, [problem]
        if row is None:
            outcome.add_problems(problems)
            outcome.rejected_rows += 1
            rejected.append(RejectedRow(line_number, text, [str(p) for p in problems]))
        else:
            pending["row_index"].append(outcome.valid_rows)
            pending["line"].append(line_number)
            for name in (schema.rows_as or schema).fields:
                pending[name].append(row.get(name))
            outcome.valid_rows += 1
            outcome.rows_with_images += bool(row.get(IMAGES))
        if len(pending["row_index"]) + len(rejected) >= rows_per_batch:
            yield batch()
    if pending["row_index"] or rejected:
        yield batch()


def _decode(
    line_number: int, raw: storage.RawLine, max_line_bytes: int | None
) -> tuple[str, Problem | None]:
    """The line's text, or (a readable rendering of it, the problem that rejects it)."""
    if raw.oversized:
        shown = raw.data.decode("utf-8", errors="replace")
        reason = (
            f"line is {raw.size} bytes, over dataset.max_line_bytes ({max_line_bytes}); "
            f"not parsed (the rejected row keeps its first {len(raw.data)} bytes)"
        )
        return shown, Problem(line_number, None, reason)
    try:
        return raw.data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        bad = raw.data[exc.start : exc.start + 1].hex()
        reason = (
            f"not valid UTF-8: byte 0x{bad} at byte {exc.start} of the line "
            f"(byte offset {raw.offset + exc.start} in the file): {exc.reason}"
        )
        # the rejected row keeps the text readable: each bad byte becomes U+FFFD
        return raw.data.decode("utf-8", errors="replace"), Problem(line_number, None, reason)


def _numbered_lines(
    location: str, max_line_bytes: int | None
) -> Iterator[tuple[int, storage.RawLine]]:
    problem = dataset_file_problem(location)
    if problem is not None:
        raise DatasetFileError(location, problem)
    line_number = 0
    try:
        for line_number, raw in enumerate(storage.iter_raw_lines(location, max_line_bytes), 1):
            yield line_number, raw
    except OSError as exc:  # removed, or a disk or network failure, while being read
        problem = f"could not be read after line {line_number} ({exc})"
        raise DatasetFileError(location, problem) from exc


def dataset_file_problem(location: str) -> str | None:
    """Why ``location`` is not a dataset file this process can read (None: it is one). Said
    before reading: a folder, a symbolic link loop or an unreadable file would end in an
    OSError or RuntimeError, and a FIFO or device in a read that never ends."""
    if storage.is_remote(location):
        try:
            fs, path = storage.filesystem(location)
            kind = fs.get_file_info(path).type
        except OSError as exc:
            return f"cannot be read ({exc})"
        if kind == pafs.FileType.NotFound:
            return "not found"
        return (
            "is a folder (a prefix), not a JSONL file" if kind == pafs.FileType.Directory else None
        )
    path = Path(location)
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            return f"is a symbolic link to {os.readlink(path)!r}, which does not exist"
        return "not found"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link loop"
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISDIR(info.st_mode):
        return "is a folder, not a JSONL file"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file (a pipe, socket or device); copy the data to a file"
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    return None


class DatasetFileError(ValueError):
    """The dataset file itself cannot be read: ``problem`` says why."""

    def __init__(self, location: str, problem: str):
        super().__init__(f"{location}: dataset file {problem}")
        self.location = location
        self.problem = problem


def shard_ranges(num_rows: int, replicas: int, block_size: int) -> list[tuple[int, int]]:
    """Split rows 0..num_rows into ``replicas`` contiguous [start, end) ranges by position.

    Cuts fall on multiples of ``block_size`` (the inference engine's batching block), so
    every row is batched with the same neighbours whatever the replica count, and results
    do not depend on it. Blocks are spread as evenly as possible; with more replicas than
    blocks, the last replicas are empty.
    """
    if replicas < 1 or block_size < 1:
        raise ValueError("replicas and block_size must be at least 1")
    blocks = -(-num_rows // block_size)
    per, extra = divmod(blocks, replicas)
    ranges, start_block = [], 0
    for replica in range(replicas):
        count = per + (1 if replica < extra else 0)
        start = min(start_block * block_size, num_rows)
        end = min((start_block + count) * block_size, num_rows)
        ranges.append((start, end))
        start_block += count
    return ranges
