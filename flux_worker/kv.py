"""Workers KV REST client: raw bytes in, raw bytes out, with a TTL."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from . import cloudflare
from .http_session import Answer, Upstream

SERVICE = "Workers KV"
KV_MIN_TTL = 60  # Workers KV refuses expiration_ttl under 60 seconds


@dataclass(frozen=True)
class KVValue:
    data: bytes
    expires_at: float | None  # unix seconds, from KV's `expiration` header


class KVClient:
    """Reads and writes values of one namespace over the REST API; both are
    idempotent, so any transient failure is tried again."""

    def __init__(self, upstream: Upstream, *, api_base: str, account_id: str, namespace_id: str,
                 api_token: str):
        self._upstream = upstream
        self._url = f"{api_base}/accounts/{account_id}/storage/kv/namespaces/{namespace_id}/values/"
        self._headers = {"Authorization": f"Bearer {api_token}"}

    def put(self, key: str, value: bytes, ttl: int) -> None:
        """Store value under key for ttl seconds (at least KV's minimum of 60).

        :raises FluxWorkerError: when KV refused or failed after retries.
        """
        self._upstream.call(
            "PUT", self._url + quote(key, safe=""), self._check, idempotent=True,
            params={"expiration_ttl": max(ttl, KV_MIN_TTL)}, data=value,
            headers={**self._headers, "Content-Type": "application/octet-stream"})

    def get(self, key: str) -> KVValue | None:
        """Return the value under key, or None when it is missing or expired.

        :raises FluxWorkerError: when KV failed after retries.
        """
        return self._upstream.call(
            "GET", self._url + quote(key, safe=""), self._value, idempotent=True,
            headers={**self._headers, "Accept": "application/octet-stream"})

    def _value(self, answer: Answer) -> KVValue | None:
        if answer.status == 404 and cloudflare.is_missing_key(answer, self._upstream.redact):
            return None
        self._check(answer)
        return KVValue(answer.body, _expiration(answer.headers.get("expiration", "")))

    def _check(self, answer: Answer) -> None:
        if answer.status != 200:
            raise cloudflare.error_for(answer, SERVICE, self._upstream.redact,
                                       client_input=False)

    def close(self) -> None:
        self._upstream.close()


def _expiration(value: str) -> float | None:
    """KV's `expiration` header (unix seconds), when it is a plausible one."""
    value = value.strip()
    return float(value) if value.isdigit() and len(value) <= 10 else None
