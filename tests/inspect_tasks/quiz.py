"""An Inspect task of our own for the tests: six short questions, a system message and
generate() as the solver, an exact match and a model-graded scorer (the model under
evaluation grades itself: Inspect's default grader is the task's model)."""

from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.scorer import includes, model_graded_qa
from inspect_ai.solver import generate, system_message

QUESTIONS = [
    ("What is the capital of France?", "Paris", "geography"),
    ("What colour is the sky on a clear day?", "blue", "nature"),
    ("How many legs does a spider have?", "eight", "nature"),
    ("What is the capital of Japan?", "Tokyo", "geography"),
    ("What is two plus two?", "four", "arithmetic"),
    ("Which planet do we live on?", "Earth", "nature"),
]


@task
def quiz(grader: bool = True) -> Task:
    scorers = [includes(), model_graded_qa()] if grader else [includes()]
    return Task(
        dataset=[
            Sample(input=question, target=answer, id=f"q{i}", metadata={"topic": topic})
            for i, (question, answer, topic) in enumerate(QUESTIONS, 1)
        ],
        solver=[system_message("Answer in a few words."), generate()],
        scorer=scorers,
    )
