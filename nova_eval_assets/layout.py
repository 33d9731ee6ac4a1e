"""Where an evaluation's files go: one place that names every path.

``<output root>/<run.name>/`` holds ``stages/`` (what each pipeline stage hands the next)
and ``eval_results/`` (the Nova-compatible results and our typed tables).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from nova_eval_assets import storage
from nova_eval_assets.recipe import LoadedRecipe, resolve_relative

OUTPUT_ROOT_ENV = "NOVA_EVAL_OUTPUT_ROOT"


def project_root(start: Path) -> Path:
    """The nearest folder at or above ``start`` holding workspace.yaml or pyproject.toml."""
    for folder in (start, *start.parents):
        if (folder / "workspace.yaml").exists() or (folder / "pyproject.toml").exists():
            return folder
    return start


def output_root(loaded: LoadedRecipe) -> str:
    """``run.output_s3_path`` if set (relative to the recipe's folder), else
    $NOVA_EVAL_OUTPUT_ROOT, else ``outputs/`` in the project that holds the recipe."""
    configured = loaded.recipe.run.output_s3_path
    if configured:
        return resolve_relative(configured, loaded.path.parent)
    env = os.environ.get(OUTPUT_ROOT_ENV)
    if env:
        return env if storage.is_remote(env) else str(Path(env).expanduser().resolve())
    return str(project_root(loaded.path.parent) / "outputs")


def timestamp(moment: datetime | None = None) -> str:
    """ISO-8601 with ':' replaced by '-' (Nova's file-name timestamp)."""
    moment = moment or datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H-%M-%S.%f")[:-3] + "Z"


#: the longest name safe_name gives (file systems allow 255 bytes per component)
MAX_NAME_LENGTH = 128


def safe_name(text: str, fallback: str = "model") -> str:
    """``text`` as one path component that stays where it is put: letters, digits, '.',
    '_' and '-' (each run of other characters, '/' and NUL included, becomes '_'), never
    starting with '.' or '_' (no '.', '..' or hidden names), never empty (``fallback``).
    A name longer than MAX_NAME_LENGTH keeps its start and ends with a hash of the whole,
    so two long names stay apart. Ordinary names are unchanged: 'Qwen/Qwen2.5-0.5B' ->
    'Qwen_Qwen2.5-0.5B'."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).lstrip("._").rstrip("_") or fallback
    if len(name) > MAX_NAME_LENGTH:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        name = f"{name[: MAX_NAME_LENGTH - len(digest) - 1]}-{digest}"
    return name


def component_problem(part: str) -> str | None:
    """Why ``part`` cannot be one component of a path under an evaluation's folder, or None."""
    if part in ("", ".", ".."):
        return f"{part!r} is not a file or folder name"
    if any(sep in part for sep in ("/", "\\", "\0")):
        return f"{part!r} holds a path separator or NUL"
    return None


def _components(parts: tuple[str, ...]) -> tuple[str, ...]:
    """``parts`` if each is one path component: a path built from them stays below its root."""
    for part in parts:
        problem = component_problem(part)
        if problem:
            raise ValueError(f"cannot name an output path: {problem} (make it safe with safe_name)")
    return parts


@dataclass(frozen=True)
class EvalLayout:
    root: str

    @classmethod
    def for_recipe(cls, loaded: LoadedRecipe) -> EvalLayout:
        return cls(storage.join(output_root(loaded), loaded.name))

    def stage(self, *parts: str) -> str:
        return storage.join(self.root, "stages", *_components(parts))

    @property
    def validated(self) -> str:
        return self.stage("validated_dataset.parquet")

    @property
    def validation_report(self) -> str:
        return self.stage("validation_report.json")

    @property
    def latest_report(self) -> str:
        return self.stage("latest_report.json")

    @property
    def prompts(self) -> str:
        return self.stage("preprocessed_prompts.parquet")

    def inference(self, replica: int, replicas: int) -> str:
        return self.stage("inference", f"replicas-{replicas}", f"replica-{replica}.parquet")

    def metrics(self, replica: int, replicas: int) -> str:
        return self.stage("metrics", f"replicas-{replicas}", f"replica-{replica}.parquet")

    @property
    def results_dir(self) -> str:
        return storage.join(self.root, "eval_results")

    def result(self, *parts: str) -> str:
        return storage.join(self.results_dir, *_components(parts))

    @property
    def rejected_rows(self) -> str:
        return self.result("rejected_rows.jsonl")

    @property
    def examples(self) -> str:
        return self.result("examples.parquet")

    @property
    def inspect_dir(self) -> str:
        """The Inspect AI logs (``.eval``) of this evaluation: ``inspect view --log-dir`` it."""
        return self.result("inspect")

    @property
    def inspect_specs(self) -> str:
        """Task inspect: each Inspect task's EvalSpec as its blocks ran it (the header of the
        task's log)."""
        return self.stage("inference", "inspect")

    def inspect_log(self, stamp: str, task: str) -> str:
        """The Inspect AI log of the results written at ``stamp`` (the results JSON's)."""
        return storage.join(self.inspect_dir, *_components((f"{stamp}_{safe_name(task)}.eval",)))

    def analysis(self, *parts: str) -> str:
        """The analysis of this evaluation (report.html, analysis.json, ...)."""
        return self.result("analysis", *parts)

    def comparison(self, baseline: str, *parts: str) -> str:
        """The comparison of this evaluation against the evaluation ``baseline``."""
        return self.result(f"comparison_vs_{baseline}", *parts)
