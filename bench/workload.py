"""What the benchmarks run: the support tickets repeated to N rows, written as JSONL, a
gen_qa recipe for the openai engine over them, and the evaluation's stages called directly.

Used by bench/client.py, openai_engine.py, scale.py, replicas.py, orchestration.py and
processor_overhead.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from nova_eval_assets.recipe import LoadedRecipe

ROOT = Path(__file__).resolve().parent.parent
TICKETS = ROOT / "recipes" / "data" / "support_tickets.jsonl"


def ticket_rows(count: int, mark: Callable[[int], str] | None = None) -> Iterator[dict[str, Any]]:
    """The support tickets repeated to `count` rows, one at a time.

    With `mark`, each row's query is prefixed with ``mark(copy)``, `copy` the number of the
    repetition it belongs to (0 for the first), so that the copies differ; without, the
    copies of a ticket are the same dict."""
    lines = TICKETS.read_text(encoding="utf-8").splitlines()
    tickets = [json.loads(line) for line in lines if line.strip()]
    for index in range(count):
        copy, position = divmod(index, len(tickets))
        ticket = tickets[position]
        yield {**ticket, "query": mark(copy) + ticket["query"]} if mark else ticket


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    """`rows` as JSON lines at `path`, written as they come (UTF-8, not escaped: as the
    tickets file itself is written); `path`."""
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def write_recipe(
    path: Path,
    *,
    name: str,
    model: str,
    url: str,
    data: str,
    replicas: int = 1,
    model_type: str = "openai",
    classification: dict[str, Any] | None = None,
    **inference: Any,
) -> Path:
    """A gen_qa recipe at `path` for the openai engine at `url` serving `model`: the run
    `name` over `data` (its ``data_s3_path`` as written: relative to the recipe's folder or
    absolute) with `replicas` replicas; the `inference` keys after ``engine`` and
    ``endpoint``, in the order given; a ``classification`` block when given. `path`."""
    recipe: dict[str, Any] = {
        "run": {
            "name": name,
            "model_type": model_type,
            "model_name_or_path": model,
            "replicas": replicas,
            "data_s3_path": data,
            "output_s3_path": "",
        },
        "evaluation": {"task": "gen_qa", "strategy": "gen_qa", "metric": "all"},
        "inference": {"engine": "openai", "endpoint": url, **inference},
    }
    if classification is not None:
        recipe["classification"] = classification
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def run_stages(loaded: LoadedRecipe) -> dict[str, Any]:
    """The evaluation up to its report through the stage functions, in the order the Dagster
    assets call them (validate, prompts, inference and metrics per replica, report), without
    Dagster: the report."""
    from nova_eval_assets import stages  # here: the scripts that only write inputs need none

    stages.validate_or_raise(loaded)
    stages.build_prompts(loaded)
    for replica in range(loaded.recipe.run.replicas):
        stages.run_inference(loaded, replica)
        stages.score_replica(loaded, replica)
    return stages.write_report(loaded)
