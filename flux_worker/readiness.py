"""Readiness (/readyz): what the service needs right now, checked for real
and remembered a short while: Cloudflare accepts an account's token, the
embedded store takes writes, Workers KV answers when configured."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .errors import FluxWorkerError

log = logging.getLogger(__name__)

CHECK_SECONDS = 60  # a check's answer is kept this long (Cloudflare is not asked per probe)
FAILED_CHECK_SECONDS = 10  # a failure is asked again sooner, so a fix shows quickly


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was found, or what to do; never a secret

    def as_json(self) -> dict[str, object]:
        return {"ok": self.ok, "detail": self.detail}


class CachedCheck:
    """One check, run at most once per CHECK_SECONDS (per process).

    Only the first caller ever waits for it: once there is an answer, a
    caller that finds it stale while another refreshes it gets the stale one,
    so a slow Cloudflare never piles probes up behind a lock.
    """

    def __init__(self, name: str, run: Callable[[], str], clock: Callable[[], float]
                 = time.monotonic):
        self.name = name
        self._run = run
        self._clock = clock
        self._lock = threading.Lock()
        self._result: Check | None = None
        self._until = 0.0

    def __call__(self) -> Check:
        known = self._result
        if known is not None and self._clock() < self._until:
            return known
        if known is not None and not self._lock.acquire(blocking=False):
            return known  # stale, while another caller refreshes it
        if known is None:
            self._lock.acquire()
        try:
            if self._result is not None and self._clock() < self._until:
                return self._result  # refreshed while this caller waited
            try:
                result = Check(self.name, True, self._run())
            except FluxWorkerError as exc:
                result = Check(self.name, False, exc.message)
            except Exception as exc:  # sqlite3.Error, OSError: the store
                # /readyz is public: the error's text (a file path) goes to the log only.
                log.warning("readiness check %s failed: %s: %s", self.name,
                            type(exc).__name__, exc)
                result = Check(self.name, False, f"failed ({type(exc).__name__}; see the log)")
            self._result = result
            self._until = self._clock() + (CHECK_SECONDS if result.ok else FAILED_CHECK_SECONDS)
            return result
        finally:
            self._lock.release()

    def peek(self) -> Check | None:
        """The last answer, without checking (None: never checked yet)."""
        return self._result


class Fixed:
    """A check whose answer is known at start (API_KEY set or not, …)."""

    def __init__(self, name: str, ok: bool, detail: str):
        self.name = name
        self._result = Check(name, ok, detail)

    def __call__(self) -> Check:
        return self._result

    def peek(self) -> Check:
        return self._result


class Closable(Protocol):
    def close(self) -> None: ...


class Readiness:
    """The checks /readyz and the status page show; ready when all pass.
    Owns the clients its checks call (`closing`)."""

    def __init__(self, checks: list[CachedCheck | Fixed], closing: Sequence[Closable] = ()):
        self._checks = checks
        self._closing = list(closing)

    def close(self) -> None:
        for client in self._closing:
            client.close()

    def run(self) -> list[Check]:
        return [check() for check in self._checks]

    def known(self) -> list[Check]:
        """What the checks last found, without checking: for the status page,
        which must never wait on Cloudflare."""
        return [check.peek() or Check(check.name, False, "not checked yet: see /readyz")
                for check in self._checks]
