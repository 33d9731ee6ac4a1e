"""Evaluation recipes: the Nova recipe keys plus our documented extensions.

A recipe is a YAML file with the sections ``run``, ``evaluation``, ``inference`` and
(optionally) ``processor``, exactly as Nova recipes name them, so a user's existing recipe
works here with at most ``run.model_name_or_path`` changed. Our extensions are marked
"extension" below and documented in docs/recipes.md.

Every problem is a :class:`RecipeError` whose message names the file, the line, the key
and what is allowed.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nova_eval_assets.engines.constraints import (
    ResponseFormat,
    classification_schema,
    compile_error,
)
from nova_eval_assets.recipe_yaml import (
    MAX_RECIPE_BYTES,
    RecipeDocument,
    RecipeTextError,
    clip,
    decode_recipe,
    read_yaml,
    short_repr,
)
from nova_eval_assets.tasks.base import BenchmarkTask, TaskOptions
from nova_eval_assets.tasks.registry import (
    benchmark_task,
    nova_pairing,
    subtask_problem,
    task_problem,
)

#: The judge recipes' tasks: Nova's LLM judge, its multimodal form (the judge sees each
#: row's images with the prompt) and Nova 2.0's rubric judge (the judge writes and scores
#: criteria, then prefers); all run the same pairwise judge (nova_eval_assets/judge/).
RUBRIC_TASK = "rubric_llm_judge"
JUDGE_TASKS = ("llm_judge", "mm_llm_judge", RUBRIC_TASK)
#: Inspect AI tasks as an evaluation (tasks/inspect_task.py)
INSPECT_TASK = "inspect"
#: Nova 2.0's RFT evaluation: the reward function's scores are the metrics (byom/rewards.py)
RFT_TASK = "rft_eval"


def is_judge_task(task: str | None) -> bool:
    """Whether an ``evaluation.task`` is a judge recipe's (llm_judge, mm_llm_judge,
    rubric_llm_judge)."""
    return task in JUDGE_TASKS


LAMBDA_ARN = re.compile(
    r"^arn:aws[a-z-]*:lambda:[a-z]{2}(-[a-z]+)+-\d+:\d{12}:function:"
    r"[A-Za-z0-9_-]{1,140}(:(\$LATEST|[A-Za-z0-9_-]{1,128}))?$"
)
ENGINES = ("hf", "openai", "bedrock", "vllm")
AGGREGATIONS = ("min", "max", "average", "sum")
# Nova's run names: SageMaker job names (letters, digits, hyphens) plus '_' and '.'; the
# rule keeps a name inside the output root (no '/', '\\', '..', leading '.').
RUN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
RUN_NAME_RULE = (
    "1 to 63 characters: letters, digits, '-', '_' and '.', starting with a letter or digit, "
    "without '..'"
)
SAGEMAKER_TRAIN_CHANNEL = "SM_CHANNEL_TRAIN"
DEFAULT_MAX_NEW_TOKENS = 256


def run_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a run.name (it names folders and table partitions), or None."""
    if not re.fullmatch(RUN_NAME_PATTERN, name) or ".." in name:
        return f"not a run name; allowed: {RUN_NAME_RULE}"
    return None


def asset_key_prefix(name: str) -> str:
    """The Dagster-safe form of a run name (asset key prefix, group, job names): every
    character other than a letter, digit or '_' becomes '_', and a leading digit gets 'r_'."""
    key = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return f"r_{key}" if key[:1].isdigit() else key


def _check_run_name(value: str) -> str:
    problem = run_name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


class RecipeError(ValueError):
    """A recipe that cannot be used; the message says where and why."""


class _Section(BaseModel):
    # strict: `replicas: "2"` or `replicas: true` is a wrong type, not 2 or 1 (an int still
    # fills a float key: `temperature: 0`)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RunConfig(_Section):
    name: str
    # Nova's model id (amazon.nova-lite-v1:0:300k, ...): recorded as given, informational
    # for local models
    model_type: str = "hf"
    model_name_or_path: str = Field(min_length=1)
    replicas: int = Field(default=1, ge=1, le=1024)
    # required; "" = the SageMaker training channel ($SM_CHANNEL_TRAIN), as in Nova; None
    # only in a judge recipe that joins two gen_qa recipes (judge.baseline_recipe)
    data_s3_path: str | None
    output_s3_path: str | None = None
    # MLflow tracking (Nova's keys): "" or absent = $MLFLOW_TRACKING_URI, else no tracking
    mlflow_tracking_uri: str | None = None
    mlflow_experiment_name: str | None = None  # default: run.name
    mlflow_run_name: str | None = None  # default: run.name and the results timestamp
    # extension: evaluate only the first N rows (the CLI's --limit)
    limit: int | None = Field(default=None, ge=1)
    # extension: the Inspect AI log (.eval) beside the results; auto: for runs of at most
    # report/inspect_log.py's INSPECT_LOG_AUTO_MAX_ROWS rows (the viewer is not made for more)
    inspect_log: Literal["auto", True, False] = "auto"

    @field_validator("name")
    @classmethod
    def _is_run_name(cls, value: str) -> str:
        return _check_run_name(value)

    @field_validator("inspect_log", mode="before")
    @classmethod
    def _inspect_log_setting(cls, value: Any) -> Any:
        # before the Literal, which would take 1 for true
        if value == "auto" or isinstance(value, bool):
            return value
        raise ValueError("allowed values: auto, true, false")

    @field_validator(
        "output_s3_path", "mlflow_tracking_uri", "mlflow_experiment_name", "mlflow_run_name"
    )
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @property
    def reads_training_channel(self) -> bool:
        """An empty data_s3_path: SageMaker's training channel, as Nova reads it."""
        return self.data_s3_path is not None and not self.data_s3_path.strip()


class EvaluationConfig(_Section):
    # gen_qa, the judges, or a benchmark task (nova_eval_assets/tasks/), with Nova's pairing
    task: str
    strategy: str
    metric: str = "all"
    # Nova: "" or absent = every subtask; a name, or (extension) a list of names
    subtask: str | list[str] | None = None
    # extension: "nova" reproduces Nova's published prompts and extraction, defects included
    compat: Literal["nova"] | None = None
    # extension: a benchmark's generations per problem (sampling: inference.temperature > 0);
    # each problem's score is the mean over its samples (pass@1's unbiased estimator)
    samples: int = Field(default=1, ge=1, le=1000)
    # extension (strong_reject): the base model's evaluation of the same prompts, a run name
    # or a path to its results; the report adds the relative deflection and its test
    baseline: str | None = Field(default=None, min_length=1)
    # extension (task inspect): the Inspect tasks to run (file.py@task, file.py, an s3:// file,
    # or a registered name such as inspect_evals/gpqa_diamond), their arguments, and
    # Inspect's own model provider to answer instead of the recipe's engine ("openai/<model>")
    inspect_task: str | list[str] | None = None
    inspect_args: dict[str, Any] = Field(default_factory=dict)
    inspect_model: str | None = Field(default=None, min_length=1)

    @property
    def is_judge(self) -> bool:
        """A judge recipe (llm_judge, mm_llm_judge or rubric_llm_judge)."""
        return is_judge_task(self.task)

    @property
    def scored_by_rewards(self) -> bool:
        """rft_eval: the reward function's scores are the only metrics."""
        return self.task == RFT_TASK

    @property
    def is_benchmark(self) -> bool:
        """A benchmark task or Inspect tasks (known without importing an Inspect task)."""
        return self.task == INSPECT_TASK or benchmark_task(self.task) is not None

    @property
    def inspect_specs(self) -> tuple[str, ...]:
        specs = [self.inspect_task] if isinstance(self.inspect_task, str) else self.inspect_task
        return tuple(specs or ())

    @property
    def benchmark(self) -> BenchmarkTask | None:
        """The benchmark task (None: gen_qa or a judge). Task inspect: the recipe's Inspect
        tasks, whose files this imports (tasks/inspect_task.py)."""
        if self.task == INSPECT_TASK:
            from nova_eval_assets.tasks.inspect_task import inspect_benchmark

            args = json.dumps(self.inspect_args, sort_keys=True, default=str)
            return inspect_benchmark(self.inspect_specs, args)
        return benchmark_task(self.task)

    @property
    def subtasks(self) -> list[str]:
        """The subtasks asked for ([]: all of them)."""
        if self.subtask is None:
            return []
        names = [self.subtask] if isinstance(self.subtask, str) else self.subtask
        return [name.strip() for name in names if name.strip()]

    @property
    def task_options(self) -> TaskOptions:
        return TaskOptions(compat_nova=self.compat == "nova")

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        problem = task_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("strategy", "metric")
    @classmethod
    def _nova_pairing(cls, value: str, info: ValidationInfo) -> str:
        task = info.data.get("task")
        if task is None:  # the task itself is wrong: said there
            return value
        strategy, metric = nova_pairing(task)
        expected = strategy if info.field_name == "strategy" else metric
        if value != expected:
            raise ValueError(
                f"task '{task}' goes with strategy '{strategy}' and metric '{metric}' "
                "(Nova's pairing)"
            )
        return value

    @model_validator(mode="after")
    def _subtasks_of_task(self) -> EvaluationConfig:
        problem = subtask_problem(self.task, self.subtasks)
        if problem:
            raise ValueError(problem)
        if self.compat is not None and not self.is_benchmark:
            raise ValueError("evaluation.compat goes with a benchmark task (mmlu, gpqa, ...)")
        if self.task == INSPECT_TASK and not self.inspect_specs:
            raise ValueError(
                "task inspect runs the Inspect tasks evaluation.inspect_task names "
                "(path/to/file.py@task_name, or a registered name such as "
                "inspect_evals/gpqa_diamond)"
            )
        if self.task != INSPECT_TASK:
            for key in ("inspect_task", "inspect_model"):
                if getattr(self, key) is not None:
                    raise ValueError(f"evaluation.{key} goes with task inspect")
            if self.inspect_args:
                raise ValueError("evaluation.inspect_args goes with task inspect")
        if any(not spec.strip() for spec in self.inspect_specs):
            raise ValueError("evaluation.inspect_task names an empty task")
        if self.samples > 1 and not self.is_benchmark:
            raise ValueError("evaluation.samples goes with a benchmark task (humaneval, ...)")
        if self.baseline is not None and self.task != "strong_reject":
            raise ValueError("evaluation.baseline goes with task strong_reject")
        return self


class ServerConfig(_Section):
    """Extension: an OpenAI-compatible server the replica process starts, waits for
    (``GET /v1/models``), evaluates against and stops (engines/server.py)."""

    # e.g. "vllm serve {model} --port {port}"; {model} = run.model_name_or_path, {port} a
    # free port (or `port`)
    command: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    startup_timeout_s: float = Field(default=900.0, gt=0.0, le=7200.0)
    env: dict[str, str] = Field(default_factory=dict)


#: what results, MLflow params and the uploaded recipe show for a value of inference.server.env
REDACTED = "[REDACTED]"


class ResponseFormatConfig(_Section):
    """Extension: the output follows a format (engines/constraints.py): ``json_schema``
    (``schema``), ``regex`` (``pattern``), ``choice`` (``choices``), or ``classification``
    (the classification section's label field as an enum of its labels, then ``thought``
    and ``description`` strings), or ``rubric`` (a rubric_llm_judge's YAML block,
    judge/rubric.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: Literal["json_schema", "regex", "choice", "classification", "rubric"]
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    pattern: str | None = Field(default=None, min_length=1)
    choices: list[str] | None = None

    @model_validator(mode="after")
    def _keys_of_type(self) -> ResponseFormatConfig:
        needs = {"json_schema": "schema", "regex": "pattern", "choice": "choices"}
        given = {
            "schema": self.json_schema is not None,
            "pattern": self.pattern is not None,
            "choices": self.choices is not None,
        }
        wanted = needs.get(self.type)
        for key, present in given.items():
            if present and key != wanted:
                raise ValueError(f"response_format.{key} does not go with type '{self.type}'")
        if wanted and not given[wanted]:
            raise ValueError(f"response_format type '{self.type}' needs response_format.{wanted}")
        choices = self.choices
        if choices is not None and (not choices or len(set(choices)) < len(choices)):
            raise ValueError("response_format.choices must list distinct strings")
        built = self.build()
        if built is not None:
            problem = compile_error(built)
            if problem is not None:
                raise ValueError(f"response_format does not compile: {problem}")
        return self

    def build(self, classification: ClassificationConfig | None = None) -> ResponseFormat | None:
        """The engines' `ResponseFormat` (classification: from the classification section)."""
        if self.type == "json_schema":
            return ResponseFormat.json_schema(self.json_schema)
        if self.type == "regex":
            return ResponseFormat.regex(self.pattern)
        if self.type == "choice":
            return ResponseFormat.choice(self.choices)
        if self.type == "rubric":  # imported here: judge/rubric.py loads pyarrow and numpy
            from nova_eval_assets.judge.rubric import rubric_pattern

            return ResponseFormat.regex(rubric_pattern())
        if classification is None or not classification.labels:
            return None
        return ResponseFormat.json_schema(
            classification_schema(classification.label_field, classification.labels)
        )


class InferenceConfig(_Section):
    # Nova's template allows 0..100000 (1.0) and 0..32768 (2.0); 0 would generate nothing.
    # None: 256 for gen_qa; a judge recipe (Nova's has none) uses the judge's default.
    max_new_tokens: int | None = Field(default=None, ge=1, le=100_000)
    top_k: int = Field(default=-1, ge=-1)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_logprobs: int = Field(default=0, ge=0, le=20)
    # Nova 2.0: null (off) | low | medium | high; local models need a chat template with a
    # thinking switch (engines/hf.py)
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    # extensions
    # hf: transformers in process; openai: an OpenAI-compatible server (vLLM, SGLang, TGI,
    # ...); bedrock: Amazon Bedrock's Converse API; vllm: vllm.LLM in process (GPU)
    engine: Literal["hf", "openai", "bedrock", "vllm"] = "hf"
    batch_size: int | None = Field(default=None, ge=1, le=1024)
    seed: int = 1234
    # hf / vllm: auto = bfloat16 on CUDA, float32 on CPU
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # openai: the server's base URL (POST {endpoint}/v1/chat/completions); with
    # `server`, the default is the managed server's http://127.0.0.1:{port}
    # bedrock: the bedrock-runtime endpoint URL (default: the region's)
    endpoint: str | None = Field(default=None, min_length=1)
    api_key_env: str | None = Field(default="OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    region: str | None = Field(default=None, min_length=1)  # bedrock
    concurrency: int = Field(default=8, ge=1, le=1024)  # openai/bedrock: requests in flight
    # openai: processes sending them (None: one per core for shards of 20,000 rows or more;
    # stages/generation_workers.py); never changes what is generated
    client_processes: int | None = Field(default=None, ge=1, le=64)
    timeout_s: float = Field(default=300.0, gt=0.0, le=3600.0)  # one request
    max_retries: int = Field(default=5, ge=0, le=50)  # 429 / 5xx / connection errors
    # share of rows whose request still failed above which the run fails (None: never)
    max_error_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    tensor_parallel_size: int = Field(default=1, ge=1, le=64)  # vllm
    server: ServerConfig | None = None  # openai: a server the replica process manages
    response_format: ResponseFormatConfig | None = None  # constrained output

    @model_validator(mode="after")
    def _engine_keys(self) -> InferenceConfig:
        if self.engine == "openai" and not (self.endpoint or self.server):
            raise ValueError(
                "inference.engine 'openai' needs inference.endpoint (the server's base URL) "
                "or inference.server (a server the replica starts)"
            )
        if self.server is not None and self.engine != "openai":
            raise ValueError("inference.server goes with inference.engine 'openai'")
        if self.engine == "bedrock" and self.top_logprobs > 0:
            raise ValueError(
                "inference.top_logprobs must be 0 with inference.engine 'bedrock': Bedrock's "
                "Converse API returns no log probabilities"
            )
        return self

    @field_validator("top_k")
    @classmethod
    def _top_k_not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("top_k must be -1 (off) or a positive integer")
        return value

    @property
    def generation_tokens(self) -> int:
        """max_new_tokens, or the gen_qa default when the recipe leaves it out."""
        return self.max_new_tokens or DEFAULT_MAX_NEW_TOKENS

    def public_dump(self, **options: Any) -> dict[str, Any]:
        """``model_dump(**options)`` with each ``server.env`` value replaced by REDACTED: a server's
        environment may hold credentials, which results and MLflow must not keep."""
        data = self.model_dump(**options)
        if data.get("server") and data["server"].get("env"):
            data["server"]["env"] = dict.fromkeys(data["server"]["env"], REDACTED)
        return data

    def secret_values(self) -> list[str]:
        """The ``server.env`` values, longest first (to redact from text)."""
        values = self.server.env.values() if self.server is not None else ()
        return sorted((v for v in values if v), key=len, reverse=True)


class StageSwitch(_Section):
    enabled: bool = False


class ProcessorConfig(_Section):
    lambda_arn: str | None = None  # "" (Nova's default): no processor
    handler: str | None = None
    # Nova: custom_metrics (BYOM) | rft (a reward function, for RFT evaluation)
    lambda_type: Literal["custom_metrics", "rft"] = "custom_metrics"
    # Nova 2.0 RFT evaluation: a built-in reward function in place of a Lambda ("": none)
    preset_reward_function: Literal["prime_math", "prime_code"] | None = None
    preprocessing: StageSwitch = StageSwitch()
    postprocessing: StageSwitch = StageSwitch()
    aggregation: Literal["min", "max", "average", "sum"] = "average"
    # extensions (BYOM, see nova_eval_assets/byom/runner.py): None = errors never fail the run
    max_error_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    timeout_s: float = Field(default=60.0, gt=0.0, le=900.0)
    concurrency: int | None = Field(default=None, ge=1, le=256)
    max_retries: int = Field(default=4, ge=0, le=20)
    # extension: samples per call of a reward function (lambda_type rft)
    reward_batch_size: int = Field(default=16, ge=1, le=1000)

    @field_validator("lambda_arn", "handler")
    @classmethod
    def _blank_target_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("preset_reward_function", mode="before")
    @classmethod
    def _blank_preset_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

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
        if self.preset_reward_function is not None:
            if self.target:
                raise ValueError(
                    "preset_reward_function is a reward function of its own: set it or "
                    "lambda_arn / handler, not both"
                )
            if self.lambda_type != "rft":
                raise ValueError(
                    "preset_reward_function is a reward function: set lambda_type: rft"
                )
        if self.is_reward_function and not self.postprocessing.enabled:
            raise ValueError(
                "a reward function (lambda_type: rft) runs as the postprocessing step: set "
                "processor.postprocessing.enabled: true"
            )
        if self.is_reward_function and self.preprocessing.enabled:
            raise ValueError(
                "a reward function (lambda_type: rft) scores answers and does not "
                "preprocess: set processor.preprocessing.enabled: false"
            )
        return self

    @property
    def target(self) -> str | None:
        """The processor to call, or None (Nova's empty lambda_arn: no processor)."""
        return self.lambda_arn or self.handler

    @property
    def is_active(self) -> bool:
        """A processor to call, or a preset reward function to run."""
        return bool(self.target or self.preset_reward_function)

    @property
    def is_reward_function(self) -> bool:
        """A reward function (Nova's RFT contract) rather than a BYOM processor."""
        return self.lambda_type == "rft" and self.is_active

    @property
    def idle_note(self) -> str | None:
        """What the run's output says when a stage is enabled but no processor is named."""
        enabled = [
            f"processor.{stage}.enabled"
            for stage in ("preprocessing", "postprocessing")
            if getattr(self, stage).enabled
        ]
        if self.is_active or not enabled:
            return None
        return (
            f"{' and '.join(enabled)} is true but processor.lambda_arn is empty: no processor "
            "ran, only the built-in metrics (as Nova does with an empty lambda_arn)"
        )


class RlEnvConfig(_Section):
    """Nova 2.0's RFT evaluation (``rft_eval``): the reward function that scores the answers,
    called with Nova's RFT contract (nova_eval_assets/byom/rewards.py)."""

    reward_lambda_arn: str | None = None  # "" (Nova's placeholder left empty): none
    # extension: a local function, 'path/to/file.py:function' or 'package.module:function',
    # called as Lambda would call it (as processor.handler is for BYOM)
    handler: str | None = None
    # extensions: samples per call, and the runner's limits (as for processor)
    batch_size: int = Field(default=16, ge=1, le=1000)
    timeout_s: float = Field(default=300.0, gt=0.0, le=900.0)
    concurrency: int | None = Field(default=None, ge=1, le=256)
    max_retries: int = Field(default=4, ge=0, le=20)
    max_error_rate: float | None = Field(default=None, ge=0.0, le=1.0)

    @field_validator("reward_lambda_arn", "handler")
    @classmethod
    def _blank_target_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("reward_lambda_arn")
    @classmethod
    def _is_function_arn(cls, value: str | None) -> str | None:
        return ProcessorConfig._is_function_arn(value)

    @field_validator("handler")
    @classmethod
    def _is_handler_spec(cls, value: str | None) -> str | None:
        return ProcessorConfig._is_handler_spec(value)

    @model_validator(mode="after")
    def _one_target(self) -> RlEnvConfig:
        if self.reward_lambda_arn and self.handler:
            raise ValueError("set reward_lambda_arn or handler, not both")
        if not (self.reward_lambda_arn or self.handler):
            raise ValueError(
                "rl_env names no reward function: set reward_lambda_arn (a Lambda function "
                "ARN) or handler (a local function, 'path/to/file.py:function')"
            )
        return self

    def as_processor(self) -> ProcessorConfig:
        """The reward function as the processor that runs it (postprocessing, rft)."""
        return ProcessorConfig(
            lambda_arn=self.reward_lambda_arn,
            handler=self.handler,
            lambda_type="rft",
            postprocessing=StageSwitch(enabled=True),
            timeout_s=self.timeout_s,
            concurrency=self.concurrency,
            max_retries=self.max_retries,
            max_error_rate=self.max_error_rate,
            reward_batch_size=self.batch_size,
        )


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
    """Extension: how the dataset is validated, and where a benchmark's rows come from."""

    # a benchmark's rows in its normalized format (.jsonl, .parquet or .csv; a path or
    # s3:// URI; relative to the recipe's folder): in place of the hub or the package
    path: str | None = Field(default=None, min_length=1)
    # the hub revision (a commit) a benchmark's dataset is read at (default: the task's)
    revision: str | None = Field(default=None, min_length=1)

    on_invalid: Literal["fail", "skip"] = "fail"
    metadata_format: Literal["json", "text"] = "json"
    # a longer line is rejected with its line number (the default allows ~100 MB images)
    max_line_bytes: int = Field(default=128 * 1024 * 1024, ge=1024, le=2 * 1024**3)


class ScheduleConfig(_Section):
    """Extension: a recurring evaluation (a Dagster schedule; see assets/automation.py)."""

    cron: str = Field(min_length=1, max_length=100)
    timezone: str = Field(default="UTC", max_length=64)  # IANA names are at most ~32
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
    # auto: a benchmark's answer confidence (the chosen letter's probability among the
    # letters) where the examples have it, else label_confidence where they have it
    # (constrained decoding), else first_token
    confidence: Literal[
        "auto", "answer", "first_token", "label", "label_confidence", "mean_token", "min_token"
    ] = "auto"
    # left out: em, or a benchmark's own metric (accuracy, exact_match, pass@1)
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
            _check_run_name(name)
        if len(set(value)) != len(value):
            raise ValueError("names a recipe twice")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AnalysisConfig:
        if self.length_ratio_min >= self.length_ratio_max:
            raise ValueError("length_ratio_min must be below length_ratio_max")
        return self


JUDGE_BACKENDS = ("hf", "bedrock", "openai")


class JudgeConfig(_Section):
    """Extension: the LLM judge of an ``llm_judge`` (or ``mm_llm_judge``) recipe (see
    nova_eval_assets/judge/)."""

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
    baseline_recipe: str | None = None  # a gen_qa recipe's run.name
    challenger_recipe: str | None = None
    baseline_label: str | None = Field(default=None, min_length=1, max_length=128)
    challenger_label: str | None = Field(default=None, min_length=1, max_length=128)
    bootstrap_rounds: int = Field(default=1000, ge=10, le=1_000_000)
    seed: int = 1234

    @field_validator("baseline_recipe", "challenger_recipe")
    @classmethod
    def _is_run_name(cls, value: str | None) -> str | None:
        return None if value is None else _check_run_name(value)

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
    judge: JudgeConfig | None = None  # extension: llm_judge / mm_llm_judge recipes only
    rl_env: RlEnvConfig | None = None  # rft_eval: the reward function
    schedule: ScheduleConfig | None = None  # extension: cron + timezone of a recurring run

    @model_validator(mode="after")
    def _classification_format_has_labels(self) -> Recipe:
        fmt = self.inference.response_format
        if fmt is None:
            return self
        if fmt.type == "classification" and not (
            self.classification and self.classification.labels
        ):
            raise ValueError(
                "inference.response_format type 'classification' needs a classification "
                "section with label_field and labels"
            )
        if self.inference.engine == "bedrock":
            raise ValueError("inference.response_format is not supported by engine 'bedrock'")
        rubric = self.evaluation.task == RUBRIC_TASK
        if (fmt.type == "rubric") != rubric and fmt.type in ("rubric", "choice", "classification"):
            raise ValueError(
                "inference.response_format type 'rubric' goes with evaluation.task "
                "'rubric_llm_judge', whose judge writes a YAML block: give it type 'rubric' "
                "(or a regex of that block)"
            )
        return self

    @property
    def response_format(self) -> ResponseFormat | None:
        """The output format the engines enforce (None: free text)."""
        fmt = self.inference.response_format
        return None if fmt is None else fmt.build(self.classification)

    @model_validator(mode="after")
    def _analysis_has_labels(self) -> Recipe:
        has_field = self.analysis.label_field or self.classification is not None
        measure = self.analysis.confidence
        if measure in ("label", "label_confidence") and not has_field:
            raise ValueError(
                f"analysis.confidence '{measure}' needs analysis.label_field (or a "
                "classification section): the JSON field that holds the label"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _joining_judge_needs_no_data(cls, data: Any) -> Any:
        """A judge recipe that joins two gen_qa recipes builds its dataset: no data_s3_path."""
        try:
            joins = is_judge_task(data["evaluation"]["task"]) and data["judge"]["baseline_recipe"]
        except (KeyError, TypeError):
            return data
        if joins and isinstance(data.get("run"), dict) and "data_s3_path" not in data["run"]:
            data = {**data, "run": {**data["run"], "data_s3_path": None}}
        return data

    @model_validator(mode="after")
    def _processor_fits_task(self) -> Recipe:
        task = self.evaluation.task
        if task == RFT_TASK:
            if self.rl_env is None:
                raise ValueError(
                    "an rft_eval recipe names its reward function in rl_env: "
                    "rl_env.reward_lambda_arn (or rl_env.handler, a local function)"
                )
            if self.processor is not None and self.processor.is_active:
                raise ValueError(
                    "an rft_eval recipe's reward function is rl_env's; leave processor out"
                )
            return self
        if self.rl_env is not None:
            raise ValueError(
                f"rl_env names the reward function of an rft_eval recipe; a {task} recipe "
                "leaves it out (on gen_qa: processor.lambda_type: rft)"
            )
        config = self.processor
        if config is None or not config.is_active:
            return self
        if config.lambda_type == "rft" and task != "gen_qa":
            raise ValueError(
                "processor.lambda_type 'rft' names a reward function, which scores gen_qa "
                f"answers (or use task rft_eval with rl_env); a {task} recipe's processor "
                "computes custom metrics: set processor.lambda_type: custom_metrics (or leave "
                "processor.lambda_arn empty)"
            )
        if config.preset_reward_function is not None and task != "gen_qa":
            raise ValueError(
                "processor.preset_reward_function is a reward function for gen_qa answers; "
                f"a {task} recipe leaves it empty"
            )
        return self

    @property
    def active_processor(self) -> ProcessorConfig | None:
        """The processor to call (rft_eval: its reward function); else None."""
        if self.evaluation.scored_by_rewards and self.rl_env is not None:
            return self.rl_env.as_processor()
        return self.processor if self.processor and self.processor.is_active else None

    @property
    def notes(self) -> list[str]:
        """What the run's output tells the user about how the recipe was read."""
        note = self.processor.idle_note if self.processor else None
        return [note] if note else []

    @model_validator(mode="after")
    def _benchmark_source(self) -> Recipe:
        if self.evaluation.task == INSPECT_TASK:  # its rows are its tasks' samples
            if self.dataset.path is not None or self.run.data_s3_path:
                raise ValueError(
                    "an inspect recipe's rows are its Inspect tasks' samples: leave "
                    "dataset.path out and run.data_s3_path ''"
                )
            return self
        benchmark = self.evaluation.benchmark
        if benchmark is None:
            if self.dataset.path is not None or self.dataset.revision is not None:
                raise ValueError(
                    "dataset.path and dataset.revision name a benchmark's rows; a "
                    f"{self.evaluation.task} recipe reads run.data_s3_path"
                )
            return self
        if self.run.data_s3_path:
            raise ValueError(
                f"run.data_s3_path stays '' for a benchmark ({benchmark.name}), as in Nova's "
                "recipe; name a file of the task's rows with dataset.path"
            )
        if self.evaluation.samples > 1 and self.inference.temperature == 0:
            raise ValueError(
                f"evaluation.samples is {self.evaluation.samples}, but inference.temperature 0 "
                "generates the same answer every time: set a temperature above 0"
            )
        wanted = benchmark.needs_top_logprobs
        if wanted and self.inference.top_logprobs < wanted:
            raise ValueError(
                f"task '{benchmark.name}' scores the first token's log probabilities: set "
                f"inference.top_logprobs to at least {wanted} (Nova's recipe: 5)"
            )
        return self

    @model_validator(mode="after")
    def _judge_fits_task(self) -> Recipe:
        is_judge = self.evaluation.is_judge
        if self.judge is not None and not is_judge and self.evaluation.task != "strong_reject":
            raise ValueError(
                "the judge section belongs to llm_judge, mm_llm_judge and rubric_llm_judge "
                "recipes, and to strong_reject (its deflection classifier) (evaluation.task)"
            )
        joins = is_judge and self.judge is not None and self.judge.joins_recipes
        if self.run.data_s3_path is None and not joins and not self.evaluation.is_benchmark:
            raise ValueError(
                "run.data_s3_path is required (only a benchmark, or a judge recipe that names "
                "judge.baseline_recipe and judge.challenger_recipe, goes without)"
            )
        joined = {self.judge.baseline_recipe, self.judge.challenger_recipe} if joins else set()
        if self.run.name in joined:
            raise ValueError("a judge recipe cannot judge its own run.name")
        return self

    def with_overrides(
        self,
        *,
        replicas: int | None = None,
        limit: int | None = None,
        max_new_tokens: int | None = None,
    ) -> Recipe:
        """A copy with CLI overrides applied (None: not given), each checked against the
        range of the key it sets: a RecipeError names the flag and the range."""
        data = self.model_dump()
        given = {"replicas": replicas, "limit": limit, "max_new_tokens": max_new_tokens}
        for name, value in given.items():
            if value is None:
                continue
            problem = override_problem(name, value)
            if problem:
                raise RecipeError(f"--{name.replace('_', '-')}: {problem}")
            section, key = OVERRIDES[name]
            data[section][key] = value
        return Recipe.model_validate(data)


#: The CLI flags of `nova-eval run` that override a recipe key: name -> (section, key).
OVERRIDES = {
    "replicas": ("run", "replicas"),
    "limit": ("run", "limit"),
    "max_new_tokens": ("inference", "max_new_tokens"),
}


def override_problem(name: str, value: object) -> str | None:
    """Why ``value`` cannot override the recipe key of the CLI flag ``name`` (None: it can);
    the range is the recipe model's."""
    section, key = OVERRIDES[name]
    low, high = _int_bounds(_model_at((section,)), key)
    allowed = f"{low}..{high}" if high is not None else f">= {low}"
    if not isinstance(value, int) or isinstance(value, bool):
        return f"{short_repr(value)} is not an integer; allowed: {allowed} ({section}.{key})"
    if (low is not None and value < low) or (high is not None and value > high):
        return f"{value} is out of range; allowed: {allowed} ({section}.{key})"
    return None


def _int_bounds(model: type[BaseModel], key: str) -> tuple[int | None, int | None]:
    """The ``ge`` and ``le`` bounds of an int key, from its Field constraints."""
    low = high = None
    for rule in model.model_fields[key].metadata:
        low = getattr(rule, "ge", low)
        high = getattr(rule, "le", high)
    return low, high


@dataclass(frozen=True)
class LoadedRecipe:
    """A validated recipe and the file it came from."""

    recipe: Recipe
    path: Path

    @property
    def name(self) -> str:
        """run.name as written: output folders, results JSON and tables use it."""
        return self.recipe.run.name

    @property
    def key(self) -> str:
        """The Dagster-safe form of run.name: asset key prefix, group and job names."""
        return asset_key_prefix(self.recipe.run.name)

    def resolve_data_path(self) -> str:
        """``data_s3_path`` as an s3:// URI or a local path; relative paths are taken
        relative to the recipe file's folder, so a recipe works from any working directory.
        Empty: the single ``.jsonl`` of SageMaker's training channel, as Nova reads it."""
        run = self.recipe.run
        if run.data_s3_path is None:
            raise RecipeError(
                f"{self.path}: run.data_s3_path is not set; this judge recipe builds its "
                "dataset by joining judge.baseline_recipe and judge.challenger_recipe"
            )
        if run.reads_training_channel:
            return training_channel_dataset(self.path)
        return resolve_relative(run.data_s3_path, self.path.parent)

    def dataset_file(self) -> str | None:
        """The file the recipe's rows are read from (resolved), or None: a judge recipe that
        joins two recipes, or a benchmark reading the hub or a package."""
        recipe = self.recipe
        if recipe.evaluation.is_benchmark:
            path = recipe.dataset.path
            return None if path is None else resolve_relative(path, self.path.parent)
        if recipe.run.data_s3_path is None:
            return None
        return self.resolve_data_path()

    def with_overrides(self, **overrides: Any) -> LoadedRecipe:
        try:
            return LoadedRecipe(self.recipe.with_overrides(**overrides), self.path)
        except RecipeError as exc:
            raise RecipeError(f"{self.path}: {exc}") from None


def training_channel_dataset(recipe_path: Path) -> str:
    """The one ``.jsonl`` file in $SM_CHANNEL_TRAIN (SageMaker's ``train`` channel)."""
    where = f"{recipe_path}: run.data_s3_path is empty"
    channel = os.environ.get(SAGEMAKER_TRAIN_CHANNEL)
    if not channel:
        raise RecipeError(
            f"{where}, which means SageMaker's training channel, but "
            f"${SAGEMAKER_TRAIN_CHANNEL} is not set (it is set inside a SageMaker training "
            "job); outside one, set run.data_s3_path to the dataset's path or s3:// URI"
        )
    folder = Path(channel)
    if not folder.is_dir():
        raise RecipeError(f"{where}: ${SAGEMAKER_TRAIN_CHANNEL}={channel} is not a folder")
    found = sorted(p for p in folder.iterdir() if p.suffix == ".jsonl" and p.is_file())
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise RecipeError(
            f"{where}: the training channel ${SAGEMAKER_TRAIN_CHANNEL}={channel} must hold "
            f"exactly one .jsonl file (found {names})"
        )
    return str(found[0].resolve())


def resolve_relative(location: str, base: Path) -> str:
    if "://" in location:
        return location
    path = Path(location).expanduser()
    if path.is_absolute():
        return str(path)
    try:
        return str((base / path).resolve())
    except RuntimeError:  # a symbolic link loop (Python < 3.13): its reader names it
        return str(base / path)


def load_recipe(path: str | Path) -> LoadedRecipe:
    path = Path(path)
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_RECIPE_BYTES + 1)  # bounded: /dev/zero is a path too
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read recipe: {exc.strerror or exc}") from exc
    try:
        text = decode_recipe(raw)
    except RecipeTextError as exc:
        raise RecipeError(_located(str(path), exc.line, str(exc))) from None
    recipe = parse_recipe(text, source=str(path))
    return LoadedRecipe(_inspect_files_resolved(recipe, path.resolve().parent), path.resolve())


def _inspect_files_resolved(recipe: Recipe, folder: Path) -> Recipe:
    """The recipe with its Inspect task files relative to ``folder`` (the recipe's)."""
    specs = recipe.evaluation.inspect_specs
    if not specs:
        return recipe

    def resolved(spec: str) -> str:
        location, at, name = spec.partition("@")
        if not location.endswith(".py") and not (folder / location).is_dir():
            return spec  # a registered name (inspect_evals/gpqa_diamond)
        return f"{resolve_relative(location, folder)}{at}{name}"

    names = [resolved(spec) for spec in specs]
    evaluation = recipe.evaluation.model_copy(
        update={
            "inspect_task": names if isinstance(recipe.evaluation.inspect_task, list) else names[0]
        }
    )
    return recipe.model_copy(update={"evaluation": evaluation})


def parse_recipe(text: str, source: str = "<recipe>") -> Recipe:
    try:
        document = read_yaml(text)
    except RecipeTextError as exc:
        raise RecipeError(_located(source, exc.line, str(exc))) from None
    if not isinstance(document.data, dict):
        raise RecipeError(
            f"{source}: a recipe is a mapping with the sections run, evaluation, inference, "
            "processor"
        )
    try:
        return Recipe.model_validate(document.data)
    except ValidationError as exc:
        raise RecipeError(_problems(exc, source, document)) from None


#: A recipe with thousands of bad keys gets this many lines, then a count of the rest.
MAX_PROBLEMS_SHOWN = 20


def _problems(exc: ValidationError, source: str, document: RecipeDocument) -> str:
    errors = exc.errors(include_url=False)
    lines = [_describe(error, source, document) for error in errors[:MAX_PROBLEMS_SHOWN]]
    if len(errors) > MAX_PROBLEMS_SHOWN:
        lines.append(f"{source}: ... and {len(errors) - MAX_PROBLEMS_SHOWN} more problems")
    return "\n".join(lines)


def _located(source: str, line: int | None, message: str) -> str:
    return f"{source}:{line}: {message}" if line else f"{source}: {message}"


def _describe(error: dict[str, Any], source: str, document: RecipeDocument) -> str:
    loc = tuple(str(part) for part in error["loc"])
    key = clip(".".join(loc) or "(top level)")
    line = document.line_of(loc)
    where = f"{source}:{line}" if line else source
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = error.get("input")
    if kind == "extra_forbidden":
        allowed = ", ".join(_model_at(loc[:-1]).model_fields)
        return f"{where}: unknown key '{key}'; allowed keys here: {allowed}"
    if kind == "missing":
        return f"{where}: missing required key '{key}'"
    if kind == "literal_error":
        return (
            f"{where}: {key} = {short_repr(got)} is not allowed; "
            f"allowed values: {ctx.get('expected')}"
        )
    bounds = {
        "greater_than_equal": "at least {ge}",
        "greater_than": "greater than {gt}",
        "less_than_equal": "at most {le}",
        "less_than": "less than {lt}",
    }
    if kind in bounds:
        rule = bounds[kind].format(**ctx)
        return (
            f"{where}: {key} = {short_repr(got)} is out of range; "
            f"it must be {rule}{_range_hint(loc)}"
        )
    # a validator's message may quote the value (a cron line): bounded like the value
    message = clip(re.sub(r"^(Value error|Assertion failed), ", "", error["msg"]), 600)
    shown = "" if isinstance(got, dict) else f" (got {short_repr(got)})"
    return f"{where}: {key}: {message}{shown}"


_RANGES = {
    ("inference", "top_logprobs"): "0..20 (0 = off)",
    ("inference", "top_p"): "0 < top_p <= 1",
    ("inference", "temperature"): ">= 0 (0 = greedy)",
    ("inference", "top_k"): "-1 (off) or >= 1",
    ("run", "replicas"): "1..1024",
    ("run", "limit"): ">= 1",
    ("inference", "max_new_tokens"): "1..100000",
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


def _model_at(loc: tuple[str, ...]) -> type[BaseModel]:
    """The section model at ``loc`` (``("run",)`` -> RunConfig; ``()`` -> Recipe)."""
    model: type[BaseModel] = Recipe
    for part in loc:
        annotation = model.model_fields[part].annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        model = next(c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel))
    return model


def _line_of(root: yaml.Node | None, loc: tuple[str, ...]) -> int | None:
    """1-based line of the deepest key of ``loc`` present in a composed YAML document (one
    lookup; :meth:`RecipeDocument.line_of` answers many in linear time)."""
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
    check_unique_keys(recipes)
    return recipes


def check_unique_keys(recipes: list[LoadedRecipe]) -> None:
    """Two recipes whose run names map to one asset key prefix cannot share a code location."""
    seen: dict[str, LoadedRecipe] = {}
    for loaded in recipes:
        other = seen.get(loaded.key)
        if other is not None:
            same = other.name == loaded.name
            raise RecipeError(
                f"{loaded.path}: run.name '{loaded.name}' "
                + ("is also used by" if same else f"and '{other.name}' of")
                + f" {other.path}"
                + ("" if same else f" both map to the asset key prefix '{loaded.key}'")
                + "; recipe names must be unique (they key the assets)"
            )
        seen[loaded.key] = loaded
