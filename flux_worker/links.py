"""Where image links point, and spotting links that only a server can follow.

Without PUBLIC_BASE_URL a link follows the request's Host. A chat front end
that calls us from its own server (Open WebUI's backend, the LiteLLM proxy)
sends *its* name for us, often an internal one (`flux-internal:8000`), and
the user's browser cannot load the image. We cannot know the public name, so
we say so: once in the log per origin, and on the status page.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

# Names that only resolve inside a network: Docker/Kubernetes services,
# mDNS, home routers, RFC 6762/8375 and the reserved test names.
_INTERNAL_SUFFIXES = (".local", ".localhost", ".internal", ".lan", ".home.arpa", ".svc",
                      ".cluster.local", ".localdomain", ".intranet", ".corp", ".home")
REMEMBERED_ORIGINS = 8  # warned about per process; a client rotating names gets no more


def looks_internal(origin: str) -> bool:
    """Whether a link origin's host is one a browser elsewhere cannot reach:
    no dot (a container or machine name, localhost), a private, loopback or
    link-local address, or an internal-only suffix."""
    host = (urlsplit(origin).hostname or "").rstrip(".").lower()
    if not host:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "." not in host or host.endswith(_INTERNAL_SUFFIXES)
    return not address.is_global


class LinkOrigins:
    """The origins image links are built from; remembers internal-looking ones."""

    def __init__(self, public_base_url: str):
        self.public_base_url = public_base_url
        self._internal: list[str] = []
        self._lock = threading.Lock()

    def origin_for(self, request_origin: str) -> str:
        """The origin for this request's links: PUBLIC_BASE_URL, else the request's."""
        if self.public_base_url:
            return self.public_base_url
        if looks_internal(request_origin):
            self._remember(request_origin)
        return request_origin

    def internal_seen(self) -> int:
        """How many internal-looking origins links were built from (this
        process); the log names them, the public status page only counts."""
        with self._lock:
            return len(self._internal)

    def _remember(self, origin: str) -> None:
        with self._lock:
            if origin in self._internal or len(self._internal) >= REMEMBERED_ORIGINS:
                return
            self._internal.append(origin)
        log.warning("image links are built from %s, which looks internal: a browser elsewhere "
                    "cannot load them. Set PUBLIC_BASE_URL to the address users reach this "
                    "service at (needed when a front end such as Open WebUI or the LiteLLM "
                    "proxy calls from its own server).", origin)
