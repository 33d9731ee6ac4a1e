"""Evaluation recipes: the Nova recipe keys plus our documented extensions.

A recipe is a YAML file with the sections ``run``, ``evaluation``, ``inference`` and
(optionally) ``processor``, exactly as Nova recipes name them, so a user's existing recipe
works here with at most ``run.model_name_or_path`` changed. Our extensions are marked
"extension" below and documented in README.md.

Every problem is a :class:`RecipeError` whose message names the file, the line, the key
and what is allowed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

TASK_STRATEGIES = {"gen_qa": "gen_qa", "llm_judge": "judge"}
ENGINES = ("hf",)
AGGREGATIONS = ("min", "max", "average", "sum")


class RecipeError(ValueError):
    """A recipe that cannot be used; the message says where and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunConfig(_Section):
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=64)
    model_type: str = "hf"
    model_name_or_path: str = Field(min_length=1)
    replicas: int = Field(default=1, ge=1, le=1024)
    data_s3_path: str = Field(min_length=1)
    output_s3_path: str | None = None
    # extension: evaluate only the first N rows (the CLI's --limit)
    limit: int | None = Field(default=None, ge=1)

    @field_validator("output_s3_path")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value or None


class EvaluationConfig(_Section):
    task: Literal["gen_qa", "llm_judge"]
    strategy: Literal["gen_qa", "judge"]
    metric: Literal["all"] = "all"

    @model_validator(mode="after")
    def _task_matches_strategy(self) -> EvaluationConfig:
        expected = TASK_STRATEGIES[self.task]
        if self.strategy != expected:
            raise ValueError(
                f"strategy '{self.strategy}' does not go with task '{self.task}'; "
                f"allowed pairs: {', '.join(f'{t}/{s}' for t, s in TASK_STRATEGIES.items())}"
            )
        return self


class InferenceConfig(_Section):
    max_new_tokens: int = Field(default=256, ge=1, le=32768)
    top_k: int = Field(default=-1, ge=-1)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    temperature: float = Field(default=0.0, ge=0.0)
    top_logprobs: int = Field(default=0, ge=0, le=20)
    # extensions
    engine: Literal["hf"] = "hf"
    batch_size: int | None = Field(default=None, ge=1, le=1024)
    seed: int = 1234

    @field_validator("top_k")
    @classmethod
    def _top_k_not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("top_k must be -1 (off) or a positive integer")
        return value


class StageSwitch(_Section):
    enabled: bool = False


class ProcessorConfig(_Section):
    lambda_arn: str | None = None
    handler: str | None = None
    preprocessing: StageSwitch = StageSwitch()
    postprocessing: StageSwitch = StageSwitch()
    aggregation: Literal["min", "max", "average", "sum"] = "average"


class DatasetConfig(_Section):
    """Extension: how the dataset is validated."""

    on_invalid: Literal["fail", "skip"] = "fail"
    metadata_format: Literal["json", "text"] = "json"


class Recipe(_Section):
    run: RunConfig
    evaluation: EvaluationConfig
    inference: InferenceConfig = InferenceConfig()
    processor: ProcessorConfig | None = None
    dataset: DatasetConfig = DatasetConfig()

    def with_overrides(self, *, replicas: int | None = None, limit: int | None = None) -> Recipe:
        """A copy with CLI overrides applied (validated like the file)."""
        run = self.run.model_dump()
        if replicas is not None:
            run["replicas"] = replicas
        if limit is not None:
            run["limit"] = limit
        data = self.model_dump()
        data["run"] = run
        return Recipe.model_validate(data)


@dataclass(frozen=True)
class LoadedRecipe:
    """A validated recipe and the file it came from."""

    recipe: Recipe
    path: Path

    @property
    def name(self) -> str:
        return self.recipe.run.name

    def resolve_data_path(self) -> str:
        """``data_s3_path`` as an s3:// URI or a local path; relative paths are taken
        relative to the recipe file's folder, so a recipe works from any working directory."""
        return resolve_relative(self.recipe.run.data_s3_path, self.path.parent)

    def with_overrides(self, **overrides: Any) -> LoadedRecipe:
        return LoadedRecipe(self.recipe.with_overrides(**overrides), self.path)


def resolve_relative(location: str, base: Path) -> str:
    if "://" in location:
        return location
    path = Path(location).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def load_recipe(path: str | Path) -> LoadedRecipe:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read recipe: {exc.strerror or exc}") from exc
    return LoadedRecipe(parse_recipe(text, source=str(path)), path.resolve())


def parse_recipe(text: str, source: str = "<recipe>") -> Recipe:
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise RecipeError(f"{source}{where}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RecipeError(
            f"{source}: a recipe is a mapping with the sections run, evaluation, inference, "
            "processor"
        )
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(error, source, root) for error in exc.errors()]
        raise RecipeError("\n".join(problems)) from None


def _describe(error: dict[str, Any], source: str, root: yaml.Node | None) -> str:
    loc = tuple(str(part) for part in error["loc"])
    key = ".".join(loc) or "(top level)"
    line = _line_of(root, loc)
    where = f"{source}:{line}" if line else source
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = error.get("input")
    if kind == "extra_forbidden":
        allowed = ", ".join(_fields_at(loc[:-1]))
        return f"{where}: unknown key '{key}'; allowed keys here: {allowed}"
    if kind == "missing":
        return f"{where}: missing required key '{key}'"
    if kind == "literal_error":
        return f"{where}: {key} = {got!r} is not allowed; allowed values: {ctx.get('expected')}"
    bounds = {
        "greater_than_equal": "at least {ge}",
        "greater_than": "greater than {gt}",
        "less_than_equal": "at most {le}",
        "less_than": "less than {lt}",
    }
    if kind in bounds:
        rule = bounds[kind].format(**ctx)
        return f"{where}: {key} = {got!r} is out of range; it must be {rule}{_range_hint(loc)}"
    message = re.sub(r"^(Value error|Assertion failed), ", "", error["msg"])
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{where}: {key}: {message}{shown}"


_RANGES = {
    ("inference", "top_logprobs"): "0..20 (0 = off)",
    ("inference", "top_p"): "0 < top_p <= 1",
    ("inference", "temperature"): ">= 0 (0 = greedy)",
    ("inference", "top_k"): "-1 (off) or >= 1",
    ("run", "replicas"): "1..1024",
}


def _range_hint(loc: tuple[str, ...]) -> str:
    hint = _RANGES.get(loc[-2:]) if len(loc) >= 2 else None
    return f" (allowed: {hint})" if hint else ""


def _fields_at(loc: tuple[str, ...]) -> list[str]:
    model: type[BaseModel] = Recipe
    for part in loc:
        annotation = model.model_fields[part].annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        model = next(c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel))
    return list(model.model_fields)


def _line_of(root: yaml.Node | None, loc: tuple[str, ...]) -> int | None:
    """1-based line of the deepest key of ``loc`` present in the YAML document."""
    node, line = root, None
    for part in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        for key_node, value_node in node.value:
            if key_node.value == part:
                line, node = key_node.start_mark.line + 1, value_node
                break
        else:
            break
    return line


def discover_recipes(folder: Path) -> list[LoadedRecipe]:
    """Every ``*.yaml`` recipe in ``folder`` (not recursive), sorted by file name."""
    recipes = [load_recipe(path) for path in sorted(folder.glob("*.yaml"))]
    names: dict[str, Path] = {}
    for loaded in recipes:
        if loaded.name in names:
            raise RecipeError(
                f"{loaded.path}: run.name '{loaded.name}' is also used by {names[loaded.name]}; "
                "recipe names must be unique (they key the assets)"
            )
        names[loaded.name] = loaded.path
    return recipes
