"""The service's exceptions and their one mapping to OpenAI-style error JSON."""

from __future__ import annotations

from flask import Response, jsonify
from werkzeug.exceptions import HTTPException


class FluxWorkerError(Exception):
    """Base error: carries the HTTP status and OpenAI error fields."""

    status = 500
    type = "server_error"
    code: str | None = None
    # False when repeating the same request cannot help (the openai SDK
    # otherwise retries, and each retry may pay for another image).
    retryable = False

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after = retry_after


class InvalidRequest(FluxWorkerError):
    """The client sent something we cannot use."""

    status = 400
    type = "invalid_request_error"


class ContentPolicyViolation(InvalidRequest):
    """Workers AI flagged the prompt or the image."""

    code = "content_policy_violation"


class AuthenticationFailed(FluxWorkerError):
    """No or a wrong API key."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class NotFound(FluxWorkerError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class RateLimited(FluxWorkerError):
    """Too many requests: here, or at Cloudflare after our retries."""

    status = 429
    type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"
    retryable = True


class NotConfigured(FluxWorkerError):
    """The operator has not configured what this request needs."""

    status = 503
    type = "server_error"
    code = "not_configured"


class UpstreamError(FluxWorkerError):
    """Workers AI, KV or the optimizer failed or answered nonsense."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"
    retryable = True


class UpstreamMisconfigured(UpstreamError):
    """Cloudflare refused this server's own settings (token, account, namespace):
    only the operator can fix it, so clients must not retry."""

    code = "upstream_misconfigured"
    retryable = False


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


def error_body(error: FluxWorkerError) -> dict:
    """Return the OpenAI error object for an error."""
    return {"error": {"message": error.message, "type": error.type,
                      "param": error.param, "code": error.code}}


def error_response(error: FluxWorkerError) -> Response:
    """Return the JSON response for an error, with retry hints in the headers."""
    response = jsonify(error_body(error))
    response.status_code = error.status
    response.headers["x-should-retry"] = "true" if error.retryable else "false"
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large",
               415: "unsupported_media_type"}


def from_http_exception(exc: HTTPException) -> FluxWorkerError:
    """Translate a werkzeug routing/parsing error into our error type."""
    status = exc.code or 500
    if status >= 500:
        error = FluxWorkerError("The server had an internal error.")
    else:
        messages = {
            404: "No such endpoint. See /v1/models, /v1/chat/completions, /v1/images/generations.",
            405: "This method is not allowed on this endpoint.",
            413: "The request body is larger than the 1 MiB this service accepts.",
        }
        error = InvalidRequest(messages.get(status, exc.description or exc.name),
                               code=_HTTP_CODES.get(status, "invalid_request"))
        error.status = status
    return error


def register_error_handlers(app) -> None:
    """Make every error, ours or Flask's, an OpenAI-style JSON response."""

    @app.errorhandler(FluxWorkerError)
    def handle_flux_error(error: FluxWorkerError):
        return error_response(error)

    @app.errorhandler(HTTPException)
    def handle_http_exception(exc: HTTPException):
        if exc.response is not None:  # built on purpose, e.g. by the rate limiter
            return exc.response
        return error_response(from_http_exception(exc))

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception):
        app.logger.exception("unhandled error")
        return error_response(FluxWorkerError("The server had an internal error."))
