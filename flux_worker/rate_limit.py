"""Optional per-key rate limit on the API (RATE_LIMIT), with Flask-Limiter.

Storage is in memory by default, so each gunicorn process counts on its own;
RATE_LIMIT_STORAGE_URI (e.g. redis://) makes the count exact across processes
and machines.
"""

from __future__ import annotations

import hashlib
import math
import time

from flask import Flask, request
from flask_limiter import Limiter, RequestLimit
from flask_limiter.util import get_remote_address

from .error_handlers import error_response
from .errors import RateLimited
from .settings import Settings


def caller_key() -> str:
    """Count per API key; the key is hashed so no store ever holds it."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer ") and header[7:].strip():
        return "key:" + hashlib.sha256(header[7:].strip().encode()).hexdigest()[:32]
    return "ip:" + (get_remote_address() or "unknown")


def _not_api() -> bool:
    return not (request.blueprint or "").startswith("api") or request.method == "OPTIONS"


def _refuse(limit: RequestLimit):
    retry_after = max(1, math.ceil(limit.reset_at - time.time()))
    return error_response(RateLimited(
        f"Rate limit of {limit.limit} reached for this API key; try again in {retry_after} s.",
        retry_after=retry_after))


def init_rate_limit(app: Flask, settings: Settings) -> Limiter | None:
    """Limit API requests per key when RATE_LIMIT is set; pages and images are exempt."""
    if not settings.rate_limit:
        return None
    return Limiter(caller_key, app=app, application_limits=[settings.rate_limit],
                   application_limits_exempt_when=_not_api,
                   storage_uri=settings.rate_limit_storage_uri, headers_enabled=True,
                   on_breach=_refuse, key_prefix="flux-worker")
