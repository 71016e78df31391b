"""The service's exceptions: what went wrong, and what the client and our
upstream calls may do about it. Free of Flask; `error_handlers` maps them to HTTP."""

from __future__ import annotations

import enum


class Resend(enum.Enum):
    """Whether an upstream call that failed this way may be sent again."""

    NEVER = "never"  # repeating cannot help, or the time is spent
    ALWAYS = "always"  # the upstream cannot have done the work (refused, 429, 503)
    IF_IDEMPOTENT = "if_idempotent"  # it may have done the work: only a GET/PUT is safe


class FluxWorkerError(Exception):
    """Base error: carries the HTTP status and OpenAI error fields."""

    status = 500
    type = "server_error"
    code: str | None = None
    # False when repeating the same request cannot help (the openai SDK
    # otherwise retries, and each retry may pay for another image).
    retryable = False
    resend = Resend.NEVER
    upstream_code: int | None = None  # Cloudflare's error code (else its HTTP status)

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 retry_after: int | None = None, resend: Resend | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if resend is not None:
            self.resend = resend
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
    resend = Resend.ALWAYS


class AllowanceExhausted(RateLimited):
    """The Cloudflare account's daily free allowance is used up until 00:00 UTC:
    retrying within minutes cannot help, so clients are told not to."""

    type = "insufficient_quota"
    code = "insufficient_quota"
    retryable = False
    resend = Resend.NEVER


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
    resend = Resend.IF_IDEMPOTENT


class UpstreamMisconfigured(UpstreamError):
    """Cloudflare refused this server's own settings (token, account, namespace,
    model): only the operator can fix it, so nobody should retry."""

    code = "upstream_misconfigured"
    retryable = False
    resend = Resend.NEVER


class NoUsableAccount(FluxWorkerError):
    """Every Cloudflare account is taken out (refused token, blocked account):
    only the operator can fix it."""

    status = 503
    type = "server_error"
    code = "no_usable_account"


class UpstreamTimeout(UpstreamError):
    """No whole answer within the call's deadline (which is then spent)."""

    status = 504
    code = "upstream_timeout"
    resend = Resend.NEVER


def error_body(error: FluxWorkerError) -> dict:
    """Return the OpenAI error object for an error."""
    return {"error": {"message": error.message, "type": error.type,
                      "param": error.param, "code": error.code}}
