"""The one mapping from errors (ours and werkzeug's) to OpenAI-style JSON responses."""

from __future__ import annotations

import logging

from flask import Flask, Response, has_request_context, jsonify, request
from werkzeug.exceptions import HTTPException

from .errors import FluxWorkerError, InvalidRequest, error_body

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large",
               415: "unsupported_media_type"}
_HTTP_MESSAGES = {
    404: "No such endpoint. See /v1/models, /v1/chat/completions, /v1/images/generations, "
         "/v1/responses.",
    405: "This method is not allowed on this endpoint.",
}


def error_response(error: FluxWorkerError) -> Response:
    """Return the JSON response for an error, with retry hints in the headers."""
    response = jsonify(error_body(error))
    response.status_code = error.status
    response.headers["x-should-retry"] = "true" if error.retryable else "false"
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def from_http_exception(exc: HTTPException) -> FluxWorkerError:
    """Translate a werkzeug routing/parsing error into our error type."""
    status = exc.code or 500
    if status >= 500:
        return FluxWorkerError("The server had an internal error.")
    message = _HTTP_MESSAGES.get(status, exc.description or exc.name)
    if status == 413:
        message = f"The request body is larger than the {_body_limit()} this endpoint accepts."
    error = InvalidRequest(message, code=_HTTP_CODES.get(status, "invalid_request"))
    error.status = status
    return error


def _body_limit() -> str:
    """The body limit of the request being answered, for people to read
    (the app sets one byte over it: see create_app)."""
    limit = (request.max_content_length or 1) - 1 if has_request_context() else 0
    return f"{limit / 1024 / 1024:g} MiB" if limit >= 1024 * 1024 else f"{limit} bytes"


def register_error_handlers(app: Flask) -> None:
    """Make every error, ours or Flask's, an OpenAI-style JSON response."""

    @app.errorhandler(FluxWorkerError)
    def handle_flux_error(error: FluxWorkerError):
        return error_response(error)

    @app.errorhandler(HTTPException)
    def handle_http_exception(exc: HTTPException):
        if exc.response is not None:  # built on purpose, e.g. by the rate limiter
            return exc.response
        response = error_response(from_http_exception(exc))
        for name, value in exc.get_headers():
            if name.lower() == "allow":  # 405 says which methods would work
                response.headers["Allow"] = value
        return response

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(FluxWorkerError("The server had an internal error."))
