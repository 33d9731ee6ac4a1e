"""Runs the CLI launches in process (``dg.materialize``): their console log level, their
tags, their ids and the message of a failed run."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from nova_eval_assets.assets.automation import CLI_TAGS


def quiet_console(level: str) -> dict[str, Any]:
    """The progress bar tells the story on the terminal; the full event log is in the
    instance: the console logger shows ``level`` and up."""
    return {"loggers": {"console": {"config": {"log_level": level}}}}


def cli_tags(recipe_name: str) -> dict[str, str]:
    return {"recipe": recipe_name, **CLI_TAGS}


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The first failed step and what went wrong, without the stack (the Python traceback
    stays in the run's logs, which the message points to), else the run id."""
    for event in result.all_events:
        failure = event.step_failure_data if event.is_step_failure else None
        if failure and failure.error:
            error = failure.error
            # Dagster wraps the step's error; the user's is the first that is not Dagster's
            while error.cause is not None and (error.cls_name or "").startswith("Dagster"):
                error = error.cause
            return (
                f"{event.step_key} failed: {error.message.strip()}\n"
                f"(traceback: run {result.run_id} in the Dagster UI, `make ui`)"
            )
    return f"run {result.run_id} failed"


@dataclass
class InProcessRuns:
    """The runs one CLI command launches in ``instance``, one after the other: console logs
    quiet or not, the CLI tags of ``recipe_name``, and every run id in launch order."""

    instance: dg.DagsterInstance
    recipe_name: str
    quiet_logs: bool = True
    run_ids: list[str] = field(default_factory=list)

    def materialize(
        self,
        assets: Sequence[Any],
        keys: Sequence[dg.AssetKey] | None = None,
        partition: str | None = None,
        quiet_level: str = "WARNING",
    ) -> dg.ExecuteInProcessResult:
        """Materialize ``keys`` of ``assets`` (all of them when None); failures are
        returned, not raised. With quiet logs, the console shows ``quiet_level`` and up
        (CRITICAL: a step whose failure the caller reports itself, in one line)."""
        result = dg.materialize(
            assets,
            instance=self.instance,
            selection=None if keys is None else dg.AssetSelection.assets(*keys),
            partition_key=partition,
            raise_on_error=False,
            run_config=quiet_console(quiet_level) if self.quiet_logs else None,
            tags=cli_tags(self.recipe_name),
        )
        self.run_ids.append(result.run_id)
        return result
