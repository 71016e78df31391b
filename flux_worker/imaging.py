"""Image bytes: what type they really are, and making them a complete image
of the size promised before anything is stored or linked."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

from PIL import Image

from .errors import UpstreamError

_SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)

# The formats models send; Pillow is never asked to parse anything else.
_CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
# OpenAI's output_format names -> Pillow's, and each content type -> its name
OUTPUT_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
FORMAT_NAMES = {_CONTENT_TYPES[pillow]: name for name, pillow in OUTPUT_FORMATS.items()}
DEFAULT_QUALITY = 92  # JPEG/WEBP quality when re-encoding and the client named none

# Bounds checked on the header, before a single pixel is decoded. The largest
# output any model makes is 2500x2500 (6.25 Mpx); these leave headroom for a
# model that overshoots or a new one, while the decoded image (Pillow keeps at
# most 4 bytes a pixel) stays under 48 MiB per generation, plus at most one
# converted copy and the target-sized result while fitting. Pillow's
# own bomb limit (89 Mpx warns, 179 Mpx refuses) is far too generous for us:
# a 411 KiB PNG of 12000x12000 px passes it and decodes to ~550 MiB.
MAX_SIDE = 4096  # also catches thin strips such as 20000x10
MAX_PIXELS = 2 * 2500 * 2500

NOT_AN_IMAGE = "Workers AI returned data that is not a complete image."

# What Pillow (and zlib, in the PNG walk) raise on bytes they cannot use.
# DecompressionBombWarning is listed so the outcome is the same when warnings
# are configured as errors; otherwise it is only logged, and irrelevant,
# because every image that triggers it is far beyond MAX_PIXELS and refused
# before decoding anyway.
DECODE_FAILURES = (OSError, ValueError, SyntaxError, struct.error, zlib.error, EOFError,
                    IndexError, KeyError, TypeError, ZeroDivisionError,
                    Image.DecompressionBombError, Image.DecompressionBombWarning)


@dataclass(frozen=True)
class PreparedImage:
    """A fully decoded, bounded image at exactly the size promised."""

    data: bytes
    content_type: str
    width: int
    height: int


def sniff_content_type(data: bytes) -> str | None:
    """Return the MIME type the bytes really are, whatever a header claimed."""
    for signature, mime in _SIGNATURES:
        if data.startswith(signature):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def prepare_image(data: bytes, width: int, height: int, *, output_format: str | None = None,
                  quality: int | None = None) -> PreparedImage:
    """Return the upstream image, checked, at exactly width x height, in the
    format asked (`png`, `jpeg`, `webp`; None keeps the model's).

    The header's size is bounded before decoding, and the image is decoded in
    full so that a truncated file never gets a link. Already the right size
    and format: the original bytes (no re-encode). Otherwise the largest
    centred crop with the target's ratio, resized only when the crop is not
    the target size, encoded once (`quality` for JPEG and WEBP). Animated or
    multi-frame images are refused: no model makes them, and the original
    bytes would otherwise be served as an animation.

    :raises UpstreamError: when the bytes are not one complete PNG, JPEG or
        WEBP image within MAX_SIDE and MAX_PIXELS.
    :raises ValueError: when the target size itself is out of bounds (a bug
        of the caller, not of the upstream).
    """
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise ValueError(f"target size {width}x{height} is out of bounds")
    try:
        with Image.open(io.BytesIO(data), formats=list(_CONTENT_TYPES)) as image:
            fmt = image.format or ""
            src_w, src_h = image.size
            if (fmt not in _CONTENT_TYPES or getattr(image, "n_frames", 1) != 1
                    or not (0 < src_w <= MAX_SIDE and 0 < src_h <= MAX_SIDE)
                    or src_w * src_h > MAX_PIXELS or not ends_complete(data, fmt)):
                raise UpstreamError(NOT_AN_IMAGE)
            image.load()
            target = OUTPUT_FORMATS[output_format] if output_format else fmt
            content_type = _CONTENT_TYPES[target]
            if (src_w, src_h) == (width, height) and target == fmt:
                return PreparedImage(data, content_type, width, height)
            fitted = _fit(image, target, width, height,
                          DEFAULT_QUALITY if quality is None else quality)
            return PreparedImage(fitted, content_type, width, height)
    except DECODE_FAILURES as exc:
        raise UpstreamError(NOT_AN_IMAGE) from exc


def ends_complete(data: bytes, fmt: str) -> bool:
    """Whether the file is whole (NUL padding after its end is allowed).

    Pillow's load() alone does not prove it: it decodes a JPEG without its EOI
    marker when NUL padding follows, and a PNG without its IEND chunk, without
    the end of its zlib stream, or whose zlib stream ends rows too early (the
    missing rows come out black). WEBP needs nothing extra: libwebp refuses
    any truncated RIFF.
    """
    if fmt == "PNG":
        return _png_complete(data)
    if fmt == "JPEG":
        return data.rstrip(b"\0").endswith(b"\xff\xd9")
    return True


# PNG colour type -> samples a pixel
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7 passes: first column, first row, column step, row step
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))


def _png_complete(data: bytes) -> bool:
    """Walk the chunks: every CRC right, IEND last, and the IDAT stream a
    whole zlib stream of exactly the rows the header promises. Inflates in
    1 MiB steps and keeps nothing; the header was bounded before this runs."""
    view = memoryview(data)
    inflater = zlib.decompressobj()
    expected = produced = 0
    pos = 8
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > len(data):
            return False
        body = view[pos + 8:end - 4]
        if zlib.crc32(body, zlib.crc32(kind)) != struct.unpack_from(">I", data, end - 4)[0]:
            return False
        if kind == b"IHDR":
            if expected:  # one header only: Pillow decodes by the first
                return False
            expected = _png_raw_size(bytes(body))
        elif kind == b"IDAT":
            pending: bytes | memoryview = body
            while pending and not inflater.eof and produced <= expected:
                produced += len(inflater.decompress(pending, 1 << 20))
                pending = inflater.unconsumed_tail
            if produced > expected:
                return False
        elif kind == b"IEND":
            if not inflater.eof:
                produced += len(inflater.flush())
            return (inflater.eof and produced == expected > 0
                    and not view[end:].tobytes().strip(b"\0"))
        pos = end
    return False


def _png_raw_size(ihdr: bytes) -> int:
    """Bytes the IHDR promises once inflated (each row has a filter byte);
    0 when the header makes no sense."""
    if len(ihdr) != 13:
        return 0
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
    bits = depth * _PNG_CHANNELS.get(colour, 0)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        columns, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if columns > 0 and rows > 0:
            total += rows * (1 + -(-columns * bits // 8))
    return total if bits else 0


def crop_to(image: Image.Image, width: int, height: int) -> Image.Image:
    """The largest centred box with the target's ratio, resized only when its
    size differs (so a plain crop keeps every pixel); the image itself when
    it already is width x height."""
    src_w, src_h = image.size
    if src_w * height > width * src_h:
        crop_w, crop_h = max(1, round(src_h * width / height)), src_h
    else:
        crop_w, crop_h = src_w, max(1, round(src_w * height / width))
    left, top = (src_w - crop_w) // 2, (src_h - crop_h) // 2
    box = (left, top, left + crop_w, top + crop_h)
    if (crop_w, crop_h) == (src_w, src_h) == (width, height):
        return image
    if (crop_w, crop_h) == (width, height):
        return image.crop(box)
    return image.resize((width, height), Image.Resampling.LANCZOS, box=box)


def _fit(image: Image.Image, fmt: str, width: int, height: int, quality: int) -> bytes:
    """Fit the image to width x height (crop_to) in a mode the format keeps, and encode it."""
    if image.mode.startswith("I"):  # 16/32-bit grey: scale to 8 bits, not clip to white
        image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    if fmt == "JPEG":
        mode = "RGB"
    elif image.mode in ("L", "RGB", "RGBA"):
        mode = image.mode
    else:
        mode = "RGBA" if image.has_transparency_data else "RGB"
    if image.mode != mode:
        image = image.convert(mode)
    fitted = crop_to(image, width, height)
    # Fast settings, measured in BENCHMARKS.md: JPEG without optimize=True (a
    # third of the time, files ~15% larger); PNG at zlib level 1 (4-6x faster
    # than the default 6, files at most ~20% larger); WEBP method 0 (3x
    # faster, same size).
    encoder_options: dict[str, dict[str, int]] = {
        "JPEG": {"quality": quality}, "WEBP": {"quality": quality, "method": 0},
        "PNG": {"compress_level": 1}}
    options = encoder_options.get(fmt, {})
    out = io.BytesIO()
    fitted.save(out, format=fmt, **options)
    return out.getvalue()
