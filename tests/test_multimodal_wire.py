"""Rows with images (`GenerationRequest.images`) on the served engines' wires, with no network:

- openai: a chat-completions server on 127.0.0.1 (a vision or a text-only one) behind the
  recording proxy of tests/openai_servers.py, which keeps every request body as received;
- bedrock: a real boto3 ``bedrock-runtime`` client under botocore's Stubber (parameters
  checked against the service model, expected params equal exactly), and a local endpoint
  that records the JSON botocore puts on the wire.

The images are real PNG / JPEG files made with Pillow, as data URIs.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from botocore.stub import Stubber
from PIL import Image

from nova_eval_assets.engines import bedrock as bedrock_module
from nova_eval_assets.engines.base import GenerationRequest, SamplingSettings
from nova_eval_assets.engines.bedrock import BedrockEngine, ModelCapabilityError, image_block
from nova_eval_assets.engines.openai import OpenAIEngine, ServerCapabilityError, refuses_images
from nova_eval_assets.judge.backends import create_judge_engine
from tests.openai_servers import RecordingProxy

SETTINGS = SamplingSettings(max_new_tokens=16, temperature=0.0, top_p=0.9, seed=7)


def image_bytes(fmt: str, size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


PNG = image_bytes("PNG", (2, 2), (255, 0, 0))
JPEG = image_bytes("JPEG", (3, 1), (0, 0, 255))


def data_uri(mime: str, data: bytes) -> str:
    return f"data:image/{mime};base64,{base64.b64encode(data).decode('ascii')}"


PNG_URI = data_uri("png", PNG)
JPEG_URI = data_uri("jpeg", JPEG)
IMAGE_ROW = GenerationRequest(
    3, "Which square is red?", "You compare pictures.", (PNG_URI, JPEG_URI)
)
TEXT_ROW = GenerationRequest(4, "Capital of France?")


# ---------------------------------------------------------------- openai


class ChatServer:
    """An OpenAI-compatible chat-completions server on 127.0.0.1: ``GET /v1/models`` and
    ``POST /v1/chat/completions`` answering a valid completion, or, as a server whose model
    takes no images does, `refusal` (status, message) for a request with image parts."""

    def __init__(self, refusal: tuple[int, str] | None = None) -> None:
        self.refusal = refusal
        self.posts = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": "vlm", "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.posts += 1
                content = body["messages"][-1]["content"]
                parts = content if isinstance(content, list) else []
                images = sum(part["type"] == "image_url" for part in parts)
                if images and server.refusal is not None:
                    status, message = server.refusal
                    error = {"message": message, "type": "BadRequestError", "code": status}
                    self._send(status, {"object": "error", **error})
                    return
                self._send(
                    200,
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "created": 1,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": f"{images} images"},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
                    },
                )

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served() -> Iterator[tuple[ChatServer, RecordingProxy]]:
    """A vision server behind the recording proxy; a test may set `refusal` on it."""
    upstream = ChatServer()
    proxy = RecordingProxy(upstream.url)
    yield upstream, proxy
    proxy.close()
    upstream.close()


def expected_body(messages: list[dict]) -> dict:
    return {
        "model": "vlm",
        "messages": messages,
        "max_tokens": 16,
        "temperature": 0.0,
        "top_p": 0.9,
        "seed": 7,
    }


def test_openai_image_row_sends_text_then_image_url_parts_and_text_row_a_string(served):
    _, proxy = served
    engine = OpenAIEngine("vlm", proxy.url, concurrency=1)
    with_images, text_only = engine.generate([IMAGE_ROW, TEXT_ROW], SETTINGS)
    assert proxy.requests[0] == expected_body(
        [
            {"role": "system", "content": "You compare pictures."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Which square is red?"},
                    {"type": "image_url", "image_url": {"url": PNG_URI}},
                    {"type": "image_url", "image_url": {"url": JPEG_URI}},
                ],
            },
        ]
    )
    # a text-only row's body is what it always was: the content is the prompt string
    assert proxy.requests[1] == expected_body([{"role": "user", "content": "Capital of France?"}])
    assert (with_images.text, with_images.row_index, with_images.error) == ("2 images", 3, None)
    assert (text_only.text, text_only.row_index) == ("0 images", 4)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "model does not support image input"),
        (400, "At most 0 image(s) may be provided in one prompt."),  # vLLM, a text model
        (400, "Invalid content type. image_url is only supported by certain models."),  # OpenAI
        (500, "image input is not supported - hint: you may need to provide the mmproj"),
    ],
)
def test_openai_refused_images_stop_the_stage_with_a_clear_error(served, status, message):
    upstream, proxy = served
    upstream.refusal = (status, message)
    engine = OpenAIEngine("vlm", proxy.url, concurrency=1, max_retries=3, backoff_s=0.0)
    with pytest.raises(ServerCapabilityError) as stopped:
        engine.generate([TEXT_ROW, IMAGE_ROW], SETTINGS)
    text = str(stopped.value)
    assert text.startswith(f"the model 'vlm' served at {proxy.url} does not take images")
    assert f"HTTP {status}" in text and message in text and "\n" not in text
    # the text row was answered, the image row refused once: not retried, a 500 included
    assert upstream.posts == 2


def test_openai_an_image_error_that_is_no_refusal_is_that_rows_error(served):
    upstream, proxy = served
    upstream.refusal = (400, "cannot identify image file <_io.BytesIO object>")
    engine = OpenAIEngine("vlm", proxy.url, concurrency=1)
    image_row, text_row = engine.generate([IMAGE_ROW, TEXT_ROW], SETTINGS)
    assert image_row.finish_reason == "error" and "cannot identify image file" in image_row.error
    assert text_row.text == "0 images" and text_row.error is None


def test_refuses_images_needs_images_and_a_refusal():
    assert refuses_images(400, '{"message": "model does not support image input"}')
    assert refuses_images(422, "This model is not a multimodal model")
    assert refuses_images(400, "vision input not enabled for this deployment")
    assert not refuses_images(400, "prompt is too long")  # names no image
    assert refuses_images(400, "image inputs are not currently supported")
    # one bad image is that row's error, not a server without image input
    assert not refuses_images(400, "cannot identify image file")
    assert not refuses_images(400, "the image could not be decoded; supported: png, jpeg")
    assert not refuses_images(429, "model does not support image input")  # throttling


def test_the_openai_judge_back_end_sends_the_same_parts(served):
    _, proxy = served
    judge = create_judge_engine("openai", "vlm", endpoint=proxy.url, concurrency=1)
    engine = OpenAIEngine("vlm", proxy.url, probe=False)
    assert judge.request_body(IMAGE_ROW, SETTINGS) == engine.request_body(IMAGE_ROW, SETTINGS)
    (verdict,) = judge.generate([IMAGE_ROW], SETTINGS)
    assert verdict.text == "2 images"
    assert proxy.requests[-1]["messages"][-1]["content"][1]["image_url"]["url"] == PNG_URI


# ---------------------------------------------------------------- bedrock


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def stubbed() -> tuple[object, Stubber]:
    client = boto3.client("bedrock-runtime", region_name="us-east-1")
    return client, Stubber(client)


def reply(text: str) -> dict:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 470, "outputTokens": 3, "totalTokens": 473},
        "metrics": {"latencyMs": 90},
    }


IMAGE_CONTENT = [
    # images first, the text last: the Nova user guide's placement
    {"image": {"format": "png", "source": {"bytes": PNG}}},
    {"image": {"format": "jpeg", "source": {"bytes": JPEG}}},
    {"text": "Which square is red?"},
]


def test_bedrock_image_row_sends_image_blocks_with_the_decoded_bytes_then_the_text():
    client, stubber = stubbed()
    engine = BedrockEngine("us.amazon.nova-lite-v1:0", client=client, concurrency=1)
    stubber.add_response(
        "converse",
        reply("the first"),
        {
            "modelId": "us.amazon.nova-lite-v1:0",
            "messages": [{"role": "user", "content": IMAGE_CONTENT}],
            "system": [{"text": "You compare pictures."}],
            "inferenceConfig": {"maxTokens": 16, "temperature": 0.0, "topP": 0.9},
        },
    )
    stubber.add_response(
        "converse",
        reply("Paris"),
        {
            "modelId": "us.amazon.nova-lite-v1:0",
            "messages": [{"role": "user", "content": [{"text": "Capital of France?"}]}],
            "inferenceConfig": {"maxTokens": 16, "temperature": 0.0, "topP": 0.9},
        },
    )
    with stubber:
        with_images, text_only = engine.generate([IMAGE_ROW, TEXT_ROW], SETTINGS)
        stubber.assert_no_pending_responses()
    assert (with_images.text, with_images.prompt_tokens, with_images.error) == (
        "the first",
        470,
        None,
    )
    assert text_only.text == "Paris"


def test_bedrock_image_formats():
    assert image_block(data_uri("jpg", JPEG)) == {
        "image": {"format": "jpeg", "source": {"bytes": JPEG}}
    }
    gif = image_bytes("GIF", (1, 1), (0, 255, 0))
    webp = image_bytes("WEBP", (1, 1), (0, 255, 0))
    assert image_block(data_uri("gif", gif))["image"] == {"format": "gif", "source": {"bytes": gif}}
    assert image_block(data_uri("WebP", webp))["image"]["format"] == "webp"
    with pytest.raises(ValueError, match="takes png, jpeg, gif, webp images, not image/bmp"):
        image_block(data_uri("bmp", image_bytes("BMP", (1, 1), (0, 0, 0))))


def test_bedrock_a_format_converse_does_not_take_is_that_rows_error():
    client, stubber = stubbed()
    engine = BedrockEngine("amazon.nova-lite-v1:0", client=client, concurrency=1)
    bmp = data_uri("bmp", image_bytes("BMP", (1, 1), (0, 0, 0)))
    with stubber:  # no response queued: the row must not be sent
        (row,) = engine.generate([GenerationRequest(0, "q", images=(bmp,))], SETTINGS)
    assert row.finish_reason == "error" and "not image/bmp" in row.error


NO_VISION = (
    "This model doesn't support the image content block that you provided. "
    "Update the content block and try again."
)


def test_bedrock_a_model_without_vision_stops_the_stage_naming_the_model():
    client, stubber = stubbed()
    engine = BedrockEngine("amazon.nova-micro-v1:0", client=client, concurrency=1)
    stubber.add_client_error(
        "converse",
        service_error_code="ValidationException",
        service_message=NO_VISION,
        http_status_code=400,
    )
    with stubber, pytest.raises(ModelCapabilityError) as stopped:
        engine.generate([IMAGE_ROW], SETTINGS)
    text = str(stopped.value)
    assert text.startswith("the Bedrock model 'amazon.nova-micro-v1:0' does not take images")
    assert "ValidationException" in text and NO_VISION in text and "\n" not in text


def test_bedrock_other_validation_errors_on_image_rows_stay_row_errors():
    client, stubber = stubbed()
    engine = BedrockEngine("amazon.nova-lite-v1:0", client=client, concurrency=1)
    bad = "The model returned the following errors: The provided image does not match the format."
    stubber.add_client_error(
        "converse", service_error_code="ValidationException", service_message=bad
    )
    # the same refusal text on a text row (no images sent) is no image refusal either
    stubber.add_client_error(
        "converse", service_error_code="ValidationException", service_message=NO_VISION
    )
    with stubber:
        image_row, text_row = engine.generate([IMAGE_ROW, TEXT_ROW], SETTINGS)
        stubber.assert_no_pending_responses()
    assert image_row.finish_reason == "error" and "does not match the format" in image_row.error
    assert text_row.finish_reason == "error" and "ValidationException" in text_row.error


def test_the_bedrock_judge_back_end_sends_the_same_blocks():
    client, stubber = stubbed()
    judge = create_judge_engine("bedrock", "us.amazon.nova-pro-v1:0", client=client)
    stubber.add_response(
        "converse",
        reply("1"),
        {
            "modelId": "us.amazon.nova-pro-v1:0",
            "messages": [{"role": "user", "content": IMAGE_CONTENT}],
            "system": [{"text": "You compare pictures."}],
            "inferenceConfig": {"maxTokens": 16, "temperature": 0.0, "topP": 0.9},
        },
    )
    with stubber:
        (verdict,) = judge.generate([IMAGE_ROW], SETTINGS)
        stubber.assert_no_pending_responses()
    assert verdict.text == "1"


class ConverseEndpoint:
    """A bedrock-runtime endpoint on 127.0.0.1 that records the JSON bodies botocore sends."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                endpoint.bodies.append(json.loads(data))
                endpoint.paths.append(self.path)
                answer = json.dumps(reply("seen")).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_bedrock_on_the_wire_the_bytes_are_the_data_uris_base64():
    endpoint = ConverseEndpoint()
    try:
        client = bedrock_module.make_client(
            region="us-east-1",
            endpoint_url=endpoint.url,
            timeout_s=10.0,
            max_retries=0,
            retry_mode="standard",
            concurrency=1,
        )
        engine = BedrockEngine("amazon.nova-lite-v1:0", client=client, concurrency=1)
        (row,) = engine.generate([IMAGE_ROW], SETTINGS)
    finally:
        endpoint.close()
    assert row.text == "seen"
    assert endpoint.paths == ["/model/amazon.nova-lite-v1%3A0/converse"]
    (body,) = endpoint.bodies
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"image": {"format": "png", "source": {"bytes": PNG_URI.split(",", 1)[1]}}},
                {"image": {"format": "jpeg", "source": {"bytes": JPEG_URI.split(",", 1)[1]}}},
                {"text": "Which square is red?"},
            ],
        }
    ]
