"""What a generation costs in neurons, the unit Workers AI bills and its free
daily allowance counts (docs/accounts-and-neurons.md has the prices, the
formula and their sources)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

NEURONS_PER_DOLLAR = 1000 / 0.011  # Workers AI: $0.011 per 1,000 neurons
FREE_DAILY_NEURONS = 10_000  # per account, reset at 00:00 UTC
TILE_SIDE = 512
MEGAPIXEL = 1024 * 1024  # klein-9b's "first megapixel" is a 1024x1024 image


def tiles(width: int, height: int) -> int:
    """512x512 tiles covering an image, a part tile counting whole."""
    return math.ceil(width / TILE_SIDE) * math.ceil(height / TILE_SIDE)


def megapixels(width: int, height: int) -> int:
    """Megapixels of an image, a part one counting whole."""
    return max(1, math.ceil(width * height / MEGAPIXEL))


@dataclass(frozen=True)
class Price:
    """A model's published price in neurons, by what it charges for.

    Cloudflare publishes "per 512x512 tile" and "per step"; a live call
    (flux-1-schnell, 1024x1024, 4 steps: 172.8 neurons) shows the step
    charge applies to each tile, so `tile_step` is what a step costs per tile.
    """

    tile: float = 0.0  # each output tile
    tile_step: float = 0.0  # each output tile, each step
    input_tile: float = 0.0  # each tile of each picture in
    input_tile_step: float = 0.0  # each tile of each picture in, each step
    first_megapixel: float = 0.0
    megapixel: float = 0.0  # each output megapixel after the first
    input_megapixel: float = 0.0
    steps: int = 0  # steps billed when the call sends none (Cloudflare's default)

    def neurons(self, width: int, height: int, steps: int | None = None,
                inputs: Sequence[tuple[int, int]] = ()) -> float:
        """Neurons for one image of this size drawn in `steps`, with these pictures in."""
        steps = steps if steps is not None else self.steps
        out = tiles(width, height)
        cost = out * (self.tile + self.tile_step * steps)
        cost += self.first_megapixel + self.megapixel * (megapixels(width, height) - 1)
        for in_width, in_height in inputs:
            cost += tiles(in_width, in_height) * (self.input_tile + self.input_tile_step * steps)
            cost += self.input_megapixel * megapixels(in_width, in_height)
        return round(cost, 2)


def per_dollar(dollars: float) -> float:
    """Neurons for a price published in US dollars."""
    return dollars * NEURONS_PER_DOLLAR
