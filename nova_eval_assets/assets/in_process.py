"""Runs the CLI launches in process (``dg.materialize``): their console log level, their
tags and the message of a failed run."""

import dagster as dg

from nova_eval_assets.assets.automation import CLI_TAGS

# The progress bar tells the story on the terminal; the full event log is in the instance.
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def cli_tags(recipe_name: str) -> dict[str, str]:
    return {"recipe": recipe_name, **CLI_TAGS}


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The first failed step and its error, else the run id."""
    for event in result.all_events:
        failure = event.step_failure_data if event.is_step_failure else None
        if failure and failure.error:
            return f"{event.step_key} failed:\n{failure.error.to_string()}"
    return f"run {result.run_id} failed"
