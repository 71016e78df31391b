"""The OpenAI Images API: `POST /v1/images/generations`."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from . import openai_format
from .errors import InvalidRequest
from .generation import ImageService
from .models import ImageModel
from .planning import INTEGER, STRING, ImageJob, check_optional_types, plan_job

MAX_IMAGES = 4
_OPTIONAL_FIELDS = {"model": STRING, "size": STRING, "quality": STRING, "style": STRING,
                    "user": STRING, "response_format": STRING, "n": INTEGER}


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
    return plan_job(request.prompt, model, size=request.size, prompt_param="prompt")


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
        items.append(item)
    return openai_format.images_response(items)
