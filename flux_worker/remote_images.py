"""Fetching a picture from a link someone sent: off unless the operator turns
it on (ALLOW_REMOTE_IMAGES), and then only from public addresses.

requests-hardened checks the address each connection is made to, after DNS
resolution and on every redirect hop (which we follow one at a time), so a
name resolving to loopback, a private network or a cloud metadata address is
refused before a byte is sent to it. Bytes are capped here, and time
between reads (requests has no bound on a whole trickling read).
"""

from __future__ import annotations

import logging
import time
from urllib.parse import urljoin, urlsplit

import requests
from requests_hardened import Config, Manager
from requests_hardened.ip_filter import InvalidIPAddress

from .errors import InvalidRequest
from .version import __version__

log = logging.getLogger(__name__)
MAX_BYTES = 10 * 1024 * 1024
# Checked before each hop and between reads of the body; one read may wait
# up to its own 10 s timeout, and a trickle of bytes keeps a read going.
MAX_SECONDS = 15.0
MAX_REDIRECTS = 3


class RemoteImages:
    """Reads image links from other hosts, as far as the operator allows."""

    def __init__(self, enabled: bool, *, max_bytes: int = MAX_BYTES,
                 max_seconds: float = MAX_SECONDS, allow_loopback: bool = False):
        self.enabled = enabled
        self._max_bytes = max_bytes
        self._max_seconds = max_seconds
        # allow_loopback exists for tests that must reach a first hop on this machine.
        self._manager = Manager(Config(
            ip_filter_enable=True, ip_filter_allow_loopback_ips=allow_loopback,
            never_redirect=True, default_timeout=(5, 10),
            user_agent_override=f"flux-worker/{__version__} (image fetch)"))

    def fetch(self, url: str, param: str) -> bytes:
        """Return the bytes at an http(s) link (checked as an image by the caller).

        :raises InvalidRequest: naming `param` when fetching is off, the link
            points at a non-public address, or it fails, is too slow or too big.
        """
        if not self.enabled:
            raise InvalidRequest(f"{param} links to another site; this server does not fetch "
                                 "images from links (its operator can allow it with "
                                 "ALLOW_REMOTE_IMAGES). Attach the image itself instead.",
                                 param=param, code="invalid_image_url")
        deadline = time.monotonic() + self._max_seconds
        with self._manager.get_session() as session:
            session.trust_env = False  # a proxy from the environment would bypass the checks
            for _ in range(MAX_REDIRECTS + 1):
                _check_scheme(url, param)
                try:
                    location = self._get(session, url, deadline, param)
                except InvalidIPAddress:
                    log.warning("refused an image link to a non-public address (host %s)",
                                urlsplit(url).hostname)
                    raise InvalidRequest(f"{param} points to a private, local or reserved "
                                         "address, which this server never fetches.",
                                         param=param, code="invalid_image_url") from None
                except requests.Timeout:
                    raise _failed(param, "took too long to answer") from None
                except requests.RequestException:
                    raise _failed(param, "could not be reached") from None
                if isinstance(location, bytes):
                    return location
                url = location
        raise _failed(param, f"redirected more than {MAX_REDIRECTS} times")

    def _get(self, session: requests.Session, url: str, deadline: float,
             param: str) -> bytes | str:
        """One hop: the body, or where a redirect points."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise requests.Timeout()
        with session.get(url, stream=True, timeout=(min(5.0, left), min(10.0, left)),
                         headers={"Accept": "image/png,image/jpeg,image/webp"}) as response:
            if response.is_redirect:
                return urljoin(url, response.headers.get("Location", ""))
            if response.status_code != 200:
                raise _failed(param, f"answered HTTP {response.status_code}")
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > self._max_bytes:
                raise _too_big(param, self._max_bytes)
            body = bytearray()
            for chunk in response.iter_content(8 * 1024):
                body += chunk
                if len(body) > self._max_bytes:
                    raise _too_big(param, self._max_bytes)
                if time.monotonic() > deadline:
                    raise requests.Timeout()
            return bytes(body)


def _check_scheme(url: str, param: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"{param} must be a data: URL or an http(s) link to an image.",
                             param=param, code="invalid_image_url")


def _failed(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"The image link in {param} {why}.", param=param,
                          code="failed_to_download_image")


def _too_big(param: str, limit: int) -> InvalidRequest:
    return InvalidRequest(f"The image link in {param} is over {limit // 1024 // 1024} MiB.",
                          param=param, code="image_too_large")
