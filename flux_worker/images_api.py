"""The OpenAI Images API: `POST /v1/images/generations`."""

from __future__ import annotations

import base64
import dataclasses
import logging
from dataclasses import dataclass

from . import openai_format
from .chat import check_optional_types
from .errors import FluxWorkerError, InvalidRequest
from .generation import ImageJob, ImageService
from .models import ImageModel
from .sizes import parse_prompt, ratio_from_size, size_for

log = logging.getLogger(__name__)
MAX_IMAGES = 4
_OPTIONAL_FIELDS = {"model": str, "size": str, "quality": str, "style": str, "user": str,
                    "response_format": str, "n": int}


@dataclass(frozen=True)
class ImagesRequest:
    prompt: str
    model_name: str | None
    n: int
    size: str | None
    response_format: str


def parse_images_request(body: object) -> ImagesRequest:
    """Validate an images request and copy out what we use.

    :raises InvalidRequest: naming the offending field.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest("prompt must be a non-empty string.", param="prompt")
    check_optional_types(body, _OPTIONAL_FIELDS)
    n = body.get("n", 1) if body.get("n") is not None else 1
    if not 1 <= n <= MAX_IMAGES:
        raise InvalidRequest(f"n must be between 1 and {MAX_IMAGES}.", param="n")
    model_name = body.get("model")
    response_format = body.get("response_format")
    if response_format is None:
        # As OpenAI does: gpt-image models answer with base64, DALL-E with URLs.
        response_format = "b64_json" if (model_name or "").startswith("gpt-image") else "url"
    if response_format not in ("url", "b64_json"):
        raise InvalidRequest("response_format must be 'url' or 'b64_json'.",
                             param="response_format")
    return ImagesRequest(prompt.strip(), model_name, n, body.get("size"), response_format)


def plan_images(request: ImagesRequest, model: ImageModel) -> ImageJob:
    """Turn the request into one job (run n times).

    :raises InvalidRequest: for a bad size, or a prompt over the model's limit.
    """
    parsed = parse_prompt(request.prompt, param="prompt")
    ratio = ratio_from_size(request.size) if request.size else None
    ratio = ratio or parsed.ratio
    if not parsed.text:
        raise InvalidRequest("The prompt is empty once the aspect ratio is taken out.",
                             param="prompt")
    if len(parsed.text) > model.max_prompt_chars:
        raise InvalidRequest(f"The prompt is {len(parsed.text)} characters; {model.id} takes at "
                             f"most {model.max_prompt_chars}.", param="prompt",
                             code="prompt_too_long")
    width, height = size_for(ratio, model, param="size" if request.size else "prompt")
    return ImageJob(prompt=parsed.text, model=model, width=width, height=height,
                    negative_prompt=parsed.negative)


def generate(service: ImageService, request: ImagesRequest, job: ImageJob,
             image_base_url: str) -> dict:
    """Make the images in parallel (capacity already reserved) and describe them.

    Images that were made are returned even when a sibling failed: they are
    paid for. Only when none was made is the first error raised.
    """
    try:
        optimized = service.optimize(job.prompt, job.width, job.height)
    except BaseException:
        service.capacity.release(request.n)
        raise
    revised = optimized.text if service.optimizer and not optimized.failed else None
    job = dataclasses.replace(job, prompt=optimized.text)
    futures = [service.submit(lambda: service.create(job)) for _ in range(request.n)]
    items, errors = [], []
    for future in futures:
        try:
            image = future.result()
        except FluxWorkerError as exc:
            errors.append(exc)
            continue
        except Exception:  # a bug in one must not discard its paid-for siblings
            log.exception("image generation failed")
            errors.append(FluxWorkerError("The server had an internal error."))
            continue
        item: dict = {"revised_prompt": revised} if revised else {}
        if request.response_format == "b64_json":
            item["b64_json"] = base64.b64encode(image.data).decode("ascii")
        else:
            item["url"] = f"{image_base_url}/image/{image.key}"
        items.append(item)
    if not items:
        raise errors[0]
    if errors:
        log.warning("%d of %d images failed: %s", len(errors), request.n, errors[0].message)
    return openai_format.images_response(items)
