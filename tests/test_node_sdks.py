"""The official openai Node SDK and the Vercel AI SDK's default OpenAI provider
(the Responses API model, and its image model for the Images API) against the
service under gunicorn and the fake Cloudflare: the Node counterpart of
test_sdk.py.

Each test runs one scenario of tests/node/openai-node.mjs or vercel-ai.mjs,
which prints one JSON line of what the SDK returned; the images are checked here
with Pillow. The packages come from tests/node/package-lock.json (`npm ci` in
tests/node; .ci/run does it). Without node or those packages the module is skipped.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from PIL import Image

from harness import API_KEY

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE = shutil.which("node")
PACKAGES = ("openai", "ai", "@ai-sdk/openai")

if NODE is None:
    pytest.skip("node is not installed", allow_module_level=True)
if not all((NODE_DIR / "node_modules" / package).is_dir() for package in PACKAGES):
    pytest.skip(f"the Node SDKs are not installed: run `npm ci` in {NODE_DIR}",
                allow_module_level=True)

IMAGE_LINK = re.compile(r"!\[[^\]]*\]\((?P<url>http[^)]+)\)")
SEED_LINE = re.compile(r"🎲 Seed: (\d+)")
PNG_SIGNATURE = "89504e470d0a1a0a"


def run(script: str, scenario: str, base_url: str) -> dict:
    """Run one scenario and return its JSON line; a failure shows what the SDK said."""
    env = {**os.environ, "FLUX_BASE_URL": base_url + "/v1", "FLUX_API_KEY": API_KEY}
    assert NODE is not None
    try:
        done = subprocess.run([NODE, script, scenario], cwd=NODE_DIR, env=env,
                              capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired as timeout:
        pytest.fail(f"{script} {scenario} timed out; stderr: {timeout.stderr!r}")
    if done.returncode != 0:
        pytest.fail(f"{script} {scenario} exited {done.returncode}:\n{done.stderr}")
    lines = done.stdout.splitlines()
    assert len(lines) == 1, f"expected one JSON line, got: {done.stdout!r}"
    return json.loads(lines[0])


@pytest.fixture
def openai_node(gunicorn, fake):
    """Run a scenario of the official openai Node SDK against the gunicorn service."""
    return lambda scenario: run("openai-node.mjs", scenario, gunicorn.url)


@pytest.fixture
def vercel_ai(gunicorn, fake):
    """Run a scenario of the Vercel AI SDK's OpenAI provider against the gunicorn service."""
    return lambda scenario: run("vercel-ai.mjs", scenario, gunicorn.url)


def image(summary: dict) -> Image.Image:
    """Decode a script's image summary, checking its byte count and first bytes agree."""
    raw = base64.b64decode(summary["b64"], validate=True)
    assert (len(raw), raw[:8].hex()) == (summary["bytes"], summary["head"])
    return Image.open(io.BytesIO(raw))


def linked_image(text: str) -> bytes:
    """The image a chat reply links to, as served by the service."""
    answer = requests.get(IMAGE_LINK.search(text).group("url"), timeout=10)
    assert answer.status_code == 200
    return answer.content


def in_order(events: list[dict], output_index: int) -> list[str]:
    """The event types that belong to one output item, in stream order."""
    return [event["type"] for event in events if event["output_index"] == output_index]


class TestOpenAINodeImages:
    def test_stream_yields_one_completed_event_with_a_png(self, openai_node, fake):
        result = openai_node("images-stream")
        assert result["types"] == ["image_generation.completed"]
        (event,) = result["events"]
        assert event["image"]["head"] == PNG_SIGNATURE
        picture = image(event["image"])
        assert (picture.size, picture.format) == ((1024, 576), "PNG")
        assert (event["size"], event["output_format"]) == ("1024x576", "png")
        assert event["usage"]["input_tokens"] > 0
        assert isinstance(event["created_at"], int)

    def test_a_refused_prompt_raises_the_services_error(self, openai_node, fake):
        result = openai_node("images-stream-refused")
        assert result["types"] == []
        raised = result["raised"]
        assert raised["name"] == "APIError"
        assert raised["message"].startswith("Workers AI flagged this prompt")
        assert raised["error"]["code"] == "content_policy_violation"

    def test_1792x1024_on_flux_2_dev_is_delivered_exactly(self, openai_node, fake):
        result = openai_node("images-size")
        (item,) = result["data"]
        picture = image(item["image"])
        assert (picture.size, picture.format) == ((1792, 1024), "PNG")
        assert result["output_format"] == "png"
        (call,) = fake.calls_to("ai")
        assert (call.form["width"], call.form["height"]) == ("1792", "1024")
        assert item["seed"] == int(call.form["seed"])

    def test_three_images_carry_three_seeds(self, openai_node, fake):
        result = openai_node("images-n3")
        assert result["count"] == 3 and result["distinct_images"] == 3
        seeds = result["seeds"]
        assert all(isinstance(seed, int) for seed in seeds) and len(set(seeds)) == 3
        assert sorted(seeds) == sorted(call.json["seed"] for call in fake.calls_to("ai"))


class TestOpenAINodeChat:
    def test_streamed_completion_links_the_image_with_its_seed(self, openai_node, fake):
        result = openai_node("chat-stream")
        assert result["chunks"] > 1
        assert result["finish_reasons"] == ["stop"]
        text = result["text"]
        assert text.startswith("🎨 Original prompt: A cute cat")
        (call,) = fake.calls_to("ai")
        assert int(SEED_LINE.search(text).group(1)) == call.json["seed"]
        assert Image.open(io.BytesIO(linked_image(text))).size == (1024, 1024)


class TestOpenAINodeResponses:
    def test_create_gives_the_image_call_then_the_message(self, openai_node, fake):
        result = openai_node("responses-create")
        assert result["status"] == "completed" and result["error"] is None
        assert result["id"].startswith("resp_")
        assert result["output_types"] == ["image_generation_call", "message"]
        assert "🎨 Original prompt: A cute cat" in result["output_text"]
        assert image(result["image"]).size == (1024, 1024)
        raw = base64.b64decode(result["image"]["b64"])
        assert linked_image(result["output_text"]) == raw
        usage = result["usage"]
        assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]

    def test_stream_events_follow_the_protocol_per_item(self, openai_node, fake):
        result = openai_node("responses-stream")
        types, events = result["types"], result["events"]
        assert types[:3] == ["response.created", "response.in_progress",
                             "response.output_item.added"]
        assert types[-1] == "response.completed" and types.count("response.completed") == 1
        assert result["sequence_numbers"] == list(range(len(types)))
        assert events[2]["item_type"] == "image_generation_call"
        assert in_order(events, 0) == [
            "response.output_item.added", "response.image_generation_call.in_progress",
            "response.image_generation_call.generating",
            "response.image_generation_call.completed", "response.output_item.done"]
        message = in_order(events, 1)
        deltas = message.count("response.output_text.delta")
        assert deltas >= 1
        assert message == (["response.output_item.added", "response.content_part.added"]
                           + ["response.output_text.delta"] * deltas
                           + ["response.output_text.done", "response.content_part.done",
                              "response.output_item.done"])
        assert [event["item_type"] for event in events
                if event["type"].startswith("response.output_item.")] == [
            "image_generation_call", "message", "image_generation_call", "message"]
        assert set(in_order(events, None)) == {
            "response.created", "response.in_progress", "response.completed"}
        completed = result["completed"]
        assert completed["status"] == "completed"
        assert completed["output_types"] == ["image_generation_call", "message"]
        assert completed["usage"]["input_tokens"] > 0 and completed["usage"]["output_tokens"] > 0
        assert image(result["image"]).size == (1024, 1024)
        assert linked_image(result["text"]) == base64.b64decode(result["image"]["b64"])

    def test_the_stream_helper_assembles_the_final_response(self, openai_node, fake):
        result = openai_node("responses-stream-helper")
        assert result["status"] == "completed"
        assert result["output_types"] == ["image_generation_call", "message"]
        assert "🎨 Original prompt: A red fox" in result["output_text"]
        assert image(result["image"]).format == "WEBP"


def assert_usage(usage: dict) -> None:
    assert usage["inputTokens"] > 0 and usage["outputTokens"] > 0
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]


class TestVercelText:
    def test_generate_text(self, vercel_ai, fake):
        result = vercel_ai("generate-text")
        assert result["finishReason"] == "stop"
        assert_usage(result["usage"])
        assert [part["type"] for part in result["content"]] == ["text"]
        assert result["warnings"] == []
        text = result["text"]
        assert text.startswith("🎨 Original prompt: A cute cat 16:9")
        assert "📐 Image specifications: 1024x576" in text
        assert result["responseId"].startswith("resp_")
        assert Image.open(io.BytesIO(linked_image(text))).size == (1024, 576)

    def test_stream_text_finishes_with_stop_and_usage(self, vercel_ai, fake):
        result = vercel_ai("stream-text")
        assert result["finishReason"] == "stop"  # "other" when response.completed is ignored
        assert_usage(result["usage"])
        assert result["chunks"] > 1
        assert result["text"].startswith("🎨 Original prompt: A cute cat 16:9")
        (call,) = fake.calls_to("ai")
        assert int(SEED_LINE.search(result["text"]).group(1)) == call.json["seed"]
        assert Image.open(io.BytesIO(linked_image(result["text"]))).size == (1024, 576)

    def test_a_refused_prompt_ends_the_stream_with_the_services_error(self, vercel_ai, fake):
        result = vercel_ai("stream-text-refused")
        assert result["finishReason"] == "error"
        assert "error" in result["parts"] and result["parts"][-1] == "finish"
        (error,) = result["errors"]
        assert error["message"].startswith("Workers AI flagged this prompt")

    def test_a_second_turn_sends_an_item_reference_that_is_accepted(self, vercel_ai, fake):
        result = vercel_ai("multi-turn")
        assert result["first"]["finishReason"] == result["second"]["finishReason"] == "stop"
        first_turn, reference, second_turn = result["second_input"]
        assert reference["type"] == "item_reference" and reference["id"].startswith("msg_")
        assert second_turn["content"] == [{"type": "input_text", "text": "A red fox"}]
        assert result["second"]["text"].startswith("🎨 Original prompt: A red fox")
        assert [call.json["prompt"] for call in fake.calls_to("ai")] == ["A cute cat",
                                                                         "A red fox"]


class TestVercelImages:
    def test_image_tool_gives_a_provider_executed_call_and_a_png_result(self, vercel_ai, fake):
        result = vercel_ai("image-tool")
        assert result["finishReason"] == "stop"
        assert_usage(result["usage"])
        call, tool_result, text = result["content"]
        assert (call["type"], tool_result["type"], text["type"]) == (
            "tool-call", "tool-result", "text")
        assert call["toolName"] == tool_result["toolName"] == "image_generation"
        assert call["providerExecuted"] is tool_result["providerExecuted"] is True
        assert call["toolCallId"] == tool_result["toolCallId"]
        assert call["toolCallId"].startswith("ig_")
        assert tool_result["result"]["head"] == PNG_SIGNATURE
        picture = image(tool_result["result"])
        assert (picture.size, picture.format) == ((1024, 1024), "PNG")
        assert result["toolResults"] == [tool_result]
        assert text["text"].startswith("🎨 Original prompt: A cute cat")
        assert linked_image(text["text"]) == base64.b64decode(tool_result["result"]["b64"])

    def test_image_tool_streamed(self, vercel_ai, fake):
        result = vercel_ai("image-tool-stream")
        parts = result["parts"]
        assert parts[:3] == ["start", "start-step", "tool-call"]
        assert parts[-2:] == ["finish-step", "finish"]
        assert "error" not in parts
        assert parts.count("tool-call") == parts.count("tool-result") == 1
        assert parts.index("tool-call") < parts.index("tool-result")
        assert parts.index("text-start") < parts.index("text-delta") < parts.index("text-end")
        assert result["finishReason"] == "stop"
        assert_usage(result["usage"])
        (tool_result,) = result["toolResults"]
        assert tool_result["toolName"] == "image_generation" and not tool_result["preliminary"]
        picture = image(tool_result["result"])
        assert (picture.size, picture.format) == ((1024, 1024), "PNG")
        assert result["text"].startswith("🎨 Original prompt: A cute cat")

    def test_generate_image_through_the_images_api(self, vercel_ai, fake):
        result = vercel_ai("generate-image")
        assert result["count"] == 1 and result["warnings"] == []
        (generated,) = result["images"]
        assert generated["mediaType"] == "image/png"
        picture = image(generated["image"])
        assert (picture.size, picture.format) == ((1024, 1024), "PNG")
        assert len(fake.calls_to("ai")) == 1
