"""Workers KV REST client: raw bytes in, raw bytes out, with a TTL."""

from __future__ import annotations

from urllib.parse import quote

import requests

from . import cloudflare, http_session
from .errors import UpstreamError
from .settings import KV_MIN_TTL

SERVICE = "Workers KV"


class KVClient:
    """Reads and writes values of one namespace over the REST API."""

    def __init__(self, *, api_base: str, account_id: str, namespace_id: str, api_token: str,
                 session: requests.Session, timeout: float = 30.0, connect_timeout: float = 10.0):
        self._url = f"{api_base}/accounts/{account_id}/storage/kv/namespaces/{namespace_id}/values/"
        self._headers = {"Authorization": f"Bearer {api_token}"}
        self._session = session
        self._timeout = (connect_timeout, timeout)

    def put(self, key: str, value: bytes, ttl: int) -> None:
        """Store value under key for ttl seconds (at least KV's minimum of 60).

        :raises UpstreamError: when KV refused or failed after retries.
        """
        response = http_session.call(
            self._session, "PUT", self._url + quote(key, safe=""), service=SERVICE,
            timeout=self._timeout, params={"expiration_ttl": max(ttl, KV_MIN_TTL)},
            data=value, headers={**self._headers, "Content-Type": "application/octet-stream"})
        if response.status_code != 200:
            self._raise(response)

    def get(self, key: str) -> bytes | None:
        """Return the value under key, or None when it is missing or expired.

        :raises UpstreamError: when KV failed after retries.
        """
        response = http_session.call(
            self._session, "GET", self._url + quote(key, safe=""), service=SERVICE,
            timeout=self._timeout, headers={**self._headers, "Accept": "application/octet-stream"})
        if response.status_code == 404 and not cloudflare.is_unroutable(response):
            return None  # missing or expired (code 10009)
        if response.status_code != 200:
            self._raise(response)
        return response.content

    def close(self) -> None:
        self._session.close()

    @staticmethod
    def _raise(response: requests.Response) -> None:
        cloudflare.raise_for_common_failure(response, SERVICE)
        detail = "; ".join(text for _, text in cloudflare.envelope_errors(response))
        raise UpstreamError(f"Workers KV failed (HTTP {response.status_code}"
                            f"{': ' + detail if detail else ''}).")
