"""Hostile recipes and CLI flags: each ends in one message naming the file, the line and the
key (or the flag), in bounded time and memory, and never echoes more than a short prefix of
a bad value. The parses that once took minutes or gigabytes run in a subprocess under a
memory limit and a timeout, so a regression fails the test instead of the machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nova_eval_assets.cli import main as cli_main
from nova_eval_assets.recipe import RecipeError, load_recipe, parse_recipe
from tests.conftest import PROJECT
from tests.test_recipe import VALID, error_for, with_line

# VALID's lines, counted by hand: 2 run.name, 5 run.replicas, 12 inference, 17 top_logprobs
LAST_LINE = 17
PUBLISHED_RECIPE = PROJECT / "recipes" / "support_tickets.yaml"

# Parses `sys.stdin` under a 2 GiB address-space limit; prints the outcome as JSON.
BOUNDED_PARSE = r"""
import json, resource, sys, time, tracemalloc
from nova_eval_assets.recipe import RecipeError, parse_recipe
text = sys.stdin.read()
resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))
if "--trace-memory" in sys.argv:
    tracemalloc.start()
started = time.perf_counter()
try:
    parse_recipe(text, source="r.yaml")
    message = None
except RecipeError as exc:
    message = str(exc)
seconds = time.perf_counter() - started
peak = tracemalloc.get_traced_memory()[1] if tracemalloc.is_tracing() else None
print(json.dumps({"message": message, "seconds": seconds, "peak_bytes": peak}))
"""


def bounded_parse(text: str, *, trace_memory: bool = False, timeout_s: float = 60) -> dict:
    """parse_recipe(text) in a subprocess limited to 2 GiB and `timeout_s` seconds."""
    flags = ["--trace-memory"] if trace_memory else []
    done = subprocess.run(
        [sys.executable, "-c", BOUNDED_PARSE, *flags],
        input=text,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=PROJECT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def laughs(indent: str) -> list[str]:
    """The "billion laughs": 9 levels of 9 aliases each, 9**9 strings once expanded."""
    lines = [f"{indent}a: &a [x, x, x, x, x, x, x, x, x]"]
    for level, name in enumerate("bcdefghi"):
        previous = "abcdefgh"[level]
        lines.append(f"{indent}{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    return lines


# ---------------------------------------------------------------- the file's bytes


def test_recipe_that_is_not_utf8_names_the_line_and_byte(tmp_path: Path, capsys):
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes(VALID.replace("name: demo", "name: démo").encode("latin-1"))
    # "run:\n  name: d" is 14 bytes: the é (0xe9 in Latin-1) is byte 14, on line 2
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe)
    message = str(info.value)
    assert message.startswith(f"{recipe}:2: not UTF-8 text"), message
    assert "0xe9" in message and "offset 14" in message

    assert cli_main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert f"{recipe}:2: not UTF-8" in err and "Traceback" not in err


def test_utf16_recipe_is_named_as_such(tmp_path: Path):
    recipe = tmp_path / "utf16.yaml"
    recipe.write_bytes(VALID.encode("utf-16"))
    with pytest.raises(RecipeError, match=r"utf16\.yaml:1: not UTF-8 text.*UTF-16"):
        load_recipe(recipe)


def test_character_yaml_refuses_names_its_line():
    message = error_for(VALID.replace("name: demo", "name: de\x07mo"))
    assert message.startswith("r.yaml:2: not valid YAML"), message
    assert "#x0007" in message


def test_oversized_file_is_refused_before_parsing(tmp_path: Path):
    recipe = tmp_path / "huge.yaml"
    recipe.write_text(VALID + "# padding\n" * 500_000)  # 5 MB of comments
    with pytest.raises(RecipeError, match=r"huge\.yaml: larger than 4 MiB"):
        load_recipe(recipe)


# ---------------------------------------------------------------- CLI flags


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--limit", "0", "0 is out of range; allowed: >= 1 (run.limit)"),
        ("--limit", "-3", "-3 is out of range; allowed: >= 1 (run.limit)"),
        ("--replicas", "0", "0 is out of range; allowed: 1..1024 (run.replicas)"),
        ("--replicas", "1025", "1025 is out of range; allowed: 1..1024 (run.replicas)"),
        (
            "--max-new-tokens",
            "0",
            "0 is out of range; allowed: 1..100000 (inference.max_new_tokens)",
        ),
        (
            "--max-new-tokens",
            "-1",
            "-1 is out of range; allowed: 1..100000 (inference.max_new_tokens)",
        ),
        ("--replicas", "two", "'two' is not an integer; allowed: 1..1024"),
    ],
)
def test_out_of_range_run_flag_exits_2_naming_flag_and_range(flag, value, expected, capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["run", str(PUBLISHED_RECIPE), flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: {expected}" in err, err
    assert "Traceback" not in err


def test_query_max_rows_must_be_positive(capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["query", "SELECT 1", "--max-rows", "-1"])
    assert info.value.code == 2
    assert "argument --max-rows: '-1' is not a positive integer" in capsys.readouterr().err


def test_overrides_in_code_are_checked_like_the_flags(tmp_path: Path):
    (tmp_path / "demo.yaml").write_text(VALID)
    loaded = load_recipe(tmp_path / "demo.yaml")
    with pytest.raises(RecipeError) as info:
        loaded.with_overrides(limit=0)
    assert (
        str(info.value) == f"{loaded.path}: --limit: 0 is out of range; allowed: >= 1 (run.limit)"
    )
    with pytest.raises(RecipeError, match=r"--replicas: True is not an integer"):
        loaded.with_overrides(replicas=True)
    assert loaded.with_overrides(max_new_tokens=100_000).recipe.inference.max_new_tokens == 100_000


# ---------------------------------------------------------------- aliases and nesting


@pytest.mark.parametrize(
    ("lines", "first_alias"),
    [
        # the value of a known list key: anchors and aliases inline
        (
            [
                "analysis:",
                "  compare_with: [&a [x, x, x, x, x, x, x, x, x], "
                + ", ".join(
                    f"&{name} [{', '.join([f'*{prev}'] * 9)}]"
                    for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
                )
                + "]",
            ],
            "  compare_with: [&a",
        ),
        # a response_format schema (llguidance's compiler would expand it)
        (
            ["  response_format:", "    type: json_schema", "    schema:", *laughs("      ")],
            "      b: &b",
        ),
    ],
    ids=["compare_with", "response_format_schema"],
)
def test_billion_laughs_is_refused_in_bounded_memory_and_time(lines, first_alias):
    text = VALID + "\n".join(lines) + "\n"
    alias_line = next(n for n, line in enumerate(text.splitlines(), 1) if first_alias in line)
    outcome = bounded_parse(text, trace_memory=True)
    message = outcome["message"]
    assert message is not None
    assert message.startswith(f"r.yaml:{alias_line}: "), message
    assert "YAML aliases (*name) are not allowed in a recipe" in message
    assert len(message) < 300
    assert outcome["peak_bytes"] < 20 * 1024**2
    assert outcome["seconds"] < 5


def test_merge_key_is_refused():
    text = VALID.replace("run:\n", "run:\n  <<: {replicas: 3}\n")
    assert error_for(text).startswith("r.yaml:2: YAML merge keys (<<) are not allowed")


def test_deep_nesting_is_refused_at_its_line():
    depth = 500  # deeper than Python's recursive YAML composer can go
    schema = "[" * depth + "]" * depth
    text = VALID + f"  response_format:\n    type: json_schema\n    schema: {schema}\n"
    message = error_for(text)
    assert message.startswith(f"r.yaml:{LAST_LINE + 3}: "), message
    assert "nested more than 64 levels deep" in message
    assert len(message) < 300


# ---------------------------------------------------------------- many keys, long values


def test_forty_thousand_unknown_keys_fail_fast_with_a_capped_list():
    keys = 40_000
    text = VALID + "".join(f"  unknown_{i}: 1\n" for i in range(keys))
    outcome = bounded_parse(text)
    assert outcome["seconds"] < 10
    lines = outcome["message"].splitlines()
    assert lines[0].startswith(f"r.yaml:{LAST_LINE + 1}: unknown key 'inference.unknown_0'")
    assert lines[19].startswith(f"r.yaml:{LAST_LINE + 20}: unknown key 'inference.unknown_19'")
    assert lines[20:] == [f"r.yaml: ... and {keys - 20} more problems"]


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("  replicas: 2", "  replicas: '" + "7" * 10_000 + "'", "run.replicas"),
        ("  task: gen_qa", "  task: " + "q" * 10_000, "evaluation.task"),
        ("  top_k: -1", "  ? " + "k" * 10_000 + "\n  : 1", "inference.kkkk"),  # explicit key
        ("  name: demo", "  name: " + "n" * 10_000, "run.name"),
    ],
    ids=["wrong_type", "literal", "unknown_key", "validator"],
)
def test_long_bad_value_is_shown_as_a_short_prefix(old, new, key):
    message = error_for(with_line(old, new))
    assert message.startswith("r.yaml:"), message
    assert key in message
    assert len(message) < 1000, message[:2000]


def test_long_cron_and_timezone_messages_stay_short():
    text = VALID + "schedule:\n  cron: '" + "0 " * 5_000 + "'\n  timezone: " + "x" * 5_000 + "\n"
    message = error_for(text)
    assert "schedule.cron" in message and "schedule.timezone" in message
    assert len(message) < 1000, message[:2000]


def test_timezone_that_is_a_folder_is_an_error_not_a_traceback():
    message = error_for(VALID + "schedule:\n  cron: '@daily'\n  timezone: America\n")
    assert message.startswith(f"r.yaml:{LAST_LINE + 3}: schedule.timezone: 'America' is not")


# ---------------------------------------------------------------- duplicate keys


def test_duplicate_key_in_a_section_names_both_lines():
    text = with_line("  name: demo\n", "  name: demo\n  name: other\n")
    assert error_for(text).startswith(
        "r.yaml:3: duplicate key 'run.name' (first on line 2); a key may appear once"
    )


def test_duplicate_section_names_both_lines():
    text = VALID + "run:\n  name: again\n"
    assert error_for(text).startswith(
        f"r.yaml:{LAST_LINE + 1}: duplicate key 'run' (first on line 1)"
    )


def test_same_key_in_two_sections_is_not_a_duplicate():
    recipe = parse_recipe(VALID + "  seed: 7\nanalysis:\n  seed: 8\n")
    assert (recipe.inference.seed, recipe.analysis.seed) == (7, 8)


# ---------------------------------------------------------------- strict types


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "  replicas: 2",
            "  replicas: true",
            "r.yaml:5: run.replicas: Input should be a valid integer (got True)",
        ),
        (
            "  replicas: 2",
            '  replicas: "2"',
            "r.yaml:5: run.replicas: Input should be a valid integer (got '2')",
        ),
        (
            "  replicas: 2",
            "  replicas: 2.0",
            "r.yaml:5: run.replicas: Input should be a valid integer (got 2.0)",
        ),
        (
            "  top_logprobs: 5",
            "  top_logprobs: '5'",
            "r.yaml:17: inference.top_logprobs: Input should be a valid integer",
        ),
        (
            "  top_p: 1.0",
            "  top_p: '0.9'",
            "r.yaml:15: inference.top_p: Input should be a valid number",
        ),
    ],
)
def test_values_of_another_type_are_not_coerced(old, new, expected):
    assert error_for(with_line(old, new)).startswith(expected)


def test_switch_that_is_a_string_is_not_coerced():
    text = VALID + "processor:\n  handler: x.py:f\n  postprocessing:\n    enabled: 'yes'\n"
    assert error_for(text).startswith(
        f"r.yaml:{LAST_LINE + 4}: processor.postprocessing.enabled: Input should be a valid boolean"
    )


def test_int_still_fills_a_float_key():
    recipe = parse_recipe(with_line("  top_p: 1.0", "  top_p: 1"))
    assert recipe.inference.top_p == 1.0 and recipe.inference.temperature == 0.0
