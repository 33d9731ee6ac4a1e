"""Which engine sources go into an engine's code version: every module it imports (so a change
that can change its generations re-runs inference), and no other engine's (so editing the hf
decoder does not invalidate an openai evaluation's finished rows)."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from nova_eval_assets import lineage

#: modules that do not change what a model writes: the factory, the managed server process,
#: the split of CPU threads among replica processes
NEUTRAL = {"__init__.py", "server.py", "cpu_threads.py"}


def relative_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            names.add(node.module.split(".")[0] + ".py")
    return names


def closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(relative_imports(lineage.ENGINES_FOLDER / name) - seen)
    return seen


@pytest.mark.parametrize("engine", ["hf", "openai", "bedrock", "vllm"])
def test_an_engine_hashes_every_module_it_imports(engine):
    imported = closure(f"{engine}.py") - NEUTRAL
    assert imported <= set(lineage._ENGINE_SOURCES[engine])


def test_editing_the_hf_engine_changes_only_hf_code_versions(tmp_path):
    copy = tmp_path / "engines"
    shutil.copytree(lineage.ENGINES_FOLDER, copy)
    before = {e: lineage.engine_source_hash(e, copy) for e in ("hf", "openai", "bedrock")}
    lineage.engine_source_hash.cache_clear()
    with (copy / "hf.py").open("a") as handle:
        handle.write("\n# a change\n")
    after = {e: lineage.engine_source_hash(e, copy) for e in ("hf", "openai", "bedrock")}
    lineage.engine_source_hash.cache_clear()
    assert after["hf"] != before["hf"]
    assert after["openai"] == before["openai"] and after["bedrock"] == before["bedrock"]
