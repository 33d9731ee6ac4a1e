"""The program of a generation worker process (stages/generation_workers.py): an
:class:`~nova_eval_assets.engines.openai.OpenAIEngine` made from the first message, then
slices of prompt rows in, their generation columns out, progress between, until the parent
closes stdin."""

from __future__ import annotations

import traceback
from collections.abc import Callable

import pyarrow as pa

from nova_eval_assets.engines.collector import collector_paused
from nova_eval_assets.engines.openai import OpenAIEngine, ServerCapabilityError
from nova_eval_assets.stages.generation_table import build_requests, generation_columns
from nova_eval_assets.stages.generation_workers import settings_from_header
from nova_eval_assets.worker_process import Message, arrow_payload, arrow_table, serve_channel


# As the stage's own generate_columns: the collector stays off until the block's parsed
# answers are Arrow and freed (a pass over them cost some 13 % of a worker's CPU).
@collector_paused()
def _generated_table(
    engine: OpenAIEngine, message: Message, on_batch: Callable[[int, int], None]
) -> pa.Table:
    """The generation columns of one message's prompt rows."""
    generations = engine.generate(
        build_requests(arrow_table(message.payload)),
        settings_from_header(message.header["settings"]),
        message.header["step"],
        on_batch=on_batch,
    )
    return pa.table(generation_columns(generations))


def _serve() -> None:
    """Serve the parent until it closes stdin."""
    messages, send = serve_channel()
    engine: OpenAIEngine | None = None
    for message in messages:
        if message.kind == "C":
            engine = OpenAIEngine(**message.header["engine"], probe=False)
            continue
        assert engine is not None, "the engine's options come first"
        job = message.header["job"]
        try:
            engine.logprobs_seen |= bool(message.header["logprobs_seen"])
            columns = _generated_table(
                engine,
                message,
                on_batch=lambda done, _total, job=job: send("P", {"job": job, "done": done}),
            )
            answer = {"job": job, "logprobs_seen": engine.logprobs_seen}
            send("R", answer, arrow_payload(columns))
        except ServerCapabilityError as exc:
            send("E", {"job": job, "capability": True, "message": str(exc)})
        except Exception:  # the parent raises it: the stage fails with this text
            send("E", {"job": job, "capability": False, "message": traceback.format_exc()})
    if engine is not None:
        engine.close()


if __name__ == "__main__":
    _serve()
