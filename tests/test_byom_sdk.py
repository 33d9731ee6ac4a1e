"""The processor SDK: Nova's custom-evaluation contract, every validation and error path."""

from __future__ import annotations

import math

import pytest

from nova_eval_assets.byom import (
    PostprocessError,
    PostProcessor,
    PreprocessError,
    PreProcessor,
    build_lambda_handler,
    postprocess,
    preprocess,
)


def pre_event(**data):
    return {"process_type": "preprocess", "data": {"prompt": "p", "gold": "g", **data}}


def post_event(**data):
    return {
        "process_type": "postprocess",
        "data": {"prompt": "p", "inference_output": "out", "gold": "g", **data},
    }


def answering(answer):
    """A processor function that returns ``answer`` whatever the event."""

    def func(event, context):
        return answer

    return func


# ---------------------------------------------------------------- code written for Nova's SDK


# The Nova custom evaluation SDK's published example, with only the import lines changed.
@preprocess
def nova_preprocessor(event: dict, context) -> dict:
    data = event.get("data", {})
    return {
        "statusCode": 200,
        "body": {
            "system": data.get("system"),
            "prompt": data.get("prompt", ""),
            "gold": data.get("gold", ""),
        },
    }


@postprocess
def nova_postprocessor(event: dict, context) -> dict:
    data = event.get("data", [])
    inference_output = data.get("inference_output", "")
    gold = data.get("gold", "")
    metrics = []
    accuracy = 1.0 if inference_output.lower() == gold.lower() else 0.0
    metrics.append({"metric": "inverted_accuracy_custom", "value": accuracy})
    return {"statusCode": 200, "body": metrics}


nova_handler = build_lambda_handler(
    preprocessor=nova_preprocessor, postprocessor=nova_postprocessor
)


def test_code_written_for_the_nova_sdk_runs_with_only_the_imports_changed():
    assert nova_handler(pre_event(system="s"), None) == {
        "statusCode": 200,
        "body": {"system": "s", "prompt": "p", "gold": "g"},
    }
    assert nova_handler(post_event(inference_output="G"), None) == {
        "statusCode": 200,
        "body": [{"metric": "inverted_accuracy_custom", "value": 1.0}],
    }
    assert isinstance(nova_preprocessor, PreProcessor)
    assert isinstance(nova_postprocessor, PostProcessor)
    # the Nova SDK's method name works too, and the decorated object keeps the function's name
    assert nova_preprocessor.process(pre_event(), None)["body"]["prompt"] == "p"
    assert nova_postprocessor.__name__ == "nova_postprocessor"


# ---------------------------------------------------------------- decorators


@pytest.mark.parametrize("decorator", [preprocess, postprocess])
@pytest.mark.parametrize(
    ("func", "count"),
    [(lambda: None, 0), (lambda event: None, 1), (lambda event, context, extra: None, 3)],
)
def test_decorators_require_event_and_context(decorator, func, count):
    with pytest.raises(TypeError, match=rf"exactly 2 parameters \(event, context\), got {count}"):
        decorator(func)


def test_decorators_accept_defaults_and_reject_non_functions():
    assert isinstance(preprocess(lambda event, context=None: None), PreProcessor)
    with pytest.raises(TypeError, match="decorates a function"):
        postprocess("not a function")


# ---------------------------------------------------------------- preprocess


def test_preprocess_answer_is_validated_and_system_is_optional():
    rewrite = preprocess(
        lambda e, c: {"statusCode": 200, "body": {"prompt": "P!", "gold": e["data"]["gold"]}}
    )
    assert rewrite(pre_event(system="old"), None) == {
        "statusCode": 200,
        "body": {"system": None, "prompt": "P!", "gold": "g"},  # an absent system is null
    }
    assert rewrite(pre_event(system=None), None)["body"]["prompt"] == "P!"


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ("not an object", "the event must be a JSON object, got string"),
        ({"process_type": "preprocess"}, "the event is missing 'data'"),
        ({**pre_event(), "extra": 1}, "unexpected key(s) 'extra'"),
        ({**pre_event(), "process_type": "postprocess"}, "must be 'preprocess'"),
        ({"process_type": "preprocess", "data": []}, "event.data must be a JSON object"),
        ({"process_type": "preprocess", "data": {"gold": "g"}}, "event.data is missing 'prompt'"),
        (pre_event(prompt=3), "event.data.prompt must be a string, got number"),
        (pre_event(system=["s"]), "event.data.system must be a string or null, got array"),
        (pre_event(metadata="{}"), "unexpected key(s) 'metadata'"),
    ],
)
def test_preprocess_rejects_a_bad_event(event, message):
    called = []
    processor = preprocess(lambda e, c: called.append(e))
    with pytest.raises(PreprocessError, match="preprocess event is invalid") as info:
        processor(event, None)
    assert message in str(info.value)
    assert not called  # the function never saw it


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (None, "the answer must be a JSON object, got null"),
        ({"body": {}}, "the answer is missing 'statusCode'"),
        ({"statusCode": 500, "body": {"error": "x"}}, "statusCode must be 200, got 500"),
        ({"statusCode": "200", "body": {}}, "statusCode must be the integer 200, got string"),
        ({"statusCode": True, "body": {}}, "statusCode must be the integer 200, got boolean"),
        ({"statusCode": 200, "body": "p"}, "body must be a JSON object, got string"),
        ({"statusCode": 200, "body": {"prompt": "p"}}, "body is missing 'gold'"),
        ({"statusCode": 200, "body": {"prompt": 1, "gold": "g"}}, "body.prompt must be a string"),
        (
            {"statusCode": 200, "body": {"prompt": "p", "gold": "g", "metadata": "m"}},
            "unexpected key(s) 'metadata'",
        ),
        ({"statusCode": 200, "body": {}, "headers": {}}, "unexpected key(s) 'headers'"),
    ],
)
def test_preprocess_rejects_a_wrong_answer(answer, message):
    processor = preprocess(answering(answer))
    with pytest.raises(PreprocessError, match="answered wrongly") as info:
        processor(pre_event(), None)
    assert message in str(info.value)


def test_preprocess_function_that_raises_is_a_preprocess_error():
    def boom(event, context):
        raise KeyError("prompt2")

    with pytest.raises(PreprocessError, match="boom raised KeyError: 'prompt2'") as info:
        preprocess(boom)(pre_event(), None)
    assert isinstance(info.value.__cause__, KeyError)


# ---------------------------------------------------------------- postprocess


def test_postprocess_keeps_ints_and_floats():
    metrics = [{"metric": "a", "value": 1}, {"metric": "b", "value": 0.25}]
    assert postprocess(answering({"statusCode": 200, "body": metrics}))(post_event(), None) == {
        "statusCode": 200,
        "body": metrics,
    }
    empty = postprocess(answering({"statusCode": 200, "body": []}))
    assert empty(post_event(), None)["body"] == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"metric": "a", "value": 1}, "body must be a list"),
        (["a"], "body[0] must be a JSON object, got string"),
        ([{"metric": "a"}], "body[0] is missing 'value'"),
        ([{"metric": "a", "value": 1, "unit": "%"}], "unexpected key(s) 'unit'"),
        ([{"metric": 3, "value": 1}], "body[0].metric must be a string, got number"),
        ([{"metric": " ", "value": 1}], "body[0].metric must not be empty"),
        ([{"metric": "a", "value": "1"}], "must be a number, got string"),
        ([{"metric": "a", "value": True}], "must be a number, got boolean"),
        ([{"metric": "a", "value": None}], "must be a number, got null"),
        ([{"metric": "a", "value": math.nan}], "must be a finite number, got nan"),
        ([{"metric": "a", "value": math.inf}], "must be a finite number, got inf"),
        ([{"metric": "a", "value": -math.inf}], "must be a finite number, got -inf"),
        (
            [{"metric": "a", "value": 1}, {"metric": "a", "value": 2}],
            "body[1].metric 'a' appears more than once",
        ),
    ],
)
def test_postprocess_rejects_a_wrong_body(body, message):
    processor = postprocess(answering({"statusCode": 200, "body": body}))
    with pytest.raises(PostprocessError, match="answered wrongly") as info:
        processor(post_event(), None)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (pre_event(), "must be 'postprocess'"),
        (
            {"process_type": "postprocess", "data": {"prompt": "p", "gold": "g"}},
            "'inference_output'",
        ),
        (
            post_event(inference_output=None),
            "event.data.inference_output must be a string, got null",
        ),
        (post_event(system="s"), "unexpected key(s) 'system'"),
    ],
)
def test_postprocess_rejects_a_bad_event(event, message):
    with pytest.raises(PostprocessError, match="postprocess event is invalid") as info:
        nova_postprocessor(event, None)
    assert message in str(info.value)


def test_postprocess_function_that_raises_is_a_postprocess_error():
    def divide(event, context):
        return {"statusCode": 200, "body": [{"metric": "x", "value": 1 / 0}]}

    with pytest.raises(PostprocessError, match="divide raised ZeroDivisionError"):
        postprocess(divide)(post_event(), None)


# ---------------------------------------------------------------- the handler


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"process_type": "evaluate", "data": {}}, "Unsupported process_type: 'evaluate'"),
        ({"data": {}}, "Unsupported process_type: None"),
        ({"process_type": ["preprocess"]}, "Unsupported process_type: ['preprocess']"),
        ("preprocess", "the event must be a JSON object, got string"),
    ],
)
def test_handler_answers_400_to_what_it_cannot_route(event, message):
    answer = nova_handler(event, None)
    assert answer["statusCode"] == 400
    assert set(answer["body"]) == {"error"}
    assert message in answer["body"]["error"]


def test_handler_without_a_processor_for_the_stage_answers_400():
    only_post = build_lambda_handler(postprocessor=nova_postprocessor)
    answer = only_post(pre_event(), None)
    assert answer["statusCode"] == 400
    assert "Unsupported process_type: 'preprocess'" in answer["body"]["error"]
    assert "supports: postprocess" in answer["body"]["error"]
    nothing = build_lambda_handler()
    assert nothing(post_event(), None)["statusCode"] == 400


def test_handler_raises_the_processor_errors():
    bad = build_lambda_handler(postprocessor=answering({"statusCode": 200, "body": [{"x": 1}]}))
    with pytest.raises(PostprocessError, match=r"body\[0\] is missing 'metric'"):
        bad(post_event(), None)


def test_handler_wraps_plain_functions_and_rejects_the_wrong_kind():
    handler = build_lambda_handler(preprocessor=lambda e, c: {"statusCode": 200, "body": e["data"]})
    assert handler(pre_event(), None)["body"] == {"system": None, "prompt": "p", "gold": "g"}
    with pytest.raises(TypeError, match="preprocessor must be a @preprocess function"):
        build_lambda_handler(preprocessor=nova_postprocessor)
    with pytest.raises(
        TypeError, match="postprocessor must be a @postprocess function, got number"
    ):
        build_lambda_handler(postprocessor=3)
    with pytest.raises(TypeError, match="exactly 2 parameters"):
        build_lambda_handler(postprocessor=lambda event: None)
