"""Pictures people send in: decoded safely once, then fitted to what each
model takes (reference images, an init image, an inpainting mask).

Everything here is bounded before a pixel is decoded: bytes, header size,
decoded pixels, and how many decodes run at once in a process.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass

from PIL import Image, ImageOps

from .errors import InvalidRequest
from .imaging import DECODE_FAILURES, crop_to, ends_complete, sniff_content_type

MAX_INPUT_BYTES = 20 * 1024 * 1024  # one picture, as sent (OpenAI allows 50 MB; we are smaller)
MAX_INPUT_SIDE = 16384  # in the header: anything longer is refused unread
# Decoded pixels (after JPEG's reduced decoding): a 24 Mpx camera photo fits,
# and a worst case RGBA decode stays near 100 MiB.
MAX_INPUT_PIXELS = 25_000_000
KEPT_SIDE = 2048  # pictures are kept no larger: every model takes at most this much
MAX_PICTURES = 4  # per request: no model takes more, so more are refused before decoding
_DECODE_SLOTS = threading.BoundedSemaphore(4)  # decodes at once per process (CPU and memory)
_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}


@dataclass(frozen=True)
class InputImage:
    """A picture someone sent, decoded and bounded: RGB, at most KEPT_SIDE a side."""

    image: Image.Image
    source_size: tuple[int, int]  # as sent, once turned upright: a mask must match it
    # Where it came from, for the reply: "attached" (the bytes themselves), "link"
    # (a link in the message) or "previous" (the picture we drew before).
    origin: str = "attached"
    link: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


@dataclass(frozen=True)
class ImageInputs:
    """What one job uploads, encoded once for all of its images."""

    references: tuple[bytes, ...] = ()  # PNGs within the model's reference size
    init_image: bytes | None = None  # PNG at exactly the size drawn
    mask: bytes | None = None  # PNG (white: repaint) at exactly the size drawn
    strength: float | None = None  # how far an init image may be changed, 0-1


def check_count(count: int, param: str) -> None:
    """Refuse more pictures than any model takes, before any is read or decoded.

    :raises InvalidRequest: naming `param`.
    """
    if count > MAX_PICTURES:
        raise InvalidRequest(f"{count} pictures were sent; at most {MAX_PICTURES} are taken.",
                             param=param, code="too_many_images")


def load_image(data: bytes, param: str, origin: str = "attached",
               link: str | None = None) -> InputImage:
    """Decode a picture: PNG, JPEG or WEBP, whole, within the bounds above.

    Turned upright by its EXIF orientation (phone photos), transparency
    flattened onto white, and shrunk to KEPT_SIDE.

    :raises InvalidRequest: naming `param` for anything else.
    """
    image = _decode(data, param)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P"
                                              and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    elif image.mode != "RGB":
        image = _eight_bit(image).convert("RGB")
    source_size = image.size
    image.thumbnail((KEPT_SIDE, KEPT_SIDE), Image.Resampling.LANCZOS)
    return InputImage(image, source_size, origin, link)


def load_mask(data: bytes, param: str, picture: InputImage) -> Image.Image:
    """Read an OpenAI mask into the inpainting model's terms: white where the
    picture may change, black where it stays, at the picture's kept size.

    OpenAI's mask is a PNG whose fully transparent pixels mark the area to
    edit. A mask with no transparency is read as black and white (white: edit).

    :raises InvalidRequest: naming `param` for a bad mask, or one whose size
        differs from the picture's.
    """
    mask = _decode(data, param)
    if mask.size != picture.source_size:
        raise InvalidRequest(f"{param} is {mask.width}x{mask.height} but the image is "
                             f"{picture.source_size[0]}x{picture.source_size[1]}; a mask must "
                             "have the same size as the image.", param=param,
                             code="invalid_image")
    if mask.mode in ("RGBA", "LA", "PA") or (mask.mode == "P" and "transparency" in mask.info):
        alpha = mask.convert("RGBA").getchannel("A")
        edit = alpha.point(lambda value: 255 if value == 0 else 0)
    else:
        edit = _eight_bit(mask).convert("L").point(lambda value: 255 if value >= 128 else 0)
    return edit.resize(picture.size, Image.Resampling.NEAREST) if edit.size != picture.size \
        else edit


def reference_png(picture: InputImage, max_side: int) -> bytes:
    """The picture within max_side x max_side, its ratio kept, as PNG."""
    image = picture.image
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return _png(image)


def init_png(image: Image.Image, width: int, height: int) -> bytes:
    """The picture (or its mask) cropped to the target's ratio and resized to it, as PNG."""
    fitted = crop_to(image, width, height)
    if image.mode == "L":  # a mask stays black and white after resampling
        fitted = fitted.point(lambda value: 255 if value >= 128 else 0)
    return _png(fitted)


def _decode(data: bytes, param: str) -> Image.Image:
    if not data:
        raise _bad(param, f"{param} is empty; send a PNG, JPEG or WEBP image.")
    if len(data) > MAX_INPUT_BYTES:
        raise _bad(param, f"{param} is {len(data) // 1024 // 1024} MiB; pictures may be at most "
                          f"{MAX_INPUT_BYTES // 1024 // 1024} MiB.", code="image_too_large")
    fmt = _FORMATS.get(sniff_content_type(data) or "")
    if fmt is None:
        raise _bad(param, f"{param} is not a PNG, JPEG or WEBP image.")
    with _DECODE_SLOTS:
        try:
            with Image.open(io.BytesIO(data), formats=[fmt]) as opened:
                width, height = opened.size
                if not (0 < width <= MAX_INPUT_SIDE and 0 < height <= MAX_INPUT_SIDE):
                    raise _bad(param, f"{param} is {width}x{height} pixels; each side may be at "
                                      f"most {MAX_INPUT_SIDE}.", code="image_too_large")
                if fmt == "JPEG":  # decoded at 1/2, 1/4 or 1/8 scale if that covers KEPT_SIDE
                    opened.draft("RGB", (KEPT_SIDE, KEPT_SIDE))
                if opened.size[0] * opened.size[1] > MAX_INPUT_PIXELS:
                    raise _bad(param, f"{param} is {width}x{height} pixels; pictures may have at "
                                      f"most {MAX_INPUT_PIXELS // 1_000_000} million.",
                               code="image_too_large")
                if not ends_complete(data, fmt):
                    raise _bad(param, f"{param} is cut short: the image file is incomplete.")
                opened.load()
                return ImageOps.exif_transpose(opened)
        except InvalidRequest:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _bad(param, f"{param} has more pixels than this server decodes.",
                       code="image_too_large") from None
        except DECODE_FAILURES:
            raise _bad(param, f"{param} could not be read as a {fmt} image.") from None


def _eight_bit(image: Image.Image) -> Image.Image:
    """16/32-bit grey scaled down to 8 bits rather than clipped to white."""
    if image.mode.startswith("I"):
        return image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    return image


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _bad(param: str, message: str, code: str = "invalid_image") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)
