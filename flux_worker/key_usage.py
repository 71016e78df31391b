"""What each API key has used today (images, estimated neurons), in the
shared state, and its optional daily image quota (KEY_DAILY_IMAGES)."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from .account_pool import next_utc_midnight, utc_day
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

    def today(self, key: str) -> Usage:
        now = self._clock()
        try:
            record = self._state.read([_name(key, now)]).get(_name(key, now), {})
        except StateUnavailable as exc:
            log.warning("usage per key is unavailable (%s)", exc)
            record = {}
        return Usage(utc_day(now), int(record.get("images", 0)), record.get("neurons", 0.0))

    def check(self, key: str, wanted: int) -> None:
        """:raises AllowanceExhausted: when `wanted` more images pass the key's quota."""
        if not self.daily_images:
            return
        used = self.today(key).images
        if used + wanted <= self.daily_images:
            return
        left = max(0, self.daily_images - used)
        retry_after = max(1, round(next_utc_midnight(self._clock()) - self._clock()))
        raise AllowanceExhausted(
            f"This API key has {left} of its {self.daily_images} images left today "
            f"(asked for {wanted}); the count resets at 00:00 UTC.",
            code="key_quota_exceeded", retry_after=retry_after)

    def record(self, key: str, neurons: float | None) -> None:
        """Count one image made for this key (a failure to count is only logged)."""
        try:
            self._state.add(_name(key, self._clock()), {"images": 1, "neurons": neurons or 0.0},
                            USAGE_TTL)
        except StateUnavailable as exc:
            log.warning("an image could not be counted for its API key (%s)", exc)


def _name(key: str, now: float) -> str:
    return f"key-usage:{key}:{utc_day(now)}"
