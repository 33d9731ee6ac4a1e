"""A judge run's Inspect AI log: one sample per judged prompt (both passes), the summary's
scores as the log's results (report/inspect_log.py writes it)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
from inspect_ai.log import EvalSample
from inspect_ai.model import ChatCompletionChoice, ModelOutput
from inspect_ai.scorer import Score

from nova_eval_assets.engines.inspect_provider import STOP_REASONS, token_usage
from nova_eval_assets.judge.results import preference_counts
from nova_eval_assets.judge.rubric import is_rubric_table, row_scores
from nova_eval_assets.judge.settings import sampling_settings
from nova_eval_assets.layout import EvalLayout
from nova_eval_assets.recipe import LoadedRecipe
from nova_eval_assets.report.inspect_log import (
    assistant_message,
    column_values,
    conversation,
    eval_error,
    eval_results,
    recipe_eval_header,
    sample_batch_rows,
    sample_metadata,
    write_inspect_log,
)


def judge_input(prompt: str, response_a: str, response_b: str, sides: tuple[str, str]) -> str:
    """What the judge compared, as one message: the prompt and both responses, labelled
    with ``sides`` (the baseline's and the challenger's labels)."""
    return (
        f"[Prompt]\n{prompt}\n\n[Response A: {sides[0]}]\n{response_a}\n\n"
        f"[Response B: {sides[1]}]\n{response_b}"
    )


def judgments_to_samples(
    table: pa.Table | pa.RecordBatch,
    model: str,
    scorer: str,
    weighted_scores: Mapping[str, Sequence[float]],
) -> list[EvalSample]:
    """A judge's judgments (judge/pairwise.py: one row per prompt, both passes) as Inspect
    samples: the input shows the prompt and both responses; the output's two choices are
    the forward pass's answer (A shown first) and the backward pass's; the score
    ``scorer`` (the task) holds the row's counts as the details name them (a_scores,
    b_scores, ties, inference_error, score), ``outcome`` (A, B or tie; also its answer; its
    explanation: both rationales) and ``weighted_scores`` (a rubric's weighted scores, one
    value per row; NaN: none). A prompt whose two requests both failed is an error
    sample."""
    column = {name: column_values(table, name) for name in _JUDGMENT_COLUMNS}
    samples = []
    for i in range(table.num_rows):
        sides = (column["baseline"][i] or "A", column["challenger"][i] or "B")
        responses = (column["response_A"][i] or "", column["response_B"][i] or "")
        text = judge_input(column["prompt"][i] or "", *responses, sides)
        messages = conversation(column["system"][i], text)
        passes = ("forward", "backward")
        answers = [
            assistant_message(column[f"{p}_raw"][i] or "", None, model, judge_pass=p)
            for p in passes
        ]
        usages = [token_usage(0, column[f"{p}_completion_tokens"][i]) for p in passes]
        usage = usages[0] + usages[1]
        choices = [
            ChatCompletionChoice(
                message=answer,
                stop_reason=STOP_REASONS.get(column[f"{p}_finish_reason"][i] or "", "unknown"),
            )
            for p, answer in zip(passes, answers, strict=True)
        ]
        latency = sum(column[f"{p}_latency_s"][i] or 0.0 for p in passes)
        preferences = [column[f"{p}_preference"][i] for p in passes]
        values: dict[str, Any] = preference_counts(preferences)
        values["outcome"] = column["outcome"][i] or ""
        for name, weighted in weighted_scores.items():
            if not math.isnan(weighted[i]):
                values[name] = float(weighted[i])
        rationale = "\n\n".join(
            f"{p}: {column[f'{p}_rationale'][i]}" for p in passes if column[f"{p}_rationale"][i]
        )
        score = Score(value=values, answer=values["outcome"], explanation=rationale or None)
        errors = [column[f"{p}_error"][i] for p in passes]
        failed = all(e and e.startswith("generation failed") for e in errors)
        samples.append(
            EvalSample(
                id=column["row_index"][i],
                epoch=1,
                input=text,
                target="",
                messages=[*messages, *answers],
                output=ModelOutput(model=model, choices=choices, usage=usage, time=latency),
                scores=None if failed else {scorer: score},
                metadata=sample_metadata(
                    column["metadata"][i],
                    line=column["line"][i],
                    baseline=sides[0],
                    challenger=sides[1],
                    **{f"{p}_{k}": column[f"{p}_{k}"][i] for p in passes for k in _PASS_FIELDS},
                    soft_b_preference=column["soft_b_preference"][i],
                ),
                model_usage={model: usage},
                total_time=latency,
                working_time=latency,
                error=eval_error(str(errors[0])) if failed else None,
            )
        )
    return samples


_PASS_FIELDS = ("verdict", "preference", "error", "verdict_logprobs")
_JUDGMENT_COLUMNS = (
    "row_index", "line", "prompt", "system", "response_A", "response_B", "metadata",
    "baseline", "challenger", "soft_b_preference", "outcome",
    *(f"{p}_{k}" for p in ("forward", "backward") for k in (
        "raw", "rationale", "verdict", "preference", "error", "finish_reason",
        "completion_tokens", "latency_s", "verdict_logprobs",
    )),
)  # fmt: skip


def write_judge_inspect_log(loaded: LoadedRecipe, table: pa.Table, document: dict[str, Any]) -> str:
    """The judge run's Inspect log (report/inspect_log.py), named after its results JSON
    (``document``): a sample per judged prompt, streamed from ``table`` in batches, and the
    results' summary as its scores."""
    config_general = document["config_general"]
    model = config_general["model_name"]
    engine = {"backend": config_general["judge_backend"], "model": config_general["judge_model_id"]}
    spec, plan, stats = recipe_eval_header(
        loaded, config_general, table.num_rows, sampling_settings(loaded), engine
    )
    task = loaded.recipe.evaluation.task
    scores = row_scores(table) if is_rubric_table(table) else {}
    size = sample_batch_rows()

    def batches() -> Iterator[list[EvalSample]]:
        for start in range(0, table.num_rows, size):
            part = {name: values[start : start + size] for name, values in scores.items()}
            yield judgments_to_samples(table.slice(start, size), model, task, part)

    results = eval_results(
        document["results"], task, families={"winrate": list(WINRATE_FAMILY)}, headline="winrate"
    )
    results.metadata = {"diagnostics": document["diagnostics"]}
    location = EvalLayout.for_recipe(loaded).inspect_log(config_general["timestamp"], task)
    return write_inspect_log(location, spec, batches(), results, stats, plan=plan)


#: the summary's Bradley-Terry estimate and its bootstrap interval: one score of the log
WINRATE_FAMILY = ("winrate", "lower_rate", "upper_rate")
