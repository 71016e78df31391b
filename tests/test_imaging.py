"""prepare_image: only complete images of sane size are kept, as asked for;
anything else is a 502 UpstreamError, never a link and never a 500."""

from __future__ import annotations

import contextlib
import io
import random

import pytest
from PIL import Image, ImageFile, WebPImagePlugin

import hostile_images as hostile
from flux_worker.errors import UpstreamError
from flux_worker.imaging import MAX_PIXELS, MAX_SIDE, PreparedImage, prepare_image
from flux_worker.models import REGISTRY

BOMB_WARNING = "::PIL.Image.DecompressionBombWarning"


def refused(data: bytes, width: int = 1024, height: int = 1024) -> UpstreamError:
    """Assert that the bytes are refused as the upstream's fault, with a 502."""
    with pytest.raises(UpstreamError) as excinfo:
        prepare_image(data, width, height)
    assert type(excinfo.value) is UpstreamError and excinfo.value.status == 502
    assert excinfo.value.message == "Workers AI returned data that is not a complete image."
    return excinfo.value


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test on any decode of pixel data. (tracemalloc cannot prove
    this: it does not see Pillow's pixel buffers, which come from malloc.)"""

    def load(self):
        raise AssertionError(f"decoded a {self.size} image")  # not translated: escapes

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    monkeypatch.setattr(WebPImagePlugin.WebPImageFile, "load", load)  # its own load()


def decoded(prepared: PreparedImage) -> Image.Image:
    image = Image.open(io.BytesIO(prepared.data))
    image.load()
    return image


class TestReproducedDefects:
    def test_a_header_claiming_20000_px_is_a_502_not_a_pillow_error(self):
        refused(hostile.png_header_claiming(20000, 20000))

    @pytest.mark.parametrize("warnings", [
        pytest.param("ignore", marks=pytest.mark.filterwarnings("ignore" + BOMB_WARNING)),
        pytest.param("error", marks=pytest.mark.filterwarnings("error" + BOMB_WARNING)),
    ])
    def test_a_png_bomb_is_refused_without_decoding(self, no_decoding, warnings):
        # 144 Mpx: past Pillow's warning limit, short of its error limit.
        data = hostile.png_bomb(12000, 12000)
        assert len(data) < 500 * 1024
        refused(data)

    def test_a_jpeg_cut_to_a_third_at_the_right_size_is_refused(self):
        refused(hostile.truncated_jpeg(1024, 1024))


class TestIncomplete:
    @pytest.mark.parametrize("keep", [0.1, 1 / 3, 0.9, 0.999])
    @pytest.mark.parametrize("size", [(1024, 1024), (1024, 576)])
    def test_truncated_jpegs(self, keep, size):
        refused(hostile.truncated_jpeg(1024, 1024, keep), *size)

    @pytest.mark.parametrize("padding", [0, 100, 100_000])
    def test_a_jpeg_without_its_eoi_marker(self, padding):
        # Pillow decodes the padded ones without complaint.
        refused(hostile.jpeg_without_eoi(1024, 1024, padding))

    def test_a_truncated_jpeg_padded_with_nuls(self):
        data = hostile.truncated_jpeg(1024, 1024) + b"\0" * 200_000
        refused(data)

    @pytest.mark.parametrize("missing", [12, 4, 20, 2000])  # IEND, its CRC, into IDAT
    def test_pngs_missing_their_last_bytes(self, missing):
        refused(hostile.truncated_png(1024, 1024, missing))

    def test_half_a_png(self):
        data = hostile.complete_image(1024, 1024, "PNG")
        refused(data[:len(data) // 2])

    @pytest.mark.parametrize("keep", [1 / 3, 0.99])
    def test_truncated_webps(self, keep):
        refused(hostile.truncated_webp(1024, 1024, keep))

    @pytest.mark.parametrize("flag", [False, True])
    def test_refused_whatever_load_truncated_images_says(self, monkeypatch, flag):
        monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", flag)
        refused(hostile.truncated_jpeg(1024, 1024))
        refused(hostile.jpeg_without_eoi(1024, 1024))
        refused(hostile.truncated_png(1024, 1024, 2000))
        refused(hostile.truncated_webp(1024, 1024))

    def test_a_png_whose_zlib_stream_ends_rows_too_early(self):
        # Pillow decodes the one row there is and leaves the rest black.
        refused(hostile.png_header_claiming(2000, 2000))

    def test_a_png_with_a_damaged_chunk(self):
        data = bytearray(hostile.complete_image(256, 256, "PNG"))
        data[len(data) // 2] ^= 0x01  # inside IDAT: its CRC no longer matches
        refused(bytes(data), 256, 256)


class TestBounds:
    def test_every_model_output_is_within_the_bounds(self):
        for model in REGISTRY.values():
            assert model.max_side <= MAX_SIDE and model.max_side ** 2 <= MAX_PIXELS, model.id

    @pytest.mark.parametrize("size", [
        (MAX_SIDE + 1, 16),  # a side too long (a strip under the pixel bound)
        (16, MAX_SIDE + 1),
        (3600, 3600),  # each side fine, too many pixels
        (0, 16),
    ])
    def test_headers_out_of_bounds_are_refused_without_decoding(self, no_decoding, size):
        refused(hostile.png_header_claiming(*size))

    @pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
    def test_real_images_too_large_are_refused_without_decoding(self, no_decoding, fmt):
        refused(hostile.complete_image(MAX_SIDE + 1, 64, fmt))

    def test_the_largest_model_output_is_accepted(self):
        data = hostile.complete_image(2500, 2500, "JPEG")
        prepared = prepare_image(data, 2500, 2500)
        assert prepared.data is data

    @pytest.mark.parametrize("size", [(0, 512), (512, MAX_SIDE + 1)])
    def test_an_impossible_target_is_the_callers_bug(self, size):
        with pytest.raises(ValueError):
            prepare_image(hostile.complete_image(64, 64), *size)


class TestNotWhatModelsSend:
    @pytest.mark.parametrize("data", [
        pytest.param(hostile.not_an_image(), id="html"),
        pytest.param(b"", id="empty"),
        pytest.param(hostile.gif(1024, 1024), id="gif"),
        pytest.param(hostile.animated(1024, 1024, "PNG"), id="apng"),
        pytest.param(hostile.animated(1024, 1024, "WEBP"), id="animated-webp"),
        pytest.param(hostile.complete_image(1024, 1024, "BMP"), id="bmp"),
    ])
    def test_refused(self, data):
        refused(data)

    def test_no_corruption_escapes_as_anything_but_upstream_error(self):
        # Pillow raises many kinds of errors on damaged files; all must be ours.
        rng = random.Random(1)
        for fmt in ("JPEG", "PNG", "WEBP"):
            original = hostile.complete_image(96, 64, fmt)
            for _ in range(150):
                data = bytearray(original)
                for _ in range(rng.randint(1, 8)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
                with contextlib.suppress(UpstreamError):
                    prepare_image(bytes(data), 48, 48)


class TestFitting:
    @pytest.mark.parametrize("fmt,mime", [("JPEG", "image/jpeg"), ("PNG", "image/png"),
                                          ("WEBP", "image/webp")])
    def test_the_right_size_is_returned_as_is(self, fmt, mime):
        data = hostile.complete_image(576, 1024, fmt)
        assert prepare_image(data, 576, 1024) == PreparedImage(data, mime, 576, 1024)
        assert prepare_image(data, 576, 1024).data is data

    def test_a_jpeg_is_cropped_to_16_9_and_stays_jpeg(self):
        prepared = prepare_image(hostile.complete_image(1024, 1024, "JPEG"), 1024, 576)
        image = decoded(prepared)
        assert (prepared.width, prepared.height, prepared.content_type) == (1024, 576,
                                                                            "image/jpeg")
        assert image.size == (1024, 576) and image.format == "JPEG" and image.mode == "RGB"

    @pytest.mark.parametrize("fmt,mime", [("PNG", "image/png"), ("WEBP", "image/webp")])
    def test_other_formats_stay_what_they_are(self, fmt, mime):
        prepared = prepare_image(hostile.complete_image(1024, 1024, fmt), 768, 512)
        assert prepared.content_type == mime
        image = decoded(prepared)
        assert image.size == (768, 512) and image.format == fmt

    def test_a_crop_of_the_target_size_is_not_resampled(self):
        # PNG is lossless, so the pixels must be exactly the centre of the original.
        original = Image.linear_gradient("L").resize((1024, 1024)).convert("RGB")
        original.putpixel((0, 224), (255, 0, 0))
        out = io.BytesIO()
        original.save(out, "PNG")
        image = decoded(prepare_image(out.getvalue(), 1024, 576))
        assert image.tobytes() == original.crop((0, 224, 1024, 800)).tobytes()

    @pytest.mark.parametrize("padding", [1, 4096])
    def test_a_complete_jpeg_padded_with_nuls_is_accepted(self, padding):
        data = hostile.complete_image(1024, 1024, "JPEG", padding)
        assert prepare_image(data, 1024, 1024).data is data
        assert decoded(prepare_image(data, 768, 512)).size == (768, 512)

    @pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
    def test_other_formats_padded_with_nuls_are_accepted(self, fmt):
        data = hostile.complete_image(512, 512, fmt, padding=64)
        assert prepare_image(data, 512, 512).data is data
        assert decoded(prepare_image(data, 256, 128)).size == (256, 128)

    def test_transparency_survives(self):
        out = io.BytesIO()
        Image.new("RGBA", (256, 256), (255, 0, 0, 0)).save(out, "PNG")
        image = decoded(prepare_image(out.getvalue(), 200, 100))
        assert image.mode == "RGBA" and image.getpixel((10, 10))[3] == 0

    @pytest.mark.parametrize("mode,fmt", [("P", "PNG"), ("L", "JPEG"), ("CMYK", "JPEG"),
                                          ("LA", "PNG")])
    def test_other_modes_are_fitted(self, mode, fmt):
        out = io.BytesIO()
        Image.new("RGB", (300, 200), "red").convert(mode).save(out, fmt)
        image = decoded(prepare_image(out.getvalue(), 100, 100))
        assert image.size == (100, 100) and image.format == fmt

    @pytest.mark.parametrize("mode,options", [("1", {}), ("P", {"bits": 4}), ("I;16", {}),
                                              ("LA", {}), ("RGBA", {}), ("L", {})])
    def test_png_bit_depths_and_colour_types_are_complete(self, mode, options):
        out = io.BytesIO()
        Image.linear_gradient("L").resize((301, 203)).convert(mode).save(out, "PNG", **options)
        assert prepare_image(out.getvalue(), 301, 203).data == out.getvalue()
        assert decoded(prepare_image(out.getvalue(), 150, 150)).size == (150, 150)

    def test_a_small_bomb_shaped_png_is_a_real_image(self):
        # The hostile PNG is valid: only its size makes it a bomb.
        image = decoded(prepare_image(hostile.png_bomb(2000, 1000), 1000, 1000))
        assert image.getextrema() == ((0, 0), (0, 0), (0, 0))


class TestFoundInReview:
    def test_a_second_png_header_after_the_data_is_refused(self):
        import struct
        import zlib
        data = hostile.complete_image(256, 256, "PNG")
        iend = data.rindex(b"IEND") - 4
        body = struct.pack(">IIBBBBB", 256, 64, 8, 2, 0, 0, 0)
        second = (struct.pack(">I", len(body)) + b"IHDR" + body
                  + struct.pack(">I", zlib.crc32(b"IHDR" + body)))
        refused(data[:iend] + second + data[iend:], 256, 256)

    def test_sixteen_bit_grey_is_scaled_not_clipped_when_fitted(self):
        out = io.BytesIO()
        Image.new("I;16", (64, 64), 30000).save(out, "PNG")
        fitted = decoded(prepare_image(out.getvalue(), 64, 32))
        assert fitted.size == (64, 32) and fitted.getextrema()[0] in (116, 117, 118)


class TestOutputFormats:
    """`output_format`: converted only when the model's bytes are another format."""

    @pytest.mark.parametrize("source", ["JPEG", "PNG", "WEBP"])
    @pytest.mark.parametrize("wanted,fmt,mime", [("png", "PNG", "image/png"),
                                                 ("jpeg", "JPEG", "image/jpeg"),
                                                 ("webp", "WEBP", "image/webp")])
    def test_every_source_becomes_the_format_asked(self, source, wanted, fmt, mime):
        data = hostile.complete_image(512, 512, source)
        prepared = prepare_image(data, 512, 512, output_format=wanted)
        assert prepared.content_type == mime and decoded(prepared).format == fmt
        assert (prepared.data is data) == (source == fmt)

    def test_a_fitted_image_is_encoded_once_in_the_format_asked(self):
        prepared = prepare_image(hostile.complete_image(1024, 1024, "JPEG"), 1792, 1024,
                                 output_format="png")
        image = decoded(prepared)
        assert (image.format, image.size) == ("PNG", (1792, 1024))

    def test_transparency_becomes_opaque_in_a_jpeg(self):
        out = io.BytesIO()
        Image.new("RGBA", (64, 64), (255, 0, 0, 0)).save(out, "PNG")
        image = decoded(prepare_image(out.getvalue(), 64, 64, output_format="jpeg"))
        assert (image.format, image.mode) == ("JPEG", "RGB")

    def test_quality_sets_the_jpeg_compression(self):
        data = hostile.complete_image(512, 512, "PNG")
        small = prepare_image(data, 512, 512, output_format="jpeg", quality=10).data
        large = prepare_image(data, 512, 512, output_format="jpeg", quality=95).data
        assert len(small) < len(large)
