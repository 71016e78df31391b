"""The one place that builds the requests Sessions the upstream clients use."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

from . import __version__
from .errors import UpstreamError, UpstreamTimeout

log = logging.getLogger(__name__)

USER_AGENT = f"flux-worker/{__version__}"
RETRY_STATUSES = (429, 502, 503, 504)


class UpstreamRetry(Retry):
    """urllib3 Retry that never repeats a call that timed out.

    A dropped connection is worth another try; a read timeout already used
    the whole time budget, and repeating it would multiply the wait.
    """

    def increment(self, method=None, url=None, response=None, error=None, _pool=None,
                  _stacktrace=None):
        if isinstance(error, ReadTimeoutError):
            raise error
        return super().increment(method, url, response, error, _pool, _stacktrace)


def make_retry(retries: int = 3, backoff: float = 0.5, max_wait: float = 8.0) -> Retry:
    """Retry transient failures with exponential backoff and jitter.

    POST is included: a 429/5xx or a refused/dropped connection means no image
    was delivered, so trying again is what the caller wants.
    """
    return UpstreamRetry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        redirect=0,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "PUT", "POST", "DELETE"}),
        backoff_factor=backoff,
        backoff_jitter=backoff / 2,
        backoff_max=max_wait,
        respect_retry_after_header=True,
        retry_after_max=int(max_wait) or 1,
        raise_on_status=False,  # the last response reaches the client code
    )


def make_session(pool_size: int = 10, retry: Retry | None = None,
                 base_url: str | None = None) -> requests.Session:
    """Return a Session with pooled connections, retries and our User-Agent.

    With ``base_url`` (every call goes under it), the proxy and CA settings of
    the environment (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE) are read once
    here: requests would otherwise scan the whole environment on every call,
    the largest CPU cost of a call after the network itself.
    """
    session = requests.Session()
    if base_url:
        session.trust_env = False
        session.proxies.update(requests.utils.get_environ_proxies(base_url))
        session.verify = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                          or True)
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size,
                          max_retries=retry if retry is not None else make_retry())
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


def call(session: requests.Session, method: str, url: str, *, service: str,
         timeout: tuple[float, float], **kwargs) -> requests.Response:
    """Make one call (retries happen in the session) and translate its faults.

    :raises UpstreamTimeout: when the service did not answer in time.
    :raises UpstreamError: when it could not be reached.
    """
    with _translated_faults(service, "could not be reached"):
        return session.request(method, url, timeout=timeout, **kwargs)


def read_body(response: requests.Response, service: str) -> bytes:
    """Read the body of a response made with ``stream=True``, translating faults.

    :raises UpstreamTimeout: when the body stopped arriving in time.
    :raises UpstreamError: when the connection broke while reading.
    """
    with _translated_faults(service, "answer was cut off"):
        return response.content


@contextmanager
def _translated_faults(service: str, broken: str) -> Iterator[None]:
    """Turn requests' timeouts into 504s and other transport faults into 502s."""
    try:
        yield
    except requests.Timeout as exc:
        raise UpstreamTimeout(f"{service} did not answer in time.") from exc
    except requests.RequestException as exc:
        # The exception text may hold the URL (account id); keep it out of replies.
        log.warning("%s %s: %s", service, broken, type(exc).__name__)
        raise UpstreamError(f"{service} {broken}.") from exc
