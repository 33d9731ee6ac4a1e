"""Bring your own metrics: the processor SDK (Nova's custom-evaluation contract) and the runner.

``from nova_eval_assets.byom import preprocess, postprocess, build_lambda_handler`` is all a
processor needs; it imports nothing outside the standard library, so the same file runs in
process (recipe ``processor.handler``) and as an AWS Lambda function (``processor.lambda_arn``).
"""

from .sdk import (
    POSTPROCESS,
    PREPROCESS,
    PostprocessError,
    PostProcessor,
    PreprocessError,
    PreProcessor,
    Processor,
    ProcessorError,
    build_lambda_handler,
    postprocess,
    preprocess,
)

__all__ = [
    "POSTPROCESS",
    "PREPROCESS",
    "PostProcessor",
    "PostprocessError",
    "PreProcessor",
    "PreprocessError",
    "Processor",
    "ProcessorError",
    "build_lambda_handler",
    "postprocess",
    "preprocess",
]
