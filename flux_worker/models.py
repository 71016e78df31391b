"""The Workers AI text-to-image models we can drive: one registry entry each.

Facts per model (encoding, fields, ranges, output) follow Cloudflare's model
schemas; adding a model is one entry in REGISTRY.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypedDict

from .errors import InvalidRequest
from .neurons import Price, per_dollar

if TYPE_CHECKING:
    from .input_images import ImageInputs

JSON = "json"
MULTIPART = "multipart"
BASE64 = "base64"  # {"result": {"image": "<base64>"}} in the envelope
BINARY = "binary"  # raw image bytes, no envelope


@dataclass(frozen=True)
class ImageModel:
    """How to call one model and where its image comes back."""

    id: str
    owned_by: str
    encoding: str
    output: str
    # (min, max) pixels per side for models that take width/height; None for
    # a fixed-size output that we crop and resize ourselves.
    size_range: tuple[int, int] | None
    size_step: int = 8
    # What the model makes when asked for no size: Cloudflare's documented
    # default, or the fixed output we crop from.
    native_size: tuple[int, int] = (1024, 1024)
    steps_field: str | None = None
    max_steps: int | None = None
    default_steps: int | None = None  # None: let Cloudflare use its own default
    max_prompt_chars: int = 2048
    # Optional inputs Cloudflare rejects as empty strings (minLength 1).
    never_empty: tuple[str, ...] = ()
    negative_prompt: bool = False
    seed_field: str | None = "seed"  # every model documents an integer seed
    # Pictures in (docs/workers-ai-models.md): FLUX.2 takes reference images
    # as multipart files; the SD 1.5 models take an init image (and a mask)
    # as arrays of the PNG file's bytes, with a strength.
    reference_images: int = 0  # how many at most, as input_image_0, input_image_1, …
    reference_side: int = 512  # each reference fits within this many pixels a side
    init_image: bool = False  # takes `image` and `strength`
    takes_mask: bool = False  # takes `mask` (and needs one: inpainting)
    needs_image: bool = False  # draws nothing without a picture in
    # Cloudflare's published price (docs/accounts-and-neurons.md); None: unpublished.
    price: Price | None = None
    created: int = 1700000000  # reported by /v1/models, which requires it

    @property
    def takes_images(self) -> bool:
        return self.reference_images > 0 or self.init_image

    @property
    def max_input_images(self) -> int:
        return self.reference_images or (1 if self.init_image else 0)

    @property
    def takes_size(self) -> bool:
        return self.size_range is not None

    @property
    def min_side(self) -> int:
        # Fixed outputs are cropped from native_size; below a quarter of it
        # the crop is too thin to be a useful picture.
        return self.size_range[0] if self.size_range else min(self.native_size) // 4

    @property
    def max_side(self) -> int:
        return self.size_range[1] if self.size_range else max(self.native_size)

    @property
    def max_delivered_side(self) -> int:
        """The longest side an explicit `size` may ask: fixed outputs may be
        scaled up to twice their native size, no further."""
        return self.max_side if self.size_range else 2 * max(self.native_size)

    def inputs(self, prompt: str, width: int, height: int, steps: int | None = None,
               negative_prompt: str = "", seed: int | None = None) -> dict[str, object]:
        """Return the input fields this model takes, and no others."""
        fields: dict[str, object] = {"prompt": prompt}
        if self.takes_size:
            fields["width"] = width
            fields["height"] = height
        if self.seed_field and seed is not None:
            fields[self.seed_field] = seed
        if self.steps_field:
            chosen = steps if steps is not None else self.default_steps
            if chosen is not None:
                fields[self.steps_field] = min(chosen, self.max_steps or chosen)
        if self.negative_prompt:
            fields["negative_prompt"] = negative_prompt
        for name in self.never_empty:
            if fields.get(name) in ("", None):
                fields.pop(name, None)
        return fields

    def image_fields(self, inputs: ImageInputs) -> tuple[dict[str, object], dict[str, bytes]]:
        """Return a job's pictures as this model takes them: (JSON fields, file parts)."""
        fields: dict[str, object] = {}
        files = {f"input_image_{index}": png for index, png in
                 enumerate(inputs.references[:self.reference_images])}
        if self.init_image and inputs.init_image is not None:
            fields["image"] = list(inputs.init_image)  # the file's bytes, as Cloudflare's examples
            if inputs.strength is not None:
                fields["strength"] = inputs.strength
        if self.takes_mask and inputs.mask is not None:
            fields["mask"] = list(inputs.mask)
        return fields, files


# ImageModel fields that several models share, typed so that `**` passes the
# same checks as keyword arguments.
class _Sized(TypedDict):
    encoding: str
    output: str
    size_range: tuple[int, int]
    size_step: int
    native_size: tuple[int, int]


class _WithSteps(_Sized):
    steps_field: str
    max_steps: int
    negative_prompt: bool
    never_empty: tuple[str, ...]


# SDXL documents no default size: we always send one (1024x1024 unless asked).
_SDXL_LIKE = _WithSteps(encoding=JSON, output=BINARY, size_range=(256, 2048), size_step=8,
                        native_size=(1024, 1024),
                        steps_field="num_steps", max_steps=20, negative_prompt=True,
                        never_empty=("negative_prompt",))
_FLUX2 = _Sized(encoding=MULTIPART, output=BASE64, size_range=(256, 1920), size_step=16,
                native_size=(1024, 768))
# SD 1.5 documents no default size; 512x512 is what the model was trained on.
_SD15 = _WithSteps(encoding=JSON, output=BINARY, size_range=(256, 2048), size_step=8,
                   native_size=(512, 512), steps_field="num_steps", max_steps=20,
                   negative_prompt=True, never_empty=("negative_prompt",))

# Prices in neurons from Cloudflare's pricing page (workers-ai/platform/pricing);
# `steps` is what is billed when we send none: a documented default (4, 25)
# or, for flux-2-dev and lucid-origin (none documented), their examples' 25.
_FLUX2_DEV_PRICE = Price(tile_step=37.50, input_tile_step=18.75, steps=25)
_KLEIN_4B_PRICE = Price(tile=26.05, input_tile=5.37)
_KLEIN_9B_PRICE = Price(first_megapixel=per_dollar(0.015), megapixel=per_dollar(0.002),
                        input_megapixel=per_dollar(0.002))

REGISTRY: dict[str, ImageModel] = {
    model.id: model
    for model in (
        ImageModel("@cf/black-forest-labs/flux-1-schnell", "black-forest-labs", JSON, BASE64,
                   size_range=None, steps_field="steps", max_steps=8, default_steps=4,
                   price=Price(tile=4.80, tile_step=9.60, steps=4)),
        ImageModel("@cf/black-forest-labs/flux-2-dev", "black-forest-labs", **_FLUX2,
                   steps_field="steps", max_steps=50, reference_images=4,
                   price=_FLUX2_DEV_PRICE),
        # klein: steps are fixed at 4 and not adjustable, so none are sent.
        ImageModel("@cf/black-forest-labs/flux-2-klein-4b", "black-forest-labs", **_FLUX2,
                   reference_images=4, price=_KLEIN_4B_PRICE),
        ImageModel("@cf/black-forest-labs/flux-2-klein-9b", "black-forest-labs", **_FLUX2,
                   reference_images=4, price=_KLEIN_9B_PRICE),
        ImageModel("@cf/leonardo/lucid-origin", "leonardo", JSON, BASE64,
                   size_range=(256, 2500), size_step=16, native_size=(1120, 1120),
                   steps_field="steps", max_steps=40,
                   price=Price(tile=636.0, tile_step=12.0, steps=25)),
        ImageModel("@cf/leonardo/phoenix-1.0", "leonardo", JSON, BINARY,
                   size_range=(256, 2048), size_step=16, steps_field="num_steps", max_steps=50,
                   negative_prompt=True, never_empty=("negative_prompt",),
                   price=Price(tile=530.0, tile_step=10.0, steps=25)),
        # The SDXL family and SD 1.5 (beta) have no published price.
        ImageModel("@cf/stabilityai/stable-diffusion-xl-base-1.0", "stabilityai", **_SDXL_LIKE),
        ImageModel("@cf/bytedance/stable-diffusion-xl-lightning", "bytedance", **_SDXL_LIKE),
        ImageModel("@cf/lykon/dreamshaper-8-lcm", "lykon", **_SDXL_LIKE),
        ImageModel("@cf/runwayml/stable-diffusion-v1-5-img2img", "runwayml", **_SD15,
                   init_image=True, needs_image=True),
        ImageModel("@cf/runwayml/stable-diffusion-v1-5-inpainting", "runwayml", **_SD15,
                   init_image=True, takes_mask=True, needs_image=True),
    )
}


# Pictures in, when the request names no model that takes them: the
# cheapest reference-image model, and the one inpainting model.
DEFAULT_EDIT_MODEL = "@cf/black-forest-labs/flux-2-klein-4b"
DEFAULT_INPAINT_MODEL = "@cf/runwayml/stable-diffusion-v1-5-inpainting"


class ModelCatalog:
    """The models this deployment offers, and how a request's name picks one."""

    def __init__(self, default_id: str, offered_ids: tuple[str, ...] = (),
                 steps: int | None = None, *, edit_id: str = DEFAULT_EDIT_MODEL,
                 inpaint_id: str = DEFAULT_INPAINT_MODEL):
        unknown = [name for name in (default_id, *offered_ids, edit_id, inpaint_id)
                   if name not in REGISTRY]
        if unknown:
            raise ValueError(f"unknown image model(s): {', '.join(unknown)}; "
                             f"known: {', '.join(REGISTRY)}")
        ids = list(offered_ids or REGISTRY)
        if default_id not in ids:
            ids.insert(0, default_id)
        self.default = REGISTRY[default_id]
        if steps is not None and self.default.steps_field:
            self.default = _with_default_steps(self.default, steps)
        self.offered = [self.default if i == default_id else REGISTRY[i] for i in ids]
        self._by_name = {_short(model.id): model for model in self.offered}
        self._by_name.update({model.id: model for model in self.offered})
        self.edit = REGISTRY[edit_id]
        self.inpaint = REGISTRY[inpaint_id]
        if not self.edit.takes_images or self.edit.takes_mask:
            raise ValueError(f"{edit_id} cannot be the edit model: it takes no pictures, or "
                             "needs a mask")
        if not self.inpaint.takes_mask:
            raise ValueError(f"{inpaint_id} cannot be the inpainting model: it takes no mask")

    def pick(self, name: object) -> ImageModel:
        """Return the offered model a request names; anything else gets the default.

        Chat clients send their own model names (gpt-4o, dall-e-3); those fall
        back to the default rather than failing.
        """
        if isinstance(name, str):
            return self._by_name.get(name.strip(), self.default)
        return self.default


    def pick_editor(self, name: object, *, mask: bool) -> ImageModel:
        """Return the model that changes pictures for a request: the one it
        names when that model can (with a mask: inpaint), else the edit model
        (with a mask: the inpainting model).

        :raises InvalidRequest: when the named model needs a mask and has none.
        """
        named = self._by_name.get(name.strip()) if isinstance(name, str) else None
        if named is not None and named.takes_mask and not mask:
            raise InvalidRequest(f"{named.id} repaints the area a mask marks; send a mask, or "
                                 "name another model.", param="mask")
        if named is not None and named.takes_images and named.takes_mask == mask:
            return named
        return self.inpaint if mask else self.edit


def _short(model_id: str) -> str:
    return model_id.rsplit("/", 1)[-1]


def _with_default_steps(model: ImageModel, steps: int) -> ImageModel:
    return replace(model, default_steps=min(steps, model.max_steps or steps))
