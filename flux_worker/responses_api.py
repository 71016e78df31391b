"""The OpenAI Responses API: `POST /v1/responses` (to be written)."""

from __future__ import annotations

from flask import Response

from .errors import InvalidRequest


def respond(services, body: object, image_base_url: str) -> Response | dict:
    raise InvalidRequest("The Responses API is not available yet.")
