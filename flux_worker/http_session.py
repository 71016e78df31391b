"""Calls to upstream services: pooled Sessions, one deadline for each whole
call (retries and body included), retries only where repeating cannot cost
twice, and one translation of transport faults."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
import tenacity
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
)

from . import metrics
from .errors import FluxWorkerError, Resend, UpstreamError, UpstreamTimeout
from .redaction import Redactor
from .version import __version__

log = logging.getLogger(__name__)

USER_AGENT = f"flux-worker/{__version__}"
READ_CHUNK = 64 * 1024
# The largest answer read: a 2500x2500 PNG in base64 is ~25 MB at worst.
MAX_ANSWER_BYTES = 32 * 1024 * 1024
T = TypeVar("T")


class Deadline:
    """The moment by which a whole call must be done.

    Socket timeouts bound each read, not a call: an upstream sending a header
    line or a body byte now and then would never trip them. So the deadline
    also guards the call's socket, shutting it down when the time is up,
    whatever read is waiting on it.
    """

    def __init__(self, seconds: float):
        self._end = time.monotonic() + seconds
        self._timers: list[threading.Timer] = []

    def remaining(self) -> float:
        return self._end - time.monotonic()

    @property
    def passed(self) -> bool:
        return self.remaining() <= 0

    def guard(self, sock: socket.socket) -> None:
        """Shut sock down at the deadline, unless `release` comes first."""
        timer = threading.Timer(max(0.0, self.remaining()), _shut_down, (sock,))
        timer.daemon = True
        timer.start()
        self._timers.append(timer)

    def release(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()


def _shut_down(sock: socket.socket) -> None:
    # The plain socket's shutdown, also for TLS: the blocked read sees the end
    # of the stream, and the TLS object is left alone for the reading thread.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


_current = threading.local()  # the Deadline of the call this thread is making


class _GuardedConnection(urllib3.connection.HTTPConnection):
    """A connection that puts its socket under the current call's deadline
    just before the answer's status line and headers are read."""

    # The override ignore is urllib3's own: http.client types getresponse differently.
    def getresponse(self) -> urllib3.response.HTTPResponse:  # type: ignore[override]
        deadline = getattr(_current, "deadline", None)
        if deadline is not None and self.sock is not None:
            deadline.guard(self.sock)
        return super().getresponse()


class _GuardedTLSConnection(_GuardedConnection, urllib3.connection.HTTPSConnection):
    pass


class _GuardedPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _GuardedConnection


class _GuardedTLSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _GuardedTLSConnection


class _GuardedAdapter(HTTPAdapter):
    """requests' adapter, with connections that honour call deadlines."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedPool,
                                                   "https": _GuardedTLSPool}


@dataclass(frozen=True)
class Answer:
    """An upstream's whole answer, read within the call's deadline."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    def json(self) -> object:
        """:raises ValueError: when the body is not JSON."""
        return json.loads(self.body)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a call is repeated when that is safe."""

    retries: int = 3
    backoff: float = 0.5  # the first wait; then doubling, with jitter
    max_wait: float = 8.0


def make_session(pool_size: int = 10, base_url: str | None = None) -> requests.Session:
    """Return a Session with pooled connections and our User-Agent.

    It retries nothing itself: `Upstream.call` decides, per failure, whether
    a repeat is safe. With ``base_url`` (every call goes under it), the proxy
    and CA settings of the environment are read once here: requests would
    otherwise scan the whole environment on every call.
    """
    session = requests.Session()
    if base_url:
        session.trust_env = False
        session.proxies.update(requests.utils.get_environ_proxies(base_url))
        session.verify = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                          or True)
    adapter = _GuardedAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


class Upstream:
    """One upstream service as its client sees it: a session, a time bound per
    call, a retry policy, and the redactor its text passes through."""

    def __init__(self, service: str, session: requests.Session, *, timeout: float,
                 connect_timeout: float = 10.0, retry: RetryPolicy | None = None,
                 redact: Redactor | None = None):
        self.service = service
        self.session = session
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retry = retry or RetryPolicy()
        self.redact = redact or Redactor()

    def call(self, method: str, url: str, check: Callable[[Answer], T], *, idempotent: bool,
             **kwargs) -> T:
        """Send a request and return what ``check`` makes of the whole answer.

        ``check`` raises our errors for answers it refuses; the error's
        `resend` says whether the same call may go again (a POST that may
        have made an image is never sent twice). Everything, waits between
        tries included, happens within one deadline of ``timeout`` seconds.

        :raises UpstreamTimeout: when the deadline passed.
        :raises FluxWorkerError: what ``check`` raised, or a transport fault.
        """
        deadline = Deadline(self.timeout)
        policy = self.retry

        def attempt() -> T:
            return check(self._exchange(method, url, deadline, kwargs))

        def may_resend(exc: BaseException) -> bool:
            if not isinstance(exc, FluxWorkerError):
                return False
            return exc.resend is Resend.ALWAYS or (idempotent
                                                   and exc.resend is Resend.IF_IDEMPOTENT)

        def wait(state: tenacity.RetryCallState) -> float:
            backoff = policy.backoff * 2 ** (state.attempt_number - 1)
            backoff += random.uniform(0, policy.backoff / 2)  # jitter spreads a burst
            exc = state.outcome.exception() if state.outcome else None
            asked = getattr(exc, "retry_after", None) or 0
            return min(max(backoff, asked), max(policy.max_wait, asked))

        def stop(state: tenacity.RetryCallState) -> bool:
            out_of_tries = state.attempt_number > policy.retries
            return out_of_tries or (state.upcoming_sleep or 0) >= deadline.remaining()

        def note(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.info("%s: %s; trying again in %.1f s", self.service,
                     getattr(exc, "message", type(exc).__name__), state.upcoming_sleep)

        retrying = tenacity.Retrying(retry=tenacity.retry_if_exception(may_resend), wait=wait,
                                     stop=stop, before_sleep=note, reraise=True)
        return retrying(attempt)

    def _exchange(self, method: str, url: str, deadline: Deadline, kwargs: dict) -> Answer:
        """One request and its whole body, within what is left of the deadline."""
        remaining = deadline.remaining()
        if remaining <= 0:
            raise self._timed_out()
        _current.deadline = deadline
        try:
            response = self.session.request(
                method, url, stream=True, timeout=(min(self.connect_timeout, remaining), remaining),
                **kwargs)
            try:
                body = self._read_body(response, deadline)
            finally:
                response.close()
        except requests.Timeout as exc:
            if isinstance(exc, requests.ConnectTimeout):
                raise self._unreachable(exc) from None
            raise self._timed_out() from None
        except requests.RequestException as exc:
            if deadline.passed:  # the guard shut the socket while headers trickled in
                raise self._timed_out() from None
            if _never_sent(exc):
                raise self._unreachable(exc) from None
            log.warning("%s: the connection broke before the answer (%s)", self.service,
                        type(exc).__name__)
            metrics.UPSTREAM_ERRORS.labels(self.service, "connection_broken").inc()
            raise UpstreamError(f"{self.service} closed the connection without answering.",
                                resend=Resend.IF_IDEMPOTENT) from None
        finally:
            _current.deadline = None
            deadline.release()
        return Answer(response.status_code, response.headers, body)

    def _read_body(self, response: requests.Response, deadline: Deadline) -> bytes:
        """Read the body in pieces, each socket read bounded by the time left
        (and the deadline's guard), so a trickling or stalled body ends there."""
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
            raise self._too_large()
        raw = response.raw
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                remaining = deadline.remaining()
                if remaining <= 0:
                    raise self._timed_out()
                connection = raw.connection
                if connection is not None and connection.sock is not None:
                    connection.sock.settimeout(remaining)
                chunk = raw.read1(READ_CHUNK, decode_content=True)
                if not chunk:
                    return b"".join(chunks)
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise self._too_large()
                chunks.append(chunk)
        except ReadTimeoutError:
            raise self._timed_out() from None
        except (HTTPError, OSError) as exc:
            if deadline.passed:
                raise self._timed_out() from None
            log.warning("%s: the answer was cut off (%s)", self.service, type(exc).__name__)
            metrics.UPSTREAM_ERRORS.labels(self.service, "connection_broken").inc()
            raise UpstreamError(f"{self.service} answer was cut off.",
                                resend=Resend.IF_IDEMPOTENT) from None

    def _timed_out(self) -> UpstreamTimeout:
        metrics.UPSTREAM_ERRORS.labels(self.service, "timeout").inc()
        return UpstreamTimeout(f"{self.service} did not answer in time.")

    def _unreachable(self, exc: Exception) -> UpstreamError:
        # The exception text may hold the URL (account id); keep it out of logs.
        log.warning("%s could not be reached (%s)", self.service, type(exc).__name__)
        metrics.UPSTREAM_ERRORS.labels(self.service, "unreachable").inc()
        return UpstreamError(f"{self.service} could not be reached.", resend=Resend.ALWAYS)

    def _too_large(self) -> UpstreamError:
        return UpstreamError(f"{self.service} sent an answer larger than "
                             f"{MAX_ANSWER_BYTES // (1024 * 1024)} MiB.", resend=Resend.NEVER)

    def close(self) -> None:
        self.session.close()


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the request cannot have reached the upstream (refused, no route, DNS)."""
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))
