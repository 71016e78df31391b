"""Run the project's fake Cloudflare in its own process (so the benchmark's
client threads do not share its GIL). Prints the API base, then serves until killed."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fake_cloudflare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--image-padding", type=int, default=0)
    args = parser.parse_args()
    with fake_cloudflare.FakeCloudflare(latency=args.latency,
                                        image_padding=args.image_padding) as fake:
        print(fake.api_base, flush=True)
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()
