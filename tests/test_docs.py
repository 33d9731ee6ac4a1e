"""The docs: the generated recipe reference covers the whole recipe model (walked here from
its JSON schema, independently of the hook's own walk) and says which keys are Nova's; the
site builds under --strict; the README stays short and shows the two commands."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from nova_eval_assets.recipe import Recipe

ROOT = Path(__file__).resolve().parent.parent
HOOK = ROOT / "docs" / "hooks" / "recipe_reference.py"
PAGE = ROOT / "docs" / "recipe-reference.md"
NOVA_RECIPES = ROOT / "tests" / "recipes" / "nova"
ROW = re.compile(r"^\| `(?P<key>[^`]+)` \|.*\| (?P<origin>Nova|extension) \|$")
SECTION = re.compile(
    r"^### `(?P<section>[^`]+)`\n\nSection defined by: \*\*(?P<origin>\w+)\*\*", re.MULTILINE
)


def load_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("recipe_reference_hook", HOOK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def schema_keys() -> tuple[set[str], set[str]]:
    """(dotted leaf keys, dotted section keys) of the recipe model, from its JSON schema."""
    schema = Recipe.model_json_schema()
    defs = schema.get("$defs", {})

    def resolve(node: dict) -> dict | None:
        """The section schema a property holds (through $ref and `X | None`), if any."""
        for option in [node, *node.get("anyOf", [])]:
            if "$ref" in option:
                option = defs[option["$ref"].rsplit("/", 1)[1]]
            if "properties" in option:
                return option
        return None

    leaves: set[str] = set()
    sections: set[str] = set()

    def walk(node: dict, prefix: str) -> None:
        for name, prop in node["properties"].items():
            key = f"{prefix}{name}"
            section = resolve(prop)
            if section is None:
                leaves.add(key)
            else:
                sections.add(key)
                walk(section, key + ".")

    walk(schema, "")
    return leaves, sections


def nova_keys() -> set[str]:
    keys: set[str] = set()

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                keys.add(prefix + name)
                walk(value, f"{prefix}{name}.")

    for path in NOVA_RECIPES.glob("*.yaml"):
        walk(yaml.safe_load(path.read_text(encoding="utf-8")), "")
    return keys


@pytest.fixture(scope="module")
def reference() -> str:
    """The page as the build renders it: the hook's page event over docs/recipe-reference.md."""
    source = PAGE.read_text(encoding="utf-8")
    assert "<!-- recipe-reference -->" in source
    text = load_hook().on_page_markdown(source, page=None, config=None, files=None)
    assert "<!-- recipe-reference -->" not in text
    return text


def rows(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        match = ROW.match(line)
        if match:
            assert match["key"] not in found, f"{match['key']} listed twice"
            found[match["key"]] = match["origin"]
    return found


def test_reference_lists_every_key_of_the_recipe_model(reference: str) -> None:
    leaves, sections = schema_keys()
    assert {"run.model_name_or_path", "inference.response_format.schema"} <= leaves
    assert {"inference.server", "processor.preprocessing"} <= sections
    for key in sorted(leaves):
        assert f"`{key}`" in reference, f"{key} is missing from the recipe reference"
    assert set(rows(reference)) == leaves
    headings = {match["section"] for match in SECTION.finditer(reference)}
    assert headings == sections


def test_reference_marks_nova_keys_and_extensions(reference: str) -> None:
    origins = rows(reference)
    assert origins["run.model_name_or_path"] == "Nova"
    assert origins["processor.postprocessing.enabled"] == "Nova"
    assert origins["inference.response_format.type"] == "extension"
    assert origins["inference.engine"] == "extension"
    sections = {match["section"]: match["origin"] for match in SECTION.finditer(reference)}
    assert sections["inference.response_format"] == "extension"
    assert sections["run"] == "Nova"
    nova = nova_keys()
    for key, origin in origins.items():
        assert origin == ("Nova" if key in nova else "extension"), key


def test_reference_shows_types_defaults_and_ranges(reference: str) -> None:
    line = next(row for row in reference.splitlines() if row.startswith("| `run.replicas` |"))
    assert "integer" in line and "`1`" in line and "1 ≤ x ≤ 1024" in line
    line = next(row for row in reference.splitlines() if row.startswith("| `inference.engine` |"))
    assert "`hf`, `openai`, `bedrock`, `vllm`" in line


def test_site_builds_strict(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    html = (tmp_path / "recipe-reference" / "index.html").read_text(encoding="utf-8")
    assert "run.model_name_or_path" in html and "inference.response_format.type" in html
    # the README's make-eval excerpt and BENCHMARKS.md are included, not copied
    assert "Paired comparison" in (tmp_path / "index.html").read_text(encoding="utf-8")
    benchmarks = (tmp_path / "benchmarks" / "index.html").read_text(encoding="utf-8")
    assert "bench/tables.py" in benchmarks


def test_readme_is_short_and_shows_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    assert "make eval" in readme and "make test" in readme
    assert readme.count("<!-- make-eval:begin -->") == readme.count("<!-- make-eval:end -->") == 1
    for link in re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", readme):
        assert (ROOT / link).is_file(), f"README links to {link}, which does not exist"
