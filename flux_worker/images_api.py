"""The OpenAI Images API: generations, edits and variations, as JSON or streamed.

The GPT-image fields are accepted as those clients send them; what our models
cannot do (transparency, quality levels, partial images) is accepted and
reported as what was made.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from . import openai_format, sse
from .errors import InvalidRequest, error_body
from .generation import Image, ImageService, Progress, RunResult
from .imaging import OUTPUT_FORMATS
from .input_images import InputImage, load_mask
from .models import ImageModel, ModelCatalog
from .planning import (
    BOOLEAN,
    EDIT_STRENGTH,
    INTEGER,
    NUMBER,
    STRING,
    VARIATION_STRENGTH,
    ImageJob,
    check_optional_types,
    plan_job,
)

MAX_IMAGES = 10  # OpenAI's own limit for n
_OPTIONAL_FIELDS: dict[str, type | tuple[type, ...]] = {
    "model": STRING, "size": STRING, "quality": STRING, "style": STRING, "user": STRING,
    "response_format": STRING, "n": INTEGER, "output_format": STRING,
    "output_compression": INTEGER, "background": STRING, "moderation": STRING,
    "partial_images": INTEGER, "stream": BOOLEAN, "seed": INTEGER, "safety_identifier": STRING,
    "input_fidelity": STRING, "strength": NUMBER,
}
# Multipart forms carry text: these fields are read as numbers or booleans.
_FORM_INTEGERS = ("n", "seed", "output_compression", "partial_images")
_FORM_NUMBERS = ("strength",)
_FORM_BOOLEANS = ("stream",)
_FORM_INTEGER = re.compile(r"-?[0-9]+")
_FORM_NUMBER = re.compile(r"-?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
# Values OpenAI documents for each field; anything else is a 400 naming it.
_CHOICES = {
    "quality": ("auto", "low", "medium", "high", "xhigh", "max", "standard", "hd"),
    "style": ("vivid", "natural"),
    "background": ("auto", "opaque", "transparent"),
    "moderation": ("auto", "low"),
    "output_format": tuple(OUTPUT_FORMATS),
    "response_format": ("url", "b64_json"),
    "input_fidelity": ("low", "high"),
}
_RANGES = {"n": (1, MAX_IMAGES), "output_compression": (0, 100), "partial_images": (0, 3)}


@dataclass(frozen=True)
class ImagesRequest:
    prompt: str
    model_name: str | None
    n: int
    size: str | None
    response_format: str
    output_format: str | None  # None: the model's own format
    output_compression: int | None
    quality: str  # as reported back: low, medium or high
    stream: bool
    seed: int | None  # an extension: the first image's seed
    event: str = "image_generation"  # stream events: image_generation.* or image_edit.*
    strength: float | None = None  # an extension: how far an init image may change (0-1)


def parse_images_request(body: object, kind: str = "generation") -> ImagesRequest:
    """Validate an images request (a generation, an edit or a variation) and
    copy out what we use. The pictures themselves are read by the caller.

    :raises InvalidRequest: naming the offending field.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    prompt = body.get("prompt")
    if kind == "variation":  # OpenAI's variations take no prompt
        prompt = ""
    elif not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest("prompt must be a non-empty string.", param="prompt")
    check_optional_types(body, _OPTIONAL_FIELDS)
    for name, allowed in _CHOICES.items():
        if body.get(name) is not None and body[name] not in allowed:
            raise InvalidRequest(f"{name} must be one of {', '.join(allowed)}.", param=name)
    for name, (low, high) in _RANGES.items():
        if body.get(name) is not None and not low <= body[name] <= high:
            raise InvalidRequest(f"{name} must be between {low} and {high}.", param=name)
    strength = body.get("strength")
    if strength is not None and not 0 <= strength <= 1:
        raise InvalidRequest("strength must be between 0 and 1.", param="strength")
    model_name = body.get("model") or ""
    gpt_image = model_name.startswith("gpt-image")
    stream = bool(body.get("stream"))
    # As OpenAI does: gpt-image models answer with base64 PNG, DALL-E with
    # URLs; a stream always carries base64. Edits answer base64 unless a
    # DALL-E model is named: clients that edit read only b64_json (LibreChat).
    b64_default = gpt_image or stream or (kind == "edit" and not model_name.startswith("dall-e"))
    response_format = body.get("response_format") or ("b64_json" if b64_default else "url")
    output_format = body.get("output_format") or ("png" if gpt_image else None)
    quality = body.get("quality")
    return ImagesRequest(
        prompt=prompt.strip(), model_name=model_name or None, n=body.get("n") or 1,
        size=body.get("size"), response_format="b64_json" if stream else response_format,
        output_format=output_format, output_compression=body.get("output_compression"),
        quality=quality if quality in ("low", "medium", "high") else "high", stream=stream,
        seed=body.get("seed"), event="image_generation" if kind == "generation" else "image_edit",
        strength=strength)


def form_fields(form: Mapping[str, str]) -> dict[str, object]:
    """A multipart form's text fields, with the numbers and booleans read as such.

    :raises InvalidRequest: naming a field that does not read as its type.
    """
    fields: dict[str, object] = dict(form)
    for name in _FORM_INTEGERS + _FORM_NUMBERS + _FORM_BOOLEANS:
        value = form.get(name)
        if value is None or value == "":
            fields.pop(name, None)
            continue
        text = value.strip().lower()
        if name in _FORM_BOOLEANS:
            if text not in ("true", "false", "1", "0"):
                raise InvalidRequest(f"{name} must be true or false.", param=name)
            fields[name] = text in ("true", "1")
            continue
        # Decimal digits only: Python's int() and float() also read "1_0", "inf" and "nan".
        pattern = _FORM_INTEGER if name in _FORM_INTEGERS else _FORM_NUMBER
        if len(text) > 40 or not pattern.fullmatch(text):
            raise InvalidRequest(f"{name} must be a number.", param=name)
        fields[name] = int(text) if name in _FORM_INTEGERS else float(text)
    return fields


def plan_edit(request: ImagesRequest, catalog: ModelCatalog, pictures: list[InputImage],
              mask: bytes | None, *, variation: bool = False) -> ImageJob:
    """Turn an edit (or a variation) into one job: the model that can take
    the pictures (with a mask: the inpainting model), the pictures encoded
    for it.

    :raises InvalidRequest: for no picture, a bad mask, or what plan_job refuses.
    """
    if not pictures:
        raise InvalidRequest("image is required: send the picture to change as a file.",
                             param="image")
    model = catalog.pick_editor(request.model_name, mask=mask is not None)
    mask_image = load_mask(mask, "mask", pictures[0]) if mask is not None else None
    strength = request.strength
    if strength is None and mask is None:
        strength = VARIATION_STRENGTH if variation else EDIT_STRENGTH
    job = plan_job(request.prompt, model, size=request.size, seed=request.seed,
                   prompt_param="prompt", pictures=pictures, mask=mask_image,
                   strength=strength, image_param="image")
    return dataclasses.replace(job, output_format=request.output_format,
                               output_compression=request.output_compression)


def plan_images(request: ImagesRequest, model: ImageModel) -> ImageJob:
    """Turn the request into one job (run n times, one seed each).

    :raises InvalidRequest: for a bad size or seed, or a prompt over the model's limit.
    """
    job = plan_job(request.prompt, model, size=request.size, seed=request.seed,
                   prompt_param="prompt")
    return dataclasses.replace(job, output_format=request.output_format,
                               output_compression=request.output_compression)


def generate(service: ImageService, request: ImagesRequest, job: ImageJob,
             image_base_url: str) -> dict:
    """Make the images in parallel and describe them.

    Images that were made are returned even when a sibling failed: they are
    paid for. Only when none was made is the first error raised.

    :raises FluxWorkerError: when the work cannot start, or no image was made.
    """
    result = service.start(job, count=request.n).result()
    if not result.images:
        raise result.first_error()
    optimized = result.optimized
    revised = optimized.text if service.optimizer and not optimized.failed else None
    items = []
    for image in result.images:
        item: dict = {"revised_prompt": revised} if revised else {}
        if request.response_format == "b64_json":
            item["b64_json"] = base64.b64encode(image.data).decode("ascii")
        else:
            item["url"] = f"{image_base_url}/image/{image.key}"
        if image.seed is not None:
            item["seed"] = image.seed  # an extension; clients ignore unknown fields
        items.append(item)
    first = result.images[0]
    # `size` is left out: the published schema allows only three sizes.
    return {**openai_format.images_response(items), "background": "opaque",
            "output_format": first.output_format, "quality": request.quality,
            "usage": _usage(request.prompt, len(result.images))}


class _StreamProgress(Progress):
    """Sends each image as an `image_generation.completed` event as soon as it
    is stored, then ends the stream (with an error event if none was made)."""

    def __init__(self, request: ImagesRequest, channel: sse.EventChannel):
        self.request = request
        self.channel = channel

    def image_made(self, image: Image) -> None:
        self.channel.send(sse.named_event({
            "type": f"{self.request.event}.completed",
            "b64_json": base64.b64encode(image.data).decode("ascii"),
            "created_at": int(time.time()), "background": "opaque",
            "output_format": image.output_format, "quality": self.request.quality,
            "size": f"{image.width}x{image.height}",
            "usage": _usage(self.request.prompt, 1, output_details=False),
        }))

    def finished(self, result: RunResult) -> None:
        try:
            if not result.images:
                self.channel.send(sse.named_event({"type": "error",
                                                **error_body(result.first_error())}))
        finally:
            self.channel.close()


def stream(service: ImageService, request: ImagesRequest, job: ImageJob,
           keepalive_seconds: float) -> Iterator[str]:
    """Start the work and return the SSE frames: keep-alive comments while
    waiting, one completed event per image. Our models make no partial images,
    so `partial_images` sends none, as OpenAI allows.

    :raises FluxWorkerError: before any frame, when the work cannot start.
    """
    channel = sse.EventChannel()
    service.start(job, count=request.n, progress=_StreamProgress(request, channel))
    return channel.frames(keepalive_seconds)


def _usage(prompt: str, images: int, output_details: bool = True) -> dict:
    """GPT-image's usage shape. Workers AI bills in neurons, not tokens: the
    prompt's estimated tokens are the input, and images count as no output."""
    text_tokens = openai_format.estimate_tokens(prompt)
    usage = {"input_tokens": text_tokens,
             "input_tokens_details": {"image_tokens": 0, "text_tokens": text_tokens},
             "output_tokens": 0, "total_tokens": text_tokens}
    if output_details:
        usage["output_tokens_details"] = {"image_tokens": 0, "text_tokens": 0}
    return usage
