"""The Responses API (`POST /v1/responses`): bodies, event order and failures,
checked against the installed openai SDK's own types and stream accumulator."""

from __future__ import annotations

import base64
import io
import re

import httpx2 as httpx
import openai
import pytest
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from PIL import Image
from pydantic import TypeAdapter

import fake_cloudflare
from conftest import AUTH, parse_sse
from shapes import assert_shape

CAT = "A cute cat 16:9"
IMAGE_TOOL = {"type": "image_generation"}
STREAM_EVENT = TypeAdapter(ResponseStreamEvent)

TEXT_ONLY_ORDER = [
    "response.created", "response.in_progress",
    "response.output_item.added", "response.content_part.added",
    "response.output_text.delta",  # the opening, before any upstream call
    "response.output_text.delta", "response.output_text.delta",  # optimized, generating
    "response.output_text.delta",  # the result with the image link
    "response.output_text.done", "response.content_part.done", "response.output_item.done",
    "response.completed",
]
IMAGE_TOOL_ORDER = [
    "response.created", "response.in_progress",
    "response.output_item.added", "response.image_generation_call.in_progress",
    "response.output_item.added", "response.content_part.added",
    "response.output_text.delta",  # the opening
    "response.output_text.delta",  # optimized
    "response.image_generation_call.generating", "response.output_text.delta",
    "response.output_text.delta",  # the result
    "response.image_generation_call.completed", "response.output_item.done",
    "response.output_text.done", "response.content_part.done", "response.output_item.done",
    "response.completed",
]


def post(client, body: dict, **kwargs):
    return client.post("/v1/responses", headers=AUTH, json=body, **kwargs)


def read_sse(text: str) -> tuple[list[dict], list[str]]:
    """Events and comments of a Responses stream: every payload named by an
    `event:` line with its type, and no `[DONE]` (OpenAI sends none here)."""
    events, comments = parse_sse(text, named=True)
    assert all(isinstance(event, dict) for event in events)
    return [event for event in events if isinstance(event, dict)], comments


def stream(client, body: dict) -> tuple[list[dict], list[str]]:
    response = post(client, {**body, "stream": True})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    return read_sse(response.get_data(as_text=True))


def validated(body: dict) -> Response:
    response = Response.model_validate(body)
    assert response.object == "response" and response.id.startswith("resp_")
    return response


def validated_events(events: list[dict]) -> Response:
    """Check each event against the SDK's types, then feed them to the SDK's
    own accumulator (as `client.responses.stream()` does) for the final Response."""
    state: ResponseStreamState = ResponseStreamState(input_tools=openai.omit,
                                                     text_format=openai.omit)
    for event in events:
        parsed = STREAM_EVENT.validate_python(event)
        assert parsed.type == event["type"]
        state.handle_event(parsed)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return state._completed_response


def joined_deltas(events: list[dict]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def without_keys(text: str) -> str:
    text = re.sub(r"/image/[A-Za-z0-9_-]{22}", "/image/KEY", text)
    return re.sub(r"\d{3,}", "N", text)  # seeds differ between requests


def decoded(result: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(result, validate=True)))
    image.load()
    return image


class TestNonStream:
    def test_string_input_gets_the_chat_reply(self, client):
        body = post(client, {"model": "gpt-4o", "input": CAT}).json
        response = validated(body)
        assert body["status"] == "completed" and body["error"] is None
        assert body["incomplete_details"] is None and body["store"] is False
        assert body["model"] == "@cf/black-forest-labs/flux-1-schnell"
        assert body["tools"] == [] and body["tool_choice"] == "auto"
        assert body["parallel_tool_calls"] is True
        assert body["created_at"] <= body["completed_at"]
        [message] = body["output"]
        assert message["type"] == "message" and message["id"].startswith("msg_")
        assert message["role"] == "assistant" and message["status"] == "completed"
        assert message["content"][0]["annotations"] == []
        chat = client.post("/v1/chat/completions", headers=AUTH,
                           json={"messages": [{"role": "user", "content": CAT}]}).json
        expected = chat["choices"][0]["message"]["content"]
        assert without_keys(response.output_text) == without_keys(expected)
        assert "![Generated Image](" in response.output_text
        usage = body["usage"]
        assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]

    def test_the_image_link_works(self, client):
        text = validated(post(client, {"input": "A red fox"}).json).output_text
        url = re.search(r"!\[[^\]]*\]\(([^)]+)\)", text).group(1)
        assert client.get("/" + url.split("://", 1)[1].split("/", 1)[1]).status_code == 200

    def test_message_items_with_history_and_references(self, client, fake):
        body = {
            "instructions": "You draw pictures.",
            "temperature": 0.5, "metadata": {"chat": "7"}, "store": True, "max_output_tokens": 50,
            "previous_response_id": "resp_earlier", "text": {"format": {"type": "text"}},
            "input": [
                {"role": "user", "content": "A dog"},
                {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
                 "content": [{"type": "output_text", "text": "Here is a dog", "annotations": []}]},
                {"type": "item_reference", "id": "msg_2"},
                {"id": "msg_3"},  # an item_reference without its type
                {"type": "image_generation_call", "id": "ig_1", "status": "completed",
                 "result": "aGk="},
                {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "A red fox"},
                    {"type": "input_text", "text": "in the snow"}]},
            ],
        }
        response = validated(post(client, body).json)
        assert "Original prompt: A red fox in the snow\n" in response.output_text
        assert fake.calls_to("ai")[0].json["prompt"].startswith("A red fox in the snow")
        assert response.instructions == "You draw pictures."
        assert response.temperature == 0.5 and response.metadata == {"chat": "7"}
        assert response.previous_response_id == "resp_earlier" and response.store is False

    def test_image_tool_returns_the_image_before_the_message(self, client):
        tool = {**IMAGE_TOOL, "size": "1024x1024", "quality": "high"}
        body = post(client, {"input": "A cute cat", "tools": [tool]}).json
        response = validated(body)
        assert body["tools"] == [tool]
        call, message = body["output"]
        assert call["type"] == "image_generation_call" and call["id"].startswith("ig_")
        assert call["status"] == "completed" and isinstance(call["result"], str)
        image = decoded(call["result"])
        assert image.size == (1024, 1024) and call["size"] == "1024x1024"
        assert image.format.lower() == call["output_format"]
        assert call["background"] == "opaque" and call["quality"] == "high"
        assert message["type"] == "message"
        assert "📐 Image specifications: 1024x1024" in response.output_text

    def test_a_tool_size_off_the_models_step_is_delivered_exactly_and_said(self, client, fake):
        tool = {**IMAGE_TOOL, "size": "1001x610"}
        body = post(client, {"input": "A cute cat", "model": "flux-2-dev", "tools": [tool]}).json
        call, _ = body["output"]
        assert decoded(call["result"]).size == (1001, 610)
        form = fake.calls_to("ai")[0].form
        assert (form["width"], form["height"]) == ("1008", "608")
        assert ("📐 Image specifications: 1001x610 (drawn at 1008x608, the nearest size the "
                "model makes, then fitted)") in validated(body).output_text

    def test_image_tool_output_format_is_honoured(self, client):
        tool = {**IMAGE_TOOL, "output_format": "webp", "output_compression": 80}
        call = post(client, {"input": CAT, "tools": [tool]}).json["output"][0]
        assert call["output_format"] == "webp" and decoded(call["result"]).format == "WEBP"

    def test_image_tool_reports_the_optimized_prompt(self, make_app, fake):
        client = make_app(prompt_optimization=True, external_api_base=fake.optimizer_base,
                          external_model="m",
                          external_api_key=fake_cloudflare.OPTIMIZER_KEY).test_client()
        body = post(client, {"input": CAT, "tools": [IMAGE_TOOL]}).json
        validated(body)
        assert body["output"][0]["revised_prompt"] == "A cute cat, highly detailed, soft light"

    def test_other_tools_are_ignored(self, client):
        tools = [{"type": "web_search"}, {"type": "function", "name": "f", "parameters": {},
                                          "strict": True}]
        body = post(client, {"input": CAT, "tools": tools, "tool_choice": "none"}).json
        assert [item["type"] for item in body["output"]] == ["message"]
        assert body["tools"] == tools and body["tool_choice"] == "none"
        validated(body)

    def test_housekeeping_answers_text_only(self, client, fake):
        body = {"tools": [IMAGE_TOOL], "input": [
            {"role": "user", "content": "A dog"},
            {"role": "user", "content": "Please generate a four to five word title "
                                        "summarizing our conversation."}]}
        response = validated(post(client, body).json)
        assert [item.type for item in response.output] == ["message"]
        assert response.output_text == "A dog"
        assert fake.calls_to("ai") == []

    def test_failure_is_an_http_error(self, client, fake):
        fake.inject("ai", fake_cloudflare.nsfw())
        response = post(client, {"input": CAT})
        assert response.status_code == 400
        assert_shape("Error", response.json)
        assert response.json["error"]["code"] == "content_policy_violation"


@pytest.mark.parametrize(("body", "param"), [
    ({}, "input"),
    ({"input": 5}, "input"),
    ({"input": "   "}, "input"),
    ({"input": []}, "input"),
    ({"input": [{"role": "assistant", "content": "Here is a dog"}]}, "input"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input"),
    ({"input": ["A cat"]}, "input[0]"),
    ({"input": [{"type": "message", "content": "A cat"}]}, "input[0].role"),
    ({"input": [{"role": "user", "content": 5}]}, "input[0].content"),
    ({"input": [{"role": "user", "content": [{"type": "input_text"}]}]}, "input[0].content"),
    ({"input": CAT, "tools": "image_generation"}, "tools"),
    ({"input": CAT, "tools": ["image_generation"]}, "tools[0]"),
    ({"input": CAT, "tools": [{**IMAGE_TOOL, "output_format": "gif"}]}, "tools[0].output_format"),
    ({"input": CAT, "tools": [{**IMAGE_TOOL, "output_compression": 101}]},
     "tools[0].output_compression"),
    ({"input": CAT, "tools": [{**IMAGE_TOOL, "size": "huge"}]}, "tools[0].size"),
    ({"input": CAT, "stream": "yes"}, "stream"),
    ({"input": CAT, "model": 3}, "model"),
    ({"input": CAT, "instructions": ["be nice"]}, "instructions"),
    ({"input": CAT, "tool_choice": 1}, "tool_choice"),
    ({"input": "A cat --ar 1:x"}, "input"),
])
def test_bad_input_is_a_400_naming_the_field(client, fake, body, param):
    for stream_flag in (False, True):
        response = post(client, {**body, "stream": body.get("stream", stream_flag)})
        assert response.status_code == 400, response.get_data(as_text=True)
        assert_shape("Error", response.json)
        assert response.json["error"]["type"] == "invalid_request_error"
        assert response.json["error"]["param"] == param
    assert fake.calls_to("ai") == []


def test_body_that_is_not_an_object_is_a_400(client):
    response = post(client, ["A cat"])
    assert response.status_code == 400
    assert_shape("Error", response.json)


class TestStream:
    def test_text_events_in_openai_order(self, client):
        events, _ = stream(client, {"input": CAT})
        assert [e["type"] for e in events] == TEXT_ONLY_ORDER
        final = validated_events(events)
        created, completed = events[0]["response"], events[-1]["response"]
        assert created["status"] == "in_progress" and created["output"] == []
        assert created["usage"] is None
        assert completed["status"] == "completed" and completed["id"] == created["id"]
        assert completed["usage"]["input_tokens"] > 0 and completed["usage"]["output_tokens"] > 0
        text = joined_deltas(events)
        assert events[-4]["text"] == text == final.output_text
        assert text.startswith("🎨 Original prompt: A cute cat 16:9\n")
        assert "![Generated Image](" in text
        message_id = events[2]["item"]["id"]
        assert all(e.get("item_id", message_id) == message_id for e in events)
        assert {e.get("output_index", 0) for e in events} == {0}

    def test_image_tool_events_in_openai_order(self, client):
        events, _ = stream(client, {"input": CAT, "tools": [IMAGE_TOOL]})
        assert [e["type"] for e in events] == IMAGE_TOOL_ORDER
        final = validated_events(events)
        added = events[2]["item"]
        assert added["type"] == "image_generation_call" and added["result"] is None
        assert added["status"] == "in_progress"
        image_done = events[12]["item"]
        assert image_done["id"] == added["id"] and image_done["status"] == "completed"
        assert decoded(image_done["result"]).size == (1024, 576)
        assert events[4]["output_index"] == 1 and events[4]["item"]["type"] == "message"
        assert [item.type for item in final.output] == ["image_generation_call", "message"]
        assert final.output[0].result == image_done["result"]

    def test_joined_deltas_equal_the_non_stream_reply(self, client):
        events, _ = stream(client, {"input": CAT})
        whole = validated(post(client, {"input": CAT}).json).output_text
        assert without_keys(joined_deltas(events)) == without_keys(whole)

    def test_opening_events_come_before_any_upstream_answer(self, client, fake):
        fake.latency = 0.5
        response = post(client, {"input": CAT, "stream": True}, buffered=False)
        first = next(iter(response.response))
        first = first.decode() if isinstance(first, bytes) else first
        events, _ = read_sse(first)
        assert [e["type"] for e in events] == TEXT_ONLY_ORDER[:5]
        assert events[-1]["delta"].startswith("🎨 Original prompt")
        response.get_data()
        response.close()

    def test_keep_alive_comments_while_waiting(self, make_app, fake):
        client = make_app(sse_keepalive_seconds=0.05).test_client()
        fake.latency = 0.4
        events, comments = stream(client, {"input": CAT})
        assert ": keep-alive" in comments
        assert events[-1]["type"] == "response.completed"

    def test_housekeeping_streams_text_only(self, client, fake):
        body = {"tools": [IMAGE_TOOL], "input": [
            {"role": "user", "content": "A dog"},
            {"role": "user", "content": "Please generate a four to five word title "
                                        "summarizing our conversation."}]}
        events, _ = stream(client, body)
        assert [e["type"] for e in events] == TEXT_ONLY_ORDER[:5] + TEXT_ONLY_ORDER[-4:]
        assert validated_events(events).output_text == "A dog"
        assert fake.calls_to("ai") == []

    @pytest.mark.parametrize("tools", [[], [IMAGE_TOOL]])
    def test_failure_after_headers_is_said_then_response_failed(self, client, fake, tools):
        fake.inject("ai", fake_cloudflare.nsfw())
        events, _ = stream(client, {"input": CAT, "tools": tools})
        for event in events:
            assert STREAM_EVENT.validate_python(event).type == event["type"]
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        assert events[0]["type"] == "response.created"
        failed = events[-1]
        assert failed["type"] == "response.failed"
        assert "❌" in events[-2]["delta"]
        response = failed["response"]
        assert response["status"] == "failed" and response["id"] == events[0]["response"]["id"]
        assert response["error"]["code"] == "image_content_policy_violation"
        assert response["error"]["message"]
        assert all(e["type"] != "response.completed" for e in events)
        message = response["output"][-1]
        assert message["status"] == "incomplete"
        assert message["content"][0]["text"] == joined_deltas(events)
        if tools:
            assert response["output"][0]["status"] == "failed"

    def test_missing_credentials_are_a_503_before_the_stream(self, make_app):
        client = make_app(cf_account_id="", cf_api_token="").test_client()
        response = post(client, {"input": CAT, "stream": True})
        assert response.status_code == 503
        assert response.json["error"]["code"] == "not_configured"

    def test_past_the_cap_is_429_before_the_stream(self, make_app, fake):
        client = make_app(max_concurrent_generations=1).test_client()
        fake.latency = 1.0
        first = post(client, {"input": CAT, "stream": True}, buffered=False)
        next(iter(first.response))  # the first stream holds the only slot
        second = post(client, {"input": CAT, "stream": True})
        assert second.status_code == 429
        assert second.json["error"]["code"] == "rate_limit_exceeded"
        first.get_data()
        first.close()


class TestOpenAISDK:
    """The official client, its HTTP carried to the Flask test client."""

    @pytest.fixture
    def sdk(self, client):
        def forward(request: httpx.Request) -> httpx.Response:
            answer = client.open(request.url.path, method=request.method,
                                 headers=dict(request.headers), data=request.content)
            return httpx.Response(answer.status_code, headers=dict(answer.headers),
                                  content=answer.get_data())

        http_client = httpx.Client(transport=httpx.MockTransport(forward))
        yield openai.OpenAI(base_url="http://testserver/v1", api_key=AUTH["Authorization"][7:],
                            http_client=http_client, max_retries=0)
        http_client.close()

    def test_create(self, sdk):
        response = sdk.responses.create(model="gpt-4o", input=CAT,
                                        tools=[{"type": "image_generation"}])
        assert response.status == "completed"
        assert response.output[0].type == "image_generation_call"
        assert "![Generated Image](" in response.output_text

    def test_stream_helper(self, sdk):
        with sdk.responses.stream(model="gpt-4o", input=CAT,
                                  tools=[{"type": "image_generation"}]) as events:
            deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
            final = events.get_final_response()
        assert "".join(deltas) == final.output_text
        assert final.usage is not None and final.usage.output_tokens > 0

    def test_create_stream(self, sdk):
        types = [event.type for event in sdk.responses.create(input=CAT, stream=True)]
        assert types == TEXT_ONLY_ORDER

    def test_errors_raise(self, sdk):
        with pytest.raises(openai.BadRequestError) as raised:
            sdk.responses.create(input=[{"type": "item_reference", "id": "msg_1"}])
        assert raised.value.param == "input"
