"""Hostile datasets: each ends in one message naming the file (and line and field where
there is one), and every other line is validated as usual."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import dagster as dg
import pytest

from nova_eval_assets import cli, stages, storage
from nova_eval_assets.dataset import DatasetFileError, validate_dataset
from nova_eval_assets.layout import EvalLayout
from tests.orchestration_support import edit_recipe
from tests.test_s3 import BUCKET, s3  # noqa: F401 (fixture)

GOOD = '{"query": "q", "response": "r"}'
NESTING_LIMIT = 100  # the documented limit (docs/datasets.md)


def write_lines(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def with_metadata(metadata: str) -> str:
    return json.dumps({"query": "q", "response": "r", "metadata": metadata})


def reasons_by_line(outcome) -> dict[int, list[str]]:
    return {rejected.line: rejected.reasons for rejected in outcome.rejected}


# ---------------------------------------------------------------- deep nesting


def test_deeply_nested_lines_are_rejected_and_the_others_kept(tmp_path: Path):
    deep_query = '{"query": ' + "[" * 5000 + "]" * 5000 + ', "response": "r"}'
    path = write_lines(tmp_path / "d.jsonl", [GOOD, "[" * 100_000, deep_query, GOOD])
    started = time.monotonic()
    outcome = validate_dataset(path)
    assert time.monotonic() - started < 10
    assert outcome.table["line"].to_pylist() == [1, 4]
    too_deep = f"JSON nested deeper than {NESTING_LIMIT} levels"
    assert reasons_by_line(outcome) == {2: [f"line 2: {too_deep}"], 3: [f"line 3: {too_deep}"]}
    assert outcome.rejected[0].raw == "[" * 100_000  # kept whole: nothing is lost


def test_nesting_limit_counts_levels_not_brackets_inside_strings(tmp_path: Path):
    at_limit = "[" * NESTING_LIMIT + "]" * NESTING_LIMIT
    over = "[" * (NESTING_LIMIT + 1) + "]" * (NESTING_LIMIT + 1)
    lines = [
        with_metadata(at_limit),  # deep, but within the limit
        with_metadata(over),
        json.dumps({"query": "[{" * 5000, "response": "]" * 5000}),  # text, not nesting
        # many brackets, one level deep each
        json.dumps({"query": "q", "response": "r", "metadata": json.dumps([[]] * 5000)}),
    ]
    outcome = validate_dataset(write_lines(tmp_path / "d.jsonl", lines))
    assert outcome.table["line"].to_pylist() == [1, 3, 4]
    assert reasons_by_line(outcome) == {
        2: [
            "line 2, field 'metadata': the recipe says metadata is JSON "
            "(dataset.metadata_format: json), but it is not: JSON nested deeper than "
            f"{NESTING_LIMIT} levels"
        ]
    }


# ---------------------------------------------------------------- duplicate keys, NaN


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('{"query": "a", "query": "b", "response": "r"}', "query"),
        ('{"query": "a", "response": "r", "response": "r"}', "response"),
        # inside an image object too
        ('{"query": "a", "response": "r", "images": [{"data": "x", "data": "y"}]}', "data"),
    ],
)
def test_a_duplicate_key_rejects_its_line_naming_the_key(tmp_path: Path, line, key):
    outcome = validate_dataset(write_lines(tmp_path / "d.jsonl", [GOOD, line]))
    assert outcome.table["line"].to_pylist() == [1]
    assert reasons_by_line(outcome) == {
        2: [f"line 2: duplicate key '{key}': JSON readers keep only one of its values"]
    }


def test_a_duplicate_key_in_json_metadata_rejects_its_line(tmp_path: Path):
    line = with_metadata('{"difficulty": "easy", "difficulty": "hard"}')
    outcome = validate_dataset(write_lines(tmp_path / "d.jsonl", [line]))
    assert outcome.no_rows
    assert "field 'metadata'" in outcome.rejected[0].reasons[0]
    assert "duplicate key 'difficulty'" in outcome.rejected[0].reasons[0]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_in_json_metadata_are_not_json(tmp_path: Path, constant):
    line = with_metadata(f'{{"score": {constant}}}')
    outcome = validate_dataset(write_lines(tmp_path / "d.jsonl", [GOOD, line]))
    assert outcome.table["line"].to_pylist() == [1]
    assert reasons_by_line(outcome) == {
        2: [
            "line 2, field 'metadata': the recipe says metadata is JSON "
            f"(dataset.metadata_format: json), but it is not: {constant} is not JSON "
            "(use null or a string)"
        ]
    }
    # as plain text, metadata is any string
    assert validate_dataset(str(tmp_path / "d.jsonl"), metadata_format="text").ok


# ---------------------------------------------------------------- unreadable paths


def symlink_loop(tmp_path: Path) -> Path:
    (tmp_path / "loop_a.jsonl").symlink_to(tmp_path / "loop_b.jsonl")
    (tmp_path / "loop_b.jsonl").symlink_to(tmp_path / "loop_a.jsonl")
    return tmp_path / "loop_a.jsonl"


def hostile_path(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A dataset path that cannot be read, and what the message must say about it."""
    if kind == "folder":
        (tmp_path / "data.jsonl").mkdir()
        return tmp_path / "data.jsonl", "dataset file is a folder, not a JSONL file"
    if kind == "symlink loop":
        return symlink_loop(tmp_path), "dataset file is a symbolic link loop"
    if kind == "dangling symlink":
        (tmp_path / "data.jsonl").symlink_to(tmp_path / "moved.jsonl")
        target = repr(str(tmp_path / "moved.jsonl"))
        return tmp_path / "data.jsonl", f"is a symbolic link to {target}, which does not exist"
    if kind == "fifo":  # reading one with no writer would never return
        os.mkfifo(tmp_path / "data.jsonl")
        return tmp_path / "data.jsonl", "dataset file is not a regular file (a pipe"
    raise AssertionError(kind)


KINDS = ["folder", "symlink loop", "dangling symlink", "fifo"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_unreadable_path_is_one_error_naming_it(tmp_path: Path, kind):
    path, expected = hostile_path(tmp_path, kind)
    with pytest.raises(DatasetFileError) as caught:
        validate_dataset(str(path))
    assert str(caught.value).startswith(f"{path}: ")
    assert expected in str(caught.value)


def test_an_s3_dataset_that_is_missing_or_a_prefix_is_named(s3):  # noqa: F811 (fixture)
    s3.put_object(Bucket=BUCKET, Key="folder/d.jsonl", Body=GOOD.encode())
    for location, expected in [
        (f"s3://{BUCKET}/typo.jsonl", "dataset file not found"),
        (f"s3://{BUCKET}/folder", "dataset file is a folder (a prefix), not a JSONL file"),
    ]:
        with pytest.raises(DatasetFileError) as caught:
            validate_dataset(location)
        assert str(caught.value) == f"{location}: {expected}"


def deny_reading(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Opening ``path`` fails as a file without read permission does for a non-root user
    (root reads a mode-000 file, so the tests simulate it)."""
    real_open = os.open

    def opener(file, flags, *args, **kwargs):
        if os.fspath(file) == str(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", opener)


def test_a_file_without_read_permission_is_named(tmp_path: Path, monkeypatch):
    path = Path(write_lines(tmp_path / "data.jsonl", [GOOD]))
    deny_reading(monkeypatch, path)
    with pytest.raises(DatasetFileError, match=r"data\.jsonl: dataset file cannot be read"):
        validate_dataset(str(path))


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root reads a mode-000 file; the simulated test above covers it",
)
def test_a_mode_000_file_is_named(tmp_path: Path):
    path = Path(write_lines(tmp_path / "data.jsonl", [GOOD]))
    path.chmod(0)
    try:
        with pytest.raises(DatasetFileError, match=r"cannot be read \(Permission denied\)"):
            validate_dataset(str(path))
    finally:
        path.chmod(0o600)


def test_a_read_failure_midway_names_the_file_and_the_last_line(tmp_path: Path, monkeypatch):
    path = write_lines(tmp_path / "data.jsonl", [GOOD, GOOD])
    real_lines = storage.iter_raw_lines

    def failing(location, max_bytes=None):
        lines = real_lines(location, max_bytes)
        yield next(lines)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(storage, "iter_raw_lines", failing)
    with pytest.raises(DatasetFileError) as caught:
        validate_dataset(path)
    assert str(caught.value) == (
        f"{path}: dataset file could not be read after line 1 ([Errno 5] Input/output error)"
    )


# ---------------------------------------------------------------- through the CLI


def point_at(make_recipe, data_path: str):
    """A recipe whose run.data_s3_path is ``data_path`` (relative: to the recipe's folder)."""
    return edit_recipe(make_recipe(), run={"data_s3_path": data_path})


@pytest.fixture
def cli_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`nova-eval run` on a recipe in its own Dagster home, where loading a model fails."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    # an ephemeral instance: a real one captures compute logs, which fights capsys
    instance = dg.DagsterInstance.ephemeral()
    monkeypatch.setattr(dg.DagsterInstance, "get", staticmethod(lambda: instance))

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded for a dataset that cannot be read")

    monkeypatch.setattr(stages.engine_setup, "create_engine", no_model)
    return lambda loaded: cli.main(["run", str(loaded.path), "--quiet"])


def test_run_with_a_missing_dataset_names_the_path_and_the_recipe_key(
    make_recipe, cli_run, tmp_path, capsys
):
    loaded = point_at(make_recipe, "tickets_typo.jsonl")
    assert cli_run(loaded) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'tickets_typo.jsonl'}: dataset file not found" in err
    assert (
        f"{loaded.path}: run.data_s3_path is 'tickets_typo.jsonl', relative to the recipe's "
        f"folder {tmp_path}; set it to the path of the dataset's .jsonl file"
    ) in err
    assert "Traceback" not in err and "validation_report" not in err
    assert "DatasetFileError" not in err  # the message speaks for itself, no class path
    assert not storage.exists(EvalLayout.for_recipe(loaded).validation_report)


def test_run_after_the_dataset_moved_does_not_use_the_last_report(
    make_recipe, cli_run, tmp_path, capsys
):
    loaded = make_recipe()
    stages.run_validation(loaded)  # an earlier run validated the dataset
    layout = EvalLayout.for_recipe(loaded)
    assert storage.exists(layout.validated)
    (tmp_path / "tiny.jsonl").rename(tmp_path / "elsewhere.jsonl")
    assert cli_run(loaded) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'tiny.jsonl'}: dataset file not found" in err
    assert "Traceback" not in err
    for stale in (layout.validation_report, layout.validated, layout.rejected_rows):
        assert not storage.exists(stale)  # no later stage can pick the old rows up


def test_run_with_an_absolute_dataset_path_says_so(make_recipe, cli_run, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "data.jsonl"
    loaded = point_at(make_recipe, str(missing))
    assert cli_run(loaded) == 1
    err = capsys.readouterr().err
    assert f"{missing}: dataset file not found" in err
    assert f"run.data_s3_path is '{missing}'; set it to the path" in err
    assert "relative to" not in err


@pytest.mark.parametrize("kind", ["folder", "symlink loop", "fifo"])
def test_validate_and_run_name_an_unreadable_dataset(make_recipe, cli_run, tmp_path, capsys, kind):
    path, expected = hostile_path(tmp_path, kind)
    loaded = point_at(make_recipe, path.name)
    assert cli.main(["validate", str(loaded.path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}: ") and expected in err
    assert "Traceback" not in err
    assert cli_run(loaded) == 1
    err = capsys.readouterr().err
    assert f"{path}: " in err and expected in err and "run.data_s3_path" in err
    assert "Traceback" not in err


def test_validate_and_run_name_a_dataset_without_read_permission(
    make_recipe, cli_run, tmp_path, capsys, monkeypatch
):
    loaded = make_recipe()
    deny_reading(monkeypatch, tmp_path / "tiny.jsonl")
    expected = f"{tmp_path / 'tiny.jsonl'}: dataset file cannot be read (Permission denied)"
    assert cli.main(["validate", str(loaded.path)]) == 2
    assert expected in capsys.readouterr().err
    assert cli_run(loaded) == 1
    assert expected in capsys.readouterr().err


def test_a_relative_dangling_symlink_names_the_missing_target(
    make_recipe, cli_run, tmp_path, capsys
):
    hostile_path(tmp_path, "dangling symlink")
    loaded = point_at(make_recipe, "data.jsonl")  # resolved through the link
    expected = f"{tmp_path / 'moved.jsonl'}: dataset file not found"
    assert cli.main(["validate", str(loaded.path)]) == 2
    assert expected in capsys.readouterr().err
    assert cli_run(loaded) == 1
    assert expected in capsys.readouterr().err


def test_an_unreadable_training_channel_file_names_the_channel(make_recipe, tmp_path, monkeypatch):
    channel = tmp_path / "train"
    channel.mkdir()
    data = Path(write_lines(channel / "data.jsonl", [GOOD]))
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(channel))
    loaded = point_at(make_recipe, "")  # empty: SageMaker's training channel
    deny_reading(monkeypatch, data)
    with pytest.raises(DatasetFileError) as caught:
        stages.run_validation(loaded)
    assert str(caught.value) == (
        f"{data}: dataset file cannot be read (Permission denied)\n"
        f"  {loaded.path}: run.data_s3_path is empty, which reads the one .jsonl file of "
        "SageMaker's training channel; fix that file, or set run.data_s3_path to the dataset"
    )
