"""A preprocessor that removes the system prompt: the model sees only the ticket.

Used by recipes/support_tickets_no_system.yaml, the challenger of the judge example
(recipes/judge_support_tickets.yaml), to compare the bundled model with and without the
dataset's system prompt. Prompt and gold pass through unchanged, so the two recipes' rows
join one to one. Standard library and nova-eval's SDK only: it runs in process
(``processor.handler``) and, unchanged, as an AWS Lambda function.
"""

from __future__ import annotations

from nova_eval_assets.byom import build_lambda_handler, preprocess


@preprocess
def preprocessor(event: dict, context) -> dict:
    data = event["data"]
    return {
        "statusCode": 200,
        "body": {"system": None, "prompt": data["prompt"], "gold": data["gold"]},
    }


lambda_handler = build_lambda_handler(preprocessor=preprocessor)
