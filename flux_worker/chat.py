"""Chat completions: from a chat request to a reply with an image link."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from . import openai_format, sse
from .errors import FluxWorkerError, InvalidRequest, error_body
from .generation import ImageJob, ImageService
from .models import ImageModel
from .prompts import housekeeping_reply, is_housekeeping, last_user_text
from .replies import ReplyText
from .sizes import parse_prompt, size_for

log = logging.getLogger(__name__)

# Optional OpenAI fields we ignore but still type-check, so a wrong type is a
# clear 400 rather than silently odd behaviour.
_NUMBER, _INTEGER, _STRING, _BOOLEAN, _OBJECT = (int, float), int, str, bool, dict
_OPTIONAL_FIELDS = {
    "temperature": _NUMBER, "top_p": _NUMBER, "presence_penalty": _NUMBER,
    "frequency_penalty": _NUMBER, "max_tokens": _INTEGER, "max_completion_tokens": _INTEGER,
    "n": _INTEGER, "user": _STRING, "seed": _INTEGER, "stream_options": _OBJECT,
    "model": _STRING, "stream": _BOOLEAN,
}


def check_optional_types(body: dict, fields: dict[str, type | tuple]) -> None:
    """Raise for a known optional field that is present with the wrong type.

    :raises InvalidRequest: naming the field.
    """
    for name, expected in fields.items():
        value = body.get(name)
        wrong_bool = isinstance(value, bool) and expected is not _BOOLEAN
        if value is not None and (wrong_bool or not isinstance(value, expected)):
            kind = {_NUMBER: "a number", _INTEGER: "an integer", _STRING: "a string",
                    _BOOLEAN: "true or false", _OBJECT: "an object"}.get(expected, "valid")
            raise InvalidRequest(f"{name} must be {kind}.", param=name)


@dataclass(frozen=True)
class ChatRequest:
    messages: list
    prompt: str
    stream: bool
    include_usage: bool
    model_name: str | None


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
    return ChatRequest(messages=body.get("messages"), prompt=last_user_text(body.get("messages")),
                       stream=bool(body.get("stream")), include_usage=include_usage,
                       model_name=body.get("model"))


@dataclass(frozen=True)
class ChatPlan:
    """A validated chat request, ready to run: either text only or an image."""

    chat: ChatRequest
    model: ImageModel
    text: str | None = None  # the whole answer for housekeeping requests
    job: ImageJob | None = None
    reply: ReplyText | None = None


def plan_chat(chat: ChatRequest, model: ImageModel, *, language: str,
              prompt_model: str | None) -> ChatPlan:
    """Decide what a chat request needs, raising for bad input before any work.

    :raises InvalidRequest: for an empty prompt, a prompt over the model's
        limit, or a ratio the model cannot make.
    """
    if is_housekeeping(chat.prompt):
        return ChatPlan(chat, model, text=housekeeping_reply(chat.prompt, chat.messages))
    parsed = parse_prompt(chat.prompt)
    if not parsed.text:
        raise InvalidRequest("The prompt is empty once the aspect ratio is taken out.",
                             param="messages")
    if len(parsed.text) > model.max_prompt_chars:
        raise InvalidRequest(f"The prompt is {len(parsed.text)} characters; {model.id} takes at "
                             f"most {model.max_prompt_chars}.", param="messages",
                             code="prompt_too_long")
    width, height = size_for(parsed.ratio, model)
    job = ImageJob(prompt=parsed.text, model=model, width=width, height=height,
                   negative_prompt=parsed.negative)
    reply = ReplyText(language, original=chat.prompt, width=width, height=height,
                      prompt_model=prompt_model)
    return ChatPlan(chat, model, job=job, reply=reply)


def produce(service: ImageService, plan: ChatPlan, image_base_url: str,
            emit: Callable[[str], None]) -> None:
    """Run the slow path, emitting each piece of the reply after the opening
    as it becomes true.

    :raises FluxWorkerError: when the image could not be made.
    """
    job, reply = plan.job, plan.reply
    timings: dict[str, float] = {}
    started = time.monotonic()
    optimized = service.optimize(job.prompt, job.width, job.height)
    timings["optimize_ms"] = (time.monotonic() - started) * 1000
    emit(reply.optimized(optimized.text, optimized.failed))
    emit(reply.generating(job.model.id))
    image = service.create(dataclasses.replace(job, prompt=optimized.text), timings)
    emit(reply.result(f"{image_base_url}/image/{image.key}"))
    log.info("image generated key=%s model=%s size=%dx%d %s", image.key, job.model.id,
             job.width, job.height, " ".join(f"{k}={v:.0f}" for k, v in timings.items()))


def complete(service: ImageService, plan: ChatPlan, image_base_url: str) -> dict:
    """Return the whole `chat.completion` (waits for the image).

    :raises FluxWorkerError: when the image could not be made.
    """
    if plan.text is not None:
        pieces = [plan.text]
    else:
        pieces = [plan.reply.opening()]
        service.submit(lambda: produce(service, plan, image_base_url, pieces.append)).result()
    return openai_format.chat_completion(id=openai_format.completion_id(), model=plan.model.id,
                                         content="".join(pieces), prompt=plan.chat.prompt)


def stream(service: ImageService, plan: ChatPlan, image_base_url: str,
           keepalive_seconds: float) -> Iterator[str]:
    """Start the work and return the SSE frames of the reply as they come."""
    chunks = openai_format.ChunkFactory(id=openai_format.completion_id(), model=plan.model.id)
    channel = sse.EventChannel()
    pieces: list[str] = []

    def emit(text: str) -> None:
        pieces.append(text)
        channel.send(sse.event(chunks.content(text)))

    def finish() -> None:
        channel.send(sse.event(chunks.stop()))
        if plan.chat.include_usage:
            channel.send(sse.event(chunks.usage(plan.chat.prompt, "".join(pieces))))

    def work() -> None:
        try:
            produce(service, plan, image_base_url, emit)
            finish()
        except FluxWorkerError as exc:
            fail(exc)
        except Exception:  # never leave a stream hanging on a bug
            log.exception("generation failed")
            fail(FluxWorkerError("The server had an internal error."))
        finally:
            channel.send(sse.DONE)
            channel.close()

    def fail(exc: FluxWorkerError) -> None:
        # Chat UIs drop error events, so say it in the text; the error event
        # after it makes the openai SDK raise.
        log.warning("stream failed after headers: %s", exc.message)
        channel.send(sse.event(chunks.content(plan.reply.failure(exc.message))))
        channel.send(sse.event(error_body(exc)))

    if plan.text is not None:
        return _text_stream(chunks, plan, plan.text)
    # What is known already goes out from this thread, before any upstream call.
    opening = plan.reply.opening()
    pieces.append(opening)
    service.submit(work)
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
