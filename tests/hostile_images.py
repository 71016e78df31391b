"""Broken and hostile images, made in memory, as an upstream might send them.

Every function takes plain numbers and returns bytes, so tests of imaging
and of the whole service (through the fake Cloudflare) can share them.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def complete_image(width: int, height: int, fmt: str = "JPEG", padding: int = 0) -> bytes:
    """A valid gradient image (real entropy data, unlike a flat colour),
    followed by `padding` NUL bytes, which decoders ignore."""
    return _encoded(width, height, fmt) + b"\0" * padding


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG (IHDR with a valid CRC, one row of data, IEND) whose header
    claims width x height: only a check of the header can refuse it cheaply."""
    row = zlib.compress(bytes(1 + 3 * width), 9)
    return (PNG_SIGNATURE + _png_chunk(b"IHDR", _ihdr(width, height))
            + _png_chunk(b"IDAT", row) + _png_chunk(b"IEND", b""))


@functools.lru_cache(maxsize=8)
def png_bomb(width: int = 12000, height: int = 12000) -> bytes:
    """A real, valid, all-black RGB PNG: 12000x12000 is ~410 KiB on the wire
    and ~550 MiB once decoded by Pillow.

    The zlib stream is built from one compressed block of zero rows, repeated
    (each block ends with a full flush, so it refers to nothing before it), so
    neither the raw nor the decoded image is ever held in memory here.
    """
    row_len = 1 + 3 * width  # filter byte "none", then RGB
    rows_per_piece = max(1, (1 << 20) // row_len)
    full, rest = divmod(height, rows_per_piece)
    stream = _zero_deflate(row_len * rows_per_piece) * full
    if rest:
        stream += _zero_deflate(row_len * rest)
    stream += zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # the final, empty block
    adler = ((row_len * height) % 65521) << 16 | 1  # adler32 of that many zero bytes
    idat = b"\x78\xda" + stream + struct.pack(">I", adler)
    return (PNG_SIGNATURE + _png_chunk(b"IHDR", _ihdr(width, height))
            + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))


def truncated_jpeg(width: int, height: int, keep: float = 1 / 3) -> bytes:
    """A JPEG of the right size in its header, cut to `keep` of its bytes."""
    data = complete_image(width, height, "JPEG")
    return data[:int(len(data) * keep)]


def jpeg_without_eoi(width: int, height: int, padding: int = 0) -> bytes:
    """A JPEG with all its scan data but not its EOI marker, then `padding`
    NULs (with padding, Pillow decodes a baseline JPEG like this happily)."""
    return complete_image(width, height, "JPEG")[:-2] + b"\0" * padding


def truncated_png(width: int, height: int, missing: int = 12) -> bytes:
    """A PNG without its last `missing` bytes: 12 is exactly the IEND chunk,
    which Pillow does not need to decode it."""
    return complete_image(width, height, "PNG")[:-missing]


def truncated_webp(width: int, height: int, keep: float = 1 / 3) -> bytes:
    """A WEBP cut to `keep` of its bytes."""
    data = complete_image(width, height, "WEBP")
    return data[:int(len(data) * keep)]


def animated(width: int, height: int, fmt: str = "PNG", frames: int = 2) -> bytes:
    """An animated PNG (APNG) or WEBP."""
    pictures = [Image.new("RGB", (width, height), colour)
                for colour in ("red", "blue", "green") * frames][:frames]
    out = io.BytesIO()
    pictures[0].save(out, fmt, save_all=True, append_images=pictures[1:])
    return out.getvalue()


def gif(width: int, height: int) -> bytes:
    """A valid GIF: an image, but not a format any model sends."""
    return complete_image(width, height, "GIF")


def not_an_image() -> bytes:
    """What a proxy in trouble sends instead of an image."""
    return b"<html><body><h1>502 Bad Gateway</h1></body></html>"


@functools.lru_cache(maxsize=32)
def _encoded(width: int, height: int, fmt: str) -> bytes:
    picture = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    out = io.BytesIO()
    picture.save(out, fmt, **({"quality": 80} if fmt == "JPEG" else {}))
    return out.getvalue()


def _ihdr(width: int, height: int) -> bytes:
    # 8 bits a sample, colour type 2 (RGB), deflate, adaptive filter, no interlace
    return struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _zero_deflate(length: int) -> bytes:
    """Raw deflate of `length` zero bytes, ending byte-aligned with a fresh
    dictionary, so copies of it can follow one another in one stream."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(bytes(length)) + compressor.flush(zlib.Z_FULL_FLUSH)
