"""Shared fixtures: small recipes over slices of the shipped support-ticket dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from nova_eval_assets.recipe import LoadedRecipe, load_recipe

PROJECT = Path(__file__).resolve().parents[1]
TICKETS = PROJECT / "recipes" / "data" / "support_tickets.jsonl"


def ticket_lines(count: int) -> list[str]:
    return TICKETS.read_text(encoding="utf-8").splitlines()[:count]


@pytest.fixture
def make_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., LoadedRecipe]:
    """Write a recipe (and its dataset) into tmp_path; outputs go to tmp_path/outputs."""
    monkeypatch.setenv("NOVA_EVAL_OUTPUT_ROOT", str(tmp_path / "outputs"))

    def make(
        lines: list[str] | None = None,
        name: str = "tiny",
        replicas: int = 1,
        inference: dict | None = None,
        dataset: dict | None = None,
    ) -> LoadedRecipe:
        data = tmp_path / f"{name}.jsonl"
        data.write_text("\n".join(lines if lines is not None else ticket_lines(6)) + "\n")
        recipe = {
            "run": {
                "name": name,
                "model_type": "hf",
                "model_name_or_path": "smollm2-135m-instruct",
                "replicas": replicas,
                "data_s3_path": data.name,
                "output_s3_path": "",
            },
            "evaluation": {"task": "gen_qa", "strategy": "gen_qa", "metric": "all"},
            "inference": {
                "max_new_tokens": 8,
                "top_k": -1,
                "top_p": 1.0,
                "temperature": 0,
                "top_logprobs": 3,
                "batch_size": 2,
                **(inference or {}),
            },
        }
        if dataset:
            recipe["dataset"] = dataset
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        return load_recipe(path)

    return make


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face hub cache, read offline (no network): what a machine that has
    never reached the hub sees. huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE once,
    at import, so its constants are set as well as the environment."""
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    cache.mkdir()
    for name, value in (("HF_HUB_CACHE", str(cache)), ("HF_HUB_OFFLINE", True)):
        monkeypatch.setenv(name, "1" if value is True else value)
        monkeypatch.setattr(constants, name, value)
    return cache
