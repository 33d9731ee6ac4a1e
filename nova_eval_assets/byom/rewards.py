"""Reward functions: Nova's RFT contract, called in batches, and the two preset rewards.

A reward function scores the model's answers as RFT training does (Nova's ``rft_eval``
task, ``rl_env.reward_lambda_arn``; or ``processor.lambda_type: rft`` on gen_qa). Each row
becomes a *sample*: its messages with the model's answer appended as the assistant turn,
its ``reference_answer`` and an ``id``::

    {"id": "7", "messages": [{"role": "system", ...}?, {"role": "user", "content": ...},
                             {"role": "assistant", "content": <the answer>}],
     "reference_answer": <any JSON>}

The function gets a *list* of samples per call and answers a list, one entry per sample::

    [{"id": "7", "aggregate_reward_score": 0.75,
      "metrics_list": [{"name": "accuracy", "value": 0.85, "type": "Metric"}, ...]}, ...]

bare, or wrapped as ``{"statusCode": 200, "body": <that list, or it as a JSON string>}``
(both forms are in AWS's own samples). A row's metrics are then ``lambda_reward_score`` and
``lambda_<name>`` for each entry of its ``metrics_list`` (``Reward`` and ``Metric`` alike).

What goes wrong for one row is that row's ``postprocess_error`` and the run goes on: no
entry for its id (a reply for other ids), two entries for it, two rows of a call with the
same id, a score that is not a finite number, a malformed ``metrics_list``. What goes wrong
for a whole call (a status other than 200, a body that is not a list, the function raised,
throttling past the retries: :mod:`runner`) is the error of each of its rows.

The presets (``processor.preset_reward_function``) run here, no function is called:

- ``prime_math``: 1.0 when the answer's last ``\\boxed{...}`` (else the whole answer) equals
  the reference (its own last boxed answer, else all of it) under the MATH task's grader
  (:func:`tasks.math_answers.math_answers_equal`), else 0.0.
- ``prime_code``: the answer's first fenced Python block (else the whole answer) run against
  the row's test cases, read from its metadata's ``test_cases``: ``{"inputs": [...],
  "outputs": [...]}``, each input fed as stdin and the printed output compared (stripped),
  or with ``"fn_name"``, each input a list of arguments of that function and its return
  value compared. One child process per row under the code runner's limits
  (:mod:`tasks.code_execution`); the reward is 1.0 when every case passes, and
  ``lambda_pass_rate`` the share that did (both 0.0 when the program does not get to its
  end: it exits, is killed or runs out of time). A row without usable test cases is an
  error.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nova_eval_assets.byom.runner import ProcessorRunner

REWARD_SCORE = "lambda_reward_score"
METRIC_PREFIX = "lambda_"
METRIC_TYPES = ("Reward", "Metric")
DEFAULT_BATCH_SIZE = 16
PRESETS = ("prime_math", "prime_code")


@dataclass(frozen=True)
class RewardOutcome:
    """One row's reward metrics, or why it has none."""

    metrics: list[tuple[str, float]]
    error: str | None = None
    seconds: float = 0.0


# ---------------------------------------------------------------- samples


def reward_sample(
    sample_id: str,
    system: str | None,
    prompt: str,
    answer: str,
    reference_answer: Any,
) -> dict[str, Any]:
    """What the reward function gets for one row."""
    messages = [{"role": "system", "content": system}] if system else []
    messages += [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": answer},
    ]
    return {"id": sample_id, "messages": messages, "reference_answer": reference_answer}


# ---------------------------------------------------------------- replies


def read_reply(answer: Any) -> tuple[list[Any] | None, str | None]:
    """(the reply's entries, None), or (None, why the whole reply is unusable)."""
    if isinstance(answer, dict) and "statusCode" in answer:
        status = answer["statusCode"]
        body = answer.get("body")
        if status != 200:
            return None, f"statusCode {status}: {body}"
        if isinstance(body, str):
            try:
                body = json.loads(body)
            except ValueError as exc:
                return None, f"malformed reply: the body is a string that is not JSON ({exc})"
        answer = body
    if not isinstance(answer, list):
        kind = type(answer).__name__
        return None, (
            f"malformed reply: expected a list with one entry per sample, got {kind} "
            "(or {'statusCode': 200, 'body': <that list>})"
        )
    return answer, None


def _number(value: Any, where: str) -> tuple[float | None, str | None]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, f"{where} must be a number, got {json.dumps(value)[:60]}"
    if not math.isfinite(value):
        return None, f"{where} must be a finite number, got {value}"
    return float(value), None


def entry_metrics(entry: Any) -> tuple[list[tuple[str, float]], str | None]:
    """One entry's metrics (``lambda_reward_score`` first), or why it has none."""
    score, problem = _number(entry.get("aggregate_reward_score"), "aggregate_reward_score")
    if problem is not None:
        return [], problem
    metrics = [(REWARD_SCORE, score)]
    items = entry.get("metrics_list", [])
    if not isinstance(items, list):
        return [], "metrics_list must be a list of {name, value, type}"
    for position, item in enumerate(items):
        where = f"metrics_list[{position}]"
        if not isinstance(item, dict):
            return [], f"{where} must be an object {{name, value, type}}"
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            return [], f"{where}.name must be a non-empty string"
        kind = item.get("type", "Metric")
        if kind not in METRIC_TYPES:
            return [], f"{where}.type must be 'Reward' or 'Metric', got {json.dumps(kind)}"
        value, problem = _number(item.get("value"), f"{where}.value")
        if problem is not None:
            return [], problem
        key = METRIC_PREFIX + name
        if any(key == taken for taken, _ in metrics):
            return [], f"{where}: the name {name!r} appears twice (or is 'reward_score')"
        metrics.append((key, value))
    return metrics, None


def attribute(entries: Sequence[Any], ids: Sequence[str]) -> list[RewardOutcome]:
    """Each sent id's outcome from the reply's ``entries`` (matched by ``id``)."""
    by_id: dict[str, list[Any]] = {}
    for entry in entries:
        if isinstance(entry, dict) and "id" in entry:
            by_id.setdefault(str(entry["id"]), []).append(entry)
    sent = Counter(ids)
    answered = [key for key in by_id if key not in sent]
    outcomes = []
    for sample_id in ids:
        found = by_id.get(sample_id, [])
        if sent[sample_id] > 1:
            error = f"id {sample_id!r} is the id of {sent[sample_id]} rows of this call"
        elif not found:
            other = f" (it answered ids {', '.join(map(repr, answered[:5]))})" if answered else ""
            error = f"the reply has no entry for id {sample_id!r}{other}"
        elif len(found) > 1:
            error = f"the reply has {len(found)} entries for id {sample_id!r}"
        else:
            metrics, error = entry_metrics(found[0])
            if error is None:
                outcomes.append(RewardOutcome(metrics))
                continue
            error = f"malformed reply for id {sample_id!r}: {error}"
        outcomes.append(RewardOutcome([], error))
    return outcomes


# ---------------------------------------------------------------- the function


class RewardFunction:
    """Calls a reward function (a local handler or a Lambda function, through the
    processor runner: its timeouts, retries and concurrency) in batches of samples, or runs
    a preset."""

    def __init__(
        self,
        runner: ProcessorRunner | None = None,
        preset: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ):
        if (runner is None) == (preset is None):
            raise ValueError("a reward function is a runner or a preset, not both or neither")
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"no preset reward function {preset!r}; allowed: {PRESETS}")
        self.runner = runner
        self.preset = preset
        self.batch_size = max(1, batch_size)

    @property
    def target(self) -> str:
        return self.runner.target if self.runner is not None else f"preset {self.preset}"

    def score(
        self, samples: Sequence[dict[str, Any]], metadata: Sequence[Mapping[str, Any]]
    ) -> list[RewardOutcome]:
        """Each sample's outcome, in order; ``metadata`` (the rows' own) is read by
        ``prime_code`` only."""
        if self.preset == "prime_math":
            return [_prime_math(s) for s in samples]
        if self.preset == "prime_code":
            return _prime_code(samples, metadata)
        assert self.runner is not None
        calls = [
            list(samples[start : start + self.batch_size])
            for start in range(0, len(samples), self.batch_size)
        ]
        results = self.runner.invoke_each(calls, read_reply)
        outcomes: list[RewardOutcome] = []
        for call, result in zip(calls, results, strict=True):
            ids = [sample["id"] for sample in call]
            share = result.seconds / len(call)
            if not result.ok:
                outcomes += [RewardOutcome([], result.error, share) for _ in call]
                continue
            outcomes += [
                RewardOutcome(o.metrics, o.error, share) for o in attribute(result.body, ids)
            ]
        return outcomes


# ---------------------------------------------------------------- presets


def _answer_text(sample: Mapping[str, Any]) -> str:
    return sample["messages"][-1]["content"] or ""


def _reference_text(reference: Any) -> str:
    return reference if isinstance(reference, str) else json.dumps(reference)


def _prime_math(sample: Mapping[str, Any]) -> RewardOutcome:
    from nova_eval_assets.tasks.math_answers import last_boxed_answer, math_answers_equal

    answer = _answer_text(sample)
    reference = _reference_text(sample["reference_answer"])
    given = last_boxed_answer(answer) or answer.strip()
    gold = last_boxed_answer(reference) or reference.strip()
    equal = bool(given) and math_answers_equal(given, gold)
    return RewardOutcome([(REWARD_SCORE, 1.0 if equal else 0.0)])


_CASES_PROGRAM = """\
import contextlib, io, json, sys
SOLUTION = {solution!r}
CASES = json.loads({cases!r})
FN_NAME = {fn_name!r}
passed = 0
failures = []
for position, (given, expected) in enumerate(zip(CASES["inputs"], CASES["outputs"])):
    out = io.StringIO()
    try:
        if FN_NAME:
            namespace = {{"__name__": "solution"}}
            with contextlib.redirect_stdout(out):
                exec(compile(SOLUTION, "solution.py", "exec"), namespace)
                got = namespace[FN_NAME](*given)
            ok = got == expected or json.loads(json.dumps(got)) == expected
        else:
            sys.stdin = io.StringIO(given if isinstance(given, str) else str(given))
            with contextlib.redirect_stdout(out):
                exec(compile(SOLUTION, "solution.py", "exec"), {{"__name__": "__main__"}})
            got = out.getvalue()
            ok = got.strip() == str(expected).strip()
    except BaseException as exc:
        ok, got = False, f"{{type(exc).__name__}}: {{exc}}"
    passed += ok
    if not ok and len(failures) < 3:
        failures.append(f"case {{position}}: expected {{expected!r:.80}}, got {{got!r:.80}}")
print("NOVA_EVAL_CASES " + json.dumps({{"passed": passed, "failures": failures}}))
"""


def test_cases_of(metadata: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """The row's ``test_cases`` (prime_code), or why it has none usable."""
    cases = metadata.get("test_cases")
    if isinstance(cases, str):
        try:
            cases = json.loads(cases)
        except ValueError:
            return None, "metadata.test_cases is a string that is not JSON"
    if not isinstance(cases, dict):
        return None, "prime_code needs metadata.test_cases: {inputs: [...], outputs: [...]}"
    inputs, outputs = cases.get("inputs"), cases.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list) or not inputs:
        return None, "metadata.test_cases needs non-empty lists inputs and outputs"
    if len(inputs) != len(outputs):
        return None, f"metadata.test_cases has {len(inputs)} inputs and {len(outputs)} outputs"
    return cases, None


def _prime_code(
    samples: Sequence[dict[str, Any]], metadata: Sequence[Mapping[str, Any]]
) -> list[RewardOutcome]:
    from nova_eval_assets.engines.cpu_threads import available_cores
    from nova_eval_assets.tasks.code_execution import first_python_block, run_programs

    outcomes: list[RewardOutcome | None] = []
    programs: list[str] = []
    cases_of_program: list[int] = []
    for sample, meta in zip(samples, metadata, strict=True):
        cases, problem = test_cases_of(meta)
        if cases is None:
            outcomes.append(RewardOutcome([], problem))
            continue
        answer = _answer_text(sample)
        solution = first_python_block(answer) or answer
        programs.append(
            _CASES_PROGRAM.format(
                solution=solution, cases=json.dumps(cases), fn_name=cases.get("fn_name")
            )
        )
        cases_of_program.append(len(cases["inputs"]))
        outcomes.append(None)
    results = iter(run_programs(programs, workers=available_cores()) if programs else [])
    counts = iter(cases_of_program)
    final: list[RewardOutcome] = []
    for outcome in outcomes:
        if outcome is not None:
            final.append(outcome)
            continue
        result, total = next(results), next(counts)
        line = next(
            (x for x in reversed(result.stdout.splitlines()) if x.startswith("NOVA_EVAL_CASES ")),
            None,
        )
        if line is None:  # the program never got to the end: exited, killed, timed out
            final.append(RewardOutcome([(REWARD_SCORE, 0.0), ("lambda_pass_rate", 0.0)]))
            continue
        summary = json.loads(line.removeprefix("NOVA_EVAL_CASES "))
        passed = int(summary["passed"])
        final.append(
            RewardOutcome(
                [
                    (REWARD_SCORE, 1.0 if passed == total else 0.0),
                    ("lambda_pass_rate", passed / total),
                ]
            )
        )
    return final
