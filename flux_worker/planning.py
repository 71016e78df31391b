"""What every endpoint's request becomes: one `ImageJob`, planned and checked
in one place, before any capacity is taken or any upstream is called."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from PIL import Image

from .errors import InvalidRequest
from .input_images import ImageInputs, InputImage, init_png, reference_png
from .models import ImageModel
from .sizes import (
    MAX_SEED,
    check_seed,
    exact_size,
    parse_prompt,
    parse_size,
    round_to,
    size_for,
)

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
    seed: int | None = None  # the first image's (see image_seeds); plan_job always sets it
    seed_given: bool = False  # the client's: image i gets seed + i, else a fresh random one
    # What the model is asked to draw, when that differs from the size
    # delivered (rounded to its step); the image is then fitted to width x height.
    draw_size: tuple[int, int] | None = None
    output_format: str | None = None  # "png", "jpeg" or "webp"; None keeps the model's own
    output_compression: int | None = None  # 0-100, for jpeg and webp
    inputs: ImageInputs | None = None  # pictures in: an edit, a variation, a refinement


# What an edit draws when its words say nothing beyond a size ("16:9").
SAME_PICTURE_PROMPT = "The same picture"
# How far an img2img model moves from the picture when the client says
# nothing: far enough to follow the words, close enough to keep the picture.
EDIT_STRENGTH = 0.75
VARIATION_STRENGTH = 0.6


def check_optional_types(body: dict, fields: Mapping[str, type | tuple[type, ...]]) -> None:
    """Raise for a known optional field that is present with the wrong type.

    :raises InvalidRequest: naming the field.
    """
    for name, expected in fields.items():
        value = body.get(name)
        wrong_bool = isinstance(value, bool) and expected is not BOOLEAN
        if value is not None and (wrong_bool or not isinstance(value, expected)):
            raise InvalidRequest(f"{name} must be {_KINDS.get(expected, 'valid')}.", param=name)


def plan_job(prompt: str, model: ImageModel, *, size: str | None = None, seed: object = None,
             prompt_param: str = "prompt", pictures: Sequence[InputImage] = (),
             mask: Image.Image | None = None, strength: float | None = None,
             image_param: str = "image") -> ImageJob:
    """Turn a prompt (and an OpenAI `size` and `seed`, if any, and pictures
    in) into the job to run.

    Size: a ratio the prompt ends with wins over `size` (Open WebUI always
    sends 512x512); else `size: WxH` is delivered exactly; else the first
    picture's ratio; else the model's own default. Seed: `--seed N` in the
    prompt, else the `seed` field, else a fresh random one (regenerate must
    not repeat a picture). Pictures are encoded here, once, as the model
    takes them.

    :raises InvalidRequest: for an empty prompt, a prompt over the model's
        limit, a bad seed, a size or ratio the model cannot make, or pictures
        the model cannot take; `param` names the field the client must change.
    """
    given_seed = check_seed(seed, "seed") if seed is not None else None
    parsed = parse_prompt(prompt, param=prompt_param)
    text = parsed.text or (SAME_PICTURE_PROMPT if pictures else "")
    if not text:
        raise InvalidRequest("The prompt has no text to draw once its aspect ratio, --seed and "
                             "--no are taken out.", param=prompt_param)
    if len(text) > model.max_prompt_chars:
        raise InvalidRequest(f"The prompt is {len(text)} characters; {model.id} takes at "
                             f"most {model.max_prompt_chars}.", param=prompt_param,
                             code="prompt_too_long")
    _check_pictures(model, pictures, image_param)
    asked = parse_size(size) if size else None
    draw_size = None
    if parsed.ratio is not None or (asked is None and not pictures):
        width, height = size_for(parsed.ratio, model, param=prompt_param)
    elif asked is None:
        width, height = _size_like(pictures[0], model)
    else:
        width, height = asked
        draw_size = exact_size(width, height, model)
    given = parsed.seed if parsed.seed is not None else given_seed
    inputs = _encode(pictures, mask, strength, model, draw_size or (width, height))
    return ImageJob(prompt=text, model=model, width=width, height=height,
                    negative_prompt=parsed.negative, draw_size=draw_size,
                    seed=given if given is not None else random_seed(),
                    seed_given=given is not None, inputs=inputs)


def _check_pictures(model: ImageModel, pictures: Sequence[InputImage], param: str) -> None:
    if model.needs_image and not pictures:
        raise InvalidRequest(f"{model.id} changes a picture and draws nothing without one; "
                             "attach an image, or use /v1/images/edits.", param="model")
    if len(pictures) > model.max_input_images:
        raise InvalidRequest(f"{len(pictures)} pictures were sent; {model.id} takes at most "
                             f"{model.max_input_images}.", param=param, code="too_many_images")


def _size_like(picture: InputImage, model: ImageModel) -> tuple[int, int]:
    """The picture's ratio at the model's usual long side (sides rounded to
    its step), or the model's default size when the ratio is beyond what it makes."""
    width, height = picture.source_size
    scale = max(model.native_size) / max(width, height)
    sides = round_to(width * scale, model.size_step), round_to(height * scale, model.size_step)
    if min(sides) < model.min_side or max(sides) > model.max_side:
        return model.native_size
    return sides


def _encode(pictures: Sequence[InputImage], mask: Image.Image | None, strength: float | None,
            model: ImageModel, drawn: tuple[int, int]) -> ImageInputs | None:
    if not pictures:
        return None
    return ImageInputs(
        references=tuple(reference_png(p, model.reference_side) for p in pictures)
        if model.reference_images else (),
        init_image=init_png(pictures[0].image, *drawn) if model.init_image else None,
        mask=init_png(mask, *drawn) if mask is not None and model.takes_mask else None,
        strength=strength if model.init_image else None)


def random_seed() -> int:
    """A fresh seed, below 2**31 so that any signed 32-bit field takes it."""
    return secrets.randbelow(2**31)


def image_seeds(job: ImageJob, count: int) -> list[int]:
    """One seed per image: the client's counted up (wrapping at MAX_SEED), or fresh ones."""
    assert job.seed is not None
    if job.seed_given:
        return [(job.seed + index) % (MAX_SEED + 1) for index in range(count)]
    return [job.seed] + [random_seed() for _ in range(count - 1)]
