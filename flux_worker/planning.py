"""What every endpoint's request becomes: one `ImageJob`, planned and checked
in one place, before any capacity is taken or any upstream is called."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .errors import InvalidRequest
from .models import ImageModel
from .sizes import parse_prompt, ratio_from_size, size_for

# Optional OpenAI fields we ignore but still type-check, so a wrong type is a
# clear 400 rather than silently odd behaviour.
NUMBER, INTEGER, STRING, BOOLEAN, OBJECT = (int, float), int, str, bool, dict
_KINDS = {NUMBER: "a number", INTEGER: "an integer", STRING: "a string",
          BOOLEAN: "true or false", OBJECT: "an object"}


@dataclass(frozen=True)
class ImageJob:
    """Everything the slow path needs, copied out of the request."""

    prompt: str
    model: ImageModel
    width: int  # the size delivered, exactly
    height: int
    negative_prompt: str = ""
    seed: int | None = None  # the first image's; None when the model takes none
    seed_given: bool = False  # the client's: image i gets seed + i, else a fresh random one
    # What the model is asked to draw, when that differs from the size
    # delivered (rounded to its step); the image is then fitted to width x height.
    draw_size: tuple[int, int] | None = None
    output_format: str | None = None  # "png", "jpeg" or "webp"; None keeps the model's own
    output_compression: int | None = None  # 0-100, for jpeg and webp


def check_optional_types(body: dict, fields: Mapping[str, type | tuple[type, ...]]) -> None:
    """Raise for a known optional field that is present with the wrong type.

    :raises InvalidRequest: naming the field.
    """
    for name, expected in fields.items():
        value = body.get(name)
        wrong_bool = isinstance(value, bool) and expected is not BOOLEAN
        if value is not None and (wrong_bool or not isinstance(value, expected)):
            raise InvalidRequest(f"{name} must be {_KINDS.get(expected, 'valid')}.", param=name)


def plan_job(prompt: str, model: ImageModel, *, size: str | None = None,
             prompt_param: str = "prompt") -> ImageJob:
    """Turn a prompt (and an OpenAI `size`, if any) into the job to run.

    :raises InvalidRequest: for an empty prompt, a prompt over the model's
        limit, or a size or ratio the model cannot make; `param` names the
        field the client must change.
    """
    parsed = parse_prompt(prompt, param=prompt_param)
    ratio = (ratio_from_size(size) if size else None) or parsed.ratio
    if not parsed.text:
        raise InvalidRequest("The prompt is empty once the aspect ratio is taken out.",
                             param=prompt_param)
    if len(parsed.text) > model.max_prompt_chars:
        raise InvalidRequest(f"The prompt is {len(parsed.text)} characters; {model.id} takes at "
                             f"most {model.max_prompt_chars}.", param=prompt_param,
                             code="prompt_too_long")
    width, height = size_for(ratio, model, param="size" if size else prompt_param)
    return ImageJob(prompt=parsed.text, model=model, width=width, height=height,
                    negative_prompt=parsed.negative)
