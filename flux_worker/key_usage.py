"""What each API key has used today (images, estimated neurons), in the
shared state, and its optional daily image quota (KEY_DAILY_IMAGES).

Images are counted when a request starts (reserved, atomically), and given
back when they are not made, so requests at the same time share the quota.
While the shared state is unavailable nothing is counted and the quota does
not hold (a warning says so): generation goes on.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from .cloudflare import seconds_until_utc_midnight, utc_day
from .errors import AllowanceExhausted
from .shared_state import SharedState, StateUnavailable

log = logging.getLogger(__name__)
USAGE_TTL = 2 * 86400


def key_id(api_key: str) -> str:
    """An API key as usage and metrics name it: hashed, never the key."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Usage:
    day: str
    images: int
    neurons: float


class KeyUsage:
    """Counts per key per UTC day; refuses past the quota with 429 until 00:00 UTC."""

    def __init__(self, state: SharedState, daily_images: int,
                 clock: Callable[[], float] = time.time):
        self.daily_images = daily_images  # 0: no quota
        self._state = state
        self._clock = clock

    def today(self, key: str) -> Usage | None:
        """This key's day so far; None while the shared state is unavailable."""
        now = self._clock()
        try:
            record = self._state.read([_name(key, now)]).get(_name(key, now), {})
        except StateUnavailable as exc:
            log.warning("usage per key is unavailable (%s)", exc)
            return None
        return Usage(utc_day(now), max(0, round(record.get("images", 0))),
                     record.get("neurons", 0.0))

    def reserve(self, key: str, wanted: int) -> None:
        """Count `wanted` images for this key now, before they are made, so
        requests at the same time cannot pass the quota together; give back
        with `release` what is not made.

        :raises AllowanceExhausted: when they would pass the key's quota.
        """
        now = self._clock()
        try:
            total = self._state.add(_name(key, now), {"images": wanted}, USAGE_TTL)["images"]
        except StateUnavailable as exc:  # the quota cannot hold without the count
            log.warning("usage per key is unavailable (%s): this request is not counted", exc)
            return
        if not self.daily_images or total <= self.daily_images:
            return
        self.release(key, wanted)
        left = max(0, self.daily_images - round(total - wanted))
        raise AllowanceExhausted(
            f"This API key has {left} of its {self.daily_images} images left today "
            f"(asked for {wanted}); the count resets at 00:00 UTC.",
            code="key_quota_exceeded", retry_after=seconds_until_utc_midnight(now))

    def release(self, key: str, images: int) -> None:
        """Give back images counted by `reserve` that were not made."""
        self._add(key, {"images": -images})

    def spent(self, key: str, neurons: float | None) -> None:
        """Add what a made image cost."""
        if neurons:
            self._add(key, {"neurons": neurons})

    def _add(self, key: str, amounts: dict[str, float]) -> None:
        try:
            self._state.add(_name(key, self._clock()), amounts, USAGE_TTL)
        except StateUnavailable as exc:
            log.warning("usage per key could not be updated (%s)", exc)


def _name(key: str, now: float) -> str:
    return f"key-usage:{key}:{utc_day(now)}"
