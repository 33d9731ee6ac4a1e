"""An Inspect task of our own that asks for structured output: its response_schema is the
engine's constrained decoding (engines/inspect_provider.py)."""

from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.model import GenerateConfig, ResponseSchema
from inspect_ai.scorer import includes
from inspect_ai.solver import generate
from inspect_ai.util import json_schema
from pydantic import BaseModel


class Colour(BaseModel):
    name: str
    warm: bool


SCHEMA = json_schema(Colour)


@task
def colours() -> Task:
    return Task(
        dataset=[
            Sample(input="Name a warm colour, as JSON.", target="red", id="warm"),
            Sample(input="Name a cold colour, as JSON.", target="blue", id="cold"),
        ],
        solver=[generate()],
        scorer=includes(),
        config=GenerateConfig(response_schema=ResponseSchema(name="colour", json_schema=SCHEMA)),
    )
