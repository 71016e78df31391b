"""Bearer-key authentication for the API endpoints."""

from __future__ import annotations

import hmac

from flask import request

from .errors import AuthenticationFailed, NotConfigured


def check_api_key(allowed_keys: tuple[str, ...]) -> str:
    """Return the caller's key when it is one of the allowed keys.

    Every allowed key is compared, in constant time, so timing tells nothing.
    With no keys configured the API stays closed.

    :raises NotConfigured: when the server has no API_KEY.
    :raises AuthenticationFailed: for a missing or wrong key.
    """
    if not allowed_keys:
        raise NotConfigured("This server has no API_KEY set, so its API is closed: the operator "
                            "must set API_KEY.")
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise AuthenticationFailed("Missing API key: send it as 'Authorization: Bearer <key>'.")
    given_bytes = given.strip().encode()
    matched = False
    for key in allowed_keys:
        matched |= hmac.compare_digest(given_bytes, key.encode())
    if not matched:
        raise AuthenticationFailed("Incorrect API key provided.")
    return given.strip()
