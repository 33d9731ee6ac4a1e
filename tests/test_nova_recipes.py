"""Nova's published evaluation recipes run here unchanged (only the model changed), and the
rules that make that work: run names with hyphens, the SageMaker training channel, an empty
lambda_arn, lambda_type, preset_reward_function, judge recipes without max_new_tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from nova_eval_assets import storage
from nova_eval_assets.cli import main as cli_main
from nova_eval_assets.recipe import (
    RecipeError,
    asset_key_prefix,
    discover_recipes,
    load_recipe,
    parse_recipe,
)
from tests.conftest import PROJECT, ticket_lines
from tests.test_recipe import VALID, error_for

RECIPES = Path(__file__).resolve().parent / "recipes"
NOVA = RECIPES / "nova"
BYOD_1 = NOVA / "nova_lite_1_0_p5_48xl_gpu_bring_your_own_dataset_eval.yaml"
BYOD_2 = NOVA / "nova_lite_2_0_p5_48xl_gpu_bring_your_own_dataset_eval.yaml"
JUDGE_1 = NOVA / "nova_lite_1_0_p5_48xl_gpu_llm_judge_eval.yaml"
MULTINODE = RECIPES / "support_ticket_eval_multinode.yaml"

JUDGE_ROWS = [
    {"prompt": "What is 2 + 2?", "response_A": "4", "response_B": "Four."},
    {"prompt": "Name a colour.", "response_A": "Blue", "response_B": "The sky."},
]


@pytest.fixture
def train_channel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SageMaker's training channel as a training job sees it: $SM_CHANNEL_TRAIN."""
    channel = tmp_path / "channel-train"
    channel.mkdir()
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(channel))
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))
    return channel


def _write_jsonl(path: Path, rows: list[dict] | list[str]) -> None:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("recipe", [BYOD_1, BYOD_2], ids=["byod-1.0", "byod-2.0"])
def test_published_gen_qa_recipes_validate(recipe, train_channel, capsys):
    _write_jsonl(train_channel / "gen_qa.jsonl", ticket_lines(5))
    assert cli_main(["validate", str(recipe)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"{train_channel / 'gen_qa.jsonl'}: 5 valid rows" in out
    loaded = load_recipe(recipe)
    assert loaded.recipe.run.model_type.startswith("amazon.nova-")  # accepted as given
    assert loaded.recipe.active_processor is None  # lambda_arn "" = no processor
    assert loaded.recipe.processor is not None and loaded.recipe.processor.lambda_type == "rft"


def test_published_judge_recipe_validates_without_max_new_tokens(train_channel, capsys):
    _write_jsonl(train_channel / "llm_judge.jsonl", JUDGE_ROWS)
    assert cli_main(["validate", str(JUDGE_1)]) == 0, capsys.readouterr().err
    assert "2 valid rows" in capsys.readouterr().out
    from nova_eval_assets.judge.pipeline import JUDGE_MAX_NEW_TOKENS, sampling_settings

    loaded = load_recipe(JUDGE_1)
    assert loaded.recipe.inference.max_new_tokens is None
    assert sampling_settings(loaded).max_new_tokens == JUDGE_MAX_NEW_TOKENS
    assert sampling_settings(loaded).top_k == 50


def test_multinode_recipe_validates_and_keys_its_assets(capsys):
    assert cli_main(["validate", str(MULTINODE)]) == 0, capsys.readouterr().err
    loaded = load_recipe(MULTINODE)
    assert loaded.name == "support-ticket-eval-multinode"
    assert loaded.key == "support_ticket_eval_multinode"
    from nova_eval_assets.assets.evaluation import build_evaluation_assets

    defs = dg.Definitions(assets=build_evaluation_assets(loaded))
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert "support_ticket_eval_multinode/aggregated_report" in keys
    groups = {
        spec.group_name
        for assets_def in build_evaluation_assets(loaded)
        if isinstance(assets_def, dg.AssetsDefinition)
        for spec in assets_def.specs
    }
    assert groups == {"support_ticket_eval_multinode"}


@pytest.mark.model
def test_published_byod_recipe_runs_end_to_end(train_channel, tmp_path):
    """`nova-eval run` of Nova's 1.0 recipe as published (max_new_tokens 8196, top_logprobs
    0, postprocessing on with an empty lambda_arn), shortened for the test by the CLI."""
    lines = ticket_lines(6)
    _write_jsonl(train_channel / "gen_qa.jsonl", lines)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "PYTHONPATH": str(PROJECT),
        "NOVA_EVAL_TABLES_ROOT": str(tmp_path / "tables"),
    }
    command = [sys.executable, "-m", "nova_eval_assets.cli", "run", str(BYOD_1)]
    done = subprocess.run(
        [*command, "--limit", "3", "--max-new-tokens", "6", "--quiet"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "Evaluation 'nova-lite-byod-eval-job' of smollm2-135m-instruct" in out
    assert "no processor ran" in out  # said in the run's output
    listed = out.split("Results:\n", 1)[1].splitlines()
    paths = dict(line.split(None, 1) for line in listed if line.startswith("  "))
    results_path = Path(paths["results"])
    # output paths keep the run name as written
    root = tmp_path / "outputs" / "nova-lite-byod-eval-job" / "eval_results"
    assert results_path.parent == root
    results = storage.read_json(str(results_path))
    general = results["config_general"]
    assert general["recipe_name"] == "nova-lite-byod-eval-job"
    assert general["model_type"] == "amazon.nova-lite-v1:0:300k"
    assert general["num_examples"] == 3
    assert any("lambda_arn is empty" in note for note in general["notes"])
    assert "processor" not in general
    assert set(results["results"]["all"]) >= {"em", "em_stderr", "rougeL", "bleu"}
    # the tables partition keeps the original name too
    partitions = [p.name for p in (tmp_path / "tables" / "eval_metrics").iterdir()]
    assert "eval_name=nova-lite-byod-eval-job" in partitions


# ---------------------------------------------------------------- run names


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("nova-lite-byod-eval-job", "nova_lite_byod_eval_job"),
        ("support_tickets", "support_tickets"),
        ("eval.v2-final", "eval_v2_final"),
        ("7b-eval", "r_7b_eval"),
    ],
)
def test_run_name_maps_to_a_dagster_safe_key(name, key):
    recipe = parse_recipe(VALID.replace("name: demo", f"name: {name}"))
    assert recipe.run.name == name
    assert asset_key_prefix(name) == key
    assert dg.AssetKey([key, "x"]).to_user_string() == f"{key}/x"
    dg.asset(key=[key, "x"], group_name=key)(lambda: None)  # Dagster accepts both


@pytest.mark.parametrize(
    "name", ["../escape", "a/b", "a\\\\b", "..", "a..b", ".hidden", "-dash", "/abs", "x" * 64]
)
def test_run_names_that_could_leave_the_output_root_are_refused(name):
    message = error_for(VALID.replace("name: demo", f"name: '{name}'"))
    assert "r.yaml:2: run.name: not a run name" in message
    assert "letters, digits, '-', '_' and '.'" in message


def test_empty_run_name_is_refused():
    assert "run.name: not a run name" in error_for(VALID.replace("name: demo", "name: ''"))


def test_two_recipes_mapping_to_one_key_are_an_error_naming_both(tmp_path):
    (tmp_path / "a.yaml").write_text(VALID.replace("name: demo", "name: my-eval"))
    (tmp_path / "b.yaml").write_text(VALID.replace("name: demo", "name: my_eval"))
    with pytest.raises(RecipeError) as info:
        discover_recipes(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "a.yaml") in message and str(tmp_path / "b.yaml") in message
    assert "'my_eval'" in message and "'my-eval'" in message
    assert "asset key prefix 'my_eval'" in message


# ---------------------------------------------------------------- SageMaker training channel


def _byod(tmp_path: Path) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(VALID.replace("data_s3_path: data/rows.jsonl", 'data_s3_path: ""'))
    return path


def test_empty_data_path_without_the_channel_names_the_key(tmp_path, monkeypatch):
    monkeypatch.delenv("SM_CHANNEL_TRAIN", raising=False)
    loaded = load_recipe(_byod(tmp_path))
    with pytest.raises(RecipeError) as info:
        loaded.resolve_data_path()
    message = str(info.value)
    assert "run.data_s3_path is empty" in message and "$SM_CHANNEL_TRAIN is not set" in message


def test_channel_must_hold_exactly_one_jsonl(tmp_path, train_channel):
    loaded = load_recipe(_byod(tmp_path))
    with pytest.raises(RecipeError, match=r"exactly one \.jsonl file \(found none\)"):
        loaded.resolve_data_path()
    _write_jsonl(train_channel / "a.jsonl", ticket_lines(1))
    (train_channel / "manifest.json").write_text("{}")  # other files do not count
    assert loaded.resolve_data_path() == str(train_channel / "a.jsonl")
    _write_jsonl(train_channel / "b.jsonl", ticket_lines(1))
    with pytest.raises(RecipeError, match=r"found a\.jsonl, b\.jsonl"):
        loaded.resolve_data_path()


def test_validate_cli_reports_the_missing_channel(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SM_CHANNEL_TRAIN", raising=False)
    assert cli_main(["validate", str(_byod(tmp_path))]) == 2
    assert "SM_CHANNEL_TRAIN" in capsys.readouterr().err


# ---------------------------------------------------------------- processor and inference keys

HANDLER = "processor:\n  handler: p.py:handler\n  postprocessing:\n    enabled: true\n"


def test_rft_lambda_type_makes_a_gen_qa_processor_a_reward_function_and_only_there():
    recipe = parse_recipe(VALID + HANDLER + "  lambda_type: rft\n")
    assert recipe.active_processor is not None and recipe.active_processor.is_reward_function
    custom = parse_recipe(VALID + HANDLER + "  lambda_type: custom_metrics\n")
    assert custom.active_processor is not None
    assert not custom.active_processor.is_reward_function
    judge = VALID.replace("task: gen_qa", "task: llm_judge").replace(
        "strategy: gen_qa", "strategy: judge"
    )
    message = error_for(judge + HANDLER + "  lambda_type: rft\n")
    assert "processor.lambda_type 'rft' names a reward function" in message
    assert "a llm_judge recipe's processor computes custom metrics" in message
    message = error_for(VALID + HANDLER.replace("true", "false") + "  lambda_type: rft\n")
    assert "runs as the postprocessing step" in message


def test_lambda_type_outside_its_enum_names_the_allowed_values():
    message = error_for(VALID + HANDLER + "  lambda_type: reward\n")
    assert "processor.lambda_type" in message
    assert "'custom_metrics'" in message and "'rft'" in message


def test_preset_reward_function_is_a_reward_function_of_its_own():
    empty = parse_recipe(VALID + 'processor:\n  lambda_arn: ""\n  preset_reward_function: ""\n')
    assert empty.processor is not None and empty.processor.preset_reward_function is None
    assert empty.active_processor is None
    preset = "processor:\n  preset_reward_function: prime_math\n  lambda_type: rft\n"
    postprocessing = "  postprocessing:\n    enabled: true\n"
    recipe = parse_recipe(VALID + preset + postprocessing)
    assert recipe.active_processor is not None and recipe.active_processor.is_reward_function
    message = error_for(
        VALID + HANDLER + "  preset_reward_function: prime_math\n  lambda_type: rft\n"
    )
    assert "set it or lambda_arn / handler, not both" in message
    message = error_for(VALID + preset.replace("rft", "custom_metrics") + postprocessing)
    assert "preset_reward_function is a reward function: set lambda_type: rft" in message
    message = error_for(VALID + "processor:\n  preset_reward_function: prime_physics\n")
    assert "'prime_math'" in message and "'prime_code'" in message


def test_enabled_stage_without_a_processor_runs_without_it_and_says_so():
    section = 'processor:\n  lambda_arn: ""\n  postprocessing:\n    enabled: true\n'
    recipe = parse_recipe(VALID + section)
    assert recipe.active_processor is None
    assert recipe.notes == [
        "processor.postprocessing.enabled is true but processor.lambda_arn is empty: no "
        "processor ran, only the built-in metrics (as Nova does with an empty lambda_arn)"
    ]
    assert parse_recipe(VALID).notes == []


@pytest.mark.parametrize("effort", ["low", "medium", "high", "null"])
def test_reasoning_effort_values(effort):
    recipe = parse_recipe(VALID + f"  reasoning_effort: {effort}\n")
    assert recipe.inference.reasoning_effort == (None if effort == "null" else effort)


def test_reasoning_effort_outside_its_enum():
    message = error_for(VALID + "  reasoning_effort: extreme\n")
    assert "inference.reasoning_effort" in message and "'low'" in message and "'high'" in message


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ("temperature: 0", "temperature: 2.5", "at most 2"),
        ("max_new_tokens: 32", "max_new_tokens: 100001", "at most 100000"),
    ],
)
def test_nova_template_ranges(old, new, fragment):
    message = error_for(VALID.replace(old, new))
    assert fragment in message
    assert parse_recipe(VALID.replace(old, old.split(":")[0] + ": 2")).inference is not None


def test_mlflow_keys_are_read_and_blank_means_unset():
    recipe = parse_recipe(
        VALID.replace(
            '  output_s3_path: ""\n',
            '  output_s3_path: ""\n  mlflow_tracking_uri: ""\n  mlflow_experiment_name: exp\n',
        )
    )
    assert recipe.run.mlflow_tracking_uri is None
    assert recipe.run.mlflow_experiment_name == "exp"
    assert recipe.run.mlflow_run_name is None


def test_code_location_loads_recipes_with_hyphenated_names(tmp_path):
    """The whole code location (assets, checks, jobs, schedules, sensors, tables, dbt) with a
    gen_qa and a judge recipe whose names have hyphens."""
    import shutil

    from nova_eval_assets.definitions import build_definitions

    folder = tmp_path / "recipes"
    shutil.copytree(PROJECT / "recipes", folder)
    multinode = MULTINODE.read_text().replace("../../recipes/", "")
    (folder / "multinode.yaml").write_text(multinode + "schedule:\n  cron: '0 3 * * *'\n")
    judge = (folder / "judge_support_tickets.yaml").read_text()
    judge = judge.replace("name: judge_support_tickets", "name: judge-support-tickets")
    judge = judge.replace(
        "challenger_recipe: support_tickets_no_system",
        "challenger_recipe: support-ticket-eval-multinode",
    )
    (folder / "judge_support_tickets.yaml").write_text(judge)
    defs = build_definitions(discover_recipes(folder))
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert "support_ticket_eval_multinode/inference_outputs" in keys
    assert "judge_support_tickets/judge_results" in keys
    job = defs.resolve_job_def("support_ticket_eval_multinode__replicas")
    assert job.partitions_def is not None
    assert job.partitions_def.get_partition_keys() == ["0", "1", "2", "3"]
    schedule = defs.resolve_schedule_def("support_ticket_eval_multinode__schedule")
    assert schedule.cron_schedule == "0 3 * * *"
    # the judge's validated_dataset waits for the hyphenated challenger's aggregate
    graph = defs.resolve_asset_graph()
    parents = graph.get(dg.AssetKey(["judge_support_tickets", "validated_dataset"])).parent_keys
    assert dg.AssetKey(["support_ticket_eval_multinode", "aggregated_report"]) in parents
