"""An Inspect AI task of our own: four questions on capitals, answered in a word.

Run it with nova-eval (recipes/inspect_sample.yaml) or with Inspect itself
(``inspect eval recipes/inspect/capitals.py@capitals --model <provider>/<model>``).
"""

from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.scorer import includes, match
from inspect_ai.solver import generate, system_message

QUESTIONS = [
    ("What is the capital of France?", "Paris", "europe"),
    ("What is the capital of Japan?", "Tokyo", "asia"),
    ("What is the capital of Italy?", "Rome", "europe"),
    ("What is the capital of Egypt?", "Cairo", "africa"),
]


@task
def capitals() -> Task:
    return Task(
        dataset=[
            Sample(input=question, target=answer, id=f"q{i}", metadata={"region": region})
            for i, (question, answer, region) in enumerate(QUESTIONS, 1)
        ],
        solver=[system_message("Answer with the name of the city only."), generate()],
        scorer=[match(location="any", ignore_case=True), includes()],
    )
