"""Image bytes: what type they really are, and making them the size promised."""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from .errors import UpstreamError

_SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def sniff_content_type(data: bytes) -> str | None:
    """Return the MIME type the bytes really are, whatever a header claimed."""
    for signature, mime in _SIGNATURES:
        if data.startswith(signature):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def fit_to_size(data: bytes, width: int, height: int) -> bytes:
    """Return the image at exactly width x height, in its original format.

    Already right: returned as is (no re-encode). Otherwise the largest
    centred crop with the target's ratio is taken and resized, so nothing is
    stretched.

    :raises UpstreamError: when the bytes are not an image.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.size == (width, height):
                return data
            fmt = image.format or "PNG"
            src_w, src_h = image.size
            target = width / height
            if src_w / src_h > target:
                crop_w, crop_h = round(src_h * target), src_h
            else:
                crop_w, crop_h = src_w, round(src_w / target)
            left, top = (src_w - crop_w) // 2, (src_h - crop_h) // 2
            resized = image.resize((width, height), Image.Resampling.LANCZOS,
                                   box=(left, top, left + crop_w, top + crop_h))
            out = io.BytesIO()
            options = {"quality": 92, "optimize": True} if fmt == "JPEG" else {}
            if fmt == "JPEG" and resized.mode not in ("RGB", "L"):
                resized = resized.convert("RGB")
            resized.save(out, format=fmt, **options)
            return out.getvalue()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UpstreamError("Workers AI returned data that is not an image.") from exc
