"""CPU per image for the pixel work: full decode and check, crop, encode.

Measures `imaging.prepare_image` with process CPU time (not wall time), for
the fake Cloudflare's 1024x1024 JPEG (what flux-1-schnell sends; smooth, so
cheap to code) and for a noisy 1024x1024 JPEG (closer to a detailed photo),
kept as is (1:1) and cropped to 16:9 (1024x576); then each converted to
PNG (what `gpt-image*` model names get by default) and to WEBP at 1:1.

    .venv/bin/python bench/pixels.py [--runs 50]
    .venv/bin/python bench/pixels.py --encoders [--runs 5]

`--encoders` instead compares Pillow's PNG zlib levels (6, its default; 3;
1, ours) and WEBP methods (4, its default; 0, ours) on two 1024x1024
pictures: random noise, and blurred noise (closer to a photo).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import fake_cloudflare  # noqa: E402 (the tests' helpers, found through sys.path)
from flux_worker.imaging import prepare_image  # noqa: E402


def noisy_jpeg() -> bytes:
    out = io.BytesIO()
    Image.effect_noise((1024, 1024), 60).convert("RGB").save(out, "JPEG", quality=85)
    return out.getvalue()


def cpu_ms(data: bytes, width: int, height: int, runs: int, output_format: str | None = None
           ) -> float:
    prepare_image(data, width, height, output_format=output_format)  # warm up
    started = time.process_time()
    for _ in range(runs):
        prepare_image(data, width, height, output_format=output_format)
    return (time.process_time() - started) / runs * 1000


def encoder_settings(runs: int) -> None:
    blurred = Image.merge("RGB", [Image.effect_noise((1024, 1024), 80)
                                  .filter(ImageFilter.GaussianBlur(3)) for _ in range(3)])
    pictures = {"noise": Image.effect_noise((1024, 1024), 60).convert("RGB"),
                "blurred noise": blurred}
    settings = [("PNG", {"compress_level": level}) for level in (6, 3, 1)]
    settings += [("WEBP", {"quality": 92, "method": method}) for method in (4, 0)]
    print("| picture | encoder | CPU ms | bytes |\n|---|---|---|---|")
    for name, picture in pictures.items():
        for fmt, options in settings:
            started = time.process_time()
            for _ in range(runs):
                out = io.BytesIO()
                picture.save(out, fmt, **options)
            spent = (time.process_time() - started) / runs * 1000
            print(f"| {name} | {fmt} {options} | {spent:.0f} | {len(out.getvalue())} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--encoders", action="store_true")
    args = parser.parse_args()
    runs = args.runs
    if args.encoders:
        encoder_settings(runs)
        return
    images = {"fake (smooth)": fake_cloudflare.FakeCloudflare().image(1024, 1024, "JPEG"),
              "noisy": noisy_jpeg()}
    print("| image | bytes | 1:1 CPU ms | 16:9 CPU ms | 1:1 to PNG | 1:1 to WEBP |\n"
          "|---|---|---|---|---|---|")
    for name, data in images.items():
        print(f"| {name} | {len(data)} | {cpu_ms(data, 1024, 1024, runs):.1f} | "
              f"{cpu_ms(data, 1024, 576, runs):.1f} | "
              f"{cpu_ms(data, 1024, 1024, runs, 'png'):.1f} | "
              f"{cpu_ms(data, 1024, 1024, runs, 'webp'):.1f} |")


if __name__ == "__main__":
    main()
