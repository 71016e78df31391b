"""CPU per image for the pixel work: full decode and check, crop, encode.

Measures `imaging.prepare_image` with process CPU time (not wall time), for
the fake Cloudflare's 1024x1024 JPEG (what flux-1-schnell sends; smooth, so
cheap to code) and for a noisy 1024x1024 JPEG (closer to a detailed photo),
kept as is (1:1) and cropped to 16:9 (1024x576); then each converted to
PNG (what `gpt-image*` model names get by default) and to WEBP at 1:1.

    .venv/bin/python bench/pixels.py [--runs 50]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

from PIL import Image

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    runs = parser.parse_args().runs
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
