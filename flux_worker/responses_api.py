"""The OpenAI Responses API: `POST /v1/responses`, the Vercel AI SDK's default endpoint.

A Response carries the same reply text as the chat endpoint (the same plan,
the same progress pieces); with the `image_generation` tool the image also
comes back as an `image_generation_call` item, in base64, before the message.
Responses themselves are not stored (`store` is answered false), so
`previous_response_id` and `item_reference` items are tolerated, never resolved.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Response

from . import access, chat, openai_format, sse
from .errors import ContentPolicyViolation, FluxWorkerError, InvalidRequest, RateLimited
from .generation import Image, ImageService, OptimizedPrompt, RunResult
from .imaging import OUTPUT_FORMATS
from .planning import BOOLEAN, INTEGER, NUMBER, OBJECT, STRING, check_optional_types

if TYPE_CHECKING:  # routes imports this module
    from .routes import Services

log = logging.getLogger(__name__)

# Fields we read or echo; everything else the SDKs send is accepted and ignored.
_OPTIONAL_FIELDS: dict[str, type | tuple[type, ...]] = {
    "model": STRING, "stream": BOOLEAN, "instructions": STRING, "temperature": NUMBER,
    "top_p": NUMBER, "max_output_tokens": INTEGER, "metadata": OBJECT, "store": BOOLEAN,
    "previous_response_id": STRING, "parallel_tool_calls": BOOLEAN, "user": STRING,
    "safety_identifier": STRING, "text": OBJECT, "reasoning": OBJECT,
}
# Echoed into the Response as sent (null when absent), as OpenAI does.
_ECHOED_FIELDS = ("temperature", "top_p", "metadata", "max_output_tokens",
                  "previous_response_id", "user", "safety_identifier")
_QUALITIES = ("low", "medium", "high")
# The message parts that hold text; images (a later issue), files and refusals are skipped.
_TEXT_PARTS = ("input_text", "output_text")


@dataclass(frozen=True)
class ImageTool:
    """The request's `image_generation` tool: the client wants the image itself back."""

    index: int  # in `tools`, to name the bad field in errors
    output_format: str | None
    output_compression: int | None
    size: str | None
    quality: str | None


@dataclass(frozen=True)
class ResponsesRequest:
    chat: chat.ChatRequest
    stream: bool
    image_tool: ImageTool | None
    echo: dict  # the Response fields that repeat the request


def respond(services: Services, body: object, image_base_url: str) -> Response | dict:
    """Answer a Responses request: the whole Response, or its SSE events.

    :raises FluxWorkerError: before any work for bad input, a full server or
        missing credentials; for non-stream requests also when no image was made.
    """
    request = parse_responses_request(body)
    access.describe_request(stream=request.stream)
    plan = plan_response(request, services)
    access.describe_request(model=plan.model.id, kind=plan.kind)
    answer = _Answer(request, plan, services.images, image_base_url)
    if request.stream:
        frames = _stream(answer, services.settings.sse_keepalive_seconds)
        return Response(frames, mimetype=sse.MIMETYPE, headers=sse.HEADERS)
    return _complete(answer)


def parse_responses_request(body: object) -> ResponsesRequest:
    """Validate a Responses request and turn its input into chat messages.

    :raises InvalidRequest: naming the offending field.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    check_optional_types(body, _OPTIONAL_FIELDS)
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequest("tools must be an array of tools.", param="tools")
    tool_choice = body.get("tool_choice")
    if tool_choice is not None and not isinstance(tool_choice, (str, dict)):
        raise InvalidRequest("tool_choice must be a string or an object.", param="tool_choice")
    messages = input_messages(body.get("input"), body.get("instructions"))
    with _renamed_param("messages", "input"):
        chat_request = chat.parse_chat_request({"messages": messages, "model": body.get("model"),
                                                "response_format": _response_format(body)})
    parallel = body.get("parallel_tool_calls")
    echo = {name: body.get(name) for name in _ECHOED_FIELDS}
    echo.update(instructions=body.get("instructions"), tools=tools or [],
                tool_choice=tool_choice if tool_choice is not None else "auto",
                parallel_tool_calls=True if parallel is None else parallel)
    return ResponsesRequest(chat=chat_request, stream=bool(body.get("stream")),
                            image_tool=image_tool(tools or []), echo=echo)


def _response_format(body: dict) -> dict | None:
    """`text.format` as the chat API's response_format: a request for JSON
    (the Vercel AI SDK's generateObject) is a side request, not a picture."""
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("json_schema", "json_object"):
        return None
    return {"type": fmt["type"], "json_schema": {"schema": fmt.get("schema")}}


def input_messages(value: object, instructions: str | None = None) -> list[dict]:
    """Turn `input` (a string, or a list of items) into chat messages (text, and
    `input_image` parts as `image_url` parts).

    Items that are not messages (`item_reference`, earlier tool calls) carry
    nothing we can draw, so they are skipped.

    :raises InvalidRequest: for a malformed input, or one without user text.
    """
    if isinstance(value, str):
        items: list = [{"role": "user", "content": value}]
    elif isinstance(value, list):
        items = value
    else:
        raise InvalidRequest("input must be a string or an array of input items.", param="input")
    messages: list[dict] = [{"role": "system", "content": instructions}] if instructions else []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidRequest(f"input[{index}] must be an object.", param=f"input[{index}]")
        kind = item.get("type")
        if kind not in (None, "message") or (kind is None and "role" not in item):
            continue  # {"id": …} alone is an item_reference without its type
        if not isinstance(item.get("role"), str):
            raise InvalidRequest(f"input[{index}] must have a string role.",
                                 param=f"input[{index}].role")
        text = _content_text(item.get("content"), index)
        pictures = _input_images(item.get("content"))
        messages.append({"role": item["role"], "content": [
            {"type": "text", "text": text}, *pictures] if pictures else text})
    if not any(m["role"] == "user" and (isinstance(m["content"], list) or m["content"].strip())
               for m in messages):
        raise InvalidRequest("input has no user text to draw.", param="input")
    return messages


def _input_images(content: object) -> list[dict]:
    """A message's `input_image` parts as the chat API's `image_url` parts."""
    if not isinstance(content, list):
        return []
    return [{"type": "image_url", "image_url": {"url": part.get("image_url")}}
            for part in content if isinstance(part, dict) and part.get("type") == "input_image"]


def _content_text(content: object, index: int) -> str:
    """A message's text: the string, or its text parts joined as the chat path joins them."""
    if content is None or isinstance(content, str):
        return content or ""
    param = f"input[{index}].content"
    if not isinstance(content, list):
        raise InvalidRequest(f"{param} must be a string or an array of content parts.",
                             param=param)
    texts = []
    for part in content:
        if not isinstance(part, dict):
            raise InvalidRequest(f"{param} parts must be objects.", param=param)
        if part.get("type") in _TEXT_PARTS:
            if not isinstance(part.get("text"), str):
                raise InvalidRequest(f"{param} text parts need a string `text`.", param=param)
            texts.append(part["text"])
    return " ".join(texts)


def image_tool(tools: list) -> ImageTool | None:
    """Return the first `image_generation` tool, checked; other tools are ignored.

    :raises InvalidRequest: for a tool that is not an object, or image
        settings we cannot honour.
    """
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise InvalidRequest(f"tools[{index}] must be an object.", param=f"tools[{index}]")
        if tool.get("type") != "image_generation":
            continue
        output_format = tool.get("output_format")
        if output_format is not None and output_format not in OUTPUT_FORMATS:
            raise InvalidRequest("output_format must be png, jpeg or webp.",
                                 param=f"tools[{index}].output_format")
        compression = tool.get("output_compression")
        if compression is not None and (not isinstance(compression, int)
                                        or isinstance(compression, bool)
                                        or not 0 <= compression <= 100):
            raise InvalidRequest("output_compression must be an integer from 0 to 100.",
                                 param=f"tools[{index}].output_compression")
        size = tool.get("size")
        if size is not None and not isinstance(size, str):
            raise InvalidRequest("size must be a string such as 1024x1024 or auto.",
                                 param=f"tools[{index}].size")
        quality = tool.get("quality")
        return ImageTool(index, output_format, compression, size,
                         quality if quality in _QUALITIES else None)
    return None


def plan_response(request: ResponsesRequest, services: Services) -> chat.ChatPlan:
    """Plan as the chat endpoint does, then apply the image tool's size and format.

    :raises InvalidRequest: for a prompt or size the model cannot make.
    """
    tool = request.image_tool
    size = tool.size if tool else None
    with _renamed_param("messages", "input"), \
            _renamed_param("size", f"tools[{tool.index if tool else 0}].size"):
        plan = chat.plan_chat(request.chat, services.catalog, services.pictures,
                              language=services.settings.response_language,
                              prompt_model=services.images.prompt_model, size=size)
    if plan.job is None or tool is None:
        return plan
    # The tool is GPT-image's: PNG unless it says otherwise, as OpenAI answers.
    job = dataclasses.replace(plan.job, output_format=tool.output_format or "png",
                              output_compression=tool.output_compression)
    return dataclasses.replace(plan, job=job)


@contextmanager
def _renamed_param(old: str, new: str) -> Iterator[None]:
    """Re-label the chat path's errors with this endpoint's field names."""
    try:
        yield
    except InvalidRequest as error:
        if error.param == old:
            error.param = new
        raise


class _Answer:
    """One Response in the making: its ids, what it echoes, and its items' shapes."""

    def __init__(self, request: ResponsesRequest, plan: chat.ChatPlan, images: ImageService,
                 image_base_url: str):
        self.request = request
        self.plan = plan
        self.images = images
        self.image_base_url = image_base_url
        self.id = "resp_" + secrets.token_hex(24)
        self.created_at = int(time.time())
        self.message_id = "msg_" + secrets.token_hex(24)
        wants_image = request.image_tool is not None and plan.job is not None
        self.image_call_id = "ig_" + secrets.token_hex(24) if wants_image else None
        self.message_index = 1 if wants_image else 0
        self._encoded: dict[str, str] = {}  # image key -> base64, made once per stream

    def response(self, status: str, output: list[dict], *, text: str | None = None,
                 error: FluxWorkerError | None = None) -> dict:
        """The Response object; `text` (the whole reply) adds usage and completion time."""
        return {
            "id": self.id, "object": "response", "created_at": self.created_at,
            "completed_at": int(time.time()) if status == "completed" else None,
            "status": status, "error": _response_error(error) if error else None,
            "incomplete_details": None, "model": self.plan.model.id, "output": output,
            **self.request.echo, "store": False,
            "usage": self.usage(text) if text is not None else None,
        }

    def usage(self, text: str) -> dict:
        input_tokens = openai_format.estimate_tokens(self.request.chat.prompt)
        output_tokens = openai_format.estimate_tokens(text)
        return {"input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens}

    def message(self, status: str, text: str | None) -> dict:
        """The assistant message; `text` None means no content part yet."""
        content = [] if text is None else [_text_part(text)]
        return {"type": "message", "id": self.message_id, "role": "assistant",
                "status": status, "content": content}

    def image_call(self, status: str, result: RunResult | None = None) -> dict:
        """The image_generation_call item: the image's base64 once the run made one."""
        item: dict = {"type": "image_generation_call", "id": self.image_call_id,
                      "status": status, "result": None}
        if result is not None and result.images:
            image: Image = result.images[0]
            tool = self.request.image_tool
            if image.key not in self._encoded:  # sent in output_item.done and completed
                self._encoded[image.key] = base64.b64encode(image.data).decode("ascii")
            item.update(result=self._encoded[image.key], output_format=image.output_format,
                        size=f"{image.width}x{image.height}", background="opaque",
                        quality=(tool.quality if tool else None) or "auto")
            revised = _revised_prompt(self.images, result.optimized)
            if revised:
                item["revised_prompt"] = revised
        return item

    def output(self, text: str, result: RunResult | None, status: str = "completed",
               image_status: str = "completed") -> list[dict]:
        """The output items in OpenAI's order: the image call, then the message."""
        message = self.message(status, text)
        if self.image_call_id is None:
            return [message]
        return [self.image_call(image_status, result), message]


def _text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _revised_prompt(images: ImageService, optimized: OptimizedPrompt) -> str | None:
    """The prompt drawn, when the optimizer rewrote it (as the Images API reports it)."""
    return optimized.text if images.optimizer is not None and not optimized.failed else None


def _response_error(error: FluxWorkerError) -> dict:
    """The Response's `error`: its `code` may only take the values OpenAI lists."""
    if isinstance(error, RateLimited):
        code = "rate_limit_exceeded"
    elif isinstance(error, ContentPolicyViolation):
        code = "image_content_policy_violation"
    else:
        code = "server_error"
    return {"code": code, "message": error.message}


def _complete(answer: _Answer) -> dict:
    """The whole Response (waits for the image).

    :raises FluxWorkerError: when the work cannot start or no image was made.
    """
    plan = answer.plan
    if plan.text is not None:
        return answer.response("completed", answer.output(plan.text, None), text=plan.text)
    assert plan.job is not None and plan.reply is not None
    pieces = [plan.reply.opening()]
    run = answer.images.start(plan.job, progress=chat.ReplyProgress(
        plan, answer.image_base_url, pieces.append))
    result = run.result()
    if not result.images:
        raise result.first_error()
    text = "".join(pieces)
    return answer.response("completed", answer.output(text, result), text=text)


class _Events:
    """Frames events with their `event:` and `data:` lines, numbered in the order sent.

    The request thread numbers the first events before the run starts and
    the run's thread numbers the rest, so the count never races.
    """

    def __init__(self, answer: _Answer):
        self.answer = answer
        self.sequence_number = 0

    def frame(self, kind: str, **fields: object) -> str:
        payload = {"type": kind, "sequence_number": self.sequence_number, **fields}
        self.sequence_number += 1
        return sse.named_event(payload)

    def opening(self, text: str) -> str:
        """Everything up to the first text: sent at once, before any upstream call."""
        answer = self.answer
        snapshot = answer.response("in_progress", [])
        frames = [self.frame("response.created", response=snapshot),
                  self.frame("response.in_progress", response=snapshot)]
        if answer.image_call_id is not None:
            frames += [self.frame("response.output_item.added", output_index=0,
                                  item=answer.image_call("in_progress")),
                       self.image_call_event("in_progress")]
        frames += [self.frame("response.output_item.added", output_index=answer.message_index,
                              item=answer.message("in_progress", None)),
                   self.frame("response.content_part.added", **self.text_position(),
                              part={"type": "output_text", "text": "", "annotations": []}),
                   self.delta(text)]
        return "".join(frames)

    def image_call_event(self, stage: str) -> str:
        return self.frame(f"response.image_generation_call.{stage}", output_index=0,
                          item_id=self.answer.image_call_id)

    def text_position(self) -> dict:
        return {"item_id": self.answer.message_id, "output_index": self.answer.message_index,
                "content_index": 0}

    def delta(self, text: str) -> str:
        return self.frame("response.output_text.delta", **self.text_position(), delta=text,
                          logprobs=[])

    def closing(self, text: str, result: RunResult | None) -> str:
        """The message's end and `response.completed` with the full output and usage."""
        answer = self.answer
        return "".join([
            self.frame("response.output_text.done", **self.text_position(), text=text,
                       logprobs=[]),
            self.frame("response.content_part.done", **self.text_position(),
                       part=_text_part(text)),
            self.frame("response.output_item.done", output_index=answer.message_index,
                       item=answer.message("completed", text)),
            self.frame("response.completed", response=answer.response(
                "completed", answer.output(text, result), text=text)),
        ])


class _StreamProgress(chat.ReplyProgress):
    """The run's progress as Responses events, then the stream's end, on every path."""

    def __init__(self, events: _Events, channel: sse.EventChannel, opening: str):
        answer = events.answer
        super().__init__(answer.plan, answer.image_base_url, self._send_text)
        self.events = events
        self.answer = answer
        self.channel = channel
        self.pieces = [opening]

    def _send_text(self, text: str) -> None:
        self.pieces.append(text)
        self.channel.send(self.events.delta(text))

    def generating(self) -> None:
        if self.answer.image_call_id is not None:
            self.channel.send(self.events.image_call_event("generating"))
        super().generating()

    def finished(self, result: RunResult) -> None:
        try:
            if result.images:
                self._succeeded(result)
            else:
                self._failed(result, result.first_error())
        finally:
            self.channel.close()

    def _succeeded(self, result: RunResult) -> None:
        super().finished(result)  # the text with the image link
        events, answer = self.events, self.answer
        if answer.image_call_id is not None:
            self.channel.send(events.image_call_event("completed"))
            self.channel.send(events.frame("response.output_item.done", output_index=0,
                                           item=answer.image_call("completed", result)))
        self.channel.send(events.closing("".join(self.pieces), result))

    def _failed(self, result: RunResult, error: FluxWorkerError) -> None:
        # Chat UIs show text, not events, so the failure is said in the text first.
        log.warning("responses stream failed after headers: %s", error.message)
        self._send_text(self.reply.failure(error.message))
        output = self.answer.output("".join(self.pieces), result, status="incomplete",
                                    image_status="failed")
        self.channel.send(self.events.frame("response.failed", response=self.answer.response(
            "failed", output, error=error)))


def _stream(answer: _Answer, keepalive_seconds: float) -> Iterator[str]:
    """Start the work and return the SSE frames as they come.

    :raises FluxWorkerError: before any frame, when the work cannot start.
    """
    events = _Events(answer)
    plan = answer.plan
    if plan.text is not None:
        return iter([events.opening(plan.text) + events.closing(plan.text, None)])
    assert plan.job is not None and plan.reply is not None
    opening = plan.reply.opening()
    first = events.opening(opening)  # numbered before the run's thread can send anything
    channel = sse.EventChannel()
    answer.images.start(plan.job, progress=_StreamProgress(events, channel, opening))
    return _frames(first, channel, keepalive_seconds)


def _frames(first: str, channel: sse.EventChannel, keepalive_seconds: float) -> Iterator[str]:
    yield first
    yield from channel.frames(keepalive_seconds)
