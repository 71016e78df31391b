"""Chat completions: from a chat request to a reply with an image link."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from . import openai_format, sse
from .errors import InvalidRequest, error_body
from .generation import ImageService, OptimizedPrompt, Progress, RunResult
from .image_sources import PictureReader
from .input_images import check_count
from .models import ImageModel, ModelCatalog
from .planning import (
    BOOLEAN,
    EDIT_STRENGTH,
    INTEGER,
    NUMBER,
    OBJECT,
    STRING,
    ImageJob,
    check_optional_types,
    plan_job,
)
from .prompts import chat_messages, image_urls, last_user_index, last_user_text
from .refinement import asks_for_change, previous_picture
from .replies import ReplyText
from .side_requests import side_request

log = logging.getLogger(__name__)

_OPTIONAL_FIELDS: dict[str, type | tuple[type, ...]] = {
    "temperature": NUMBER, "top_p": NUMBER, "presence_penalty": NUMBER,
    "frequency_penalty": NUMBER, "max_tokens": INTEGER, "max_completion_tokens": INTEGER,
    "n": INTEGER, "user": STRING, "seed": INTEGER, "stream_options": OBJECT,
    "model": STRING, "stream": BOOLEAN, "response_format": OBJECT,
}


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict]
    prompt: str  # the user's words; "" when there are none (a side request may have none)
    stream: bool
    include_usage: bool
    model_name: str | None
    seed: int | None = None  # checked when planned (--seed in the prompt wins)
    response_format: dict | None = None  # JSON asked for: a front end's side request
    image_urls: tuple[tuple[object, str], ...] = ()  # pictures in the last user message
    previous_picture: str | None = None  # our link in the reply before it (refinement)


def parse_chat_request(body: object) -> ChatRequest:
    """Validate a chat request body and copy out what we use.

    :raises InvalidRequest: for a body that is not a valid chat request.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    check_optional_types(body, _OPTIONAL_FIELDS)
    options = body.get("stream_options") or {}
    include_usage = options.get("include_usage")
    include_usage = False if include_usage is None else include_usage  # null means unset
    if not isinstance(include_usage, bool):
        raise InvalidRequest("stream_options.include_usage must be true or false.",
                             param="stream_options.include_usage")
    messages = chat_messages(body.get("messages"))
    try:
        prompt = last_user_text(messages)
    except InvalidRequest:  # raised when planned, unless it is a side request or has pictures
        prompt = ""
    index = last_user_index(messages)
    urls = tuple(image_urls(messages[index], index)) if index is not None else ()
    previous = previous_picture(messages, index) if index is not None and not urls else None
    return ChatRequest(messages=messages, prompt=prompt,
                       stream=bool(body.get("stream")), include_usage=include_usage,
                       model_name=body.get("model"), seed=body.get("seed"),
                       response_format=body.get("response_format"), image_urls=urls,
                       previous_picture=previous)


@dataclass(frozen=True)
class ChatPlan:
    """A validated chat request, ready to run: either text only or an image."""

    chat: ChatRequest
    model: ImageModel
    text: str | None = None  # the whole answer to a front end's side request
    job: ImageJob | None = None
    reply: ReplyText | None = None
    kind: str = "picture"  # or the side request's kind, for the access log


def plan_chat(chat: ChatRequest, catalog: ModelCatalog, pictures: PictureReader, *,
              language: str, prompt_model: str | None, size: str | None = None) -> ChatPlan:
    """Decide what a chat request needs, raising for bad input before any work.
    `size` is an OpenAI size (the Responses API's image tool has one).

    Pictures in the last user message are changed as its words say; without
    any, a message asking to change the picture we drew just before it
    changes that one (refinement.py has the rule).

    :raises InvalidRequest: for an empty prompt, a prompt over the model's
        limit, a bad seed, a size or ratio the model cannot make, or a
        picture that cannot be read.
    """
    model = catalog.pick(chat.model_name)
    side = side_request(chat.messages, chat.response_format, language)
    if side is not None:
        return ChatPlan(chat, model, text=side.answer, kind=side.kind)
    if chat.image_urls:
        check_count(len(chat.image_urls), chat.image_urls[0][1])
    inputs = [pictures.read(url, param) for url, param in chat.image_urls]
    if not inputs and chat.previous_picture and asks_for_change(chat.prompt):
        try:
            inputs = [pictures.read(chat.previous_picture, "messages", origin="previous")]
        except InvalidRequest:  # gone, or never ours: only guessed, so draw from the words
            if not chat.prompt:
                raise
            log.info("the previous picture cannot be read; drawing from the words")
    if inputs:
        model = catalog.pick_editor(chat.model_name, mask=False)
    elif not chat.prompt:
        last_user_text(chat.messages)  # raises the reason there is no prompt
    param = chat.image_urls[0][1] if chat.image_urls else "messages"
    job = plan_job(chat.prompt, model, size=size, seed=chat.seed, prompt_param="messages",
                   pictures=inputs, strength=EDIT_STRENGTH, image_param=param)
    reply = ReplyText(language, original=chat.prompt, width=job.width, height=job.height,
                      prompt_model=prompt_model, drawn=job.draw_size, pictures=inputs)
    return ChatPlan(chat, model, job=job, reply=reply, kind="edit" if inputs else "picture")


class ReplyProgress(Progress):
    """Writes the reply's pieces after the opening as they become true."""

    def __init__(self, plan: ChatPlan, image_base_url: str, emit: Callable[[str], None]):
        assert plan.reply is not None
        self.plan = plan
        self.reply = plan.reply
        self.image_base_url = image_base_url
        self.emit = emit

    def optimized(self, prompt: OptimizedPrompt) -> None:
        self.emit(self.reply.optimized(prompt.text, prompt.failed))

    def generating(self) -> None:
        self.emit(self.reply.generating(self.plan.model.id))

    def finished(self, result: RunResult) -> None:
        if result.images:
            image = result.images[0]
            self.emit(self.reply.result(f"{self.image_base_url}/image/{image.key}", image.seed))


def complete(service: ImageService, plan: ChatPlan, image_base_url: str) -> dict:
    """Return the whole `chat.completion` (waits for the image).

    :raises FluxWorkerError: when the image could not be made.
    """
    if plan.text is not None:
        pieces = [plan.text]
    else:
        assert plan.job is not None and plan.reply is not None
        pieces = [plan.reply.opening()]
        result = service.start(plan.job, progress=ReplyProgress(plan, image_base_url,
                                                                  pieces.append)).result()
        if not result.images:
            raise result.first_error()
    return openai_format.chat_completion(id=openai_format.completion_id(), model=plan.model.id,
                                         content="".join(pieces), prompt=plan.chat.prompt)


class _StreamProgress(ReplyProgress):
    """The reply's pieces as SSE frames, then the stream's end, on every path."""

    def __init__(self, plan: ChatPlan, image_base_url: str, channel: sse.EventChannel,
                 chunks: openai_format.ChunkFactory, opening: str):
        super().__init__(plan, image_base_url, self._send_text)
        self.channel = channel
        self.chunks = chunks
        self.pieces = [opening]

    def _send_text(self, text: str) -> None:
        self.pieces.append(text)
        self.channel.send(sse.event(self.chunks.content(text)))

    def finished(self, result: RunResult) -> None:
        try:
            super().finished(result)
            if result.images:
                self.channel.send(sse.event(self.chunks.stop()))
                if self.plan.chat.include_usage:
                    self.channel.send(sse.event(self.chunks.usage(self.plan.chat.prompt,
                                                                  "".join(self.pieces))))
            else:
                error = result.first_error()
                # Chat UIs drop error events, so say it in the text; the error
                # event after it makes the openai SDK raise.
                log.warning("stream failed after headers: %s", error.message)
                self._send_text(self.reply.failure(error.message))
                self.channel.send(sse.event(error_body(error)))
        finally:
            self.channel.send(sse.DONE)
            self.channel.close()


def stream(service: ImageService, plan: ChatPlan, image_base_url: str,
           keepalive_seconds: float) -> Iterator[str]:
    """Start the work and return the SSE frames of the reply as they come.

    :raises FluxWorkerError: before any frame, when the work cannot start.
    """
    chunks = openai_format.ChunkFactory(id=openai_format.completion_id(), model=plan.model.id)
    if plan.text is not None:
        return _text_stream(chunks, plan, plan.text)
    assert plan.job is not None and plan.reply is not None
    # What is known already goes out from this thread, before any upstream call.
    opening = plan.reply.opening()
    channel = sse.EventChannel()
    service.start(plan.job, progress=_StreamProgress(plan, image_base_url, channel, chunks,
                                                     opening))
    # One write: the role chunk and the opening leave together.
    first = sse.event(chunks.role()) + sse.event(chunks.content(opening))
    return _frames(first, channel, keepalive_seconds)


def _frames(first: str, channel: sse.EventChannel, keepalive_seconds: float) -> Iterator[str]:
    yield first
    yield from channel.frames(keepalive_seconds)


def _text_stream(chunks: openai_format.ChunkFactory, plan: ChatPlan, text: str) -> Iterator[str]:
    yield sse.event(chunks.role())
    yield sse.event(chunks.content(text))
    yield sse.event(chunks.stop())
    if plan.chat.include_usage:
        yield sse.event(chunks.usage(plan.chat.prompt, text))
    yield sse.DONE
