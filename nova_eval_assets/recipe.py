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
LAMBDA_ARN = re.compile(
    r"^arn:aws[a-z-]*:lambda:[a-z]{2}(-[a-z]+)+-\d+:\d{12}:function:"
    r"[A-Za-z0-9_-]{1,140}(:(\$LATEST|[A-Za-z0-9_-]{1,128}))?$"
)
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
    # required; None only in a judge recipe that joins two gen_qa recipes (judge.baseline_recipe)
    data_s3_path: str | None = Field(min_length=1)
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
    # extensions (BYOM, see nova_eval_assets/byom/runner.py): None = errors never fail the run
    max_error_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    timeout_s: float = Field(default=60.0, gt=0.0, le=900.0)
    concurrency: int | None = Field(default=None, ge=1, le=256)
    max_retries: int = Field(default=4, ge=0, le=20)

    @field_validator("lambda_arn", "handler")
    @classmethod
    def _blank_target_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("lambda_arn")
    @classmethod
    def _is_function_arn(cls, value: str | None) -> str | None:
        if value is not None and not LAMBDA_ARN.match(value):
            raise ValueError(
                "not a Lambda function ARN; expected "
                "arn:aws:lambda:<region>:<account id>:function:<name>[:<alias>]"
            )
        return value

    @field_validator("handler")
    @classmethod
    def _is_handler_spec(cls, value: str | None) -> str | None:
        if value is not None:
            target, sep, func = value.rpartition(":")
            if not sep or not target.strip() or not func.isidentifier():
                raise ValueError(
                    "not a handler; expected 'path/to/file.py:function' "
                    "(relative to the recipe) or 'package.module:function'"
                )
        return value

    @model_validator(mode="after")
    def _one_target(self) -> ProcessorConfig:
        if self.lambda_arn and self.handler:
            raise ValueError("set lambda_arn or handler, not both")
        enabled = self.preprocessing.enabled or self.postprocessing.enabled
        if enabled and not (self.lambda_arn or self.handler):
            raise ValueError(
                "preprocessing or postprocessing is enabled, but neither lambda_arn nor "
                "handler says which processor to call"
            )
        return self


class ClassificationConfig(_Section):
    """Extension: a classification report over the JSON field that holds the label."""

    label_field: str = Field(min_length=1, max_length=128)
    labels: list[str] | None = None
    json_mode: Literal["strict", "embedded"] = "strict"

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("labels must list at least one class (or be left out)")
            if any(not label.strip() for label in value):
                raise ValueError("labels must be non-empty strings")
            if len(set(value)) != len(value):
                raise ValueError("labels must be distinct")
        return value


class DatasetConfig(_Section):
    """Extension: how the dataset is validated."""

    on_invalid: Literal["fail", "skip"] = "fail"
    metadata_format: Literal["json", "text"] = "json"


class ScheduleConfig(_Section):
    """Extension: a recurring evaluation (a Dagster schedule; see assets/automation.py)."""

    cron: str = Field(min_length=1)
    timezone: str = "UTC"
    enabled: bool = True  # false: the schedule exists but starts stopped (toggle it in the UI)

    @field_validator("cron")
    @classmethod
    def _is_cron(cls, value: str) -> str:
        from nova_eval_assets.cron import cron_problem

        problem = cron_problem(value)
        if problem:
            raise ValueError(problem)
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _is_timezone(cls, value: str) -> str:
        from nova_eval_assets.cron import timezone_problem

        problem = timezone_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class AnalysisConfig(_Section):
    """Extension: confidence, calibration, strata, failures and comparison (analysis/)."""

    enabled: bool = True
    # JSON field of gold and prediction that holds the label (e.g. "class"); unset: the
    # classification section's, else the whole output is the answer and
    # `correctness_metric` decides what is correct
    label_field: str | None = Field(default=None, min_length=1, max_length=128)
    json_mode: Literal["strict", "embedded"] | None = None  # unset: classification's, else strict
    confidence: Literal["first_token", "label", "mean_token", "min_token"] = "first_token"
    correctness_metric: str = Field(default="em", min_length=1)
    quality_threshold: float = Field(default=0.5, ge=0.0)
    low_confidence_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    overconfident_threshold: float = Field(default=0.9, ge=0.0, le=1.0)
    target_accuracy: float = Field(default=0.9, gt=0.0, le=1.0)
    min_stratum_size: int = Field(default=30, ge=1)
    max_strata_per_field: int = Field(default=50, ge=1, le=10000)
    bins: int = Field(default=10, ge=2, le=100)
    bootstrap_rounds: int = Field(default=1000, ge=100, le=100000)
    seed: int = 1234
    max_examples: int = Field(default=5, ge=0, le=100)
    length_ratio_min: float = Field(default=0.5, ge=0.0)
    length_ratio_max: float = Field(default=2.0, gt=0.0)
    compare_with: list[str] = Field(default_factory=list)

    @field_validator("compare_with", mode="before")
    @classmethod
    def _one_name_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("compare_with")
    @classmethod
    def _names_are_run_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r} is not a run.name (letters, digits, _)")
        if len(set(value)) != len(value):
            raise ValueError("names a recipe twice")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AnalysisConfig:
        if self.length_ratio_min >= self.length_ratio_max:
            raise ValueError("length_ratio_min must be below length_ratio_max")
        return self


JUDGE_BACKENDS = ("hf", "bedrock", "openai")
_RUN_NAME = r"^[A-Za-z][A-Za-z0-9_]*$"


class JudgeConfig(_Section):
    """Extension: the LLM judge of an ``llm_judge`` recipe (see nova_eval_assets/judge/)."""

    backend: Literal["hf", "bedrock", "openai"] = "hf"
    model: str | None = Field(default=None, min_length=1)  # default: run.model_name_or_path
    endpoint: str | None = Field(default=None, min_length=1)  # openai: base URL; bedrock: URL
    region: str | None = Field(default=None, min_length=1)  # bedrock
    api_key_env: str | None = Field(default="OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    timeout_s: float = Field(default=120.0, gt=0.0, le=3600.0)
    concurrency: int = Field(default=4, ge=1, le=256)  # remote back ends: requests in flight
    order: Literal["rationale_first", "verdict_first"] = "rationale_first"
    show_system: bool = True  # show the judge the system prompt the responses had to follow
    verdict_logprobs: bool = True  # hf / openai: record the verdict tokens' log probabilities
    baseline_recipe: str | None = Field(default=None, pattern=_RUN_NAME)  # a gen_qa run.name
    challenger_recipe: str | None = Field(default=None, pattern=_RUN_NAME)
    baseline_label: str | None = Field(default=None, min_length=1, max_length=128)
    challenger_label: str | None = Field(default=None, min_length=1, max_length=128)
    bootstrap_rounds: int = Field(default=1000, ge=10, le=1_000_000)
    seed: int = 1234

    @model_validator(mode="after")
    def _consistent(self) -> JudgeConfig:
        if self.backend == "openai" and not self.endpoint:
            raise ValueError("backend 'openai' needs endpoint (the server's base URL)")
        if (self.baseline_recipe is None) != (self.challenger_recipe is None):
            raise ValueError("baseline_recipe and challenger_recipe go together (or neither)")
        if self.baseline_recipe and self.baseline_recipe == self.challenger_recipe:
            raise ValueError("baseline_recipe and challenger_recipe must be different recipes")
        labels = (self.baseline_label, self.challenger_label)
        if None not in labels and labels[0] == labels[1]:
            raise ValueError("baseline_label and challenger_label must differ")
        return self

    @property
    def joins_recipes(self) -> bool:
        return self.baseline_recipe is not None


class Recipe(_Section):
    run: RunConfig
    evaluation: EvaluationConfig
    inference: InferenceConfig = InferenceConfig()
    processor: ProcessorConfig | None = None
    dataset: DatasetConfig = DatasetConfig()
    classification: ClassificationConfig | None = None  # extension
    analysis: AnalysisConfig = AnalysisConfig()
    judge: JudgeConfig | None = None  # extension: llm_judge recipes only
    schedule: ScheduleConfig | None = None  # extension: cron + timezone of a recurring run

    @model_validator(mode="after")
    def _analysis_has_labels(self) -> Recipe:
        has_field = self.analysis.label_field or self.classification is not None
        if self.analysis.confidence == "label" and not has_field:
            raise ValueError(
                "analysis.confidence 'label' needs analysis.label_field (or a classification "
                "section): the JSON field that holds the label"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _joining_judge_needs_no_data(cls, data: Any) -> Any:
        """A judge recipe that joins two gen_qa recipes builds its dataset: no data_s3_path."""
        try:
            joins = data["evaluation"]["task"] == "llm_judge" and data["judge"]["baseline_recipe"]
        except (KeyError, TypeError):
            return data
        if joins and isinstance(data.get("run"), dict) and "data_s3_path" not in data["run"]:
            data = {**data, "run": {**data["run"], "data_s3_path": None}}
        return data

    @model_validator(mode="after")
    def _judge_fits_task(self) -> Recipe:
        is_judge = self.evaluation.task == "llm_judge"
        if self.judge is not None and not is_judge:
            raise ValueError("the judge section belongs to llm_judge recipes (evaluation.task)")
        joins = is_judge and self.judge is not None and self.judge.joins_recipes
        if self.run.data_s3_path is None and not joins:
            raise ValueError(
                "run.data_s3_path is required (only a judge recipe that names "
                "judge.baseline_recipe and judge.challenger_recipe goes without)"
            )
        joined = {self.judge.baseline_recipe, self.judge.challenger_recipe} if joins else set()
        if self.run.name in joined:
            raise ValueError("a judge recipe cannot judge its own run.name")
        return self

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
        if self.recipe.run.data_s3_path is None:
            raise RecipeError(
                f"{self.path}: run.data_s3_path is not set; this judge recipe builds its "
                "dataset by joining judge.baseline_recipe and judge.challenger_recipe"
            )
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
    ("processor", "max_error_rate"): "0..1 (unset: processor errors never fail the run)",
    ("processor", "timeout_s"): "0 < timeout_s <= 900 (Lambda's limit)",
    ("processor", "concurrency"): "1..256",
    ("processor", "max_retries"): "0..20",
    ("analysis", "low_confidence_threshold"): "0..1",
    ("analysis", "overconfident_threshold"): "0..1",
    ("analysis", "target_accuracy"): "0 < target <= 1",
    ("analysis", "bins"): "2..100",
    ("analysis", "bootstrap_rounds"): "100..100000",
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
