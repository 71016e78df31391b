"""What the Cloudflare REST clients share: the error envelope and the failures
every Cloudflare API answers the same way."""

from __future__ import annotations

import logging

import requests

from .errors import RateLimited, UpstreamError, UpstreamMisconfigured, UpstreamTimeout

log = logging.getLogger(__name__)
AUTH_CODES = {10000, 9106, 9109}  # "Authentication error" and friends
UNROUTABLE_CODES = {7003, 10013}  # no such account / namespace


def envelope_errors(response: requests.Response) -> list[tuple[int | None, str]]:
    """Return the (code, message) pairs of a Cloudflare error envelope, if any."""
    try:
        body = response.json()
    except ValueError:
        return []
    errors = body.get("errors") if isinstance(body, dict) else None
    pairs = []
    for item in errors if isinstance(errors, list) else []:
        if isinstance(item, dict):
            code = item.get("code")
            pairs.append((code if isinstance(code, int) else None, str(item.get("message", ""))))
    return pairs


def raise_for_common_failure(response: requests.Response, service: str) -> None:
    """Raise our error for failures every Cloudflare API shares: auth, 429, 5xx.

    :raises UpstreamError: for refused credentials and server errors.
    :raises RateLimited: for 429 after the session's retries.
    """
    status = response.status_code
    codes = {code for code, _ in envelope_errors(response)}
    if status in (401, 403) and (status == 401 or codes & AUTH_CODES or not codes):
        log.error("%s refused the server's Cloudflare credentials (HTTP %s, codes %s): "
                  "check CF_API_TOKEN and CF_ACCOUNT_ID", service, status, sorted(c for c in codes if c))
        raise UpstreamMisconfigured(f"{service} refused this server's Cloudflare credentials "
                                    "(the operator must check CF_API_TOKEN and CF_ACCOUNT_ID; "
                                    "your API key is fine).", code="upstream_auth_failed")
    if status == 404 and codes & UNROUTABLE_CODES:
        log.error("%s could not route the request (codes %s): check CF_ACCOUNT_ID%s",
                  service, sorted(codes), " and CF_KV_NAMESPACE_ID" if 10013 in codes else "")
        raise UpstreamMisconfigured(f"{service} does not know this server's Cloudflare account "
                                    "or namespace (the operator must check CF_ACCOUNT_ID and "
                                    "CF_KV_NAMESPACE_ID).")
    if status == 429:
        raise RateLimited(f"{service} is rate limiting this server; try again shortly.",
                          retry_after=retry_after_seconds(response))
    if status == 408:
        raise UpstreamTimeout(f"{service} timed out.")
    if status >= 500:
        raise UpstreamError(f"{service} failed (HTTP {status}).")


def is_unroutable(response: requests.Response) -> bool:
    """True for a 404 about the account or namespace, not about a key."""
    return any(code in UNROUTABLE_CODES for code, _ in envelope_errors(response))


def retry_after_seconds(response: requests.Response, default: int = 30) -> int:
    value = response.headers.get("Retry-After", "")
    return int(value) if value.strip().isdigit() else default
